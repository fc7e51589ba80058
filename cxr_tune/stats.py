"""Statistics of test scores and search trials: scoring stored predictions, bootstrap
intervals, summaries over seeds, paired comparisons and factor effects.

Pure numpy (and the metrics module): no Ray, no torch. The final evaluation computes these once
and writes them to ``evaluation.json``; the report reads them there, and computes the factor
effects itself from the trials when an experiment has no evaluation yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cxr_tune.constants import COMPLETED, DIVERGED, EPOCH, FAILED, STUDY_FACTORS
from cxr_tune.experiment import Experiment, TrialRecord, is_ok
from cxr_tune.metrics import confusion_matrix, multiclass_metrics, multilabel_metrics

SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
MULTILABEL_SUMMARY: tuple[str, ...] = ("macro_auroc", "micro_f1", "subset_accuracy")


def score(
    task: str, run: Mapping[str, Any], targets: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Test metrics of one run's stored predictions."""
    if task == "multilabel":
        return multilabel_metrics(np.asarray(run["probabilities"]), targets)
    confusion = confusion_matrix(targets, np.asarray(run["predictions"]), num_classes)
    return multiclass_metrics(confusion)


def bootstrap_indices(n: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds, n) resampled test indices, shared by every contender of a dataset (pairing)."""
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def bootstrap_scores(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    num_classes: int,
    indices: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per bootstrap round, each metric averaged over the seeds' runs."""
    per_round: dict[str, list[float]] = {}
    for sample in indices:
        values: dict[str, list[float]] = {}
        for run in runs:
            if task == "multilabel":
                probabilities = np.asarray(run["probabilities"])[sample]
                metrics = multilabel_metrics(probabilities, targets[sample])
            else:
                predictions = np.asarray(run["predictions"])[sample]
                metrics = multiclass_metrics(
                    confusion_matrix(targets[sample], predictions, num_classes)
                )
            for name, value in metrics.items():
                values.setdefault(name, []).append(value)
        for name, seeds in values.items():
            per_round.setdefault(name, []).append(mean_of_finite(seeds))
    return {name: np.asarray(v) for name, v in per_round.items()}


def mean_of_finite(values: Sequence[float]) -> float:
    """Mean over the finite values; NaN when there is none (e.g. AUROC of a label with no
    positives in a resample)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    num_classes: int,
    boot: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds, and the bootstrap 95% interval, per metric."""
    per_seed = [score(task, run, targets, num_classes) for run in runs]
    summary: dict[str, dict[str, Any]] = {}
    for name in per_seed[0]:
        values = np.array([m[name] for m in per_seed], dtype=float)
        samples = boot.get(name, np.array([]))
        finite = samples[np.isfinite(samples)]
        summary[name] = {
            "mean": mean_of_finite(values.tolist()),
            "std": float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0,
            "per_seed": values.tolist(),
            "ci95": [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
            if finite.size
            else [math.nan, math.nan],
        }
    return summary


def compare(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], metrics: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Paired bootstrap difference a - b per metric (same resampled test images)."""
    out: dict[str, dict[str, Any]] = {}
    for name in metrics:
        if name not in a or name not in b:
            continue
        diff = a[name] - b[name]
        diff = diff[np.isfinite(diff)]
        if not diff.size:
            continue
        out[name] = {
            "difference": float(diff.mean()),
            "ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
            "p_a_better": float((diff > 0).mean()),
        }
    return out


def factor_effects(exp: Experiment) -> dict[str, Any]:
    """Metric vs learning rate (per decade) and vs batch size, from the search's trials.

    Every trial is compared at the first epoch all trials reached (the first ASHA rung), so
    early-stopped trials count as much as completed ones; completed trials also give their
    final value. Intervals are bootstrap 95% intervals over the trials of a bin.
    """
    rng = np.random.default_rng(0)
    effects: dict[str, Any] = {}
    for factor in STUDY_FACTORS:
        rows = []
        for cell in exp.cells():
            trials = [t for t in exp.trials_of(cell) if factor in t.config]
            if len({_bin(factor, t.config[factor]) for t in trials}) < 2:
                continue
            first_epoch = min((t.epochs_done for t in trials if t.epochs_done), default=0)
            for value in sorted({_bin(factor, t.config[factor]) for t in trials}, key=_sort_key):
                group = [t for t in trials if _bin(factor, t.config[factor]) == value]
                early = [_value_at(t, exp.metric, first_epoch) for t in group]
                final = [t.value(exp.metric) for t in group if t.state == COMPLETED]
                rows.append(
                    {
                        "cell": cell,
                        "value": value,
                        "trials": len(group),
                        "at_epoch": first_epoch,
                        "early": _mean_ci(early, rng),
                        "final": _mean_ci(final, rng),
                        "diverged_or_failed": sum(t.state in (DIVERGED, FAILED) for t in group),
                    }
                )
        if rows:
            effects[factor] = rows
    return effects


def _bin(factor: str, value: Any) -> Any:
    if factor == "lr":
        return f"1e{math.floor(math.log10(float(value)) + 1e-9)}"
    return value


def _sort_key(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("1e"):
        return (0, float(value))
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


def _value_at(trial: TrialRecord, metric: str, epoch: int) -> float:
    for result in trial.results:
        if int(result.get(EPOCH, -1)) == epoch and is_ok(result):
            return float(result.get(metric, math.nan))
    return math.nan  # diverged before that epoch


def _mean_ci(values: Sequence[float], rng: np.random.Generator) -> dict[str, Any]:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if not finite.size:
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    boots = rng.choice(finite, size=(1000, finite.size)).mean(axis=1)
    return {
        "mean": float(finite.mean()),
        "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "n": int(finite.size),
    }


def interval(point: float, samples: Sequence[float]) -> dict[str, Any]:
    """A point estimate with the 95% percentile interval of its bootstrap samples."""
    finite = np.asarray([s for s in samples if math.isfinite(s)], dtype=float)
    ci = (
        [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
        if finite.size
        else [math.nan, math.nan]
    )
    return {"mean": float(point), "ci95": ci}

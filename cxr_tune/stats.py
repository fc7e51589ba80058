"""Statistics of test scores and search trials: scoring stored predictions, bootstrap
intervals, summaries over seeds, paired comparisons and factor effects.

Pure numpy (and the metrics module): no Ray, no torch. The final evaluation computes these once
and writes them to ``evaluation.json``; the report reads them there, and computes the factor
effects itself from the trials when an experiment has no evaluation yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cxr_tune.constants import COMPLETED, DIVERGED, EPOCH, FAILED
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
            per_round.setdefault(name, []).append(_mean_of_finite(seeds))
    return {name: np.asarray(v) for name, v in per_round.items()}


def _mean_of_finite(values: Sequence[float]) -> float:
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
            "mean": _mean_of_finite(values.tolist()),
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
    for factor in ("lr", "batch_size", "optimizer", "weight_decay"):
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


# --- clinical metrics, transfer and the shortcut probe ---------------------------------------

# A probe flags a model when the lower end of its macro AUROC's 95% interval, on images with the
# lungs removed, is this far above chance (0.5).
PROBE_MARGIN = 0.1
SENSITIVITY_TARGETS: tuple[float, ...] = (0.90, 0.95)


def run_probabilities(run: Mapping[str, Any], num_classes: int) -> np.ndarray:
    """A run's test probabilities; runs stored before probabilities were kept give one-hot
    rows of their predictions (every metric from them is then a thresholded one)."""
    if "probabilities" in run:
        return np.asarray(run["probabilities"], dtype=float)
    predictions = np.asarray(run["predictions"], dtype=np.int64)
    return np.eye(num_classes)[predictions]


def interval(point: float, samples: Sequence[float]) -> dict[str, Any]:
    """A point estimate with the 95% percentile interval of its bootstrap samples."""
    finite = np.asarray([s for s in samples if math.isfinite(s)], dtype=float)
    ci = (
        [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
        if finite.size
        else [math.nan, math.nan]
    )
    return {"mean": float(point), "ci95": ci}


def macro_auroc(probabilities: np.ndarray, targets: np.ndarray, task: str) -> float:
    """One-vs-rest AUROC averaged over the classes (labels) where it is defined."""
    from cxr_tune.metrics import per_label_auroc

    probabilities = np.asarray(probabilities, dtype=float)
    if task == "multilabel":
        hot = np.asarray(targets)
    else:
        hot = np.eye(probabilities.shape[1], dtype=int)[np.asarray(targets, dtype=np.int64)]
    values = per_label_auroc(probabilities, hot)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _seed_mean(values: Sequence[float]) -> float:
    return _mean_of_finite(list(values))


def _clinical_point(
    task: str, probabilities: np.ndarray, targets: np.ndarray, positive: int | None
) -> dict[str, Any]:
    """Per-class sensitivity and specificity, ECE and the positive class's specificity at the
    target sensitivities, for one model's probabilities on one sample of images."""
    from cxr_tune.metrics import (
        expected_calibration_error,
        sensitivity_specificity,
        specificity_at_sensitivity,
        top_label_calibration,
    )

    if task == "multilabel":
        predicted = probabilities >= 0.5
        actual = targets.astype(bool)
        tp = (predicted & actual).sum(axis=0)
        fn = (~predicted & actual).sum(axis=0)
        fp = (predicted & ~actual).sum(axis=0)
        tn = (~predicted & ~actual).sum(axis=0)
        sens = np.divide(tp, tp + fn, out=np.full(len(tp), np.nan), where=(tp + fn) > 0)
        spec = np.divide(tn, tn + fp, out=np.full(len(tn), np.nan), where=(tn + fp) > 0)
        ece = expected_calibration_error(probabilities.ravel(), targets.ravel())
        positives = targets[:, positive] if positive is not None else None
    else:
        confusion = confusion_matrix(targets, probabilities.argmax(axis=1), probabilities.shape[1])
        sens, spec = sensitivity_specificity(confusion)
        present = confusion.sum(axis=1) > 0
        sens = np.where(present, sens, np.nan)
        ece = expected_calibration_error(*top_label_calibration(probabilities, targets))
        positives = (targets == positive).astype(int) if positive is not None else None
    at = {}
    if positives is not None:
        for target in SENSITIVITY_TARGETS:
            at[target] = specificity_at_sensitivity(probabilities[:, positive], positives, target)
    return {"sensitivity": sens, "specificity": spec, "ece": ece, "spec_at": at}


def _entry(key: str, index: Any) -> Callable[[dict[str, Any]], float]:
    """Reads ``point[key][index]`` of a clinical point (one class's, or one target's, value)."""
    return lambda point: float(point[key][index])


def clinical_summary(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    classes: Sequence[str],
    indices: np.ndarray,
    positive: int | None,
) -> dict[str, Any]:
    """Clinical metrics of a configuration's final models (its seeds) on the test split.

    Point values are means over the seeds; intervals are bootstrap 95% intervals over the test
    images (each round: the same resample for every seed, then the mean over seeds). Curves and
    the reliability diagram are drawn from the mean of the seeds' probabilities.

    Args:
        positive: index of the class whose specificity at 90% and 95% sensitivity is reported
            (the COVID class), or None.
    """
    from cxr_tune.metrics import pr_points, reliability_bins, roc_points, top_label_calibration

    targets = np.asarray(targets)
    probs = [run_probabilities(r, len(classes)) for r in runs]
    points = [_clinical_point(task, p, targets, positive) for p in probs]
    rounds = [[_clinical_point(task, p[s], targets[s], positive) for p in probs] for s in indices]

    def summary(get: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
        return interval(
            _seed_mean([get(p) for p in points]),
            [_seed_mean([get(p) for p in per_round]) for per_round in rounds],
        )

    mean = np.mean(probs, axis=0)
    hot = targets if task == "multilabel" else np.eye(len(classes), dtype=int)[targets.astype(int)]
    if task == "multilabel":
        confidence, correct = mean.ravel(), targets.ravel()
    else:
        confidence, correct = top_label_calibration(mean, targets)
    out: dict[str, Any] = {
        "per_class": [
            {
                "class": name,
                "sensitivity": summary(_entry("sensitivity", k)),
                "specificity": summary(_entry("specificity", k)),
            }
            for k, name in enumerate(classes)
        ],
        "ece": summary(lambda p: float(p["ece"])),
        "reliability": reliability_bins(confidence, correct),
        "roc": {name: roc_points(mean[:, k], hot[:, k]) for k, name in enumerate(classes)},
        "pr": {name: pr_points(mean[:, k], hot[:, k]) for k, name in enumerate(classes)},
        "curves_from": f"mean of {len(probs)} seed(s)' probabilities",
        "positive_class": None,
    }
    if positive is not None:
        out["positive_class"] = {
            "class": classes[positive],
            **{
                f"specificity_at_sensitivity_{round(t * 100)}": summary(_entry("spec_at", t))
                for t in SENSITIVITY_TARGETS
            },
        }
    return out


def _transfer_point(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    k = probabilities.shape[1]
    confusion = confusion_matrix(labels, probabilities.argmax(axis=1), k)
    recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    present = confusion.sum(axis=1) > 0
    return {
        "macro_f1": multiclass_metrics(confusion)["macro_f1"],
        "macro_auroc": macro_auroc(probabilities, labels, "multiclass"),
        "sensitivity": np.where(present, recall, np.nan),
    }


def transfer_summary(
    own: Sequence[np.ndarray],
    own_labels: np.ndarray,
    external: Sequence[np.ndarray],
    external_labels: np.ndarray,
    classes: Sequence[str],
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    """A model's scores on its own test split and on another dataset's, on shared classes.

    Args:
        own, external: per seed, probabilities over the shared classes (rows of images that
            belong to a shared class only).
        own_labels, external_labels: the shared class index of those images.
        classes: the shared classes.
        rounds: bootstrap rounds; the two test sets are resampled independently.

    Returns:
        In-distribution and external macro-F1, macro AUROC and per-class sensitivity with 95%
        intervals, and the drop (in-distribution minus external) with its interval.
    """
    own_labels = np.asarray(own_labels, dtype=np.int64)
    external_labels = np.asarray(external_labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    own_idx = rng.integers(0, len(own_labels), size=(rounds, len(own_labels)))
    ext_idx = rng.integers(0, len(external_labels), size=(rounds, len(external_labels)))

    def per(probs: Sequence[np.ndarray], labels: np.ndarray, idx: np.ndarray | None):
        sample = (lambda a: a) if idx is None else (lambda a: a[idx])
        points = [_transfer_point(sample(p), sample(labels)) for p in probs]
        return {
            "macro_f1": _seed_mean([p["macro_f1"] for p in points]),
            "macro_auroc": _seed_mean([p["macro_auroc"] for p in points]),
            "sensitivity": [
                _seed_mean([float(p["sensitivity"][k]) for p in points])
                for k in range(len(classes))
            ],
        }

    own_point, ext_point = per(own, own_labels, None), per(external, external_labels, None)
    own_boot = [per(own, own_labels, i) for i in own_idx]
    ext_boot = [per(external, external_labels, i) for i in ext_idx]
    out: dict[str, Any] = {"classes": list(classes)}
    for name, point, boot in (("own", own_point, own_boot), ("external", ext_point, ext_boot)):
        out[name] = {
            "images": int(len(own_labels if name == "own" else external_labels)),
            "macro_f1": interval(point["macro_f1"], [b["macro_f1"] for b in boot]),
            "macro_auroc": interval(point["macro_auroc"], [b["macro_auroc"] for b in boot]),
            "sensitivity": {
                c: interval(point["sensitivity"][k], [b["sensitivity"][k] for b in boot])
                for k, c in enumerate(classes)
            },
        }
    out["drop"] = {
        metric: interval(
            own_point[metric] - ext_point[metric],
            [a[metric] - b[metric] for a, b in zip(own_boot, ext_boot, strict=True)],
        )
        for metric in ("macro_f1", "macro_auroc")
    }
    return out


def probe_summary(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    num_classes: int,
    indices: np.ndarray,
    region: str,
) -> dict[str, Any]:
    """The shortcut probe: scores on the test split with the lungs removed.

    ``flagged`` when the lower end of the macro AUROC's 95% interval is more than
    ``PROBE_MARGIN`` above chance (0.5): the model still tells the classes apart without the
    lungs, so it likely uses something else (markers, borders, the collection itself).
    """
    targets = np.asarray(targets)
    probs = [np.asarray(r["probe"]["probabilities"], dtype=float) for r in runs]

    def scores(sample: np.ndarray | None) -> tuple[float, float]:
        aurocs, f1s = [], []
        for p in probs:
            q, t = (p, targets) if sample is None else (p[sample], targets[sample])
            aurocs.append(macro_auroc(q, t, task))
            if task == "multilabel":
                f1s.append(multilabel_metrics(q, t)["macro_f1"])
            else:
                f1s.append(
                    multiclass_metrics(confusion_matrix(t, q.argmax(axis=1), num_classes))[
                        "macro_f1"
                    ]
                )
        return _seed_mean(aurocs), _seed_mean(f1s)

    point = scores(None)
    boot = [scores(s) for s in indices]
    auroc = interval(point[0], [b[0] for b in boot])
    return {
        "region": region,
        "macro_auroc": auroc,
        "macro_f1": interval(point[1], [b[1] for b in boot]),
        "chance_auroc": 0.5,
        "margin": PROBE_MARGIN,
        "flagged": bool(math.isfinite(auroc["ci95"][0]) and auroc["ci95"][0] > 0.5 + PROBE_MARGIN),
    }

"""Final evaluation: the best configurations, retrained with several seeds, scored once on the
test split, with bootstrap confidence intervals and paired comparisons.

The search never sees the test split (trials receive ``DatasetArrays.for_search()``); this
module is the only reader. For each cell it evaluates the best configuration and, where the
optimizer was searched, the best configuration of each optimizer, so "SGD vs Adam at their best
settings" is a paired comparison on the same test images. The first seed reuses the search
trial's own final checkpoint when the trial trained all its epochs (same seed, same result);
other seeds retrain from scratch.

Run on demand: ``python -m cxr_tune.evaluate EXPERIMENT_DIR [--seeds N]``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.data.types import DatasetArrays
from cxr_tune.metrics import confusion_matrix, multiclass_metrics, multilabel_metrics
from cxr_tune.report.experiment import EVALUATION_FILE, Experiment, TrialRecord, load_experiment

Echo = Callable[[str], None]
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
MULTILABEL_SUMMARY: tuple[str, ...] = ("macro_auroc", "micro_f1", "subset_accuracy")


@dataclass(frozen=True)
class Contender:
    """A configuration to evaluate: the best of a cell, or the best with one optimizer."""

    cell: str
    roles: tuple[str, ...]
    trial: TrialRecord

    @property
    def key(self) -> str:
        return f"{self.cell}#{self.trial.trial_id}"


def choose_contenders(exp: Experiment) -> list[Contender]:
    """Per cell: the best trial, plus the best trial of each optimizer searched in the cell."""
    contenders: list[Contender] = []
    for cell in exp.cells():
        best = exp.best_trial(cell, completed_only=False)
        if best is None:
            continue
        roles: dict[str, list[str]] = {best.trial_id: ["best"]}
        chosen: dict[str, TrialRecord] = {best.trial_id: best}
        optimizers = sorted({str(t.config.get("optimizer")) for t in exp.trials_of(cell)})
        if len(optimizers) > 1:
            for optimizer in optimizers:
                trial = _best_of(exp, cell, _with_optimizer(optimizer))
                if trial is not None:
                    roles.setdefault(trial.trial_id, []).append(f"best_{optimizer}")
                    chosen[trial.trial_id] = trial
        contenders += [Contender(cell, tuple(roles[i]), chosen[i]) for i in chosen]
    return contenders


def _with_optimizer(optimizer: str) -> Callable[[TrialRecord], bool]:
    return lambda trial: str(trial.config.get("optimizer")) == optimizer


def _best_of(exp: Experiment, cell: str, keep: Callable[[TrialRecord], bool]) -> TrialRecord | None:
    """Best completed trial passing ``keep``; failing that, the best with any finite result."""
    sign = 1.0 if exp.mode == "max" else -1.0
    trials = [t for t in exp.trials_of(cell) if keep(t) and math.isfinite(t.value(exp.metric))]
    completed = [t for t in trials if t.state == "completed"]
    pool = completed or trials
    return max(pool, key=lambda t: sign * t.value(exp.metric)) if pool else None


def final_checkpoint(trial: TrialRecord) -> Path | None:
    """The trial's checkpoint after its last planned epoch, if it trained that far."""
    if trial.state != "completed":
        return None
    for folder in reversed(trial.checkpoints()):
        if (folder / "state.pt").is_file():
            return folder
    return None


def evaluate_run(
    config: Mapping[str, Any], seed: int, dataset: DatasetArrays, checkpoint: str | None
) -> dict[str, Any]:
    """Train (or load) one configuration with ``seed`` and score it once on the test split."""
    import torch

    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import (
        eval_batch_size,
        loop_settings,
        predict_logits,
        select_device,
        to_device,
    )
    from cxr_tune.trainable import build_state, fit_epoch

    cfg = TrialConfig.from_dict({**config, "seed": seed})
    device = select_device()
    settings = loop_settings(device, cfg.precision)
    state = build_state(cfg, dataset, device)
    started = time.perf_counter()
    if checkpoint is not None:
        saved = read_checkpoint_state(checkpoint, device)
        state.model.load_state_dict(saved["model"])
        source = "search checkpoint"
    else:
        train = to_device(dataset.split("train"), device, dataset.task)
        for epoch in range(1, cfg.epochs + 1):
            stats = fit_epoch(state, cfg, dataset, train, settings, epoch)
            if state.scheduler is not None:
                state.scheduler.step()
            if stats.diverged:
                return {"seed": seed, "source": "retrained", "diverged": True, "epoch": epoch}
        source = "retrained"
    test = to_device(dataset.split("test"), device, dataset.task)
    logits = predict_logits(
        state.model,
        test.images,
        batch_size=eval_batch_size(device, cfg.image_size),
        settings=settings,
    )
    run: dict[str, Any] = {"seed": seed, "source": source, "seconds": time.perf_counter() - started}
    if dataset.task == "multilabel":
        run["probabilities"] = torch.sigmoid(logits).cpu().numpy().round(5).tolist()
    else:
        run["predictions"] = logits.argmax(dim=1).cpu().numpy().tolist()
    return run


def retrain_seconds(trial: TrialRecord) -> float:
    """About how long retraining ``trial``'s configuration takes: its own time per epoch, times
    its planned epochs (0 when it has no timed epoch)."""
    epochs = trial.epochs_done
    per_epoch = trial.time_total_s() / epochs if epochs else math.nan
    return per_epoch * trial.planned_epochs if math.isfinite(per_epoch) else 0.0


def read_checkpoint_state(checkpoint: str, device: Any) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder: a local path, or a storage URI (s3://...) that
    every node can read (the tasks may run on another node than the local copy)."""
    import io

    import torch

    if "://" not in checkpoint:
        return torch.load(Path(checkpoint) / "state.pt", map_location=device, weights_only=True)
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(checkpoint)
    with fs.open_input_file(f"{path}/state.pt") as handle:  # one request, not one per MiB
        payload = io.BytesIO(handle.read())
    return torch.load(payload, map_location=device, weights_only=True)


def _checkpoint_location(
    checkpoint: Path | None, folder: Path, checkpoint_root: str | None
) -> str | None:
    if checkpoint is None:
        return None
    if checkpoint_root is None:
        return str(checkpoint)
    return f"{checkpoint_root.rstrip('/')}/{checkpoint.relative_to(folder).as_posix()}"


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
                final = [t.value(exp.metric) for t in group if t.state == "completed"]
                rows.append(
                    {
                        "cell": cell,
                        "value": value,
                        "trials": len(group),
                        "at_epoch": first_epoch,
                        "early": _mean_ci(early, rng),
                        "final": _mean_ci(final, rng),
                        "diverged_or_failed": sum(t.state in ("diverged", "failed") for t in group),
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
        if int(result.get("epoch", -1)) == epoch and result.get("status", "ok") == "ok":
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


def evaluate_experiment(
    folder: Path,
    datasets: Mapping[str, DatasetArrays] | None = None,
    *,
    seeds: int | None = None,
    echo: Echo = print,
    checkpoint_root: str | None = None,
) -> dict[str, Any]:
    """Evaluate an experiment's contenders on the test split and write ``evaluation.json``.

    Args:
        folder: the experiment folder.
        datasets: the decoded datasets with their test splits; reloaded from the record if None.
        seeds: seeds per contender (default: the experiment's ``eval_seeds``).
        checkpoint_root: where the evaluation tasks read trial checkpoints when ``folder`` is a
            local copy of a remote experiment (its storage URI); default ``folder``.
    """
    import ray

    exp = load_experiment(folder)
    datasets = datasets or reload_datasets(exp)
    n_seeds = seeds or int(exp.record.get("eval_seeds", 1))
    base_seed = int(exp.record.get("seed", 0))
    rounds = int(exp.record.get("bootstrap", 1000))
    contenders = choose_contenders(exp)
    echo(f"evaluate: {len(contenders)} configurations x {n_seeds} seed(s) on the test split")
    refs = {name: ray.put(arrays) for name, arrays in datasets.items()}
    jobs = [
        (contender, k, final_checkpoint(contender.trial) if k == 0 else None)
        for contender in contenders
        for k in range(n_seeds)
    ]
    # Longest first: retraining runs go out before checkpoint loads (seconds), so the last
    # task to finish is not a long one started when the others were done.
    jobs.sort(key=lambda job: -retrain_seconds(job[0].trial) if job[2] is None else 0.0)
    pending: dict[str, dict[int, Any]] = {}
    for contender, k, checkpoint in jobs:
        config = contender.trial.config
        resources = _resources(exp, str(config.get("model")))
        task = ray.remote(num_cpus=resources["CPU"], num_gpus=resources["GPU"])(evaluate_run)
        pending.setdefault(contender.key, {})[k] = task.remote(
            config,
            int(config.get("seed", base_seed)) + k,
            refs[str(config["dataset"])],
            _checkpoint_location(checkpoint, Path(folder), checkpoint_root),
        )
    runs = {key: ray.get([by_seed[k] for k in sorted(by_seed)]) for key, by_seed in pending.items()}
    result = assemble(exp, datasets, contenders, runs, rounds)
    tmp = Path(folder) / f".{EVALUATION_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    os.replace(tmp, Path(folder) / EVALUATION_FILE)
    echo(f"evaluate: wrote {Path(folder) / EVALUATION_FILE}")
    return result


def assemble(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays],
    contenders: Sequence[Contender],
    runs: Mapping[str, list[dict[str, Any]]],
    rounds: int,
) -> dict[str, Any]:
    """Summaries, bootstrap intervals and paired comparisons from the runs' test predictions."""
    entries, boots = [], {}
    indices = {
        name: bootstrap_indices(len(arrays.split("test")), rounds, int(exp.record.get("seed", 0)))
        for name, arrays in datasets.items()
    }
    for contender in contenders:
        dataset = datasets[str(contender.trial.config["dataset"])]
        targets = np.asarray(dataset.split("test").labels)
        usable = [r for r in runs[contender.key] if not r.get("diverged")]
        entry: dict[str, Any] = {
            "cell": contender.cell,
            "role": ", ".join(contender.roles),
            "roles": list(contender.roles),
            "trial_id": contender.trial.trial_id,
            "config": contender.trial.config,
            "val_metric": contender.trial.value(exp.metric),
            "runs": runs[contender.key],
            "task": dataset.task,
            "classes": list(dataset.classes),
        }
        if usable:
            boot = bootstrap_scores(
                dataset.task, usable, targets, dataset.num_classes, indices[dataset.name]
            )
            boots[contender.key] = boot
            entry["summary"] = summarise(dataset.task, usable, targets, dataset.num_classes, boot)
            entry.update(_detail(dataset, usable, targets))
        entries.append(entry)
    comparisons = _optimizer_comparisons(contenders, boots)
    return {
        "split": "test",
        "bootstrap_rounds": rounds,
        "entries": entries,
        "comparisons": comparisons,
        "factors": factor_effects(exp),
        "targets": {
            name: np.asarray(a.split("test").labels).tolist() for name, a in datasets.items()
        },
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _detail(
    dataset: DatasetArrays, runs: Sequence[Mapping[str, Any]], targets: np.ndarray
) -> dict[str, Any]:
    """Confusion matrix (summed over seeds) or per-label scores, for the report."""
    from cxr_tune.metrics import per_class_from_confusion, per_label_auroc

    if dataset.task == "multilabel":
        probabilities = np.mean([np.asarray(r["probabilities"]) for r in runs], axis=0)
        auroc = per_label_auroc(probabilities, targets)
        positives = targets.sum(axis=0)
        return {
            "per_label": [
                {"label": c, "auroc": float(a), "positives": int(p)}
                for c, a, p in zip(dataset.classes, auroc, positives)
            ]
        }
    confusion = np.sum(
        [
            confusion_matrix(targets, np.asarray(r["predictions"]), dataset.num_classes)
            for r in runs
        ],
        axis=0,
    )
    per_class = per_class_from_confusion(confusion)
    return {
        "confusion": np.asarray(confusion).tolist(),
        "per_class": [
            {"class": c, **{k: float(per_class[k][i]) for k in ("precision", "recall", "f1")}}
            for i, c in enumerate(dataset.classes)
        ],
    }


def _optimizer_comparisons(
    contenders: Sequence[Contender], boots: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Within each cell, every pair of best-per-optimizer contenders, paired on test images."""
    comparisons = []
    by_cell: dict[str, list[tuple[str, Contender]]] = {}
    for contender in contenders:
        for role in contender.roles:
            if role.startswith("best_"):
                by_cell.setdefault(contender.cell, []).append((role[len("best_") :], contender))
    for cell, items in by_cell.items():
        for i, (name_a, a) in enumerate(items):
            for name_b, b in items[i + 1 :]:
                if a.key in boots and b.key in boots:
                    comparisons.append(
                        {
                            "cell": cell,
                            "factor": "optimizer",
                            "a": name_a,
                            "b": name_b,
                            "metrics": compare(
                                boots[a.key], boots[b.key], SUMMARY_METRICS + MULTILABEL_SUMMARY
                            ),
                        }
                    )
    return comparisons


def _resources(exp: Experiment, model: str) -> dict[str, float]:
    for line in exp.record.get("plan", []):
        if line.get("model") == model and "resources" in line:
            return {
                "CPU": float(line["resources"].get("CPU", 1)),
                "GPU": float(line["resources"].get("GPU", 0)),
            }
    return {"CPU": 1.0, "GPU": 0.0}


def reload_datasets(exp: Experiment) -> dict[str, DatasetArrays]:
    """Decode (from the cache) the experiment's datasets again, with the recorded options,
    and check that the split is the one the search used."""
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.errors import DataError

    options = exp.record.get("data_options", {})
    datasets: dict[str, DatasetArrays] = {}
    for info in exp.record.get("datasets", []):
        source = (
            DataSource("phantom", None)
            if info.get("source") == "built-in"
            else DataSource(str(info.get("key") or info["name"]), Path(info["source"]))
        )
        arrays = load_dataset(
            source,
            DataOptions(
                image_size=int(options.get("image_size", info.get("image_size", 224))),
                seed=int(options.get("seed", exp.record.get("seed", 0))),
                phantom_images=int(options.get("phantom_images", 640)),
            ),
        )
        if arrays.split_hash != info.get("split_hash"):
            raise DataError(
                f"The split of {info['name']} is not the one the search used "
                f"({arrays.split_hash} != {info.get('split_hash')}): the dataset changed."
            )
        datasets[str(info["name"])] = arrays
    return datasets


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cxr_tune.evaluate EXPERIMENT_DIR``: (re)run the final evaluation."""
    import argparse
    import sys

    from cxr_tune.errors import CxrTuneError

    parser = argparse.ArgumentParser(
        prog="python -m cxr_tune.evaluate",
        description="Retrain each cell's best configurations with several seeds and score them "
        "once on the test split; writes evaluation.json and refreshes the report.",
    )
    parser.add_argument("experiment", help="an experiment folder written by cxr_tune.search")
    parser.add_argument(
        "--seeds", type=int, help="seeds per configuration (default: the experiment's)"
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    args = parser.parse_args(argv)
    try:
        if args.seeds is not None and args.seeds < 1:
            from cxr_tune.errors import ConfigError

            raise ConfigError(f"--seeds: the value is {args.seeds}, but must be >= 1.")
        folder = Path(args.experiment).expanduser()
        load_experiment(folder)  # fail fast, before Ray, on a folder that is no experiment
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(
                address=args.address or os.environ.get("RAY_ADDRESS") or None, log_to_driver=False
            )
        try:
            evaluate_experiment(folder, seeds=args.seeds)
        finally:
            if started:
                ray.shutdown()
        from cxr_tune.report import write_report

        print(f"report: {write_report(folder)}")
    except CxrTuneError as exc:
        print(f"python -m cxr_tune.evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Final evaluation: the best configurations, retrained with several seeds, scored once on the
test split, with bootstrap confidence intervals and paired comparisons.

The search never sees the test split (trials receive ``DatasetArrays.for_search()``); this
module is the only reader. For each cell it evaluates the best configuration and, where the
optimizer was searched, the best configuration of each optimizer, so "SGD vs Adam at their best
settings" is a paired comparison on the same test images. The first seed reuses the search
trial's own final checkpoint when the trial trained all its epochs (same seed, same result);
other seeds retrain from scratch.

Run on demand: ``python -m cxr_tune.evaluate EXPERIMENT_DIR [--seeds N]`` (``cxr_tune.cli``).
The statistics live in ``cxr_tune.stats``; this module runs the models and assembles them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.config import DataSource
from cxr_tune.constants import CHECKPOINT_FILE, COMPLETED, EVALUATION_FILE, STATUS, STATUS_OK
from cxr_tune.data.labelmap import DatasetClasses, LabelMaps, SharedClasses
from cxr_tune.data.types import DatasetArrays, SplitArrays
from cxr_tune.experiment import Experiment, TrialRecord
from cxr_tune.files import write_atomic
from cxr_tune.generalisation import (
    clinical_of,
    probe_images,
    probe_of,
    transfer_of,
    transfer_pairs,
)
from cxr_tune.metrics import confusion_matrix
from cxr_tune.stats import (
    MULTILABEL_SUMMARY,
    SUMMARY_METRICS,
    bootstrap_indices,
    bootstrap_scores,
    compare,
    factor_effects,
    summarise,
)

Echo = Callable[[str], None]
# Probabilities are stored to this many decimals (evaluation.json stays small; metrics unmoved).
PROBABILITY_DIGITS = 4


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
    completed = [t for t in trials if t.state == COMPLETED]
    pool = completed or trials
    return max(pool, key=lambda t: sign * t.value(exp.metric)) if pool else None


def final_checkpoint(trial: TrialRecord) -> Path | None:
    """The trial's checkpoint after its last planned epoch, if it trained that far."""
    if trial.state != COMPLETED:
        return None
    for folder in reversed(trial.checkpoints()):
        if (folder / CHECKPOINT_FILE).is_file():
            return folder
    return None


def evaluate_run(
    config: Mapping[str, Any],
    seed: int,
    dataset: DatasetArrays,
    checkpoint: str | None,
    others: Mapping[str, DatasetArrays] | None = None,
    external: Sequence[str] = (),
    probe: bool = False,
) -> dict[str, Any]:
    """Train (or load) one configuration with ``seed`` and score it once on the test split.

    Args:
        others: test splits of other datasets (``DatasetArrays.for_test()``), by name.
        external: the names in ``others`` to score this model on (external validation).
        probe: also score the test split with the lung field removed (the shortcut probe).

    Returns:
        The run: seed, where the model came from, and the test probabilities (multi-class runs
        also their predictions); ``probe`` and ``external`` hold the probe's and each external
        test split's probabilities.
    """
    import torch

    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import (
        build_state,
        eval_batch_size,
        loop_settings,
        place_split,
        predict_logits,
        select_device,
        train_epochs,
    )

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
        train = place_split(dataset.split("train"), device, dataset.task, cfg.data_path)
        # The trials' own loop, without a validation split: the same seed trains the same model.
        for result in train_epochs(state, cfg, dataset, train, None, settings):
            if result[STATUS] != STATUS_OK:
                return {
                    "seed": seed,
                    "source": "retrained",
                    "diverged": True,
                    "epoch": result["epoch"],
                }
        source = "retrained"
    batch = eval_batch_size(device, cfg.image_size)

    def probabilities(images: Any) -> np.ndarray:
        # Labels are not read here; the split only carries the images down the data path.
        unlabelled = SplitArrays(np.asarray(images), np.zeros(len(images), dtype=np.int64))
        pixels = place_split(unlabelled, device, "multiclass", cfg.data_path)
        logits = predict_logits(state.model, pixels, batch_size=batch, settings=settings)
        if dataset.task == "multilabel":
            return torch.sigmoid(logits).cpu().numpy()
        return torch.softmax(logits, dim=1).cpu().numpy()

    test = dataset.split("test")
    own = probabilities(test.images)
    run: dict[str, Any] = {"seed": seed, "source": source, "seconds": time.perf_counter() - started}
    run["probabilities"] = own.round(PROBABILITY_DIGITS).tolist()
    if dataset.task != "multilabel":
        run["predictions"] = own.argmax(axis=1).tolist()
    if probe:
        images, region = probe_images(test)
        run["probe"] = {
            "region": region,
            "probabilities": probabilities(images).round(PROBABILITY_DIGITS).tolist(),
        }
    for name in external:
        other = (others or {})[name].split("test")
        run.setdefault("external", {})[name] = {
            "probabilities": probabilities(other.images).round(PROBABILITY_DIGITS).tolist()
        }
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
        return torch.load(
            Path(checkpoint) / CHECKPOINT_FILE, map_location=device, weights_only=True
        )
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(checkpoint)
    with fs.open_input_file(f"{path}/{CHECKPOINT_FILE}") as handle:  # one request, not one per MiB
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


def evaluate_experiment(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays] | None = None,
    *,
    seeds: int | None = None,
    echo: Echo = print,
    checkpoint_root: str | None = None,
    externals: Mapping[str, ExternalSet] | None = None,
    label_map: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate an experiment's contenders on the test split and write ``evaluation.json``.

    Each cell's best configuration is also scored on the test split of every other dataset it
    shares classes with (the experiment's, and ``externals``), and on its own test split with
    the lungs removed (``cxr_tune.generalisation``). The result is also set as
    ``exp.evaluation``, so a report written next from ``exp`` shows it without reading the
    folder again.

    Args:
        exp: the loaded experiment (its folder is where ``evaluation.json`` goes).
        datasets: the decoded datasets with their test splits; reloaded from the record if None.
        seeds: seeds per contender (default: the experiment's ``eval_seeds``).
        checkpoint_root: where the evaluation tasks read trial checkpoints when the experiment
            folder is a local copy of a remote experiment (its storage URI); default the folder.
        externals: datasets that were not searched, scored as external sets (test split only).
        label_map: a user's label-map file laid over the built-in mapping (default: the one
            the search was given, if any).

    Raises:
        ConfigError: a class of an external or imagefolder dataset is close to a shared
            class but not one (a typo).
    """
    import ray

    folder = exp.folder
    datasets = datasets or reload_datasets(exp)
    externals = dict(externals or {})
    plan = generalisation_plan(exp, datasets, externals, label_map)
    n_seeds = seeds or int(exp.record.get("eval_seeds", 1))
    base_seed = int(exp.record.get("seed", 0))
    rounds = int(exp.record.get("bootstrap", 1000))
    contenders = choose_contenders(exp)
    echo(f"evaluate: {len(contenders)} configurations x {n_seeds} seed(s) on the test split")
    refs = {name: ray.put(arrays) for name, arrays in datasets.items()}
    others = {name: arrays.for_test() for name, arrays in datasets.items()}
    others.update({name: ext.arrays.for_test() for name, ext in externals.items()})
    others_ref = ray.put(others)
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
        best = "best" in contender.roles
        resources = _resources(exp, str(config.get("model")))
        task = ray.remote(num_cpus=resources["CPU"], num_gpus=resources["GPU"])(evaluate_run)
        pending.setdefault(contender.key, {})[k] = task.remote(
            config,
            int(config.get("seed", base_seed)) + k,
            refs[str(config["dataset"])],
            _checkpoint_location(checkpoint, folder, checkpoint_root),
            others_ref if best else None,
            tuple(plan.pairs.get(str(config["dataset"]), {})) if best else (),
            best,
        )
    runs = {key: ray.get([by_seed[k] for k in sorted(by_seed)]) for key, by_seed in pending.items()}
    all_sets = {**datasets, **{name: ext.arrays for name, ext in externals.items()}}
    result = assemble(exp, datasets, contenders, runs, rounds, plan=plan, others=all_sets)
    result["external_sets"] = [ext.describe(name) for name, ext in externals.items()]
    write_atomic(folder / EVALUATION_FILE, json.dumps(result, indent=1))
    exp.evaluation = result
    echo(f"evaluate: wrote {folder / EVALUATION_FILE}")
    return result


@dataclass(frozen=True)
class ExternalSet:
    """A dataset scored only as an external set (``--external``): its arrays and source."""

    arrays: DatasetArrays
    source: DataSource

    def describe(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "key": self.source.key,
            "source": str(self.source.path) if self.source.path else "built-in",
            "task": self.arrays.task,
            "classes": list(self.arrays.classes),
            "test_images": len(self.arrays.split("test")),
            "split_hash": self.arrays.split_hash,
        }


@dataclass(frozen=True)
class GeneralisationPlan:
    """What the evaluation scores beyond each model's own test split: its dataset's classes,
    and per training dataset the other datasets it shares classes with (and how)."""

    maps: LabelMaps
    classes: Mapping[str, DatasetClasses]
    pairs: Mapping[str, Mapping[str, SharedClasses]]


def generalisation_plan(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays],
    externals: Mapping[str, ExternalSet],
    label_map: str | Path | None = None,
) -> GeneralisationPlan:
    """The label mapping of every dataset and the transfers it allows; checked before any
    model runs, so an unmatched class name stops the evaluation at once (exit 2). Without
    ``label_map``, the file the search was given (recorded) is used, if any.

    Raises:
        ConfigError: as ``cxr_tune.data.labelmap`` (unmatched class, bad label-map file).
    """
    from cxr_tune.data.labelmap import load_label_maps, map_dataset

    maps = load_label_maps(label_map or exp.record.get("label_map"))
    keys = {str(d["name"]): str(d.get("key") or d["name"]) for d in exp.record.get("datasets", [])}
    classes: dict[str, DatasetClasses] = {
        name: DatasetClasses(name, keys.get(name, name), arrays.task, tuple(arrays.classes))
        for name, arrays in datasets.items()
    }
    for name, ext in externals.items():
        key = str(ext.source.key or name)
        classes[name] = DatasetClasses(name, key, ext.arrays.task, tuple(ext.arrays.classes))
        map_dataset(classes[name], maps)  # an external set's classes must all map (or error)
    pairs = transfer_pairs(classes, list(datasets), maps)
    return GeneralisationPlan(maps, classes, pairs)


def external_name(key: str, taken: Sequence[str]) -> str:
    """A name for an external set: its layout key, made unique among ``taken``."""
    name, n = key, 2
    while name in taken:
        name, n = f"{key}_{n}", n + 1
    return name


def assemble(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays],
    contenders: Sequence[Contender],
    runs: Mapping[str, list[dict[str, Any]]],
    rounds: int,
    *,
    plan: GeneralisationPlan | None = None,
    others: Mapping[str, DatasetArrays] | None = None,
) -> dict[str, Any]:
    """Summaries, bootstrap intervals and paired comparisons from the runs' test predictions;
    clinical metrics of every contender; for each cell's best configuration, the shortcut probe
    and the transfer to every other dataset in ``plan`` (whose test splits are in ``others``)."""
    plan = plan or generalisation_plan(exp, datasets, {})
    others = others or datasets
    seed = int(exp.record.get("seed", 0))
    entries, boots = [], {}
    indices = {
        name: bootstrap_indices(len(arrays.split("test")), rounds, seed)
        for name, arrays in datasets.items()
    }
    transfers: list[dict[str, Any]] = []
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
            entry["clinical"] = clinical_of(
                dataset.task,
                usable,
                targets,
                plan.classes[dataset.name],
                indices[dataset.name],
                plan.maps,
            )
            probe = probe_of(
                dataset.task, usable, targets, dataset.num_classes, indices[dataset.name]
            )
            if probe is not None:
                entry["probe"] = probe
            if "best" in contender.roles:
                transfers += _transfers(contender, usable, dataset, plan, others, rounds, seed)
        entries.append(entry)
    comparisons = _optimizer_comparisons(contenders, boots)
    return {
        "split": "test",
        "bootstrap_rounds": rounds,
        "entries": entries,
        "comparisons": comparisons,
        "factors": factor_effects(exp),
        "transfer": transfers,
        "label_maps": {"sources": list(plan.maps.sources)},
        "targets": {
            name: np.asarray(a.split("test").labels).tolist() for name, a in datasets.items()
        },
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _transfers(
    contender: Contender,
    runs: Sequence[Mapping[str, Any]],
    dataset: DatasetArrays,
    plan: GeneralisationPlan,
    others: Mapping[str, DatasetArrays],
    rounds: int,
    seed: int,
) -> list[dict[str, Any]]:
    rows = []
    for test_name, shared in plan.pairs.get(dataset.name, {}).items():
        if test_name not in others:
            continue
        row = transfer_of(runs, dataset, test_name, others[test_name], shared, rounds, seed)
        if row is not None:
            rows.append(
                {
                    "cell": contender.cell,
                    "model": str(contender.trial.config.get("model")),
                    "train": dataset.name,
                    "test": test_name,
                    "seeds": len(runs),
                    **row,
                }
            )
    return rows


def _detail(
    dataset: DatasetArrays, runs: Sequence[Mapping[str, Any]], targets: np.ndarray
) -> dict[str, Any]:
    """Confusion matrix (summed over seeds) or per-label scores, for the report."""
    from cxr_tune.metrics import label_positives, per_class_from_confusion, per_label_auroc

    if dataset.task == "multilabel":
        probabilities = np.mean([np.asarray(r["probabilities"]) for r in runs], axis=0)
        auroc = per_label_auroc(probabilities, targets)
        positives = label_positives(targets)
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


def reload_datasets(exp: Experiment, *, cache_dir: Path | None = None) -> dict[str, DatasetArrays]:
    """Decode (from the cache) the experiment's datasets again, from the sources and data
    options its record holds, and check that each split is the one the search used."""
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.errors import DataError

    options = DataOptions.from_record(_recorded_options(exp), cache_dir=cache_dir)
    datasets: dict[str, DatasetArrays] = {}
    for info in exp.record.get("datasets", []):
        arrays = load_dataset(_recorded_source(info), options)
        if arrays.split_hash != info.get("split_hash"):
            raise DataError(
                f"The split of {info['name']} is not the one the search used "
                f"({arrays.split_hash} != {info.get('split_hash')}): the dataset changed."
            )
        datasets[str(info["name"])] = arrays
    return datasets


def load_externals(
    exp: Experiment,
    extra: Sequence[DataSource] = (),
    *,
    cache_dir: Path | None = None,
    echo: Echo = print,
) -> dict[str, ExternalSet]:
    """The experiment's external sets (recorded by the search) and ``extra`` ones, decoded with
    the experiment's data options (its image size), named by layout key.

    Raises:
        ConfigError, DataError: as ``load_dataset``.
    """
    from cxr_tune.data import DataOptions, load_dataset, resolve_source

    options = DataOptions.from_record(_recorded_options(exp), cache_dir=cache_dir)
    recorded = [_recorded_source(info) for info in exp.record.get("externals", [])]
    taken = [str(d["name"]) for d in exp.record.get("datasets", [])]
    out: dict[str, ExternalSet] = {}
    for source in [*recorded, *extra]:
        source = resolve_source(source)
        arrays = load_dataset(source, options)
        name = external_name(str(source.key or "external"), [*taken, *out])
        out[name] = ExternalSet(arrays, source)
        echo(
            f"evaluate: external set {name}: {len(arrays.split('test'))} test images, "
            f"classes {', '.join(arrays.classes)}"
        )
    return out


def _recorded_options(exp: Experiment) -> dict[str, Any]:
    recorded = dict(exp.record.get("data_options", {}))
    # Records written before every option was kept hold only these three.
    recorded.setdefault("seed", exp.record.get("seed", 0))
    recorded.setdefault("phantom_images", 640)
    datasets = exp.record.get("datasets", [])
    recorded.setdefault("image_size", datasets[0].get("image_size", 224) if datasets else 224)
    return recorded


def _recorded_source(info: Mapping[str, Any]) -> DataSource:
    """The data source of a recorded dataset, resolved as the search resolved it."""
    if info.get("source") == "built-in":
        return DataSource(str(info.get("key") or "phantom"), None)
    return DataSource(
        str(info.get("key") or info["name"]), Path(info["source"]), detected=info.get("detected")
    )


if __name__ == "__main__":
    from cxr_tune.cli import run_command

    raise SystemExit(run_command("evaluate"))

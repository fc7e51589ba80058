"""``cxr-tune export``: each cell's best model leaves the experiment as a model package.

Everything the package says comes from the finished experiment, computed once by the final
evaluation (``cxr_tune.evaluation``): the weights of the evaluation's first seed (the search
trial's final checkpoint, or the evaluation's retrained ``models/<cell>/model.pt``), its
temperature(s) and operating thresholds (``models/<cell>/model.json``), its out-of-distribution
statistics (``models/<cell>/ood.npz``), and from ``evaluation.json`` the test metrics with their
intervals, the transfer results, the shortcut probe and the saliency check. Nothing is
recomputed here, so a package states the numbers of the report.

An experiment on cluster storage (``s3://...``) is read through a local copy without
checkpoints; the one checkpoint a package needs is read from the storage.

Never Ray (layer 6, beside the evaluation).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_tune.errors import ConfigError, DataError, unknown_name_message
from cxr_tune.experiment import Experiment, cell_slug, load_experiment

Echo = Callable[[str], None]
# The COVID operating point a package flags at unless told otherwise: screening wants few
# missed cases, so the higher sensitivity (the two points are 90% and 95%).
DEFAULT_OPERATING_POINT = "0.95"


@dataclass(frozen=True)
class ExperimentSource:
    """An experiment to export from: its local folder (or a local copy), and where it lives."""

    experiment: Experiment
    location: str

    @property
    def remote(self) -> bool:
        return "://" in self.location


@contextmanager
def open_experiment(location: str | Path) -> Iterator[ExperimentSource]:
    """The experiment at a folder or a storage URI (read through a temporary local copy
    without checkpoints), checked to have a finished evaluation.

    Raises:
        DataError: no experiment there, or no evaluation (or one from before the model
            files the package needs).
    """
    from cxr_tune.storage import Storage, is_uri

    text = str(location)
    if not is_uri(text):
        exp = load_experiment(Path(text).expanduser())
        _check_evaluated(exp, text)
        yield ExperimentSource(exp, str(exp.folder))
        return
    storage, name = Storage.of_experiment(text)
    if not storage.exists(name):
        raise DataError(f"There is no experiment at '{text}'.")
    with tempfile.TemporaryDirectory(prefix="cxr_tune_export_") as scratch:
        copy = storage.download(name, Path(scratch) / name)
        exp = load_experiment(copy)
        _check_evaluated(exp, text)
        yield ExperimentSource(exp, storage.experiment(name))


def _check_evaluated(exp: Experiment, where: str) -> None:
    if not exp.evaluation or not best_entries(exp):
        raise DataError(
            f"The experiment {where} has no finished evaluation (no evaluation.json with a "
            f"best model): run `cxr-tune evaluate {where}` first."
        )


def best_entries(exp: Experiment) -> dict[str, dict[str, Any]]:
    """Cell -> the evaluation entry of its best configuration (as the report picks it)."""
    entries: dict[str, dict[str, Any]] = {}
    for entry in (exp.evaluation or {}).get("entries", []):
        roles = entry.get("roles") or [r.strip() for r in str(entry.get("role", "")).split(",")]
        if "best" in roles and entry.get("summary"):
            entries.setdefault(str(entry.get("cell")), entry)
    return entries


def choose_cells(exp: Experiment, cell: str | None) -> list[str]:
    """Every evaluated cell, or the one named (``DATASET/ARCH``).

    Raises:
        ConfigError: ``cell`` is not an evaluated cell (with a did-you-mean).
    """
    cells = list(best_entries(exp))
    if cell is None:
        return cells
    if cell not in cells:
        raise ConfigError("--cell: " + unknown_name_message("cell", cell, cells))
    return [cell]


@dataclass(frozen=True)
class ExportedModel:
    """What a package is written from: the network and the facts about it."""

    cell: str
    model: Any
    architecture: str
    classes: tuple[str, ...]
    task: str
    image_size: int
    dataset: str
    calibration: Any
    ood: Any
    info: dict[str, Any]
    card: dict[str, Any]


def gather(source: ExperimentSource, cell: str) -> ExportedModel:
    """The weights, calibration, OOD statistics and facts of a cell's best model.

    Raises:
        DataError: the evaluation wrote no model files for the cell (it predates them), or a
            file it names is missing.
    """
    from cxr_tune.calibration import Calibration
    from cxr_tune.evaluation.artefacts import read_manifest
    from cxr_tune.ood import OodStats

    exp = source.experiment
    entry = best_entries(exp)[cell]
    manifest = read_manifest(exp.folder, cell)
    if manifest is None or not manifest.get("weights"):
        raise DataError(
            f"The evaluation of {source.location} wrote no model files for {cell} (it "
            f"predates them, or its first seed diverged): run `cxr-tune evaluate "
            f"{source.location}` again, then export."
        )
    config = dict(manifest.get("config") or entry["config"])
    architecture = str(config["model"])
    classes = tuple(str(c) for c in entry["classes"])
    model = _load_weights(source, manifest, architecture, len(classes))
    calibration = (
        Calibration.from_dict(manifest["calibration"])
        if manifest.get("calibration")
        else Calibration.identity(str(entry["task"]), len(classes))
    )
    ood = None
    if manifest.get("ood"):
        path = exp.folder / str(manifest["ood"])
        if not path.is_file():
            raise DataError(f"{path} is missing: run `cxr-tune evaluate` again, then export.")
        ood = OodStats.load(path)
    info = package_info(exp, entry, manifest, source.location)
    dataset = str(config["dataset"])
    return ExportedModel(
        cell=cell,
        model=model,
        architecture=architecture,
        classes=classes,
        task=str(entry["task"]),
        image_size=int(config.get("image_size") or _dataset_record(exp, dataset).get("image_size")),
        dataset=dataset,
        calibration=calibration,
        ood=ood,
        info=info,
        card=card_facts(exp, entry, info),
    )


def _load_weights(
    source: ExperimentSource, manifest: Mapping[str, Any], architecture: str, classes: int
) -> Any:
    import torch

    from cxr_tune.constants import CHECKPOINT_FILE
    from cxr_tune.models import create_model

    weights = manifest["weights"]
    relative = str(weights["file"])
    model = create_model(architecture, num_classes=classes)
    local = source.experiment.folder / relative
    if weights.get("kind") == "state_dict":
        if not local.is_file():
            raise DataError(f"{local} is missing: run `cxr-tune evaluate` again, then export.")
        state = torch.load(local, map_location="cpu", weights_only=True)
    else:  # the search trial's final checkpoint: {"model": ..., ...}
        from cxr_tune.evaluation.runs import read_checkpoint_state

        folder = relative.rsplit("/", 1)[0] if relative.endswith(CHECKPOINT_FILE) else relative
        where = (
            f"{source.location.rstrip('/')}/{folder}"
            if source.remote
            else str(source.experiment.folder / folder)
        )
        if (
            not source.remote
            and not (source.experiment.folder / folder / CHECKPOINT_FILE).is_file()
        ):
            raise DataError(
                f"The checkpoint {where}/{CHECKPOINT_FILE} of the evaluated model is missing "
                "(deleted since the evaluation?): run `cxr-tune evaluate` again, then export."
            )
        state = read_checkpoint_state(where, torch.device("cpu"))["model"]
    model.load_state_dict(state)
    return model.eval()


def _dataset_record(exp: Experiment, name: str) -> dict[str, Any]:
    for info in exp.record.get("datasets", []):
        if str(info.get("name")) == name:
            return dict(info)
    return {}


def _operating_points(entry: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any]:
    points = (entry.get("clinical") or {}).get("operating_points")
    thresholds = manifest.get("operating_thresholds") or {}
    if not points or not thresholds:
        return {}
    classes = [str(c) for c in entry["classes"]]
    return {
        "class": points["class"],
        "index": classes.index(points["class"]) if points["class"] in classes else None,
        "thresholds": dict(thresholds),
        "default": DEFAULT_OPERATING_POINT,
        "chosen_on": points.get("chosen_on"),
        "rule": points.get("rule"),
        **{
            f"sensitivity_{_percent(k)}": v.get("sensitivity")
            for k, v in points.get("targets", {}).items()
        },
        **{
            f"specificity_at_sensitivity_{_percent(k)}": v.get("specificity")
            for k, v in points.get("targets", {}).items()
        },
    }


def _percent(key: str) -> str:
    return str(round(float(key) * 100))


def package_info(
    exp: Experiment, entry: Mapping[str, Any], manifest: Mapping[str, Any], location: str
) -> dict[str, Any]:
    """The metadata's ``cxr_tune`` block: where the model came from and what it scored."""
    config = dict(manifest.get("config") or entry["config"])
    dataset = _dataset_record(exp, str(config["dataset"]))
    cell = str(entry["cell"])
    transfers = [t for t in (exp.evaluation or {}).get("transfer", []) if t.get("cell") == cell]
    clinical = entry.get("clinical") or {}
    return {
        "experiment": {
            "name": exp.record.get("name") or exp.folder.name,
            "location": location,
            "cell": cell,
            "trial_id": manifest.get("trial_id"),
            "seed": manifest.get("seed"),
            "weights_from": (manifest.get("weights") or {}).get("kind"),
            "evaluated_at": (exp.evaluation or {}).get("written_at"),
        },
        "dataset_info": {
            "name": dataset.get("name", config["dataset"]),
            "key": dataset.get("key"),
            "source": dataset.get("source"),
            "dataset_hash": dataset.get("dataset_hash"),
            "split_hash": dataset.get("split_hash"),
            "sizes": dataset.get("sizes"),
        },
        "search": {
            "space": exp.record.get("space"),
            "plan": [line for line in exp.record.get("plan", []) if line.get("cell") == cell],
            "metric": exp.record.get("metric"),
            "profile": (exp.record.get("profile") or {}).get("name"),
            "trials": len(exp.trials_of(cell)),
        },
        "configuration": config,
        "test_metrics": entry.get("summary"),
        "test_images": len((exp.evaluation or {}).get("targets", {}).get(config["dataset"], [])),
        "evaluation_seeds": len(entry.get("runs", [])),
        "transfer": [_transfer_row(t) for t in transfers],
        "probe": entry.get("probe"),
        "saliency": entry.get("saliency"),
        "ece": clinical.get("calibration"),
        "operating_points": _operating_points(entry, manifest),
        "ood_rates": entry.get("ood"),
    }


def _transfer_row(t: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "test": t.get("test"),
        "classes": t.get("classes"),
        "macro_f1_own": t["own"]["macro_f1"],
        "macro_f1_external": t["external"]["macro_f1"],
        "macro_f1_drop": t["drop"]["macro_f1"],
        "macro_auroc_external": t["external"]["macro_auroc"],
        "ood": t.get("ood"),
    }


def card_facts(
    exp: Experiment, entry: Mapping[str, Any], info: Mapping[str, Any]
) -> dict[str, Any]:
    """The model card's facts (``cxr_tune.bundle.card``) from the package's information."""
    import time

    dataset = info["dataset_info"]
    search = info["search"]
    space = search.get("space") or {}
    ood_rates = info.get("ood_rates") or {}
    rates = {"own test split": (ood_rates.get("own") or {}).get("flag_rate")}
    rates.update(
        {name: value.get("flag_rate") for name, value in (ood_rates.get("external") or {}).items()}
    )
    ece = info.get("ece") or {}
    facts: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "dataset": {
            "name": dataset.get("name"),
            "hash": dataset.get("dataset_hash"),
            "split_hash": dataset.get("split_hash"),
            "sizes": dataset.get("sizes") or {},
            "description": f"from {dataset.get('source')}" if dataset.get("source") else None,
        },
        "search": {
            "space": space.get("name"),
            "trials": search.get("trials"),
            "metric": (search.get("metric") or {}).get("name"),
        },
        "configuration": {
            k: v
            for k, v in info["configuration"].items()
            if k not in ("dataset", "model") and not isinstance(v, (dict, list))
        },
        "metrics": {
            name: value
            for name, value in (info.get("test_metrics") or {}).items()
            if isinstance(value, Mapping) and "mean" in value
        },
        "external": [
            {
                "dataset": t["test"],
                "metric": "macro_f1",
                "own": t["macro_f1_own"],
                "external": t["macro_f1_external"],
                "drop": t["macro_f1_drop"],
            }
            for t in info.get("transfer", [])
        ],
        "probe": info.get("probe"),
        "saliency": info.get("saliency") if (info.get("saliency") or {}).get("available") else None,
        "calibration": {
            "temperatures": (ece.get("temperatures") or [[]])[0],
            "ece_before": ece.get("before"),
            "ece_after": ece.get("after"),
        }
        if ece
        else None,
        "operating_points": info.get("operating_points") or None,
    }
    if ood_rates:
        facts["ood"] = {
            "threshold": ood_rates.get("threshold", math.nan),
            "percentile": ood_rates.get("percentile", 99),
            "rates": {k: v for k, v in rates.items() if v is not None},
        }
    return {k: v for k, v in facts.items() if v is not None}


def export_experiment(
    location: str | Path,
    *,
    cell: str | None = None,
    out: str | Path | None = None,
    onnx: bool = False,
    force: bool = False,
    echo: Echo = print,
) -> list[Path]:
    """Write a model package for each evaluated cell's best model (or the one named).

    Args:
        location: the experiment folder or its storage URI.
        cell: ``DATASET/ARCH`` to export only that cell.
        out: the folder the packages go in, one sub-folder per cell (default: the experiment
            folder's ``packages/``, or ``./<name>-packages`` for a storage URI).
        onnx: also write ``models/model.onnx``, checked against TorchScript on test images.
        force: replace existing packages.

    Returns:
        The package folders.

    Raises:
        DataError: no experiment, no finished evaluation, missing model files.
        ConfigError: an unknown cell; a package already there without ``force``.
    """
    from cxr_tune.bundle.package import write_bundle

    with open_experiment(location) as source:
        exp = source.experiment
        cells = choose_cells(exp, cell)
        target = _output_folder(source, out)
        for name in cells:  # refuse before any writing, not after the first package
            _refuse_existing(target / cell_slug(name), force)
        written = []
        for name in cells:
            found = gather(source, name)
            images = _test_images(exp, found.dataset) if onnx else None
            folder = write_bundle(
                target / cell_slug(name),
                found.model,
                architecture=found.architecture,
                classes=found.classes,
                task=found.task,
                image_size=found.image_size,
                dataset=found.dataset,
                calibration=found.calibration,
                ood=found.ood,
                info=found.info,
                card=found.card,
                onnx_images=images,
                force=force,
            )
            echo(f"export: {name} -> {folder}")
            written.append(folder)
    return written


def _output_folder(source: ExperimentSource, out: str | Path | None) -> Path:
    if out is not None:
        return Path(out).expanduser()
    if source.remote:
        return Path.cwd() / f"{source.experiment.folder.name}-packages"
    return source.experiment.folder / "packages"


def _refuse_existing(folder: Path, force: bool) -> None:
    if folder.exists() and not force:
        raise ConfigError(
            f"{folder} already exists; a model package is never overwritten without --force."
        )


# The ONNX check runs on at most this many test images.
ONNX_CHECK_IMAGES = 32


def _test_images(exp: Experiment, dataset: str) -> Any:
    """A few of the dataset's test images (decoded from the cache) for the ONNX check."""
    import numpy as np

    from cxr_tune.evaluation.sources import reload_datasets

    arrays = reload_datasets(exp)[dataset]
    return np.asarray(arrays.split("test").images[:ONNX_CHECK_IMAGES])

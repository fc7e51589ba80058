"""``cxr-tune predict``: a model package (or an experiment's best model) on files and folders of
PNG, JPEG and DICOM images, one CSV row per file.

The files are decoded by the function training used (``cxr_tune.data.images.decode_file``, in
worker processes, ``reader.read_images``), so the network sees exactly the pixels it would have
seen in training; batches go through the package's TorchScript module (``models/model.ts``: the
preprocessing, the network and the calibration), while the workers decode the next ones. Rows
are written as they come: memory stays bounded whatever the number of files, and an interrupted
run keeps the rows it wrote.

A row: ``path``; ``predicted`` (the class with the highest probability; for multi-label data,
every label at or above 0.5, joined by ``;``); ``probability_<class>`` (calibrated) and
``raw_probability_<class>`` (the network's own softmax or sigmoid) for each class;
``covid_flag`` (1 when the calibrated COVID probability is at or above the package's operating
threshold; empty without a COVID class); ``ood_flag`` and ``ood_distance`` (the Mahalanobis
distance of the image's penultimate features to the training images', flagged above the
validation split's 99th percentile); ``error``: why a file has no prediction (missing, not an
image, corrupt, ...), the other columns then empty.

The operating point. A package carries the COVID thresholds chosen on the validation split for
90% and 95% sensitivity; ``predict`` flags at the 95% point unless ``--operating-point 90`` is
given: a flag meant to send an image for a closer look should miss few COVID cases, and the
price (lower specificity) is stated in the package's model card.

With ``--saliency DIR``, one overlay PNG per image (Grad-CAM of the predicted class,
``cxr_tune.saliency``), named ``<row>-<file name>.png``.

Never Ray (layer 6).
"""

from __future__ import annotations

import csv
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.errors import ConfigError, DataError

Echo = Callable[[str], None]
OPERATING_POINTS: dict[str, str] = {"90": "0.9", "95": "0.95"}
DEFAULT_OPERATING_POINT = "95"
# Probabilities and distances in the CSV: enough digits to compare with any float32 output.
DIGITS = ".8g"


@dataclass(frozen=True)
class PredictSummary:
    """What a prediction run did."""

    csv: Path
    rows: int
    predicted: int
    unreadable: int
    covid_flagged: int | None
    ood_flagged: int | None
    overlays: int
    threshold: float | None
    operating_point: str | None


def is_package(path: Path) -> bool:
    """Whether ``path`` is a model package folder (it has ``configs/metadata.json``)."""
    from cxr_tune.bundle.package import METADATA

    return (path / METADATA).is_file()


@contextmanager
def open_model(source: str, cell: str | None = None, echo: Echo = print) -> Iterator[Any]:
    """The model package at ``source``, or, for an experiment (folder or storage URI), its
    best model exported into a temporary package (the same files ``cxr-tune export`` writes).

    Raises:
        DataError: not a package of this format version, nor an experiment with a finished
            evaluation.
        ConfigError: an experiment with several cells and no (or an unknown) ``cell``.
    """
    from cxr_tune.bundle.package import load_bundle
    from cxr_tune.storage import is_uri

    path = Path(source).expanduser()
    if not is_uri(source) and is_package(path):
        if cell is not None:
            raise ConfigError(
                f"--cell: {source} is a model package (one model); --cell chooses among an "
                "experiment's cells."
            )
        yield load_bundle(path)
        return
    if not is_uri(source) and path.is_dir() and not _looks_like_experiment(path):
        raise DataError(
            f"{source} is neither a model package (no configs/metadata.json) nor an experiment "
            "folder (no cxr_tune.json); give a folder `cxr-tune export` wrote, or an "
            "experiment with a finished evaluation."
        )
    if not is_uri(source) and not path.exists():
        raise DataError(f"The model source {source} does not exist.")
    from cxr_tune.bundle.export import best_entries, export_experiment, open_experiment

    with open_experiment(source) as found:
        cells = list(best_entries(found.experiment))
    if cell is None and len(cells) > 1:
        raise ConfigError(
            f"{source} has {len(cells)} evaluated cells ({', '.join(cells)}): choose one with "
            "--cell DATASET/ARCH."
        )
    with tempfile.TemporaryDirectory(prefix="cxr_tune_predict_") as scratch:
        (folder,) = export_experiment(
            source, cell=cell or cells[0], out=Path(scratch), echo=lambda _line: None
        )
        echo(f"predict: using the best model of {cell or cells[0]} in {source}")
        yield load_bundle(folder)


def _looks_like_experiment(path: Path) -> bool:
    from cxr_tune.constants import EVALUATION_FILE, RECORD_FILE

    return (path / RECORD_FILE).is_file() or (path / EVALUATION_FILE).is_file()


def operating_threshold(bundle: Any, point: str) -> tuple[int | None, float | None]:
    """(index of the COVID output, its threshold at ``point``: "90" or "95"), or (None, None)
    for a package without a COVID class or without operating thresholds.

    Raises:
        ConfigError: ``point`` is not 90 or 95.
    """
    if point not in OPERATING_POINTS:
        raise ConfigError(
            f"--operating-point: the value is {point!r}, but must be one of "
            f"{', '.join(OPERATING_POINTS)} (% sensitivity on the validation split)."
        )
    points = bundle.info.get("operating_points") or {}
    index = points.get("index")
    threshold = (points.get("thresholds") or {}).get(OPERATING_POINTS[point])
    if index is None or threshold is None:
        return None, None
    return int(index), float(threshold)


def header(classes: Sequence[str]) -> list[str]:
    """The CSV's columns."""
    return [
        "path",
        "predicted",
        *(f"probability_{c}" for c in classes),
        *(f"raw_probability_{c}" for c in classes),
        "covid_flag",
        "ood_flag",
        "ood_distance",
        "error",
    ]


def predict_files(
    source: str,
    paths: Sequence[str],
    *,
    out: str | Path,
    saliency: str | Path | None = None,
    cell: str | None = None,
    operating_point: str = DEFAULT_OPERATING_POINT,
    batch_size: int | None = None,
    workers: int | None = None,
    echo: Echo = print,
    progress: bool | None = None,
) -> PredictSummary:
    """Predict every image under ``paths`` with the model at ``source`` into the CSV ``out``.

    Args:
        source: a model package folder, or an experiment (folder or storage URI).
        paths: files and folders (folders are walked recursively, sorted).
        saliency: a folder for one Grad-CAM overlay per image.
        cell: with an experiment of several cells, which one (``DATASET/ARCH``).
        operating_point: the COVID flag's sensitivity on the validation split, "90" or "95".
        batch_size, workers: images per model call, decoding processes (defaults:
            ``reader``'s).
        progress: show a progress bar (default: when stderr is a terminal).

    Raises:
        DataError: nothing to read, an unreadable source.
        ConfigError: a bad option (an output that is a folder, an unknown cell or point).
    """
    import torch

    from cxr_tune.bundle.reader import (
        DEFAULT_BATCH,
        default_workers,
        list_inputs,
        model_threads,
        read_images,
    )

    target = Path(out).expanduser()
    if target.is_dir():
        raise ConfigError(f"--out: {target} is a folder; give the CSV file's path.")
    if operating_point not in OPERATING_POINTS:
        raise ConfigError(
            f"--operating-point: the value is {operating_point!r}, but must be one of "
            f"{', '.join(OPERATING_POINTS)} (% sensitivity on the validation split)."
        )
    entries = list_inputs(paths)  # an empty folder stops here, before a model is loaded
    workers = default_workers() if workers is None else workers
    with open_model(source, cell, echo) as bundle:
        module = bundle.torchscript()
        positive, threshold = operating_threshold(bundle, operating_point)
        mapper = _saliency_mapper(bundle) if saliency is not None else None
        overlays = Path(saliency).expanduser() if saliency is not None else None
        torch.set_num_threads(model_threads(workers))
        target.parent.mkdir(parents=True, exist_ok=True)
        counts = {"rows": 0, "predicted": 0, "covid": 0, "ood": 0, "overlays": 0}
        show = sys.stderr.isatty() if progress is None else progress
        with (
            open(target, "w", newline="", encoding="utf-8") as handle,
            _bar(len(entries), show) as bar,
        ):
            writer = csv.writer(handle)
            writer.writerow(header(bundle.classes))
            batches = read_images(
                entries, bundle.image_size, batch_size=batch_size or DEFAULT_BATCH, workers=workers
            )
            for batch in batches:
                rows = _predict_batch(batch, module, bundle, positive, threshold)
                if mapper is not None and overlays is not None and len(batch.images):
                    counts["overlays"] += _write_overlays(mapper, batch, overlays, counts["rows"])
                writer.writerows(rows)
                handle.flush()  # an interrupted run keeps what it predicted
                counts["rows"] += len(rows)
                counts["predicted"] += int(batch.decoded.sum())
                counts["covid"] += sum(1 for r in rows if r[-4] == "1")
                counts["ood"] += sum(1 for r in rows if r[-3] == "1")
                bar.update(len(rows))
    has_ood = bundle.ood is not None
    return PredictSummary(
        csv=target,
        rows=counts["rows"],
        predicted=counts["predicted"],
        unreadable=counts["rows"] - counts["predicted"],
        covid_flagged=counts["covid"] if threshold is not None else None,
        ood_flagged=counts["ood"] if has_ood else None,
        overlays=counts["overlays"],
        threshold=threshold,
        operating_point=operating_point if threshold is not None else None,
    )


@contextmanager
def _bar(total: int, show: bool) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, unit="img", disable=not show, file=sys.stderr) as bar:
        yield bar


def _predict_batch(
    batch: Any, module: Any, bundle: Any, positive: int | None, threshold: float | None
) -> list[list[str]]:
    """One CSV row per file of the batch, in order."""
    import torch

    outputs: dict[str, np.ndarray] = {}
    if len(batch.images):
        with torch.no_grad():
            found = module.outputs(torch.as_tensor(batch.images))
        outputs = {k: v.float().numpy() for k, v in found.items()}
    distances = (
        bundle.ood.distances(outputs["features"]) if bundle.ood is not None and outputs else None
    )
    rows, k = [], 0
    empty = [""] * (2 * len(bundle.classes) + 4)
    for path, error in zip(batch.paths, batch.errors, strict=True):
        if error is not None:
            rows.append([path, *empty, error])
            continue
        calibrated, raw = outputs["probabilities"][k], outputs["raw"][k]
        covid = ""
        if positive is not None and threshold is not None:
            covid = "1" if float(calibrated[positive]) >= threshold else "0"
        ood_flag = ood_distance = ""
        if distances is not None:
            ood_distance = format(float(distances[k]), DIGITS)
            ood_flag = "1" if distances[k] > bundle.ood.threshold else "0"
        rows.append(
            [
                path,
                _predicted(calibrated, bundle),
                *(format(float(v), DIGITS) for v in calibrated),
                *(format(float(v), DIGITS) for v in raw),
                covid,
                ood_flag,
                ood_distance,
                "",
            ]
        )
        k += 1
    return rows


def _predicted(probabilities: np.ndarray, bundle: Any) -> str:
    if bundle.task == "multilabel":
        labels = [c for c, p in zip(bundle.classes, probabilities, strict=True) if p >= 0.5]
        return ";".join(labels) or "none"
    return str(bundle.classes[int(np.argmax(probabilities))])


def _saliency_mapper(bundle: Any) -> Any:
    import torch

    from cxr_tune.engine import LoopSettings
    from cxr_tune.saliency import SaliencyMapper

    settings = LoopSettings(device=torch.device("cpu"))
    return SaliencyMapper(
        bundle.model(), bundle.architecture, settings, image_size=bundle.image_size
    )


def _write_overlays(mapper: Any, batch: Any, folder: Path, first_row: int) -> int:
    """One overlay PNG per decoded file of the batch: ``<row>-<file name>.png``."""
    from cxr_tune.saliency import write_overlay

    maps, _ = mapper.maps(batch.images)
    written, k = 0, 0
    for offset, (path, error) in enumerate(zip(batch.paths, batch.errors, strict=True)):
        if error is not None:
            continue
        name = f"{first_row + offset:06d}-{_safe_name(Path(path).name)}.png"
        write_overlay(folder / name, batch.images[k], maps[k])
        written += 1
        k += 1
    return written


def _safe_name(name: str) -> str:
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return kept.strip("._") or "image"


def describe(summary: PredictSummary) -> str:
    """The one-paragraph account the command prints."""
    parts = [f"predict: {summary.rows} file(s) -> {summary.csv}"]
    parts.append(f"{summary.predicted} predicted, {summary.unreadable} could not be read")
    if summary.covid_flagged is not None:
        parts.append(
            f"COVID flagged {summary.covid_flagged} (threshold {summary.threshold:.4g}, "
            f"{summary.operating_point}% sensitivity on validation)"
        )
    if summary.ood_flagged is not None:
        parts.append(f"out of distribution {summary.ood_flagged}")
    if summary.overlays:
        parts.append(f"{summary.overlays} saliency overlay(s)")
    return "; ".join(parts) + "."

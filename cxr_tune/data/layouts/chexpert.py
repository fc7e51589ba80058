"""Stanford CheXpert v1.0 (2019): 224,316 radiographs of 65,240 patients, 14 observations.

Layout: ``CheXpert-v1.0-small/`` (downsampled JPEGs) or ``CheXpert-v1.0/``, holding ``train.csv``
(223,414 rows), ``valid.csv`` (234 images of 200 patients, radiologists' consensus, no uncertain
labels) and the ``train/`` and ``valid/`` folders. ``Path`` is relative to the folder *above*
the dataset folder (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``): its
first part is dropped, so a renamed dataset folder still reads. The patient id comes from the
path (``patient00001``) and groups the split.

Each of the 14 observations is 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not
mentioned, read as negative, as the CheXpert paper does). Uncertain labels follow the option
``uncertain``, the paper's policies: ``ones`` (U-Ones, positive), ``zeros`` (U-Zeros, negative)
or ``ignore`` (U-Ignore, the default: masked, so the loss and the metrics skip them).

The official split is kept: ``valid.csv``, the only labelled images outside training, is the
test split (the competition's own test set is hidden); the validation split is carved out of
``train.csv`` by patient.

Option ``views``: views to keep, by ``Frontal/Lateral`` (Frontal, Lateral) or ``AP/PA`` value
(AP, PA, LL, RL); a row is kept when either of its values is chosen. Frontal by default.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.layouts.common import check_options
from cxr_tune.data.layouts.tables import (
    choose_name,
    choose_views,
    csv_rows,
    header_of,
    index_files,
)
from cxr_tune.data.types import UNCERTAIN_POLICIES, Manifest, Record, SkipReport
from cxr_tune.errors import DataError

NAME = "chexpert"
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
VIEWS: tuple[str, ...] = ("Frontal", "Lateral", "AP", "PA", "LL", "RL")
DEFAULT_VIEWS: tuple[str, ...] = ("Frontal",)
DEFAULT_UNCERTAIN = "ignore"
POLICY_NAMES = {"ones": "U-Ones", "zeros": "U-Zeros", "ignore": "U-Ignore"}
POLICY_MEANING = {
    "ones": "counted as positive",
    "zeros": "counted as negative",
    "ignore": "masked: skipped by the loss and the metrics",
}
REQUIRED_COLUMNS: tuple[str, ...] = ("Path", "Frontal/Lateral", "AP/PA")
# CSV file -> the split its rows keep.
CSV_SPLITS: tuple[tuple[str, str], ...] = (("train.csv", "train"), ("valid.csv", "test"))
_PATIENT = re.compile(r"^patient(\d+)$", re.IGNORECASE)

SKIP_VIEW = "view not chosen ({value})"
SKIP_MISSING = "listed in {csv}, file missing"
SKIP_DUPLICATE_ROW = "listed twice in the CSV files"
SKIP_BAD_VALUE = "label value not 1, 0, -1 or blank"
SKIP_UNLISTED = "in train/ or valid/ but in no CSV file"


def detect(folder: Path) -> Detection | None:
    """Recognise ``train.csv`` (or ``valid.csv``) with Path and Frontal/Lateral columns."""
    for name, _ in CSV_SPLITS:
        columns = {c.lower() for c in header_of(folder / name)}
        if {"path", "frontal/lateral"} <= columns:
            return Detection(NAME, folder, f"{name} with Path, Frontal/Lateral columns", 10)
    return None


def parse(root: Path, options: Mapping[str, Any]) -> Manifest:
    """Read ``train.csv`` and ``valid.csv`` into a multi-label manifest.

    Raises:
        DataError: train.csv is missing, or a required column is absent.
        ConfigError: an invalid ``views`` or ``uncertain`` option (with a did-you-mean).
    """
    chosen = check_options(NAME, options, ("views", "uncertain"))
    views = choose_views(chosen.get("views", DEFAULT_VIEWS), VIEWS)
    policy = choose_name(
        chosen.get("uncertain", DEFAULT_UNCERTAIN), UNCERTAIN_POLICIES, "uncertain"
    )
    if not (root / "train.csv").is_file():
        raise DataError(
            f"The folder '{root}' has no train.csv, but the CheXpert layout holds train.csv, "
            "valid.csv and the train/ and valid/ folders."
        )
    skipped = SkipReport()
    folders = [root / d for d in ("train", "valid", "test") if (root / d).is_dir()]
    files = index_files(folders, root, skipped)
    reader = _Reader(files, {v.lower() for v in views}, policy, skipped)
    notes: list[str] = []
    for csv_name, split in CSV_SPLITS:
        if (root / csv_name).is_file():
            notes += reader.read(root / csv_name, split)
        else:
            notes.append(f"No {csv_name}: the test split is carved from train.csv by patient.")
    for rel, path in files.items():
        if rel not in reader.listed:
            skipped.add(SKIP_UNLISTED, path)
    notes += _policy_notes(policy, reader.uncertain)
    notes.append(
        f"Views kept: {', '.join(views)}. Official split kept: valid.csv is the test split; val "
        "is carved from train.csv by patient."
    )
    return Manifest(
        dataset=NAME,
        root=root,
        task="multilabel",
        classes=tuple(sorted({label for r in reader.records for label in r.labels})),
        records=tuple(reader.records),
        skipped=skipped,
        notes=tuple(notes),
        uncertain_policy=policy,
    )


class _Reader:
    """Turns CSV rows into records, remembering what it has seen across both files."""

    def __init__(
        self, files: dict[str, str], views: set[str], policy: str, skipped: SkipReport
    ) -> None:
        self.files = files
        self.views = views
        self.policy = policy
        self.skipped = skipped
        self.records: list[Record] = []
        self.listed: set[str] = set()
        self.uncertain: Counter[str] = Counter()

    def read(self, path: Path, split: str) -> list[str]:
        """Add the rows of one CSV file; returns notes."""
        column, rows, encoding = csv_rows(path, REQUIRED_COLUMNS)
        at_path, at_frontal, at_appa = (column[c.lower()] for c in REQUIRED_COLUMNS)
        observed = [(name, column[name.lower()]) for name in OBSERVATIONS if name.lower() in column]
        notes = [] if encoding == "utf-8" else [f"{path.name} is not UTF-8; read as {encoding}."]
        absent = [name for name in OBSERVATIONS if name.lower() not in column]
        if absent:
            notes.append(f"{path.name} has no column {', '.join(absent)}: those labels are absent.")
        for row in rows:
            rel = _relative(row[at_path])
            reason = self._skip_reason(rel, row[at_frontal], row[at_appa], path.name)
            self.listed.add(rel)
            if reason is None:
                labels, masked = self._labels(row, observed)
                if labels is None:
                    reason = SKIP_BAD_VALUE
            if reason is not None:
                self.skipped.add(reason, self.files.get(rel, rel))
                continue
            assert labels is not None  # a bad value has set the reason
            self.records.append(
                Record(
                    path=Path(self.files[rel]),
                    labels=labels,
                    group=_patient(rel),
                    split=split,
                    masked=masked,
                )
            )
        return notes

    def _skip_reason(self, rel: str, frontal: str, appa: str, csv_name: str) -> str | None:
        if rel in self.listed:
            return SKIP_DUPLICATE_ROW
        if frontal.lower() not in self.views and appa.lower() not in self.views:
            shown = "/".join(v for v in (frontal, appa) if v) or "empty"
            return SKIP_VIEW.format(value=shown)
        if rel not in self.files:
            return SKIP_MISSING.format(csv=csv_name)
        return None

    def _labels(
        self, row: list[str], observed: list[tuple[str, int]]
    ) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        """(positive labels, masked labels) under the policy; (None, ()) for a bad value."""
        positive: list[str] = []
        masked: list[str] = []
        for name, k in observed:
            value = _value(row[k])
            if value is None:
                return None, ()
            if value == -1:
                self.uncertain[name] += 1
                if self.policy == "ones":
                    positive.append(name)
                elif self.policy == "ignore":
                    masked.append(name)
            elif value == 1:
                positive.append(name)
        return tuple(positive), tuple(masked)


def _value(text: str) -> int | None:
    """``"1.0"`` -> 1, ``"0"`` -> 0, ``"-1.0"`` -> -1, ``""`` -> 0 (not mentioned); else None."""
    if not text:
        return 0
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (1.0, 0.0, -1.0) else None


def _relative(path_text: str) -> str:
    """The CSV's Path, relative to the dataset folder (its first part, the folder, dropped)."""
    parts = [p for p in path_text.replace("\\", "/").split("/") if p and p != "."]
    if parts and parts[0].lower() not in ("train", "valid", "test"):
        parts = parts[1:]
    return "/".join(parts)


def _patient(rel: str) -> str | None:
    for part in rel.split("/"):
        found = _PATIENT.match(part)
        if found:
            return f"patient:{int(found.group(1))}"
    return None


def _policy_notes(policy: str, uncertain: Counter[str]) -> list[str]:
    total = sum(uncertain.values())
    head = (
        f"Uncertain labels (-1): policy {policy} ({POLICY_NAMES[policy]}, "
        f"{POLICY_MEANING[policy]}); {total} uncertain values in the kept rows"
    )
    if not total:
        return [head + "."]
    top = ", ".join(f"{name} {n}" for name, n in uncertain.most_common(4))
    return [f"{head} (most: {top})."]


DATASETS.add(
    NAME,
    DatasetSpec(
        name=NAME,
        title="Stanford CheXpert v1.0 (14 observations with uncertain labels, multi-label)",
        task="multilabel",
        parse=parse,
        detect=detect,
        options=("views", "uncertain"),
        expects="train.csv and valid.csv (Path, Frontal/Lateral, AP/PA, 14 observations)",
    ),
)

"""NIH Clinical Center ChestX-ray14 (2017): 112,120 frontal PNGs of 30,805 patients, multi-label.

Layout: ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``, preferred when both are there)
beside ``images_001/images/`` ... ``images_012/images/`` (or one ``images/`` folder), and the
official patient-wise split ``train_val_list.txt`` / ``test_list.txt``. Each CSV row is one image:
``Image Index`` (the file name), ``Finding Labels`` (findings joined by ``|``, or ``No Finding``),
``Patient ID`` (groups the split) and ``View Position`` (PA or AP).

Labels are the 14 findings; ``No Finding`` is no positive label (an all-zero row). The official
split is kept: ``test_list.txt`` is the test split, and the validation split is carved out of
``train_val_list.txt`` by patient. Without the two lists, the usual grouped split is made (and a
note says so). ``BBox_List_2017.csv`` holds boxes for 984 images and is not a label file.

Parser option ``views``: the View Position values to keep (PA, AP; both by default).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.layouts.common import check_options, subdirs
from cxr_tune.data.layouts.tables import choose_views, csv_rows, header_of, index_files
from cxr_tune.data.types import Manifest, Record, SkipReport
from cxr_tune.errors import DataError

NAME = "nih_chestxray14"
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
VIEWS: tuple[str, ...] = ("PA", "AP")
ENTRY_PREFIX = "data_entry_2017"
REQUIRED_COLUMNS: tuple[str, ...] = ("Image Index", "Finding Labels", "Patient ID", "View Position")
TRAIN_LIST = "train_val_list"
TEST_LIST = "test_list"

SKIP_VIEW = "view not chosen ({value})"
SKIP_MISSING = "listed in Data_Entry, file missing"
SKIP_DUPLICATE_ROW = "listed twice in Data_Entry"
SKIP_UNLISTED = "in the image folders but not in Data_Entry"
SKIP_NO_SPLIT = "in neither train_val_list.txt nor test_list.txt"
SKIP_BOTH_SPLITS = "in both train_val_list.txt and test_list.txt"
SKIP_SAME_NAME = "file name found in two image folders"


def detect(folder: Path) -> Detection | None:
    """Recognise ``Data_Entry_2017*.csv`` (with Image Index, Finding Labels) + image folders."""
    entry = _entry_file(folder)
    if entry is None or not _image_folders(folder):
        return None
    columns = {c.lower() for c in header_of(entry)}
    if not {"image index", "finding labels"} <= columns:
        return None
    return Detection(NAME, folder, f"{entry.name} with Image Index/Finding Labels + images*/", 10)


def parse(root: Path, options: Mapping[str, Any]) -> Manifest:
    """Read the Data_Entry table, the image folders and the official split lists.

    Raises:
        DataError: the Data_Entry file or the image folders are missing, or a required column
            is absent.
        ConfigError: an invalid ``views`` option.
    """
    chosen = check_options(NAME, options, ("views",))
    views = choose_views(chosen.get("views", VIEWS), VIEWS)
    entry = _entry_file(root)
    folders = _image_folders(root)
    if entry is None or not folders:
        raise DataError(
            f"The folder '{root}' has no Data_Entry_2017.csv and images*/ folder, but the NIH "
            "ChestX-ray14 layout holds both."
        )
    skipped = SkipReport()
    files = _files_by_name(index_files(folders, root, skipped), skipped)
    split_of, split_notes = _official_split(root)
    records, listed, notes = _read_entries(entry, files, views, split_of, skipped)
    for name, path in files.items():
        if name not in listed:
            skipped.add(SKIP_UNLISTED, path)
    notes += split_notes
    notes.append(f"Views kept: {', '.join(views)}. Labels: the findings; No Finding is none.")
    if (root / "BBox_List_2017.csv").is_file():
        notes.append("BBox_List_2017.csv (boxes of 984 images) is not a label file: ignored.")
    return Manifest(
        dataset=NAME,
        root=root,
        task="multilabel",
        classes=tuple(sorted({label for r in records for label in r.labels})),
        records=tuple(records),
        skipped=skipped,
        notes=tuple(notes),
    )


def _entry_file(folder: Path) -> Path | None:
    """``Data_Entry_2017*.csv`` in ``folder``; the v2020 revision wins over the 2017 file."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file()]
    except OSError:
        return None
    found = sorted(
        n for n in names if n.lower().startswith(ENTRY_PREFIX) and n.lower().endswith(".csv")
    )
    return folder / found[-1] if found else None


def _image_folders(folder: Path) -> list[Path]:
    """``images`` and ``images_NNN`` subfolders, in name order."""
    try:
        return [d for d in subdirs(folder) if d.name.lower().startswith("images")]
    except DataError:
        return []


def _files_by_name(images: dict[str, str], skipped: SkipReport) -> dict[str, str]:
    """File name -> path (Image Index is a bare file name); a name met twice is skipped."""
    by_name: dict[str, str] = {}
    for rel in sorted(images):
        name = rel.rsplit("/", 1)[-1]
        if name in by_name:
            skipped.add(SKIP_SAME_NAME, images[rel])
            continue
        by_name[name] = images[rel]
    return by_name


def _official_split(root: Path) -> tuple[dict[str, str] | None, list[str]]:
    """File name -> "train" or "test" from the official lists; None when they are absent."""
    lists = {TRAIN_LIST: _list_file(root, TRAIN_LIST), TEST_LIST: _list_file(root, TEST_LIST)}
    if lists[TRAIN_LIST] is None or lists[TEST_LIST] is None:
        missing = " and ".join(f"{k}.txt" for k, v in lists.items() if v is None)
        return None, [f"No {missing}: split by patient instead of the official split."]
    split_of: dict[str, str] = {}
    for key, split in ((TRAIN_LIST, "train"), (TEST_LIST, "test")):
        path = lists[key]
        assert path is not None
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name = line.strip()
                if name:
                    # A name on both lists is marked; such rows are skipped.
                    split_of[name] = "both" if split_of.get(name, split) != split else split
    return split_of, [
        "Official split kept: test_list.txt is the test split; val is carved from "
        "train_val_list.txt by patient."
    ]


def _list_file(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.txt", f"{stem}_NIH.txt"):
        if (root / name).is_file():
            return root / name
    return None


def _read_entries(
    entry: Path,
    files: dict[str, str],
    views: tuple[str, ...],
    split_of: dict[str, str] | None,
    skipped: SkipReport,
) -> tuple[list[Record], set[str], list[str]]:
    """Records of the kept rows, the names of every listed row, and notes."""
    column, rows, encoding = csv_rows(entry, REQUIRED_COLUMNS)
    at = [column[c.lower()] for c in REQUIRED_COLUMNS]
    wanted = {v.upper() for v in views}
    records: list[Record] = []
    seen: set[str] = set()
    unknown: Counter[str] = Counter()
    for row in rows:
        name, findings, patient, view = (row[k] for k in at)
        reason = _row_skip_reason(name, view, wanted, split_of, seen, files)
        seen.add(name)
        if reason is not None:
            skipped.add(reason, files.get(name, name))
            continue
        labels = _labels(findings)
        unknown.update(label for label in labels if label not in FINDINGS)
        records.append(
            Record(
                path=Path(files[name]),
                labels=labels,
                group=f"patient:{_patient(patient, name)}",
                split=split_of[name] if split_of is not None else None,
            )
        )
    notes = [f"Labels read from {entry.name}."]
    if encoding != "utf-8":
        notes.append(f"{entry.name} is not UTF-8; read as {encoding}.")
    if unknown:
        shown = ", ".join(f"{label} ({n})" for label, n in unknown.most_common())
        notes.append(f"Labels outside the 14 findings, kept as labels: {shown}.")
    return records, seen, notes


def _row_skip_reason(
    name: str,
    view: str,
    wanted: set[str],
    split_of: dict[str, str] | None,
    seen: set[str],
    files: dict[str, str],
) -> str | None:
    if name in seen:
        return SKIP_DUPLICATE_ROW
    if view.upper() not in wanted:
        return SKIP_VIEW.format(value=view or "empty")
    if split_of is not None:
        split = split_of.get(name)
        if split is None:
            return SKIP_NO_SPLIT
        if split == "both":
            return SKIP_BOTH_SPLITS
    if name not in files:
        return SKIP_MISSING
    return None


def _labels(findings: str) -> tuple[str, ...]:
    """``"Effusion|Mass"`` -> ``("Effusion", "Mass")``; ``"No Finding"`` -> ``()``."""
    tokens = tuple(t.strip() for t in findings.split("|") if t.strip())
    return tuple(t for t in tokens if t != NO_FINDING)


def _patient(value: str, name: str) -> str:
    """The patient id without leading zeros (the CSV has ``12``, file names ``00000012_000``)."""
    text = value.strip() or name.split("_", 1)[0]
    return str(int(text)) if text.isdigit() else text


DATASETS.add(
    NAME,
    DatasetSpec(
        name=NAME,
        title="NIH ChestX-ray14 (112,120 frontal images, 14 findings, multi-label)",
        task="multilabel",
        parse=parse,
        detect=detect,
        options=("views",),
        expects="Data_Entry_2017.csv and images_001/images/ ... (or images/)",
    ),
)

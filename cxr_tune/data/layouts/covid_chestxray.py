"""Dataset 3: ieee8023/covid-chestxray-dataset (``metadata.csv`` + ``images/``), multi-label.

Each row of ``metadata.csv`` is one image. Labels are the tokens of the hierarchical ``finding``
(``Pneumonia/Viral/COVID-19`` -> Pneumonia, Viral, COVID-19), whitespace stripped. Rows whose
finding is ``todo`` or ``Unknown`` have no label and are dropped; only ``X-ray`` modality and the
chosen views (frontal by default) are kept. ``patientid`` is a string (``319a``) and groups the
split. The header ends with a trailing comma, and copies in the wild may be Latin-1: both are
read without complaint.

Parser option ``views``: the view names to keep (a list, or a comma-separated string), matched
case-insensitively.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.images import file_skip_reason
from cxr_tune.data.layouts.common import check_options, find_subdir, walk_files
from cxr_tune.data.layouts.tables import choose_views, csv_rows, header_of
from cxr_tune.data.types import Manifest, Record, SkipReport
from cxr_tune.errors import DataError

NAME = "covid_chestxray"
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "AP Supine", "AP semi erect", "AP erect")
# Every view metadata.csv names (L: lateral; Axial and Coronal: CT, left out by modality anyway).
VIEWS: tuple[str, ...] = (*FRONTAL_VIEWS, "L", "Axial", "Coronal")
REQUIRED_COLUMNS: tuple[str, ...] = ("patientid", "finding", "view", "modality", "filename")
NO_LABEL_FINDINGS = frozenset({"todo", "unknown"})

SKIP_MODALITY = "not an X-ray (modality {value})"
SKIP_VIEW = "view not chosen ({value})"
SKIP_NO_LABEL = "no label (finding todo/Unknown)"
SKIP_MISSING = "listed in metadata.csv, file missing"
SKIP_DUPLICATE_ROW = "listed twice in metadata.csv"
SKIP_UNLISTED = "in images/ but not in metadata.csv"


def detect(folder: Path) -> Detection | None:
    """Recognise ``metadata.csv`` (with patientid, finding, view, modality, filename) + images/."""
    csv_path = folder / "metadata.csv"
    if not csv_path.is_file() or find_subdir(folder, "images") is None:
        return None
    columns = {c.lower() for c in header_of(csv_path)}
    if not set(REQUIRED_COLUMNS) <= columns:
        return None
    return Detection(NAME, folder, "metadata.csv with patientid/finding/view columns + images/", 10)


def parse(root: Path, options: Mapping[str, Any]) -> Manifest:
    """Read ``metadata.csv`` and ``images/`` into a multi-label manifest.

    Raises:
        DataError: metadata.csv or images/ is missing, or a required column is absent.
        ConfigError: an invalid ``views`` option.
    """
    chosen = check_options(NAME, options, ("views",))
    views = choose_views(chosen.get("views", FRONTAL_VIEWS), VIEWS)
    csv_path = root / "metadata.csv"
    images_dir = find_subdir(root, "images")
    if not csv_path.is_file() or images_dir is None:
        raise DataError(
            f"The folder '{root}' has no metadata.csv and images/ folder, but the "
            "covid-chestxray-dataset layout holds both."
        )
    column, cells, encoding = csv_rows(csv_path, REQUIRED_COLUMNS)
    # By lower-case column name; the header's trailing comma (an unnamed column) is left out.
    rows = [{name: row[k] for name, k in column.items()} for row in cells]
    files = _index_files(root, images_dir)
    skipped = SkipReport()
    notes = [] if encoding == "utf-8" else [f"metadata.csv is not UTF-8; read as {encoding}."]
    records, used = _rows_to_records(rows, views, files, skipped)
    for key, path in sorted(files.items()):
        if key not in used:
            skipped.add(file_skip_reason(path.name, path) or SKIP_UNLISTED, path)
    classes = sorted({label for r in records for label in r.labels})
    notes.append(f"Views kept: {', '.join(views)}.")
    return Manifest(
        dataset=NAME,
        root=root,
        task="multilabel",
        classes=tuple(classes),
        records=tuple(records),
        skipped=skipped,
        notes=tuple(notes),
    )


def _index_files(root: Path, images_dir: Path) -> dict[str, Path]:
    """Lower-case relative path (from root) -> file, for every file under images/."""
    return {
        os.path.relpath(p, root).replace(os.sep, "/").lower(): p for p in walk_files(images_dir)
    }


def _rows_to_records(
    rows: list[dict[str, str]], views: tuple[str, ...], files: dict[str, Path], skipped: SkipReport
) -> tuple[list[Record], set[str]]:
    wanted = {" ".join(v.split()).lower() for v in views}
    records: list[Record] = []
    used: set[str] = set()
    kept: set[str] = set()
    for row in rows:
        folder = row.get("folder", "").strip() or "images"
        key = f"{folder}/{row['filename'].strip()}".lower()
        where = key if key in files else f"images/{row['filename'].strip()}".lower()
        shown = files.get(where, where)
        reason = _row_skip_reason(row, wanted)
        if reason is None and where in kept:
            reason = SKIP_DUPLICATE_ROW
        if reason is None and where not in files:
            reason = SKIP_MISSING
        if where in files:
            used.add(where)
        if reason is not None:
            skipped.add(reason, shown)
            continue
        kept.add(where)
        records.append(_make_record(row, files[where]))
    return records, used


def _row_skip_reason(row: dict[str, str], wanted_views: set[str]) -> str | None:
    modality = row["modality"].strip()
    if modality.lower() != "x-ray":
        return SKIP_MODALITY.format(value=modality or "empty")
    view = " ".join(row["view"].split())
    if view.lower() not in wanted_views:
        return SKIP_VIEW.format(value=view or "empty")
    tokens = finding_tokens(row["finding"])
    if not tokens or any(t.lower() in NO_LABEL_FINDINGS for t in tokens):
        return SKIP_NO_LABEL
    return None


def finding_tokens(finding: str) -> tuple[str, ...]:
    """``"Pneumonia/Viral/Herpes "`` -> ``("Pneumonia", "Viral", "Herpes")``."""
    return tuple(t.strip() for t in finding.split("/") if t.strip())


def _make_record(row: dict[str, str], path: Path) -> Record:
    patient = row["patientid"].strip()
    source = row.get("url", "").strip() or row.get("doi", "").strip() or None
    return Record(
        path=path,
        labels=finding_tokens(row["finding"]),
        group=f"patient:{patient}" if patient else None,
        source=source,
    )


DATASETS.add(
    NAME,
    DatasetSpec(
        name=NAME,
        title="ieee8023/covid-chestxray-dataset (paper's updated Dataset 3, multi-label)",
        task="multilabel",
        parse=parse,
        detect=detect,
        options=("views",),
        expects="metadata.csv (patientid, finding, view, modality, filename, ...) and images/",
    ),
)

"""Dataset 1: Kaggle "COVID-19 Radiography Database" (v4+), four classes.

Layout: ``<Class>/images/*.png`` for COVID, Lung_Opacity, Normal and "Viral Pneumonia" (with a
space), lung masks under ``<Class>/masks/`` (same file names; never trained on, kept with each
image for probes that blank the lungs), and ``<Class>.metadata.xlsx`` whose URL
column names each image's source collection. FILE NAME in the sheet has no extension and its case
may differ from the file's (``NORMAL-1`` vs ``Normal-1.png``): matching is case-insensitive.

Older releases (v1-v3: ``NORMAL/`` in capitals, ``COVID-19/``, images directly in the class
folders) are recognised and read from their class folders as they are, with a note saying so:
their classes and counts differ from the paper's Dataset 1.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.images import IMAGE_EXTENSIONS, file_skip_reason
from cxr_tune.data.layouts.common import (
    check_options,
    find_subdir,
    has_image,
    list_images,
    subdirs,
    walk_files,
)
from cxr_tune.data.types import Manifest, Record, SkipReport
from cxr_tune.errors import DataError

NAME = "covid19_radiography"
CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
# Class folder names of the v1-v3 releases.
OLD_CLASSES: tuple[str, ...] = (
    "COVID",
    "COVID-19",
    "Lung_Opacity",
    "NORMAL",
    "Normal",
    "Viral Pneumonia",
)
# Any of these folder names marks a pre-v4 release when there are no images/ subfolders.
_OLD_MARKERS = frozenset({"NORMAL", "COVID-19", "Viral Pneumonia"})
OLD_RELEASE_NOTE = (
    "Older release (v1-v3) of the COVID-19 Radiography Database: {found} hold images directly "
    "(no images/ subfolders). Read as {n} classes from the folder names; the paper's Dataset 1 is "
    "v4+ (COVID, Lung_Opacity, Normal, Viral Pneumonia; 21,165 images), so results differ."
)


def detect(folder: Path) -> Detection | None:
    """Recognise v4+ (``<Class>/images/``) or an older release (``NORMAL/`` ... no images/)."""
    current = [c for c in CLASSES if _images_dir(folder, c) is not None]
    if len(current) >= 2:
        return Detection(
            NAME,
            folder,
            f"class folders {', '.join(current)} with images/ subfolders "
            "(COVID-19 Radiography Database v4+)",
            score=10,
        )
    old = _old_class_dirs(folder)
    if old:
        names = ", ".join(d.name + "/" for d in old)
        return Detection(
            NAME,
            folder,
            f"older release (v1-v3) of the COVID-19 Radiography Database: {names} without "
            "images/ subfolders",
            score=10,
        )
    return None


def parse(root: Path, options: Mapping[str, Any]) -> Manifest:
    """Read a COVID-19 Radiography Database folder (v4+, or an older release with a note).

    Raises:
        DataError: no class folder of either release is found.
    """
    check_options(NAME, options, ())
    old = _old_class_dirs(root)
    if old and not any(_images_dir(root, c) for c in CLASSES):
        return _parse_old(root, old)
    skipped = SkipReport()
    notes: list[str] = []
    records: list[Record] = []
    classes = [c for c in CLASSES if _images_dir(root, c) is not None]
    if not classes:
        raise DataError(
            f"The folder '{root}' has no class folders with images/ subfolders, but a "
            f"COVID-19 Radiography Database holds {', '.join(c + '/images/' for c in CLASSES)}."
        )
    missing = [c for c in CLASSES if c not in classes]
    if missing:
        notes.append(f"Class folders missing: {', '.join(missing)}.")
    for name in classes:
        class_dir = _class_dir(root, name)
        images = list_images(class_dir / "images", skipped)
        masks = _mask_files(class_dir)
        records.extend(_class_records(root, name, images, notes, masks))
    paired = sum(r.mask is not None for r in records)
    if paired:
        notes.append(
            f"Read {paired} lung masks from <Class>/masks/ for {len(records)} images (not "
            "training images; kept for probes that blank the lungs)."
        )
    return Manifest(
        dataset=NAME,
        root=root,
        task="multiclass",
        classes=tuple(classes),
        records=tuple(records),
        skipped=skipped,
        notes=tuple(notes),
    )


def _class_dir(root: Path, name: str) -> Path:
    found = find_subdir(root, name)
    return found if found is not None else root / name


def _images_dir(root: Path, name: str) -> Path | None:
    class_dir = find_subdir(root, name)
    if class_dir is None:
        return None
    return find_subdir(class_dir, "images")


def _old_class_dirs(folder: Path) -> list[Path]:
    """Pre-v4 class folders (images directly inside), or [] when this is not an older release."""
    dirs = [d for d in subdirs(folder) if d.name in OLD_CLASSES]
    if any(find_subdir(d, "images") is not None for d in dirs):
        return []
    flat = [d for d in dirs if has_image(d)]
    if len(flat) >= 2 and any(d.name in _OLD_MARKERS for d in flat):
        return flat
    return []


def _mask_files(class_dir: Path) -> dict[str, Path]:
    """Lung masks of a class: file key (lower-case name without extension) -> mask file."""
    masks = find_subdir(class_dir, "masks")
    if masks is None:
        return {}
    return {_file_key(p.name): p for p in walk_files(masks) if file_skip_reason(p.name) is None}


def _class_records(
    root: Path,
    name: str,
    images: list[Path],
    notes: list[str],
    masks: Mapping[str, Path] | None = None,
) -> list[Record]:
    sources = read_sources(root, name, notes)
    records = []
    unmatched = 0
    for path in images:
        source = sources.get(_file_key(path.name)) if sources else None
        if sources is not None and source is None:
            unmatched += 1
        mask = masks.get(_file_key(path.name)) if masks else None
        records.append(Record(path=path, labels=(name,), source=source, mask=mask))
    if sources is not None and unmatched:
        notes.append(f"{unmatched} image(s) of class {name} have no row in {name}.metadata.xlsx.")
    return records


def _file_key(name: str) -> str:
    """Match key of a file or FILE NAME cell: lower case, image extension removed."""
    stem, ext = os.path.splitext(name.strip())
    return (stem if ext.lower() in IMAGE_EXTENSIONS else name.strip()).lower()


def read_sources(root: Path, name: str, notes: list[str]) -> dict[str, str] | None:
    """FILE NAME (lower case) -> URL from ``<root>/<name>.metadata.xlsx``; None when absent.

    A sheet that cannot be read adds a note instead of failing: the source is informative,
    the labels come from the folders.
    """
    path = _find_file(root, f"{name}.metadata.xlsx")
    if path is None:
        notes.append(f"No {name}.metadata.xlsx: image sources of class {name} are unknown.")
        return None
    try:
        rows = _read_sheet(path)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError) as err:
        notes.append(f"Could not read '{path.name}' ({type(err).__name__}): sources unknown.")
        return None
    header = [str(c).strip().upper() if c is not None else "" for c in (rows[0] if rows else [])]
    if "FILE NAME" not in header or "URL" not in header:
        notes.append(
            f"'{path.name}' has columns {header}, but FILE NAME and URL were expected: "
            "sources unknown."
        )
        return None
    name_col, url_col = header.index("FILE NAME"), header.index("URL")
    return {
        _file_key(str(row[name_col])): str(row[url_col]).strip()
        for row in rows[1:]
        if len(row) > max(name_col, url_col) and row[name_col] is not None and row[url_col]
    }


def _read_sheet(path: Path) -> list[tuple[Any, ...]]:
    import openpyxl  # only needed here; keeps `import cxr_tune.data` light
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except InvalidFileException as err:
        raise ValueError(str(err)) from None
    try:
        sheet = book["Sheet1"] if "Sheet1" in book.sheetnames else book.worksheets[0]
        return [tuple(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def _find_file(root: Path, name: str) -> Path | None:
    exact = root / name
    if exact.is_file():
        return exact
    lower = name.lower()
    for entry in os.scandir(root):
        if entry.is_file() and entry.name.lower() == lower:
            return Path(entry.path)
    return None


def _parse_old(root: Path, class_dirs: list[Path]) -> Manifest:
    skipped = SkipReport()
    records: list[Record] = []
    notes = [
        OLD_RELEASE_NOTE.format(
            found=", ".join(d.name + "/" for d in class_dirs), n=len(class_dirs)
        )
    ]
    for class_dir in class_dirs:
        images = list_images(class_dir, skipped)
        records.extend(_class_records(root, class_dir.name, images, notes))
    return Manifest(
        dataset=NAME,
        root=root,
        task="multiclass",
        classes=tuple(d.name for d in class_dirs),
        records=tuple(records),
        skipped=skipped,
        notes=tuple(notes),
    )


DATASETS.add(
    NAME,
    DatasetSpec(
        name=NAME,
        title='Kaggle "COVID-19 Radiography Database" (paper\'s Dataset 1)',
        task="multiclass",
        parse=parse,
        detect=detect,
        expects="<Class>/images/ folders for COVID, Lung_Opacity, Normal, Viral Pneumonia",
    ),
)

"""Any other dataset: ``<root>/<class>/**/<image>``, or ``<root>/{train,val,test}/<class>/...``.

Classes are the class folder names, sorted (as torchvision's ``ImageFolder``). Where the dataset
gives split folders, each image keeps its split (``Record.split``); a missing val or test split is
carved out of train by the usual grouped, stratified split. Hidden files, non-images and empty
folders are reported, never fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.images import file_skip_reason
from cxr_tune.data.layouts.common import check_options, has_image, list_images, subdirs
from cxr_tune.data.types import Manifest, Record, SkipReport
from cxr_tune.errors import DataError

NAME = "imagefolder"
# Split folder names (lower case) -> split.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SKIP_OUTSIDE = "file outside a class folder"


def detect(folder: Path) -> Detection | None:
    """Recognise two or more class folders with images, directly or under train/val/test."""
    splits = _split_dirs(folder)
    if "train" in splits and len(_class_dirs(splits["train"])) >= 2:
        named = ", ".join(d.name + "/" for d in splits.values())
        return Detection(NAME, folder, f"split folders {named} of class folders", score=1)
    classes = _class_dirs(folder)
    if len(classes) >= 2:
        shown = ", ".join(d.name for d in classes[:6]) + (", ..." if len(classes) > 6 else "")
        return Detection(NAME, folder, f"{len(classes)} class folders ({shown})", score=1)
    return None


def parse(root: Path, options: Mapping[str, Any]) -> Manifest:
    """Read class folders (or split folders of class folders) into a multi-class manifest.

    Raises:
        DataError: fewer than two class folders hold images.
    """
    check_options(NAME, options, ())
    skipped = SkipReport()
    notes: list[str] = []
    splits = _split_dirs(root)
    if "train" in splits:
        records = _parse_splits(splits, skipped, notes)
    else:
        records = _parse_classes(root, None, skipped, notes)
    _skip_loose_files(root, skipped)
    classes = sorted({r.labels[0] for r in records})
    if len(classes) < 2:
        raise DataError(
            f"The folder '{root}' holds {len(classes)} class folder(s) with images "
            f"({', '.join(classes) or 'none'}), but a classifier needs at least 2 "
            "(<root>/<class>/<image>, optionally under train/, val/, test/)."
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


def _split_dirs(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in subdirs(folder):
        split = SPLIT_FOLDERS.get(d.name.lower())
        if split is not None and split not in found:
            found[split] = d
    return found


def _class_dirs(folder: Path) -> list[Path]:
    return [d for d in subdirs(folder) if has_image(d)]


def _parse_splits(splits: dict[str, Path], skipped: SkipReport, notes: list[str]) -> list[Record]:
    records: list[Record] = []
    for split in ("train", "val", "test"):
        if split in splits:
            records.extend(_parse_classes(splits[split], split, skipped, notes))
    absent = [s for s in ("val", "test") if s not in splits]
    if absent:
        notes.append(
            f"No {' or '.join(absent)} folder: carved out of train/ (grouped, stratified)."
        )
    return records


def _parse_classes(
    folder: Path, split: str | None, skipped: SkipReport, notes: list[str]
) -> list[Record]:
    records: list[Record] = []
    for class_dir in subdirs(folder):
        images = list_images(class_dir, skipped)
        if not images:
            notes.append(f"Empty class folder ignored: '{class_dir}'.")
            continue
        records.extend(Record(path=p, labels=(class_dir.name,), split=split) for p in images)
    if split is not None:
        _skip_loose_files(folder, skipped)
    return records


def _skip_loose_files(folder: Path, skipped: SkipReport) -> None:
    """Report files lying next to the class folders (they belong to no class)."""
    for path in sorted(folder.iterdir()):
        if path.is_file():
            skipped.add(file_skip_reason(path.name, path) or SKIP_OUTSIDE, path)


DATASETS.add(
    NAME,
    DatasetSpec(
        name=NAME,
        title="generic class-folder tree (<class>/<image>, optional train/val/test folders)",
        task="multiclass",
        parse=parse,
        detect=detect,
        expects="<class>/ folders of images, optionally under train/, val/, test/",
    ),
)

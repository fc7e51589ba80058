"""Dataset 2: Kaggle "COVID-19, Pneumonia, Normal Chest Xray PA Dataset", three classes.

Layout: ``covid/``, ``normal/``, ``pneumonia/`` (lower case) holding images of any extension
case, no split folders, no patient ids. About 912 of the covid images are augmented copies of
others: the split groups them by near-duplicate cluster (see ``cxr_tune.data.dedup``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.layouts.common import check_options, find_subdir, has_image, list_images
from cxr_tune.data.types import Manifest, Record, SkipReport
from cxr_tune.errors import DataError

NAME = "covid19_pneumonia_normal"
CLASSES: tuple[str, ...] = ("covid", "normal", "pneumonia")


def detect(folder: Path) -> Detection | None:
    """Recognise a folder holding ``covid/``, ``normal/`` and ``pneumonia/`` with images."""
    dirs = [find_subdir(folder, c) for c in CLASSES]
    if all(d is not None and has_image(d) for d in dirs):
        return Detection(
            NAME, folder, "class folders covid/, normal/, pneumonia/ with images", score=8
        )
    return None


def parse(root: Path, options: Mapping[str, Any]) -> Manifest:
    """Read the three class folders (extensions matched case-insensitively).

    Raises:
        DataError: a class folder is missing.
    """
    check_options(NAME, options, ())
    skipped = SkipReport()
    records: list[Record] = []
    notes: list[str] = []
    for name in CLASSES:
        folder = find_subdir(root, name)
        if folder is None:
            raise DataError(
                f"The folder '{root}' has no '{name}/' folder, but this dataset holds "
                f"{', '.join(c + '/' for c in CLASSES)}."
            )
        records.extend(Record(path=p, labels=(name,)) for p in list_images(folder, skipped))
    if (root / "metadata.csv").is_file():
        notes.append("metadata.csv (an earlier release) is ignored: labels come from the folders.")
    return Manifest(
        dataset=NAME,
        root=root,
        task="multiclass",
        classes=CLASSES,
        records=tuple(records),
        skipped=skipped,
        notes=tuple(notes),
    )


DATASETS.add(
    NAME,
    DatasetSpec(
        name=NAME,
        title='Kaggle "COVID-19, Pneumonia, Normal Chest Xray PA Dataset" (paper\'s Dataset 2)',
        task="multiclass",
        parse=parse,
        detect=detect,
        expects="covid/, normal/, pneumonia/ folders of images",
    ),
)

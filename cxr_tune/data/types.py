"""The data layer's value types: what a parser returns and what a trial receives."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.config import Task

SPLITS: tuple[str, ...] = ("train", "val", "test")
# The splits a search may read. The test split is read once, by the final evaluation.
SEARCH_SPLITS: tuple[str, ...] = ("train", "val")
# A multi-label entry whose value is unknown (CheXpert's uncertain labels under the ``ignore``
# policy): it counts neither as positive nor as negative, and the loss and the metrics skip it.
MASKED_LABEL = 255
# How a layout maps uncertain labels: positive, negative, or masked (the CheXpert paper's
# U-Ones, U-Zeros and U-Ignore).
UNCERTAIN_POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore")


@dataclass(frozen=True)
class Record:
    """One image of a dataset, as a layout parser found it.

    Attributes:
        path: absolute path of the image file.
        labels: class name (multi-class) or finding labels (multi-label).
        group: patient id where the layout has one; images of one group never cross splits.
        source: source collection of the image, where the layout records it.
        split: a split fixed by the layout itself (an imagefolder's train/val/test folders).
        mask: the image's lung mask file, where the dataset ships one (Dataset 1's masks/);
            never a training image, kept for probes that blank the lungs.
        masked: multi-label only: labels whose value is unknown for this image (stored as
            :data:`MASKED_LABEL`, skipped by the loss and the metrics).
    """

    path: Path
    labels: tuple[str, ...]
    group: str | None = None
    source: str | None = None
    split: str | None = None
    mask: Path | None = None
    masked: tuple[str, ...] = ()


@dataclass
class SkipReport:
    """Files found but not used, counted per reason, with the first few paths of each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, path: str | Path) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(str(path))

    def merge(self, other: SkipReport) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            shown = self.examples.setdefault(reason, [])
            shown.extend(other.examples.get(reason, [])[: self.max_examples - len(shown)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total, "counts": dict(self.counts), "examples": dict(self.examples)}


@dataclass(frozen=True)
class Manifest:
    """What a layout parser found in a dataset folder, before any image is decoded.

    ``uncertain_policy`` is the policy applied to uncertain labels (one of
    :data:`UNCERTAIN_POLICIES`) where the layout has them, else None.
    """

    dataset: str
    root: Path
    task: Task
    classes: tuple[str, ...]
    records: tuple[Record, ...]
    skipped: SkipReport = field(default_factory=SkipReport)
    notes: tuple[str, ...] = ()
    uncertain_policy: str | None = None


@dataclass(frozen=True)
class SplitArrays:
    """One split of a decoded dataset.

    Attributes:
        images: uint8 array (N, H, W), grayscale, already at the run's image size.
        labels: int64 class indices (N,) for multi-class; uint8 multi-hot (N, C) for multi-label,
            where :data:`MASKED_LABEL` marks an entry of unknown value.
        masks: uint8 lung masks (N, H, W), 1 = lung, aligned with ``images``, where the dataset
            has them (Dataset 1's masks/, the phantom's test split); else None. Never used for
            training: probes blank the lungs with them.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class DatasetArrays:
    """A decoded, split dataset: what the driver hands to trials through Ray's object store.

    ``uncertain_policy`` says how uncertain labels were mapped (``ones``, ``zeros``, or
    ``ignore``: masked), for datasets that have them (CheXpert); None otherwise.
    """

    name: str
    task: Task
    classes: tuple[str, ...]
    image_size: int
    splits: Mapping[str, SplitArrays]
    dataset_hash: str
    split_hash: str
    # How the split treated a split the dataset publishes (``cxr_tune.data.published``): the
    # mode, the pairs across it and the images moved; None where the dataset publishes none.
    published_split: Mapping[str, Any] | None = None
    uncertain_policy: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> SplitArrays:
        """Return one split; asking a search copy for ``test`` is an error, on purpose."""
        if name not in self.splits:
            raise KeyError(
                f"Dataset '{self.name}' carries no '{name}' split here "
                f"(available: {', '.join(self.splits)})."
            )
        return self.splits[name]

    def for_search(self) -> DatasetArrays:
        """A copy holding only the splits a search may read (train, val): never the test split."""
        # Masks stay behind too: trials never use them, the object store need not carry them.
        kept = {
            k: dataclasses.replace(v, masks=None)
            for k, v in self.splits.items()
            if k in SEARCH_SPLITS
        }
        return dataclasses.replace(self, splits=kept)

    def for_test(self) -> DatasetArrays:
        """A copy holding only the test split (images and labels): what scoring a model on
        this dataset as an external set reads."""
        test = dataclasses.replace(self.splits["test"], masks=None)
        return dataclasses.replace(self, splits={"test": test})

    def whole_as_test(self) -> DatasetArrays:
        """A copy whose only split, ``test``, holds every image of every split (images and
        labels, in split order): what scoring a dataset that no model trained on reads, since
        external validation scores the whole cohort. The images are copied into memory."""
        parts = [self.splits[name] for name in self.splits]
        whole = SplitArrays(
            np.concatenate([np.asarray(part.images) for part in parts]),
            np.concatenate([np.asarray(part.labels) for part in parts]),
        )
        return dataclasses.replace(self, splits={"test": whole})

    def sizes(self) -> dict[str, int]:
        return {name: len(arrays) for name, arrays in self.splits.items()}

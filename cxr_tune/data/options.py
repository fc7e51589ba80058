"""How a dataset becomes arrays (``DataOptions``), and where decoded datasets are cached."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_tune.constants import (
    DEFAULT_CACHE_DIR,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MIN_LABEL_POSITIVES,
    DEFAULT_SPLIT_MODE,
    ENV_CACHE,
)
from cxr_tune.data.dedup import DEFAULT_SIMILARITY
from cxr_tune.data.splits import DEFAULT_FRACTIONS


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: ``$CXR_TUNE_CACHE`` or ``~/.cache/cxr_tune``."""
    return Path(os.environ.get(ENV_CACHE, DEFAULT_CACHE_DIR)).expanduser()


@dataclass(frozen=True)
class DataOptions:
    """How to turn a dataset into arrays.

    Attributes:
        image_size: side of the square uint8 images a trial receives.
        seed: seeds the split (and the phantom).
        fractions: train/val/test shares.
        cache_dir: root of the decode-once cache.
        phantom_images: size of the built-in phantom dataset.
        phantom_imbalance: None (balanced) or "dataset1" (the paper's Dataset 1 shares).
        phantom_multilabel: generate independent findings instead of classes.
        parser_options: layout-specific options (e.g. ``views`` for covid_chestxray), flat or
            keyed by dataset name.
        workers: decoding processes; 0 picks one per CPU core (up to 8).
        min_label_positives: multi-label only: a label needs this many positive images in
            every split, or it is dropped from the vocabulary (and reported).
        near_duplicate_similarity: cosine similarity of image signatures at or above which two
            images are near-duplicates and kept in one split (see ``cxr_tune.data.dedup``).
        split: for a dataset with its own split (train/ and test/ folders, ...): ``grouped``
            moves images to keep patients and near-duplicates whole; ``published`` keeps it
            exactly (see ``cxr_tune.data.published``).
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    cache_dir: Path = field(default_factory=default_cache_dir)
    phantom_images: int = 640
    phantom_imbalance: str | None = None
    phantom_multilabel: bool = False
    parser_options: dict[str, Any] = field(default_factory=dict)
    workers: int = 0
    min_label_positives: int = DEFAULT_MIN_LABEL_POSITIVES
    near_duplicate_similarity: float = DEFAULT_SIMILARITY
    split: str = DEFAULT_SPLIT_MODE

    def to_record(self) -> dict[str, Any]:
        """Every option as JSON, for the experiment record (``from_record`` reads it back)."""
        record = dataclasses.asdict(self)
        record["fractions"] = list(self.fractions)
        record["cache_dir"] = str(self.cache_dir)
        return record

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, cache_dir: Path | None = None
    ) -> DataOptions:
        """The options an experiment recorded. Where the cache lives and how many processes
        decode are this machine's (``cache_dir``, default ``default_cache_dir()``): neither
        changes the arrays. Options a record lacks (older experiments) keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)} - {"cache_dir", "workers"}
        values: dict[str, Any] = {k: v for k, v in record.items() if k in names}
        if "fractions" in values:
            values["fractions"] = tuple(values["fractions"])
        return cls(**values, cache_dir=cache_dir or default_cache_dir())

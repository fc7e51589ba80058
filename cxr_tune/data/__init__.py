"""Datasets: layout parsers, robust decoding, leakage-safe splits, the decode-once cache.

The one entry point the rest of the package needs is :func:`load_dataset`: a ``DataSource``
(``--data [KEY=]PATH`` or the built-in phantom) in, a decoded and split ``DatasetArrays`` out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.config import DataSource
from cxr_tune.constants import DEFAULT_CACHE_DIR, ENV_CACHE
from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection, Generated
from cxr_tune.data.dedup import DEFAULT_SIMILARITY
from cxr_tune.data.splits import DEFAULT_FRACTIONS, grouped_stratified_split, split_hash
from cxr_tune.data.types import (
    SEARCH_SPLITS,
    SPLITS,
    DatasetArrays,
    Manifest,
    Record,
    SkipReport,
    SplitArrays,
)

__all__ = [
    "DATASETS",
    "SEARCH_SPLITS",
    "SPLITS",
    "DataOptions",
    "DatasetArrays",
    "DatasetSpec",
    "Detection",
    "Manifest",
    "Record",
    "SkipReport",
    "SplitArrays",
    "default_cache_dir",
    "load_dataset",
    "resolve_source",
]


# Every layout module registers itself in DATASETS when imported; importing them here, where
# the package starts, means any use of the registry sees all of them.
from cxr_tune.data import layouts as _layouts  # noqa: E402,F401  (imported to register)


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: ``$CXR_TUNE_CACHE`` or ``~/.cache/cxr_tune``."""
    return Path(os.environ.get(ENV_CACHE, DEFAULT_CACHE_DIR)).expanduser()


def resolve_source(source: DataSource) -> DataSource:
    """``source`` with its layout and root folder found: detected from the folder, or checked
    against the forced KEY. The phantom and already resolved sources come back as they are.

    Raises:
        ConfigError: an unknown dataset key (with did-you-mean).
        DataError: the folder is missing, holds no known layout, or holds several datasets.
    """
    if source.is_phantom:
        generated_spec(source.key or "phantom")
    if source.resolved:
        return source
    from cxr_tune.data.detect import resolve

    detection = resolve(source)
    return DataSource(key=detection.dataset, path=detection.root, detected=detection.reason)


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

    image_size: int = 224
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    cache_dir: Path = field(default_factory=default_cache_dir)
    phantom_images: int = 640
    phantom_imbalance: str | None = None
    phantom_multilabel: bool = False
    parser_options: dict[str, Any] = field(default_factory=dict)
    workers: int = 0
    min_label_positives: int = 2
    near_duplicate_similarity: float = DEFAULT_SIMILARITY
    split: str = "grouped"

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


def load_dataset(source: DataSource, options: DataOptions) -> DatasetArrays:
    """Load one dataset, decoded and split, with all three splits.

    Use ``DatasetArrays.for_search()`` before handing it to trials: the search never reads
    the test split.

    Raises:
        DataError: the folder is missing, unreadable or not a known layout.
        ConfigError: an unknown dataset key.
    """
    if source.is_phantom:
        return load_phantom(options, source.key or "phantom")
    from cxr_tune.data.cache import load_or_prepare

    return load_or_prepare(source, options)


def generated_spec(name: str) -> Generated:
    """What the built-in dataset ``name`` generates.

    Raises:
        ConfigError: ``name`` is unknown (with a did-you-mean), or a layout that reads a folder.
    """
    from cxr_tune.errors import ConfigError

    generated = DATASETS.get(name).generated
    if generated is None:
        raise ConfigError(
            f"The dataset '{name}' reads a folder; give it as --data {name}=PATH (built-in: "
            f"{', '.join(n for n in DATASETS.names() if DATASETS.get(n).generated)})."
        )
    return generated


def load_phantom(options: DataOptions, name: str = "phantom") -> DatasetArrays:
    """Generate a built-in phantom in memory and split it by simulated patient.

    Args:
        options: size, seed, image count and class shares.
        name: ``phantom`` (site A), ``phantom_b`` (site B) or ``phantom_marker`` (site A with a
            class-correlated marker); see ``DATASETS``.

    The test split carries each image's lung mask (``SplitArrays.masks``), for probes that
    blank the lungs.

    Raises:
        ConfigError: ``name`` is not a built-in generated dataset (with a did-you-mean).
    """
    from cxr_tune.data.phantom import PhantomSpec, generate, lung_masks

    generated = generated_spec(name)
    spec = PhantomSpec(
        n_images=options.phantom_images,
        image_size=options.image_size,
        seed=options.seed,
        imbalance=options.phantom_imbalance,
        multilabel=options.phantom_multilabel,
        site=generated.site,
        marker=generated.marker,
    )
    data = generate(spec)
    if data.labels.ndim == 1:
        strata = [data.classes[int(c)] for c in data.labels]
    else:
        strata = ["+".join(str(int(v)) for v in row) for row in data.labels]
    split = grouped_stratified_split(
        strata, list(data.groups), fractions=options.fractions, seed=options.seed
    )
    ids = [f"phantom-{i:06d}" for i in range(len(strata))]
    splits = {
        part: SplitArrays(
            images=data.images[idx],
            labels=np.ascontiguousarray(data.labels[idx]),
            masks=lung_masks(spec, idx) if part == "test" else None,
        )
        for part, idx in split.items()
    }
    return DatasetArrays(
        name=name,
        task="multilabel" if spec.multilabel else "multiclass",
        classes=data.classes,
        image_size=options.image_size,
        splits=splits,
        dataset_hash=spec.key(),
        split_hash=split_hash(ids, split),
    )

"""Datasets: layout parsers, robust decoding, leakage-safe splits, the decode-once cache.

The one entry point the rest of the package needs is :func:`load_dataset`: a ``DataSource``
(``--data [KEY=]PATH`` or the built-in phantom) in, a decoded and split ``DatasetArrays`` out.
This file only hands names on: ``load.py`` (loading), ``options.py`` (``DataOptions``),
``types.py`` (the arrays), ``datasets.py`` (the registry of layouts), ``prepare.py`` and
``cache.py`` (the decode-once cache).
"""

# Every layout module registers itself in DATASETS when imported; importing them here, where
# the package starts, means any use of the registry sees all of them.
from cxr_tune.data import layouts as _layouts  # noqa: E402,F401  (imported to register)
from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.load import load_dataset, resolve_source
from cxr_tune.data.options import DataOptions, default_cache_dir
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

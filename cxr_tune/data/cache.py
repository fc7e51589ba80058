"""The decode-once cache: one folder per prepared dataset, memory-mapped on load.

``cxr_tune.data.prepare`` writes it; this module finds, checks and opens it::

    <cache_dir>/<dataset>-<size>px-<key>/
        images.npy     uint8 (N, size, size), ordered train block, val block, test block
        labels.npy     int64 (N,) class indices, or uint8 (N, C) multi-hot
        masks.npy      uint8 (N, size, size) lung masks (1 = lung), only where every image has one
        manifest.csv   one row per image, in the same order (path, split, labels, group, ...)
        split.json     split offsets, content hash, leakage audit, near-duplicate summary
        skipped.json   files not used, per reason, with the first paths
        meta.json      key, dataset_hash, classes, task, sizes, counts, modes, versions

Each split is a contiguous slice of one memory map (``np.load(mmap_mode="r")``): loading copies
nothing. The key hashes every source file's relative path, size and mtime (hidden files aside),
the parser options, image size, split fractions and seed, and :data:`FORMAT_VERSION`: a changed
dataset or size gets a new folder, an unchanged one is found again after a directory walk. A
folder is published whole (``publish``: built under a temporary name, renamed into place), so a
crash or Ctrl-C leaves no partial cache.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import cxr_tune.data.images as image_io
from cxr_tune.data.datasets import Detection
from cxr_tune.data.options import DataOptions
from cxr_tune.data.types import DatasetArrays, SplitArrays
from cxr_tune.errors import DataError

# Bump when the cache's content or meaning changes: old folders are then rebuilt, never misread.
# 2: lung masks (masks.npy) where the dataset ships them.
# 3: uniform images skipped; exact pixel copies grouped (kept in one split).
FORMAT_VERSION = 3


@dataclass(frozen=True)
class CacheEntry:
    """A prepared dataset in the cache.

    Attributes:
        path: the cache folder.
        meta: the content of meta.json.
        detection: which layout was read, at which root, and why.
        built: True when this call decoded the images, False when it reused the cache.
        seconds: how long this call took.
    """

    path: Path
    meta: dict[str, Any]
    detection: Detection
    built: bool
    seconds: float

    def arrays(self) -> DatasetArrays:
        """The dataset as memory-mapped arrays, all three splits."""
        return open_cache(self.path)

    def split_info(self) -> dict[str, Any]:
        return read_json(self.path / "split.json")

    def skipped(self) -> dict[str, Any]:
        return read_json(self.path / "skipped.json")


def cache_folder(detection: Detection, options: DataOptions, key: str) -> Path:
    """Where the cache of ``detection`` at ``options``' image size and ``key`` lives."""
    return options.cache_dir / f"{detection.dataset}-{options.image_size}px-{key}"


def cache_key(detection: Detection, parser_options: Mapping[str, Any], options: DataOptions) -> str:
    """Hash of everything the cache content depends on (16 hex digits)."""
    payload = {
        "format": FORMAT_VERSION,
        "dataset": detection.dataset,
        "parser_options": parser_options,
        "image_size": options.image_size,
        "fractions": list(options.fractions),
        "seed": options.seed,
        "min_label_positives": options.min_label_positives,
        "near_duplicate_similarity": options.near_duplicate_similarity,
        "split": options.split,
        "files": source_fingerprint(detection.root),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_fingerprint(root: Path) -> str:
    """Hash of (relative path, size, mtime_ns) of every file under ``root``, hidden ones aside."""
    digest = hashlib.sha256()
    for current, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.lower() in image_io.SYSTEM_FILES:
                continue
            path = os.path.join(current, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            # surrogateescape: a file name that is not UTF-8 (an old archive's Latin-1) hashes
            # as its bytes instead of failing.
            line = f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def open_cache(path: Path) -> DatasetArrays:
    """Open a cache folder: each split is a slice of one read-only memory map (no copy).

    Raises:
        DataError: the folder is not a complete cache of this format.
    """
    meta = read_json(path / "meta.json")
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(
            f"The cache folder '{path}' has format {meta.get('format')}, but this version of "
            f"cxr_tune reads format {FORMAT_VERSION}; run `python -m cxr_tune.data prepare` again."
        )
    try:
        # allow_pickle=False (numpy's default, said here on purpose): a cache file holding
        # Python objects is refused, never unpickled.
        images = np.load(path / "images.npy", mmap_mode="r", allow_pickle=False)
        labels = np.load(path / "labels.npy", mmap_mode="r", allow_pickle=False)
        masks = (
            np.load(path / "masks.npy", mmap_mode="r", allow_pickle=False)
            if meta.get("masks")
            else None
        )
    except (OSError, ValueError) as err:
        raise DataError(
            f"The cache folder '{path}' is damaged ({err}); delete it and run "
            "`python -m cxr_tune.data prepare` again."
        ) from None
    splits = {
        name: SplitArrays(
            images=images[start:stop],
            labels=labels[start:stop],
            masks=None if masks is None else masks[start:stop],
        )
        for name, (start, stop) in meta["offsets"].items()
    }
    return DatasetArrays(
        name=meta["dataset"],
        task=meta["task"],
        classes=tuple(meta["classes"]),
        image_size=int(meta["image_size"]),
        splits=splits,
        dataset_hash=meta["dataset_hash"],
        split_hash=meta["split_hash"],
        published_split=_published_of(path),
        uncertain_policy=meta.get("uncertain_policy"),
    )


def _published_of(path: Path) -> dict[str, Any] | None:
    """The published-split audit in split.json (None where the dataset publishes no split)."""
    try:
        return read_json(path / "split.json").get("published")
    except DataError:
        return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise DataError(f"The cache file '{path}' cannot be read: {err}.") from None


def valid_meta(final: Path, key: str) -> dict[str, Any] | None:
    """meta.json of an existing, complete cache for ``key``, or None (then it is rebuilt)."""
    try:
        with open(final / "meta.json", encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    complete = all((final / name).is_file() for name in ("images.npy", "labels.npy", "split.json"))
    if meta.get("format") != FORMAT_VERSION or meta.get("key") != key or not complete:
        return None
    if 0 in meta.get("sizes", {}).values():  # from before empty splits were refused: rebuild
        return None
    return meta


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished temporary folder into place (atomic on one file system)."""
    if final.exists():
        # A stale or broken cache under the same key; another process may also have just
        # finished the same one, in which case its copy is as good as ours.
        if valid_meta(final, json.loads((tmp / "meta.json").read_text())["key"]) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of a cache folder's manifest.csv, in cache order."""
    with open(
        path / "manifest.csv", newline="", encoding="utf-8", errors="surrogateescape"
    ) as handle:
        return list(csv.DictReader(handle))

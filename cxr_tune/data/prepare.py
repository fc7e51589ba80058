"""Preparing a dataset: a folder -> the decode-once cache (``cxr_tune.data.cache``).

``prepare`` detects the layout, parses it, decodes every image once (in a process pool, in a
fixed order, so the result is deterministic), groups near-duplicates and patients, splits, and
publishes one cache folder.

Memory does not grow with the dataset beyond a few hundred bytes an image: images are decoded
in chunks straight into a *work folder* on disk with file writes (``cxr_tune.data.stream``), the
near-duplicate audit reads thumbnails from there a slice at a time, and ``images.npy`` is
written in split order from it, chunk by chunk. A prepare that is interrupted (Ctrl-C, a kill,
a full disk) keeps its work folder, and the next prepare of the same dataset resumes after the
last finished chunk (and reuses a finished audit); the work folder is removed when the cache is
published.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.config import DataSource
from cxr_tune.data.cache import (
    FORMAT_VERSION,
    CacheEntry,
    cache_folder,
    cache_key,
    publish,
    valid_meta,
)
from cxr_tune.data.datasets import DATASETS, Detection
from cxr_tune.data.dedup import (
    DEFAULT_MAX_CLUSTER,
    Clusters,
    ThumbSource,
    UnionFind,
    audit_pairs,
    exact_copies,
    merge_pairs,
)
from cxr_tune.data.detect import resolve
from cxr_tune.data.layouts.common import check_class_names, check_options
from cxr_tune.data.options import DataOptions
from cxr_tune.data.patients import name_patient_note, name_patients
from cxr_tune.data.published import (
    SplitPlan,
    check_split_mode,
    plan_split,
    published_audit,
    published_notes,
)
from cxr_tune.data.splits import (
    check_splits_filled,
    grouped_stratified_split,
    leakage_audit,
    split_hash,
)
from cxr_tune.data.stream import (
    TMP_PREFIX,
    ImageFacts,
    RowReader,
    WorkFolder,
    copy_rows,
    create_rows,
    decode_into,
    decoder,
)
from cxr_tune.data.types import (
    MASKED_LABEL,
    SPLITS,
    DatasetArrays,
    Manifest,
    Record,
    SkipReport,
)
from cxr_tune.errors import ConfigError, CxrTuneError, DataError

# Below this many images a process pool costs more than it saves.
_POOL_MIN_IMAGES = 256
_TMP_PREFIX = TMP_PREFIX


def load_or_prepare(source: DataSource, options: DataOptions) -> DatasetArrays:
    """Load a dataset folder from the cache, preparing the cache first when needed.

    Raises:
        DataError: the folder is missing, not a known layout, or holds no decodable image.
        ConfigError: an unknown dataset key or parser option.
    """
    return prepare(source, options).arrays()


def prepare(
    source: DataSource, options: DataOptions, *, progress: bool | None = None
) -> CacheEntry:
    """Decode a dataset folder into the cache, or find the cache that already holds it.

    Args:
        source: ``[KEY=]PATH``; the layout is detected unless KEY forces one.
        options: image size, split fractions and seed, cache folder, parser options, workers.
        progress: show a progress bar on stderr; None shows it when stderr is a terminal.

    Returns:
        The cache entry (``built`` says whether images were decoded now).

    Raises:
        DataError: the folder is missing, not a known layout, or holds no decodable image;
            the cache folder cannot be written.
        ConfigError: an unknown dataset key or parser option.
    """
    started = time.perf_counter()
    if (
        isinstance(options.image_size, bool)
        or not isinstance(options.image_size, int)
        or (options.image_size < 8)
    ):
        raise ConfigError(
            f"The value of `image_size` is {options.image_size!r}, but must be an integer >= 8."
        )
    check_split_mode(options.split)
    detection = _detection(source)
    spec = DATASETS.get(detection.dataset)
    parser_options = check_options(spec.name, options.parser_options, spec.options)
    key = cache_key(detection, parser_options, options)
    final = cache_folder(detection, options, key)
    meta = valid_meta(final, key)
    built = meta is None
    if meta is None:
        assert spec.parse is not None  # resolve() only returns parseable layouts
        manifest = spec.parse(detection.root, parser_options)
        if manifest.task == "multiclass":  # class folders; multi-label findings come from a CSV
            check_class_names(manifest.root, manifest.classes)
        meta = _build(final, manifest, detection, options, key, progress)
    seconds = time.perf_counter() - started
    return CacheEntry(final, meta, detection, built=built, seconds=seconds)


def _detection(source: DataSource) -> Detection:
    """The layout and root of ``source``: as resolved already, or detected now."""
    if source.detected is not None and source.key is not None and source.path is not None:
        return Detection(source.key, source.path, source.detected)
    return resolve(source)


def search_images(source: DataSource, options: DataOptions) -> tuple[int, int]:
    """About how many images a search of ``source`` trains and validates on, and its classes,
    without decoding anything: the cache's figures where it is prepared, else the layout's
    records less the test share. For planning device memory (``search/placement.py``).

    Raises:
        DataError, ConfigError: as :func:`prepare`.
    """
    if source.is_phantom:
        share = options.fractions[0] + options.fractions[1]
        return int(round(options.phantom_images * share)), 3 if options.phantom_multilabel else 4
    detection = _detection(source)
    spec = DATASETS.get(detection.dataset)
    parser_options = check_options(spec.name, options.parser_options, spec.options)
    key = cache_key(detection, parser_options, options)
    meta = valid_meta(cache_folder(detection, options, key), key)
    if meta is not None:
        return int(meta["sizes"]["train"]) + int(meta["sizes"]["val"]), len(meta["classes"])
    assert spec.parse is not None
    manifest = spec.parse(detection.root, parser_options)
    fixed_test = sum(1 for r in manifest.records if r.split == "test")
    if any(r.split for r in manifest.records):
        images = len(manifest.records) - fixed_test
    else:
        images = int(round(len(manifest.records) * (1.0 - options.fractions[2])))
    return images, max(1, len(manifest.classes))


# --- building -------------------------------------------------------------------------------


def _build(
    final: Path,
    manifest: Manifest,
    detection: Detection,
    options: DataOptions,
    key: str,
    progress: bool | None,
) -> dict[str, Any]:
    """Decode (resuming earlier work), audit, split and write, then publish the cache folder.

    An error in the data (nothing decodable) discards the work folder; an interruption
    (Ctrl-C, a kill, a full disk) keeps it, so the next prepare resumes.
    """
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = WorkFolder.acquire(parent, final.name)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-{os.getpid()}-", dir=parent))
    except OSError as err:
        raise DataError(f"The cache folder '{parent}' cannot be written: {err.strerror}.") from None
    try:
        meta = _write_cache(tmp, work, manifest, detection, options, key, progress)
        publish(tmp, final)
    except CxrTuneError:
        shutil.rmtree(tmp, ignore_errors=True)
        work.remove()
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        work.release()
        raise
    work.remove()
    return meta


def _write_cache(
    tmp: Path,
    work: WorkFolder,
    manifest: Manifest,
    detection: Detection,
    options: DataOptions,
    key: str,
    progress: bool | None,
) -> dict[str, Any]:
    if not manifest.records:
        raise DataError(
            f"The folder '{manifest.root}' holds no usable image for {manifest.dataset} "
            f"({manifest.skipped.total} files skipped)."
        )
    size = options.image_size
    paths = [str(r.path) for r in manifest.records]
    workers = _worker_count(options.workers, len(paths))
    decoded = decode_into(work, paths, size, workers, progress)
    del paths
    if not len(decoded.kept):
        raise DataError(
            f"The folder '{manifest.root}' holds no decodable image: all "
            f"{len(manifest.records)} files were skipped ({_reasons(decoded.skipped)})."
        )
    records, name_ids = name_patients([manifest.records[int(i)] for i in decoded.kept])
    skipped = SkipReport()
    skipped.merge(manifest.skipped)
    skipped.merge(decoded.skipped)
    ids = [_record_id(r, manifest.root) for r in records]

    thumbs = RowReader(work.thumbs, decoded.kept)
    pixels = RowReader(work.pixels, decoded.kept)
    groups, dedup = _group(
        records, ids, thumbs, options.near_duplicate_similarity, progress, work, pixels
    )
    split, plan = _split(records, groups, options)
    check_splits_filled(split, groups, where=str(manifest.root), fractions=options.fractions)
    classes, labels, label_report = _labels(manifest, records, split, options.min_label_positives)
    order = np.concatenate([split[s] for s in SPLITS])
    offsets = _offsets(split)

    copy_rows(RowReader(work.pixels, decoded.kept[order]), tmp / "images.npy")
    np.save(tmp / "labels.npy", np.ascontiguousarray(labels[order]))
    masks, mask_note = _write_masks(tmp / "masks.npy", records, order, size, options.workers)
    _write_manifest(tmp / "manifest.csv", records, ids, groups, decoded.facts, order, offsets)
    audit = leakage_audit(groups, split)
    published = published_audit(
        [r.split for r in records], [r.group for r in records], groups, split, plan, options.split
    )
    s_hash = split_hash(ids, split)
    split_info = {
        "hash": s_hash,
        "seed": options.seed,
        "fractions": list(options.fractions),
        "offsets": offsets,
        "fixed_by_layout": any(r.split for r in records),
        "mode": options.split,
        "published": published,
        "patient_ids_from_names": name_ids,
        "audit": audit,
        "near_duplicates": dedup,
    }
    _write_json(tmp / "split.json", split_info)
    _write_json(tmp / "skipped.json", skipped.to_dict())
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "dataset": manifest.dataset,
        "title": DATASETS.get(manifest.dataset).title,
        "root": str(manifest.root),
        "detected": detection.reason,
        "task": manifest.task,
        "classes": list(classes),
        "image_size": size,
        "sizes": {s: int(stop - start) for s, (start, stop) in offsets.items()},
        "offsets": offsets,
        "counts": _counts(manifest.task, classes, labels, split),
        "dataset_hash": _dataset_hash(manifest, classes, records, ids, decoded.facts),
        "split_hash": s_hash,
        "uncertain_policy": manifest.uncertain_policy,
        "masked_labels": int((labels == MASKED_LABEL).sum()) if labels.ndim == 2 else 0,
        "labels_dropped": label_report,
        "skipped_total": skipped.total,
        "masks": masks,
        "notes": list(manifest.notes)
        + _label_notes(label_report)
        + name_patient_note(name_ids)
        + published_notes(published)
        + _split_notes(audit, dedup)
        + mask_note,
        "image_modes": _mode_counts(decoded.facts),
        "image_sizes": _size_stats(decoded.facts),
        "decode_seconds": round(decoded.seconds, 3),
        "decode_resumed_images": decoded.resumed,
        "audit_seconds": dedup.get("seconds", 0.0),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
    }
    _write_json(tmp / "meta.json", meta)
    return meta


def _reasons(report: SkipReport) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in report.counts.items())


def _record_id(record: Record, root: Path) -> str:
    return os.path.relpath(record.path, root).replace(os.sep, "/")


def _worker_count(requested: int, n_images: int) -> int:
    if n_images < _POOL_MIN_IMAGES:
        return 1
    if requested > 0:
        return requested
    return max(1, min(os.cpu_count() or 1, 8))


def _group(
    records: Sequence[Record],
    ids: Sequence[str],
    thumbs: ThumbSource,
    min_similarity: float,
    progress: bool | None = False,
    work: WorkFolder | None = None,
    pixels: ThumbSource | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Group ids: patients where the layout has them and exact pixel copies, joined by
    near-duplicate clusters.

    Patients and exact copies (``pixels``' hashes) are merged first and without a size cap;
    near-duplicates across patients then join images (or whole patients) closest pair first,
    capped (see ``cxr_tune.data.dedup``). The audit's pairs are saved in the work folder, so a
    resumed prepare does not redo it.
    """
    sets = UnionFind(len(records))
    first_of: dict[str, int] = {}
    patient = np.full(len(records), -1, dtype=np.int64)
    for i, record in enumerate(records):
        if record.group is not None:
            first = first_of.setdefault(record.group, i)
            patient[i] = first
            sets.union(first, i)
    copies = exact_copies(pixels) if pixels is not None else []
    for members in copies:
        for other in members[1:]:
            sets.union(members[0], other)
    saved = work.saved("pairs") if work is not None else None
    if saved is not None and saved["min_similarity"] == min_similarity:
        pairs, method, seconds = saved["pairs"], str(saved["method"]), float(saved["seconds"])
        stats: dict[str, Any] = {}
    else:
        found = audit_pairs(thumbs, patient, min_similarity, progress=progress)
        pairs, method, seconds, stats = found.pairs, found.method, found.seconds, found.stats
        if work is not None:
            work.save(
                "pairs",
                pairs=pairs,
                method=np.array(method),
                seconds=np.array(seconds),
                min_similarity=np.array(min_similarity),
            )
    refused = merge_pairs(sets, pairs, DEFAULT_MAX_CLUSTER)
    clusters = Clusters(sets.roots(), int(len(pairs)), refused, min_similarity, DEFAULT_MAX_CLUSTER)
    names = _group_names(records, ids, clusters.ids)
    summary: dict[str, Any] = dict(clusters.summary())
    summary["patient_groups"] = len(first_of)
    summary["exact_copies"] = sum(len(members) - 1 for members in copies)
    summary["method"] = method
    summary["seconds"] = round(seconds, 3)
    summary.update({f"index_{k}": v for k, v in stats.items()})
    return names, summary


def _group_names(records: Sequence[Record], ids: Sequence[str], roots: np.ndarray) -> list[str]:
    """One name per image: its patients joined by ``+``, else its near-duplicate cluster."""
    members: dict[int, list[int]] = {}
    for i, root in enumerate(roots):
        members.setdefault(int(root), []).append(i)
    names: list[str] = [""] * len(records)
    for items in members.values():
        patients = sorted({g for i in items if (g := records[i].group) is not None})
        if patients:
            name = "+".join(patients)
        elif len(items) > 1:
            name = f"near-duplicates:{ids[items[0]]}"
        else:
            name = f"image:{ids[items[0]]}"
        for i in items:
            names[i] = name
    return names


def _stratum(record: Record) -> str:
    return "+".join(sorted(record.labels))


def _split(
    records: Sequence[Record], groups: Sequence[str], options: DataOptions
) -> tuple[dict[str, np.ndarray], SplitPlan]:
    """Grouped, stratified split; a published split of the layout is regrouped or kept exactly
    (``options.split``), and the splits it lacks are carved out of its train split."""
    plan = plan_split([r.split for r in records], groups, options.fractions, options.split)
    split = grouped_stratified_split(
        [_stratum(r) for r in records],
        plan.groups,
        fractions=plan.fractions,
        seed=options.seed,
        fixed=plan.fixed,
    )
    return split, plan


def _labels(
    manifest: Manifest,
    records: Sequence[Record],
    split: Mapping[str, np.ndarray],
    min_positives: int,
) -> tuple[tuple[str, ...], np.ndarray, dict[str, dict[str, int]]]:
    """Label array in record order: class indices, or multi-hot over the kept vocabulary.

    Multi-label: a label with fewer than ``min_positives`` positives in some split is dropped
    from the vocabulary; the report maps each dropped label to its per-split counts.
    """
    if manifest.task == "multiclass":
        index = {name: k for k, name in enumerate(manifest.classes)}
        return manifest.classes, np.array([index[r.labels[0]] for r in records], np.int64), {}
    vocab = sorted({label for r in records for label in (*r.labels, *r.masked)})
    column = {name: k for k, name in enumerate(vocab)}
    hot = np.zeros((len(records), len(vocab)), dtype=np.uint8)
    for i, record in enumerate(records):
        hot[i, [column[label] for label in record.labels]] = 1
        if record.masked:
            hot[i, [column[label] for label in record.masked]] = MASKED_LABEL
    per_split = {s: (hot[idx] == 1).sum(axis=0) for s, idx in split.items()}
    dropped = {
        name: {s: int(per_split[s][k]) for s in SPLITS}
        for k, name in enumerate(vocab)
        if min(int(per_split[s][k]) for s in SPLITS) < min_positives
    }
    keep = [k for k, name in enumerate(vocab) if name not in dropped]
    if not keep:
        raise DataError(
            f"The folder '{manifest.root}' leaves no label with at least {min_positives} positive "
            f"images in every split (labels: {', '.join(vocab)}); lower --min-label-positives "
            "(search, data inspect, data prepare) or add images."
        )
    return tuple(vocab[k] for k in keep), np.ascontiguousarray(hot[:, keep]), dropped


def _label_notes(dropped: Mapping[str, Mapping[str, int]]) -> list[str]:
    if not dropped:
        return []
    shown = "; ".join(
        f"{name} ({', '.join(f'{s} {n}' for s, n in counts.items())})"
        for name, counts in dropped.items()
    )
    return [f"Labels dropped for too few positives in some split: {shown}."]


def _split_notes(audit: Mapping[str, Any], dedup: Mapping[str, Any]) -> list[str]:
    """Warnings about the grouping: capped near-duplicate chains, groups crossing fixed splits."""
    notes = []
    if dedup["refused_merges"]:
        notes.append(
            f"{dedup['refused_merges']} near-duplicate merges were refused because a cluster "
            f"would exceed {DEFAULT_MAX_CLUSTER} images: many images look alike at similarity "
            f">= {dedup['min_similarity']}; check the largest groups in manifest.csv."
        )
    if audit["crossing"]:
        notes.append(
            f"{audit['crossing']} groups (patients or near-duplicates) lie in more than one of "
            "the dataset's own split folders, e.g. "
            f"{', '.join(audit['examples'][:3])}: the dataset's split leaks."
        )
    return notes


def _offsets(split: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    offsets: dict[str, list[int]] = {}
    start = 0
    for name in SPLITS:
        stop = start + len(split[name])
        offsets[name] = [start, stop]
        start = stop
    return offsets


def _write_masks(
    path: Path, records: Sequence[Record], order: np.ndarray, size: int, workers: int
) -> tuple[int, list[str]]:
    """Decode the lung masks of the images, in cache order, into ``path`` (1 = lung), a chunk
    at a time with file writes.

    Masks are kept only when every image has a decodable one (a probe then blanks the same
    region kind on every image); otherwise none are, and a note says why.

    Returns:
        (number of masks written, notes).
    """
    with_mask = sum(r.mask is not None for r in records)
    if with_mask == 0:
        return 0, []
    if with_mask < len(records):
        return 0, [
            f"Lung masks not kept: {len(records) - with_mask} of {len(records)} images have none."
        ]
    paths = [str(records[int(i)].mask) for i in order]
    offset = create_rows(path, len(paths), (size, size))
    with (
        decoder(size, _worker_count(workers, len(paths))) as decode_many,
        open(path, "r+b") as out,
    ):
        out.seek(offset)
        for row, result in enumerate(decode_many(paths)):
            if result.pixels is None:
                out.close()
                path.unlink()
                return 0, [
                    f"Lung masks not kept: '{paths[row]}' cannot be decoded ({result.skip})."
                ]
            out.write((result.pixels > 127).astype(np.uint8).tobytes())
    return len(paths), []


def _write_manifest(
    path: Path,
    records: Sequence[Record],
    ids: Sequence[str],
    groups: Sequence[str],
    facts: ImageFacts,
    order: np.ndarray,
    offsets: Mapping[str, Sequence[int]],
) -> None:
    split_of = np.empty(len(order), dtype=object)
    for name, (start, stop) in offsets.items():
        split_of[start:stop] = name
    columns = ["index", "split", "path", "labels", "group", "source", "mode", "width", "height"]
    # File names that are not UTF-8 are written back as their own bytes (and read so).
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "format", "digest"])
        for row, i in enumerate(order):
            record, meta = records[int(i)], facts.row(int(i))
            writer.writerow(
                [
                    row,
                    split_of[row],
                    ids[int(i)],
                    "|".join(record.labels),
                    groups[int(i)],
                    record.source or "",
                    meta["mode"],
                    meta["width"],
                    meta["height"],
                    meta["format"],
                    meta["digest"],
                ]
            )


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=False)
        handle.write("\n")


def _counts(
    task: str, classes: Sequence[str], labels: np.ndarray, split: Mapping[str, np.ndarray]
) -> dict[str, dict[str, int]]:
    """Images (multi-class) or positives (multi-label) per class and split."""
    counts: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        part = labels[split[name]]
        if task == "multiclass":
            per = np.bincount(part, minlength=len(classes))
        else:
            # Positives only: a masked entry (MASKED_LABEL) is not one.
            per = (part == 1).sum(axis=0) if len(part) else np.zeros(len(classes), np.int64)
        counts[name] = {c: int(per[k]) for k, c in enumerate(classes)}
    return counts


def _dataset_hash(
    manifest: Manifest,
    classes: Sequence[str],
    records: Sequence[Record],
    ids: Sequence[str],
    facts: ImageFacts,
) -> str:
    """Content hash: which file (bytes digest) has which labels and patient, and the classes.

    Independent of image size, split and file times, so the same data on two machines hashes
    the same.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([manifest.dataset, manifest.task, list(classes)]).encode())
    for i in np.argsort(ids, kind="stable"):
        record = records[int(i)]
        line = [ids[int(i)], list(record.labels), record.group, facts.digest[int(i)].decode()]
        if record.masked:
            line.append(list(record.masked))
        digest.update(json.dumps(line).encode())
    return digest.hexdigest()[:16]


def _size_stats(facts: ImageFacts) -> dict[str, Any]:
    if not len(facts):
        return {}
    widths, heights = facts.width, facts.height
    pairs, counts = np.unique(np.stack([widths, heights], axis=1), axis=0, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:3]
    return {
        "images": len(facts),
        "min": [int(widths.min()), int(heights.min())],
        "median": [int(np.median(widths)), int(np.median(heights))],
        "max": [int(widths.max()), int(heights.max())],
        "most_common": [[f"{pairs[k][0]}x{pairs[k][1]}", int(counts[k])] for k in top],
    }


def _mode_counts(facts: ImageFacts) -> dict[str, int]:
    return dict(Counter(m.decode() for m in facts.mode).most_common())


def _versions() -> dict[str, str]:
    import PIL

    from cxr_tune import __version__

    return {
        "cxr_tune": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }

"""Streaming decode for prediction: files and folders in, batches of 8-bit squares out, in order.

``read_images`` decodes with the function training used (``cxr_tune.data.images.decode_file``:
PNG, JPEG and the rest through Pillow, DICOM through pydicom, pixels only) in worker processes,
and hands back batches in the order of the inputs while the workers go on decoding the next
ones, so decoding overlaps whatever the caller does with a batch (running the model). At most
``window`` chunks of ``chunk`` files are in flight, so memory stays bounded whatever the number
of files.

A file that cannot be used is a row with its reason (missing, unreadable, empty, corrupt, not
an image, a DICOM object without one single image ...) and never stops the others. Reasons are
fixed strings: no DICOM header value (patient name, id, dates) is ever in one.

Inputs: files are taken as given (any name: DICOM files often have none); folders are walked
recursively in sorted order, and their image files (extensions of any case, or the DICOM
preamble) are taken; system files (``.DS_Store``, ``Thumbs.db``, hidden files) are passed over
silently, other files are rows with the reason "not an image file".
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr_tune.data.images import SKIP_SYSTEM, decode_file, file_skip_reason
from cxr_tune.errors import DataError

SKIP_MISSING = "missing file (no such file or folder)"
# Defaults measured by scripts/bench/predict_throughput.py (1024 px PNGs, AlexNet at 224 px on
# a 2-core machine: one decoding process, batches of 32, one model thread was fastest); see
# scripts/bench/README.md.
DEFAULT_BATCH = 32
DEFAULT_CHUNK = 8
# Chunks in flight per worker: enough that a worker never waits for the consumer to ask.
INFLIGHT_PER_WORKER = 4


@dataclass(frozen=True)
class Entry:
    """One input row: a path, and the reason it is not decoded (None: it is an image candidate)."""

    path: str
    reason: str | None = None


@dataclass(frozen=True)
class Batch:
    """Consecutive input rows, decoded.

    Attributes:
        paths: the rows' paths, in input order.
        errors: per row, why it has no image (None where it was decoded).
        images: uint8 (k, S, S): the decoded rows only, in order (k = number of None errors).
    """

    paths: tuple[str, ...]
    errors: tuple[str | None, ...]
    images: np.ndarray = field(repr=False)

    @property
    def decoded(self) -> np.ndarray:
        """Boolean mask over the rows: True where ``images`` holds the row's pixels."""
        return np.array([e is None for e in self.errors], dtype=bool)


def list_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Entry]:
    """Expand files and folders into rows, in order (module doc).

    Raises:
        DataError: nothing to read at all (every folder given is empty of files, and no file
            was given).
    """
    entries: list[Entry] = []
    given = [Path(p) for p in paths]
    for path in given:
        if path.is_dir():
            entries.extend(_walk(path))
        elif path.exists():
            reason = None if path.is_file() else "not a regular file"
            entries.append(Entry(str(path), reason))
        else:
            entries.append(Entry(str(path), SKIP_MISSING))
    if not entries:
        shown = ", ".join(str(p) for p in given[:3]) + (" ..." if len(given) > 3 else "")
        raise DataError(f"No files to predict on in {shown or 'the paths given'}.")
    return entries


def _walk(folder: Path) -> Iterator[Entry]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            reason = file_skip_reason(name, path)
            if reason == SKIP_SYSTEM:
                continue
            yield Entry(str(path), reason)


def _decode_chunk(paths: Sequence[str], size: int) -> tuple[list[str | None], np.ndarray]:
    """Decode files in a worker: (reason per file, uint8 (k, size, size) of the decoded)."""
    reasons: list[str | None] = []
    pixels: list[np.ndarray] = []
    for path in paths:
        result = decode_file(path, size)
        if result.pixels is None:
            reasons.append(result.skip or "not a decodable image")
        else:
            reasons.append(None)
            pixels.append(result.pixels)
    stacked = np.stack(pixels) if pixels else np.zeros((0, size, size), np.uint8)
    return reasons, stacked


def usable_cores() -> int:
    """CPU cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def default_workers() -> int:
    """Decoding processes: one per usable core, less one for the model (at least one)."""
    return max(1, usable_cores() - 1)


def model_threads(workers: int) -> int:
    """PyTorch threads for the model beside ``workers`` decoding processes: the cores they
    leave (at least one). More threads than that only contend with the decoders."""
    return max(1, usable_cores() - workers)


def default_start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn``.

    Not ``fork``: the caller runs PyTorch (and may be a Ray driver), whose threads a forked
    child would inherit half-way. The fork server imports the decoder once and forks each
    worker from itself. Either way each worker imports the caller's ``__main__`` module again
    (Python 3.11's fork server does not preload it), so a caller keeps its main module light
    and imports PyTorch inside functions, as ``cxr_tune.cli`` does: a script that imports
    PyTorch at its top pays seconds per worker.
    """
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def read_images(
    inputs: Sequence[Entry] | Iterable[str | os.PathLike[str]],
    image_size: int,
    *,
    batch_size: int = DEFAULT_BATCH,
    workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    window: int | None = None,
    start_method: str | None = None,
) -> Iterator[Batch]:
    """Decode ``inputs`` (rows from :func:`list_inputs`, or paths) to ``image_size`` squares and
    yield them as batches of ``batch_size`` rows, in order.

    Args:
        workers: decoding processes (default :func:`default_workers`; 0 decodes in this
            process, without overlap).
        chunk: files per task sent to a worker.
        window: chunks in flight at most (default ``INFLIGHT_PER_WORKER`` per worker, and at
            least one batch's worth).
        start_method: how workers start (default :func:`default_start_method`).

    Raises:
        DataError: as :func:`list_inputs`, when paths are given.
    """
    entries = _as_entries(inputs)
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size ({batch_size}) and chunk ({chunk}) must be >= 1")
    workers = default_workers() if workers is None else max(0, int(workers))
    if workers == 0:
        yield from _batches(entries, _serial(entries, image_size, chunk), batch_size, image_size)
        return
    window = window or max(INFLIGHT_PER_WORKER * workers, -(-batch_size // chunk) + workers)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context(start_method or default_start_method())
    if context.get_start_method() == "forkserver":
        # The server imports the decoder once; each worker is a fork of it.
        context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        results = _parallel(pool, entries, image_size, chunk, window)
        yield from _batches(entries, results, batch_size, image_size)
    finally:
        # A consumer that stops early (an error, a break) does not wait for queued chunks.
        pool.shutdown(wait=True, cancel_futures=True)


def _as_entries(inputs: Sequence[Entry] | Iterable[str | os.PathLike[str]]) -> list[Entry]:
    items = list(inputs)
    if items and all(isinstance(item, Entry) for item in items):
        return items  # type: ignore[return-value]
    return list_inputs(items)  # type: ignore[arg-type]


ChunkResult = tuple[list[str | None], np.ndarray]


def _chunks(entries: Sequence[Entry], chunk: int) -> Iterator[list[Entry]]:
    for start in range(0, len(entries), chunk):
        yield list(entries[start : start + chunk])


def _serial(entries: Sequence[Entry], size: int, chunk: int) -> Iterator[ChunkResult]:
    for part in _chunks(entries, chunk):
        yield _merge(part, _decode_chunk([e.path for e in part if e.reason is None], size), size)


def _parallel(
    pool: Executor, entries: Sequence[Entry], size: int, chunk: int, window: int
) -> Iterator[ChunkResult]:
    """Chunk results in order, with at most ``window`` chunks submitted and not yet consumed."""
    pending: deque[tuple[list[Entry], Future[ChunkResult] | None]] = deque()
    parts = _chunks(entries, chunk)
    for part in parts:
        pending.append((part, _submit(pool, part, size)))
        if len(pending) >= window:
            yield _collect(*pending.popleft(), size)
    while pending:
        yield _collect(*pending.popleft(), size)


def _submit(pool: Executor, part: list[Entry], size: int) -> Future[ChunkResult] | None:
    paths = [e.path for e in part if e.reason is None]
    return pool.submit(_decode_chunk, paths, size) if paths else None


def _collect(part: list[Entry], future: Future[ChunkResult] | None, size: int) -> ChunkResult:
    if future is None:
        return _merge(part, ([], np.zeros((0, size, size), np.uint8)), size)
    try:
        decoded = future.result()
    except Exception as exc:  # a worker that died (out of memory, a crashing codec)
        failed = f"decoding failed in a worker process ({type(exc).__name__})"
        return [e.reason or failed for e in part], np.zeros((0, size, size), np.uint8)
    return _merge(part, decoded, size)


def _merge(part: list[Entry], decoded: ChunkResult, size: int) -> ChunkResult:
    """Put the reasons of rows that were never sent (listed with a reason) back in order."""
    reasons = iter(decoded[0])
    merged = [e.reason if e.reason is not None else next(reasons) for e in part]
    return merged, decoded[1]


def _batches(
    entries: Sequence[Entry], results: Iterator[ChunkResult], batch_size: int, size: int
) -> Iterator[Batch]:
    """Regroup chunk results (in order) into batches of ``batch_size`` rows."""
    paths = [e.path for e in entries]
    errors: list[str | None] = []
    images: list[np.ndarray] = []
    held = 0  # rows gathered for the current batch
    row = 0
    for reasons, pixels in results:
        k = 0
        for reason in reasons:
            errors.append(reason)
            if reason is None:
                images.append(pixels[k])
                k += 1
            held += 1
            row += 1
            if held == batch_size:
                yield _batch(paths[row - held : row], errors, images, size)
                errors, images, held = [], [], 0
    if held:
        yield _batch(paths[row - held : row], errors, images, size)


def _batch(
    paths: Sequence[str], errors: list[str | None], images: list[np.ndarray], size: int
) -> Batch:
    stacked = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return Batch(tuple(paths), tuple(errors), stacked)

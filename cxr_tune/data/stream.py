"""Chunked, resumable decoding into row files on disk, in memory that does not grow with N.

``prepare`` decodes a dataset once. At 224,000 images that is a long job, and its output (11 GB
at 224 px) cannot sit in memory, nor in a memory map that keeps every written page resident.
So images are decoded in chunks of :data:`CHUNK_IMAGES` and each chunk is written with plain
file writes into two ``.npy`` files of a *work folder* (``pixels.npy`` at the cache size and
``thumbs.npy``, the 32 px thumbnails of the near-duplicate audit), at the rows of its records.
When a chunk is on disk, a small JSON file records what each of its files gave (mode, size,
format, digest, or the reason it was skipped). A prepare that is killed or interrupted leaves the
work folder behind; the next prepare of the same cache key finds it and starts at the first
chunk without a record.

The work folder ``<cache_dir>/.work-<cache folder name>/`` is locked by the process using it
(``lock`` holds its pid). A second prepare of the same key while the first still runs works in
a private temporary folder instead, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import cxr_tune.data.images as image_io
from cxr_tune.data.types import SkipReport
from cxr_tune.processes import process_alive

# Images per chunk: the unit of resumption, and the most decoded pixels held in memory at once
# (1024 x 224 x 224 = 51 MB).
CHUNK_IMAGES = 1024
WORK_PREFIX = ".work-"
TMP_PREFIX = ".tmp-"
# A work folder nobody has touched for this long is removed by the next prepare in its parent.
STALE_WORK_SECONDS = 7 * 24 * 3600
_PLAN = "plan.json"
_LOCK = "lock"
_PIXELS = "pixels.npy"
_THUMBS = "thumbs.npy"
_CHUNKS = "chunks"


# --- row files ------------------------------------------------------------------------------


def create_rows(path: Path, rows: int, shape: tuple[int, ...]) -> int:
    """Create a uint8 ``.npy`` of ``(rows, *shape)`` without writing its data (a sparse file).

    Returns:
        The byte offset of row 0 (the header's length).
    """
    header = {"descr": "|u1", "fortran_order": False, "shape": (rows, *shape)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        handle.truncate(offset + rows * int(np.prod(shape)))
    return offset


def data_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    """The byte offset of row 0 and the shape of a ``.npy`` file, from its header."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(handle)
        return handle.tell(), tuple(shape)


class RowReader:
    """Reads chosen rows of a uint8 ``.npy`` with file reads, not a memory map: the pages read
    stay in the OS cache, not in this process's resident memory."""

    def __init__(self, path: Path, rows: np.ndarray | None = None) -> None:
        self.path = path
        self.offset, shape = data_offset(path)
        self.shape = shape[1:]
        self.row_bytes = int(np.prod(self.shape))
        self.rows = np.arange(shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``self.rows[start:stop]`` as one (n, *shape) array."""
        wanted = self.rows[start:stop]
        out = np.empty((len(wanted), *self.shape), dtype=np.uint8)
        flat = out.reshape(len(wanted), -1)
        with open(self.path, "rb", buffering=0) as handle:
            k = 0
            while k < len(wanted):
                # Runs of consecutive rows are read in one call.
                end = k + 1
                while end < len(wanted) and wanted[end] == wanted[end - 1] + 1:
                    end += 1
                handle.seek(self.offset + int(wanted[k]) * self.row_bytes)
                _read_fully(handle, flat[k:end].data.cast("B"))
                k = end
        return out

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("RowReader reads contiguous slices only")
        return self.read(start, stop)


def _read_fully(handle: Any, view: memoryview) -> None:
    done = 0
    while done < len(view):
        got = handle.readinto(view[done:])
        if not got:
            raise OSError(f"unexpected end of file in {handle.name}")
        done += got


def copy_rows(source: RowReader, target: Path, chunk: int = CHUNK_IMAGES) -> None:
    """Write ``source``'s rows, in its order, into a new ``.npy`` at ``target`` (file writes)."""
    create_rows(target, len(source), source.shape)
    offset, _ = data_offset(target)
    with open(target, "r+b") as out:
        out.seek(offset)
        for start in range(0, len(source), chunk):
            out.write(source.read(start, min(start + chunk, len(source))).tobytes())


# --- per-image facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """What decoding found about each kept image, as compact arrays (about 60 bytes an image).

    Attributes:
        mode, format: the file's PIL mode and format (bytes strings).
        width, height: the file's size in pixels.
        digest: blake2b of the file's bytes (hex, bytes string).
    """

    mode: np.ndarray
    format: np.ndarray
    width: np.ndarray
    height: np.ndarray
    digest: np.ndarray

    def row(self, i: int) -> dict[str, Any]:
        """One image's facts as a dict (mode, width, height, format, digest)."""
        return {
            "mode": self.mode[i].decode(),
            "width": int(self.width[i]),
            "height": int(self.height[i]),
            "format": self.format[i].decode(),
            "digest": self.digest[i].decode(),
        }

    def __len__(self) -> int:
        return len(self.mode)


@dataclass(frozen=True)
class Decoded:
    """The result of decoding every record into a work folder.

    Attributes:
        kept: indices (into the records) of the images that decoded, ascending.
        facts: per kept image, in the order of ``kept``.
        skipped: files that did not decode, per reason.
        seconds: decoding time of this call (resumed chunks cost nothing).
        resumed: images whose chunk an earlier, interrupted prepare had finished.
    """

    kept: np.ndarray
    facts: ImageFacts
    skipped: SkipReport
    seconds: float
    resumed: int


# --- the work folder ------------------------------------------------------------------------


class WorkFolder:
    """The scratch of one prepare: decoded pixels, thumbnails, finished chunks, saved results.

    Use :meth:`acquire`; call :meth:`release` when stopping (the folder stays for a later
    resume) or :meth:`remove` when the cache is published.
    """

    def __init__(self, path: Path, private: bool) -> None:
        self.path = path
        self.private = private

    @classmethod
    def acquire(cls, parent: Path, name: str) -> WorkFolder:
        """The resumable work folder of cache folder ``name``, locked for this process, or a
        private temporary folder when another live process holds it."""
        _remove_stale(parent)
        path = parent / f"{WORK_PREFIX}{name}"
        path.mkdir(parents=True, exist_ok=True)
        if _take_lock(path / _LOCK):
            return cls(path, private=False)
        private = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}work-{name}-{os.getpid()}-", dir=parent)
        return cls(Path(private), private=True)

    @property
    def pixels(self) -> Path:
        return self.path / _PIXELS

    @property
    def thumbs(self) -> Path:
        return self.path / _THUMBS

    def start(self, plan: dict[str, Any], rows: int, size: int) -> None:
        """Keep the finished chunks of an earlier run of the same plan; else start afresh."""
        plan_file = self.path / _PLAN
        try:
            same = json.loads(plan_file.read_text()) == plan
        except (OSError, ValueError):
            same = False
        complete = self.pixels.is_file() and self.thumbs.is_file()
        if same and complete:
            return
        shutil.rmtree(self.path / _CHUNKS, ignore_errors=True)
        for name in (_PIXELS, _THUMBS, "pairs.npz"):
            (self.path / name).unlink(missing_ok=True)
        (self.path / _CHUNKS).mkdir()
        create_rows(self.pixels, rows, (size, size))
        side = image_io.THUMB_SIZE
        create_rows(self.thumbs, rows, (side, side))
        _write_atomic(plan_file, json.dumps(plan, sort_keys=True))

    def finished(self) -> set[int]:
        """Indices of the chunks whose record is on disk."""
        names = os.listdir(self.path / _CHUNKS) if (self.path / _CHUNKS).is_dir() else []
        return {int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()}

    def chunk_file(self, index: int) -> Path:
        return self.path / _CHUNKS / f"{index:06d}.json"

    def saved(self, name: str) -> dict[str, np.ndarray] | None:
        """Arrays saved by :meth:`save` in an earlier run, or None."""
        try:
            with np.load(self.path / f"{name}.npz") as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            return None

    def save(self, name: str, **arrays: np.ndarray) -> None:
        """Save the result of a finished step (written under a temporary name, then renamed)."""
        temporary = self.path / f"{name}.partial.npz"
        np.savez(temporary, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as bool
        os.replace(temporary, self.path / f"{name}.npz")

    def release(self) -> None:
        """Stop using the folder: a private one is deleted, a resumable one unlocked and kept."""
        if self.private:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            (self.path / _LOCK).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _take_lock(lock: Path) -> bool:
    """Make ``lock`` hold our pid unless a live process (not us) holds it."""
    try:
        holder = int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        holder = 0
    if holder and holder != os.getpid() and process_alive(holder):
        return False
    _write_atomic(lock, str(os.getpid()))
    # Two processes that both found a stale lock: the last rename wins, the other backs off.
    return lock.read_text().strip() == str(os.getpid())


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.partial")
    temporary.write_text(text)
    os.replace(temporary, path)


def _remove_stale(parent: Path) -> None:
    """Delete private temporaries of dead processes and work folders untouched for a week."""
    if not parent.is_dir():
        return
    now = time.time()
    for entry in parent.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            parts = entry.name.rsplit("-", 2)
            if len(parts) == 3 and parts[1].isdigit() and not process_alive(int(parts[1])):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(WORK_PREFIX) and entry.is_dir():
            try:
                holder = int((entry / _LOCK).read_text().strip() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and process_alive(holder):
                continue
            touched = max((p.stat().st_mtime for p in entry.rglob("*")), default=0.0)
            if now - max(touched, entry.stat().st_mtime) > STALE_WORK_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)


# Bump when what a chunk records changes (2: uniform images are skipped), so that a work folder
# an older version left is decoded again rather than resumed.
DECODE_VERSION = 2


def plan_of(paths: Sequence[str], size: int) -> dict[str, Any]:
    """What a work folder's content depends on: the files in order, the size, the chunking."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
    return {
        "records": len(paths),
        "paths": digest.hexdigest(),
        "image_size": size,
        "thumb_size": image_io.THUMB_SIZE,
        "chunk": CHUNK_IMAGES,
        "decode": DECODE_VERSION,
    }


# --- decoding -------------------------------------------------------------------------------


@contextmanager
def decoder(size: int, workers: int) -> Iterator[Callable[[Sequence[str]], Iterator[Any]]]:
    """A function decoding a list of files in order (in a process pool when ``workers`` > 1).

    The pool lives as long as the context, across chunks; ``map`` keeps the input order, so the
    result is the same whatever the pool does.
    """
    decode = partial(image_io.decode_file, size=size)
    if workers <= 1:
        yield lambda paths: map(decode, paths)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may be a Ray driver with threads running.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield lambda paths: pool.map(decode, paths, chunksize=16)


def decode_into(
    work: WorkFolder,
    paths: Sequence[str],
    size: int,
    workers: int,
    progress: bool | None,
) -> Decoded:
    """Decode ``paths`` chunk by chunk into ``work`` (resuming), then gather what was found.

    Args:
        work: the work folder (its finished chunks are kept).
        paths: the image files, in record order.
        size: side of the decoded squares.
        workers: decoding processes (1: in this process).
        progress: progress bar on stderr (None: when stderr is a terminal).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    work.start(plan_of(paths, size), len(paths), size)
    chunks = range(0, len(paths), CHUNK_IMAGES)
    done = work.finished()
    resumed = sum(min(CHUNK_IMAGES, len(paths) - CHUNK_IMAGES * k) for k in done)
    todo = [k for k in range(len(chunks)) if k not in done]
    bar = tqdm(
        total=len(paths),
        initial=resumed,
        desc="decoding" + (f" (resumed: {len(done)} chunks done)" if done else ""),
        unit="img",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    pixel_offset, _ = data_offset(work.pixels)
    thumb_offset, _ = data_offset(work.thumbs)
    with (
        decoder(size, workers if todo else 1) as decode_many,
        open(work.pixels, "r+b", buffering=0) as pixel_file,
        open(work.thumbs, "r+b", buffering=0) as thumb_file,
    ):
        for k in todo:
            start = k * CHUNK_IMAGES
            chunk = paths[start : start + CHUNK_IMAGES]
            facts: list[Any] = []
            for i, result in enumerate(decode_many(chunk)):
                row = start + i
                if result.skip is not None or result.pixels is None or result.thumb is None:
                    facts.append(result.skip or image_io.SKIP_UNDECODABLE)
                elif image_io.is_uniform(result.pixels):
                    facts.append(image_io.SKIP_UNIFORM)
                else:
                    _write_at(pixel_file, pixel_offset + row * size * size, result.pixels)
                    side = image_io.THUMB_SIZE
                    _write_at(thumb_file, thumb_offset + row * side * side, result.thumb)
                    facts.append(
                        [result.mode, result.width, result.height, result.format, result.digest]
                    )
                bar.update(1)
            # The chunk's record is written last: a chunk without one is decoded again.
            _write_atomic(work.chunk_file(k), json.dumps(facts))
    bar.close()
    kept, facts_arrays, skipped = gather(work, paths)
    return Decoded(kept, facts_arrays, skipped, time.perf_counter() - started, resumed)


def _write_at(handle: Any, offset: int, array: np.ndarray) -> None:
    data = np.ascontiguousarray(array, dtype=np.uint8).data
    handle.seek(offset)
    written = 0
    while written < len(data):
        written += handle.write(data[written:])


def gather(work: WorkFolder, paths: Sequence[str]) -> tuple[np.ndarray, ImageFacts, SkipReport]:
    """Read every chunk record: the kept indices, their facts and the skip report."""
    kept: list[int] = []
    modes: list[str] = []
    formats: list[str] = []
    widths: list[int] = []
    heights: list[int] = []
    digests: list[str] = []
    skipped = SkipReport()
    for k in range(0, (len(paths) + CHUNK_IMAGES - 1) // CHUNK_IMAGES):
        facts = json.loads(work.chunk_file(k).read_text())
        for i, fact in enumerate(facts):
            row = k * CHUNK_IMAGES + i
            if isinstance(fact, str):
                skipped.add(fact, paths[row])
                continue
            kept.append(row)
            mode, width, height, fmt, digest = fact
            modes.append(mode)
            widths.append(width)
            heights.append(height)
            formats.append(fmt)
            digests.append(digest)
    facts_arrays = ImageFacts(
        # Room for the longest description (e.g. "DICOM MONOCHROME2 16-bit").
        mode=np.array(modes, dtype="S32"),
        format=np.array(formats, dtype="S16"),
        width=np.array(widths, dtype=np.int32),
        height=np.array(heights, dtype=np.int32),
        digest=np.array(digests, dtype="S32"),
    )
    return np.array(kept, dtype=np.int64), facts_arrays, skipped

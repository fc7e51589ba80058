"""The streaming reader: files and folders in order, decoded exactly as training decodes them, in
worker processes or not; a file that cannot be read is a row with its reason; memory bounded."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cxr_tune.bundle import reader
from cxr_tune.bundle.reader import SKIP_MISSING, Entry, list_inputs, read_images
from cxr_tune.data.images import SKIP_NOT_IMAGE, SKIP_TRUNCATED, SKIP_UNDECODABLE, decode_file
from cxr_tune.errors import DataError
from tests.data.builders import save_image, save_truncated
from tests.data.dicom_builders import PATIENT_ID, PATIENT_NAME, write_image

SIZE = 32


def build_folder(root: Path) -> dict[str, str | None]:
    """A folder of every kind of input; returns relative path -> expected reason (None: image)."""
    save_image(root / "b" / "one.png", 1)
    save_image(root / "b" / "two.JPG", 2, mode="RGB")
    save_image(root / "a.PNG", 3, size=(80, 48))
    write_image(root / "c" / "scan.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4000,
                bits_stored=12)  # fmt: skip
    write_image(
        root / "c" / "IM000001", (np.arange(48 * 48) % 251).astype(np.uint8).reshape(48, 48)
    )
    save_truncated(root / "d" / "broken.png", 4)
    (root / "d" / "notes.txt").write_text("not an image")
    (root / "d" / "fake.png").write_text("not a png either")
    (root / "d" / ".DS_Store").write_bytes(b"\0\1")
    (root / "Thumbs.db").write_bytes(b"\0")
    return {
        "a.PNG": None,
        "b/one.png": None,
        "b/two.JPG": None,
        "c/IM000001": None,
        "c/scan.dcm": None,
        "d/broken.png": SKIP_TRUNCATED,
        "d/fake.png": SKIP_UNDECODABLE,
        "d/notes.txt": SKIP_NOT_IMAGE,
    }


def rows(batches: list[reader.Batch], root: Path) -> list[tuple[str, str | None]]:
    return [
        (str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p, e)
        for b in batches
        for p, e in zip(b.paths, b.errors)
    ]


def test_list_inputs_walks_folders_sorted_and_keeps_the_given_order(tmp_path: Path) -> None:
    expected = build_folder(tmp_path / "in")
    missing = tmp_path / "nowhere.png"
    entries = list_inputs([missing, tmp_path / "in", tmp_path / "in" / "b" / "one.png"])
    assert entries[0] == Entry(str(missing), SKIP_MISSING)
    walked = [(str(Path(e.path).relative_to(tmp_path / "in")), e.reason) for e in entries[1:-1]]
    # Reasons known before decoding: the extension; the rest are candidates until decoded.
    assert walked == [(k, v if v == SKIP_NOT_IMAGE else None) for k, v in expected.items()]
    assert entries[-1].path.endswith("one.png")


def test_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"")
    with pytest.raises(DataError, match="No files to predict on"):
        list_inputs([tmp_path / "empty"])


# Two worker processes start (seconds on a busy 2-core machine): outside the quick loop.
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_read_images_decodes_like_training_in_order_with_reasons(
    tmp_path: Path, workers: int
) -> None:
    root = tmp_path / "in"
    expected = build_folder(root)
    missing = tmp_path / "gone.dcm"
    batches = list(read_images([root, missing], SIZE, batch_size=3, workers=workers, chunk=2))
    assert [len(b.paths) for b in batches] == [3, 3, 3]
    assert rows(batches, root) == [*expected.items(), (str(missing), SKIP_MISSING)]
    decoded = [img for b in batches for img in b.images]
    paths = [p for b in batches for p, e in zip(b.paths, b.errors) if e is None]
    assert len(decoded) == len(paths) == 5
    for path, pixels in zip(paths, decoded):
        assert pixels.shape == (SIZE, SIZE) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, decode_file(path, SIZE).pixels)
    assert batches[0].decoded.tolist() == [True, True, True]
    # DICOM: pixels only; no header value anywhere in what the reader hands back.
    text = repr([(b.paths, b.errors) for b in batches])
    assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_read_images_accepts_paths_and_entries_alike(tmp_path: Path) -> None:
    save_image(tmp_path / "x.png", 5)
    by_path = list(read_images([tmp_path / "x.png"], SIZE, workers=0))
    by_entry = list(read_images(list_inputs([tmp_path]), SIZE, workers=0))
    np.testing.assert_array_equal(by_path[0].images, by_entry[0].images)
    assert by_path[0].paths == by_entry[0].paths


class CountingPool(ThreadPoolExecutor):
    """A real (thread) pool that records how many tasks were submitted and not yet consumed."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.outstanding = 0
        self.most = 0
        self.lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self.lock:
            self.outstanding += 1
            self.most = max(self.most, self.outstanding)
        return super().submit(fn, *args, **kwargs)

    def consumed(self) -> None:
        with self.lock:
            self.outstanding -= 1


def test_parallel_decoding_keeps_at_most_a_window_of_chunks_in_flight(tmp_path: Path) -> None:
    for k in range(40):
        save_image(tmp_path / f"{k:02d}.png", k)
    entries = list_inputs([tmp_path])
    pool = CountingPool()
    with pool:
        results = reader._parallel(pool, entries, SIZE, chunk=2, window=3)
        seen = 0
        for reasons, pixels in results:
            pool.consumed()
            seen += len(reasons)
            assert len(pixels) == len(reasons)
    assert seen == 40
    assert pool.most <= 3


def test_default_workers_and_model_threads_share_the_cores() -> None:
    workers = reader.default_workers()
    threads = reader.model_threads(workers)
    assert workers >= 1 and threads >= 1
    assert workers + threads == max(2, reader.usable_cores())

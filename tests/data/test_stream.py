from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.data.stream import RowReader, WorkFolder, copy_rows, create_rows, data_offset


def _row_file(path: Path, rows: int = 10, side: int = 4) -> np.ndarray:
    values = np.arange(rows * side * side, dtype=np.int64).reshape(rows, side, side) % 251
    create_rows(path, rows, (side, side))
    offset, shape = data_offset(path)
    assert shape == (rows, side, side)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(values.astype(np.uint8).tobytes())
    return values.astype(np.uint8)


def test_row_file_is_a_valid_npy(tmp_path: Path) -> None:
    values = _row_file(tmp_path / "rows.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), values)


def test_row_reader_reads_chosen_rows_in_order(tmp_path: Path) -> None:
    values = _row_file(tmp_path / "rows.npy")
    chosen = np.array([7, 1, 2, 3, 9, 0])
    reader = RowReader(tmp_path / "rows.npy", chosen)
    np.testing.assert_array_equal(reader[0:6], values[chosen])
    np.testing.assert_array_equal(reader[2:5], values[chosen[2:5]])
    assert len(reader) == 6


def test_copy_rows_writes_the_chosen_order(tmp_path: Path) -> None:
    values = _row_file(tmp_path / "rows.npy", rows=25)
    order = np.random.default_rng(0).permutation(25)[:20]
    copy_rows(RowReader(tmp_path / "rows.npy", order), tmp_path / "out.npy", chunk=6)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), values[order])


def test_work_folder_held_by_a_live_process_is_not_shared(tmp_path: Path) -> None:
    first = WorkFolder.acquire(tmp_path, "cache-a")
    assert not first.private
    # The parent of this process is alive: its lock must be respected.
    (first.path / "lock").write_text(str(os.getppid()))
    second = WorkFolder.acquire(tmp_path, "cache-a")
    assert second.private and second.path != first.path
    second.release()
    assert not second.path.exists()
    # A lock of a process that is gone is taken over.
    (first.path / "lock").write_text("999999999")
    third = WorkFolder.acquire(tmp_path, "cache-a")
    assert not third.private and third.path == first.path


def test_work_folder_restarts_when_the_plan_changes(tmp_path: Path) -> None:
    work = WorkFolder.acquire(tmp_path, "cache-b")
    work.start({"records": 3}, rows=3, size=8)
    work.chunk_file(0).write_text("[]")
    work.start({"records": 3}, rows=3, size=8)
    assert work.finished() == {0}  # same plan: the finished chunk is kept
    work.start({"records": 4}, rows=4, size=8)
    assert work.finished() == set()
    assert np.load(work.pixels, mmap_mode="r").shape == (4, 8, 8)


@pytest.mark.parametrize("name", ["pairs"])
def test_work_folder_saves_and_finds_results(tmp_path: Path, name: str) -> None:
    work = WorkFolder.acquire(tmp_path, "cache-c")
    assert work.saved(name) is None
    work.save(name, pairs=np.array([[0, 1]]))
    saved = work.saved(name)
    assert saved is not None and saved["pairs"].tolist() == [[0, 1]]

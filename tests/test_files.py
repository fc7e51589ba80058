"""Files written whole or not at all (``cxr_tune.files``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_tune.files import replacing, write_atomic


def test_write_atomic_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    path.write_text("old")
    write_atomic(path, '{"new": 1}')
    assert path.read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation.json"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    path.write_text("old report")
    with pytest.raises(OSError, match="No space left"), replacing(path) as tmp:
        tmp.write_text("half of a new rep")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]

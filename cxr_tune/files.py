"""Files written whole or not at all.

A report, ``evaluation.json`` or an experiment record is written under a temporary name in the
same folder and renamed over the old one (``os.replace``, atomic on one file system): a reader,
a crash or a full disk sees the old file or the new one, never half of one, and no temporary
file is left behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it
    is removed and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all."""
    with replacing(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite file ``source`` in ``target``, even while another process
    writes it (SQLite's backup API; a plain file copy could catch half a transaction).

    Raises:
        sqlite3.Error: ``source`` is not a readable SQLite file.
    """
    import sqlite3

    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()

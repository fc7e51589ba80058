"""Helpers of the layouts that ship a label table (NIH ChestX-ray14, CheXpert).

Their CSV files have 100,000-odd rows: rows are streamed one by one (never a list of dicts), the
text is read as UTF-8 (with or without BOM) or else Latin-1, and the view and policy options are
checked against the names each layout knows, with a did-you-mean.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cxr_tune.data.images import file_skip_reason
from cxr_tune.data.types import SkipReport
from cxr_tune.errors import ConfigError, DataError, unknown_name_message


def read_text(path: Path, limit: int | None = None) -> tuple[str, str]:
    """The file's text and its encoding: UTF-8 (BOM allowed), else Latin-1 (which never fails).

    Raises:
        DataError: the file cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read() if limit is None else handle.read(limit)
    except OSError as err:
        raise DataError(f"The file '{path}' cannot be read: {err.strerror}.") from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def header_of(path: Path) -> list[str]:
    """The first line of a CSV file as stripped column names ([] when unreadable)."""
    try:
        text, _ = read_text(path, limit=8192)
    except DataError:
        return []
    first = text.splitlines()[0] if text else ""
    return [c.strip() for c in next(csv.reader([first]), [])]


def csv_rows(
    path: Path, required: Sequence[str]
) -> tuple[dict[str, int], Iterator[list[str]], str]:
    """Column positions (by lower-case name), a row iterator and the encoding of a CSV file.

    Rows are yielded as lists of stripped cells; blank lines are skipped. A short row is padded
    with empty cells, so ``row[column["x"]]`` never fails.

    Raises:
        DataError: the file is unreadable, or lacks a column of ``required`` (case-insensitive).
    """
    text, encoding = read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [c.strip() for c in next(reader, [])]
    except csv.Error as err:
        raise DataError(f"The file '{path}' is not a readable CSV file: {err}.") from None
    column = {name.lower(): k for k, name in enumerate(header) if name}
    missing = [name for name in required if name.lower() not in column]
    if missing:
        raise DataError(
            f"The file '{path}' has no column {', '.join(repr(m) for m in missing)}; its columns "
            f"are {', '.join(c for c in header if c) or 'none'}, but "
            f"{', '.join(repr(r) for r in required)} are required."
        )
    return column, _rows(path, reader, len(header)), encoding


def _rows(path: Path, reader: Iterator[list[str]], width: int) -> Iterator[list[str]]:
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            yield cells
    except csv.Error as err:
        raise DataError(f"The file '{path}' is not a readable CSV file: {err}.") from None


def choose_views(value: Any, known: Sequence[str], option: str = "views") -> tuple[str, ...]:
    """Normalise a ``views`` option (a list, or a comma-separated string) against ``known``.

    Names are matched case-insensitively and returned in their ``known`` spelling.

    Raises:
        ConfigError: not a list of strings, empty, or a name the layout does not know.
    """
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"The value of `{option}` is {value!r}, but must be a list of view names "
            f"({', '.join(known)})."
        )
    spelled = {name.lower(): name for name in known}
    chosen: list[str] = []
    for raw in value:
        name = " ".join(raw.split())
        if not name:
            continue
        if name.lower() not in spelled:
            raise ConfigError(f"`{option}`: " + unknown_name_message("view", name, known))
        if spelled[name.lower()] not in chosen:
            chosen.append(spelled[name.lower()])
    if not chosen:
        raise ConfigError(f"The value of `{option}` is empty, but must name at least one view.")
    return tuple(chosen)


def choose_name(value: Any, allowed: Iterable[str], option: str) -> str:
    """Check a one-word option (e.g. ``uncertain``) against its allowed values.

    Raises:
        ConfigError: the value is not one of ``allowed`` (with a did-you-mean).
    """
    allowed = tuple(allowed)
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in allowed:
        raise ConfigError(f"`{option}`: " + unknown_name_message("value", str(value), allowed))
    return str(text)


def index_files(folders: Iterable[Path], root: Path, skipped: SkipReport) -> dict[str, str]:
    """Image files under ``folders``, by relative POSIX path from ``root`` -> absolute path.

    Other files (system files, non-images) go to ``skipped`` with their reason. Paths are kept
    as strings: a dataset of 224,000 files would spend hundreds of MB on ``Path`` objects.
    """
    images: dict[str, str] = {}
    base = str(root)
    for folder in folders:
        for current, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_dir = os.path.relpath(current, base).replace(os.sep, "/")
            for name in sorted(files):
                path = os.path.join(current, name)
                reason = file_skip_reason(name)
                if reason is None:
                    images[name if rel_dir == "." else f"{rel_dir}/{name}"] = path
                else:
                    skipped.add(reason, path)
    return images

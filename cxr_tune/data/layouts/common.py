"""Helpers the layout parsers share: listing image files, reporting what is not one."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cxr_tune.data.images import file_skip_reason
from cxr_tune.data.types import SkipReport
from cxr_tune.errors import ConfigError, DataError


def subdirs(folder: Path) -> list[Path]:
    """Visible subfolders of ``folder``, sorted by name."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"The folder '{folder}' cannot be read: {err.strerror}.") from None
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def find_subdir(folder: Path, name: str) -> Path | None:
    """The subfolder called ``name`` (case-insensitive), or None.

    Raises:
        DataError: several subfolders match (``COVID/`` and ``covid/``): which one is meant
            cannot be guessed, and reading one would silently drop the other's images.
    """
    exact = folder / name
    lower = name.lower()
    matches = [d for d in subdirs(folder) if d.name.lower() == lower]
    if len(matches) > 1:
        raise DataError(same_name_message(folder, [d.name for d in matches]))
    if exact.is_dir():
        return exact
    return matches[0] if matches else None


def name_key(name: str) -> str:
    """A class name as people mean it: case, spaces, underscores and hyphens ignored."""
    return "".join(name.casefold().split()).replace("_", "").replace("-", "")


def same_name_message(folder: Path, names: Iterable[str]) -> str:
    """The error for class names that differ only in case or spacing."""
    shown = " and ".join(f"'{n}'" for n in sorted(names))
    return (
        f"The folder '{folder}' has classes {shown}, which differ only in case or spacing: "
        "rename them to one name to merge them into one class, or to clearly different names "
        "to keep them apart."
    )


def check_class_names(root: Path, classes: Iterable[str]) -> None:
    """Refuse class names that differ only in case or spacing (``COVID`` and ``covid``).

    Raises:
        DataError: naming every such pair, and how to merge or separate them.
    """
    by_key: dict[str, list[str]] = {}
    for name in classes:
        by_key.setdefault(name_key(name), []).append(name)
    clashes = [sorted(names) for names in by_key.values() if len(names) > 1]
    if clashes:
        raise DataError("; ".join(same_name_message(root, names) for names in clashes))


def walk_files(folder: Path, skip_dirs: Iterable[str] = ()) -> list[Path]:
    """Every file under ``folder`` (recursively, hidden folders and ``skip_dirs`` excluded), sorted."""
    skipped = {name.lower() for name in skip_dirs}
    found: list[Path] = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d.lower() not in skipped)
        found.extend(Path(current) / name for name in files)
    return sorted(found)


def list_images(folder: Path, skipped: SkipReport, skip_dirs: Iterable[str] = ()) -> list[Path]:
    """Image files under ``folder``; other files go to ``skipped`` with the reason."""
    images = []
    for path in walk_files(folder, skip_dirs):
        reason = file_skip_reason(path.name, path)
        if reason is None:
            images.append(path)
        else:
            skipped.add(reason, path)
    return images


def has_image(folder: Path, limit: int = 200) -> bool:
    """True if an image file lies under ``folder`` (looks at no more than ``limit`` files)."""
    seen = 0
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if file_skip_reason(name, os.path.join(current, name)) is None:
                return True
            seen += 1
            if seen >= limit:
                return False
    return False


def check_options(
    dataset: str, options: Mapping[str, Any], allowed: Iterable[str]
) -> dict[str, Any]:
    """The parser options that apply to ``dataset``.

    ``options`` is either flat (``{"views": [...]}``) or keyed by dataset
    (``{"covid_chestxray": {"views": [...]}}``). Flat keys that belong to another layout are
    ignored here; a key no layout knows is an error.

    Raises:
        ConfigError: an option name no layout accepts.
    """
    from cxr_tune.data.datasets import DATASETS

    allowed = set(allowed)
    known = {opt for name in DATASETS.names() for opt in DATASETS.get(name).options}
    chosen: dict[str, Any] = {}
    for key, value in options.items():
        if key in DATASETS:
            if key == dataset:
                chosen.update(_check_nested(dataset, value, allowed))
            continue
        if key not in known:
            from cxr_tune.errors import unknown_name_message

            raise ConfigError(unknown_name_message("dataset option", key, known | set(DATASETS)))
        if key in allowed:
            chosen[key] = value
    return chosen


def _check_nested(dataset: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"The options of dataset '{dataset}' are {value!r}, but must be a mapping "
            f"(allowed keys: {', '.join(sorted(allowed)) or 'none'})."
        )
    for key in value:
        if key not in allowed:
            from cxr_tune.errors import unknown_name_message

            raise ConfigError(unknown_name_message(f"option of dataset '{dataset}'", key, allowed))
    return dict(value)

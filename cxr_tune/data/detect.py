"""Which layout is this folder? ``--data PATH`` detects it; ``--data KEY=PATH`` forces one.

Every registered layout's detector looks at the folder and at each of its subfolders (a Kaggle
zip often unpacks as ``archive/<Dataset>/``). The most specific match wins (highest score; at a
tie, the folder itself beats a subfolder); two different datasets one level down are ambiguous
and the message lists both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cxr_tune.config import DataSource
from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.layouts.common import subdirs
from cxr_tune.errors import ConfigError, DataError


def resolve(source: DataSource) -> Detection:
    """Find the layout and root folder of a dataset given as ``[KEY=]PATH``.

    Returns:
        The detection; its ``reason`` says what was found (or that the key was forced).

    Raises:
        ConfigError: an unknown dataset key (with did-you-mean), or a key that takes no folder.
        DataError: the folder is missing, holds no known layout, or holds several datasets.
    """
    root = _check_folder(source.path)
    if source.key is not None:
        return _forced(DATASETS.get(source.key), root)
    here = _detect_in(root)
    below = [d for sub in subdirs(root) for d in _detect_in(sub)]
    best_here = max(here, key=lambda d: d.score, default=None)
    best_below = max((d.score for d in below), default=0)
    if best_here is not None and best_here.score >= best_below:
        return best_here
    # Several specific layouts (or several generic ones, when nothing specific) below: ambiguous.
    level = 2 if best_below >= 2 else 1
    top = [d for d in below if d.score >= level]
    if len({d.root for d in top}) > 1:
        found = "; ".join(f"{d.dataset} at '{d.root}'" for d in top)
        raise DataError(
            f"The folder '{root}' holds several datasets ({found}); give one of those folders."
        )
    if top:
        best = max(top, key=lambda d: d.score)
        return dataclasses.replace(best, reason=f"{best.reason}, in subfolder '{best.root.name}'")
    raise DataError(not_a_dataset_message(root))


def not_a_dataset_message(root: Path) -> str:
    """One line: the folder, what each known layout expects, and how to force one."""
    expected = "; ".join(
        f"{name}: {DATASETS.get(name).expects}"
        for name in DATASETS.names()
        if DATASETS.get(name).detect
    )
    return (
        f"The folder '{root}' is not a dataset layout cxr_tune knows (looked in it and one level "
        f"down), but expected one of: {expected}. Give KEY=PATH to force a layout."
    )


def _check_folder(path: Path | None) -> Path:
    if path is None:
        raise DataError("No dataset folder given; expected [KEY=]PATH.")
    if not path.exists():
        raise DataError(f"The folder '{path}' does not exist.")
    if not path.is_dir():
        raise DataError(f"'{path}' is not a folder; give a dataset's root folder.")
    return path


def _detect_in(folder: Path) -> list[Detection]:
    found = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if spec.detect is not None:
            detection = spec.detect(folder)
            if detection is not None:
                found.append(detection)
    return found


def _forced(spec: DatasetSpec, root: Path) -> Detection:
    if spec.parse is None:
        raise ConfigError(
            f"The dataset '{spec.name}' is built in and reads no folder; give it without a path "
            f"(--data {spec.name}), or give a folder with another key."
        )
    if spec.detect is not None:
        here = spec.detect(root)
        if here is not None:
            return dataclasses.replace(here, reason=f"forced by {spec.name}=PATH; {here.reason}")
        below = [d for sub in subdirs(root) if (d := spec.detect(sub)) is not None]
        if len(below) == 1:
            reason = f"forced by {spec.name}=PATH; {below[0].reason}, in subfolder '{below[0].root.name}'"
            return dataclasses.replace(below[0], reason=reason)
    return Detection(spec.name, root, f"forced by {spec.name}=PATH", score=0)

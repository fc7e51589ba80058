"""Which layout is this folder? ``--data PATH`` detects it; ``--data KEY=PATH`` forces one.

Every registered layout's detector looks at the folder and at its subfolders down to
``MAX_DEPTH`` levels (a Kaggle zip often unpacks as ``archive/<Dataset>/``, sometimes inside
another folder of the same name). The most specific match wins (highest score; at a tie, the
shallower folder); a match inside another match's folder is part of it; two different datasets
below are ambiguous and the message lists both. The detection's ``root`` is the folder chosen,
and its ``reason`` names it when it is not the folder given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from cxr_tune.config import DataSource
from cxr_tune.data.datasets import DATASETS, DatasetSpec, Detection
from cxr_tune.data.layouts.common import subdirs
from cxr_tune.errors import ConfigError, DataError

# How far below the given folder a dataset is looked for.
MAX_DEPTH = 3
# A folder with more subfolders than this is data (classes, patients), not a wrapper around a
# dataset: its subfolders are not searched. Keeps detection of a large dataset cheap.
MAX_FANOUT = 32


def resolve(source: DataSource) -> Detection:
    """Find the layout and root folder of a dataset given as ``[KEY=]PATH``.

    Returns:
        The detection: ``root`` is the folder the layout starts at (the given one or a
        subfolder), ``reason`` says what was found there (or that the key was forced) and
        names the subfolder.

    Raises:
        ConfigError: an unknown dataset key (with did-you-mean), or a key that takes no folder.
        DataError: the folder is missing, holds no known layout, or holds several datasets.
    """
    root = _check_folder(source.path)
    if source.key is not None:
        return _forced(DATASETS.get(source.key), root)
    found = list(_detect_below(root, _detect_in))
    here = [d for depth, d in found if depth == 0]
    below = [(depth, d) for depth, d in found if depth > 0]
    best_here = max(here, key=lambda d: d.score, default=None)
    best_below = max((d.score for _, d in below), default=0)
    if best_here is not None and best_here.score >= best_below:
        return best_here
    # Several specific layouts (or several generic ones, when nothing specific) below: ambiguous.
    level = 2 if best_below >= 2 else 1
    top = _outermost([(depth, d) for depth, d in below if d.score >= level])
    if len({d.root for d in top}) > 1:
        listed = "; ".join(f"{d.dataset} at '{d.root}'" for d in top)
        raise DataError(
            f"The folder '{root}' holds several datasets ({listed}); give one of those folders."
        )
    if top:
        return _in_subfolder(max(top, key=lambda d: d.score), root)
    raise DataError(not_a_dataset_message(root))


def not_a_dataset_message(root: Path) -> str:
    """One line: the folder, what each known layout expects, and how to force one."""
    expected = "; ".join(
        f"{name}: {DATASETS.get(name).expects}"
        for name in DATASETS.names()
        if DATASETS.get(name).detect
    )
    return (
        f"The folder '{root}' is not a dataset layout cxr_tune knows (looked in it and up to "
        f"{MAX_DEPTH} levels down), but expected one of: {expected}. Give KEY=PATH to force a "
        "layout."
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


def _detect_below(
    root: Path, detect: Callable[[Path], list[Detection]]
) -> Iterator[tuple[int, Detection]]:
    """(depth, detection) for ``root`` and its subfolders, breadth first, to ``MAX_DEPTH``.

    A folder where a specific layout was found is not searched further (what lies below is
    part of that dataset), nor is one with more than ``MAX_FANOUT`` subfolders. Below a generic
    match (class folders) the search goes on: the "classes" may be a wrapper's datasets.
    """
    level = [root]
    for depth in range(MAX_DEPTH + 1):
        deeper: list[Path] = []
        for folder in level:
            found = detect(folder)
            yield from ((depth, d) for d in found)
            if depth == MAX_DEPTH or any(d.score >= 2 for d in found):
                continue
            children = subdirs(folder)
            if len(children) <= MAX_FANOUT:
                deeper.extend(children)
        level = deeper


def _outermost(found: list[tuple[int, Detection]]) -> list[Detection]:
    """The detections at the shallowest depth where any was found."""
    if not found:
        return []
    shallowest = min(depth for depth, _ in found)
    return [d for depth, d in found if depth == shallowest]


def _in_subfolder(detection: Detection, given: Path, prefix: str = "") -> Detection:
    """The detection with its reason naming the chosen folder relative to the one given."""
    if detection.root == given:
        return dataclasses.replace(detection, reason=prefix + detection.reason)
    relative = detection.root.relative_to(given).as_posix()
    reason = f"{prefix}{detection.reason}, in subfolder '{relative}'"
    return dataclasses.replace(detection, reason=reason)


def _forced(spec: DatasetSpec, root: Path) -> Detection:
    if spec.parse is None:
        raise ConfigError(
            f"The dataset '{spec.name}' is built in and reads no folder; give it without a path "
            f"(--data {spec.name}), or give a folder with another key."
        )
    prefix = f"forced by {spec.name}=PATH; "
    if spec.detect is not None:
        detect = spec.detect
        found = _outermost(
            list(_detect_below(root, lambda folder: [d] if (d := detect(folder)) else []))
        )
        if len({d.root for d in found}) > 1:
            listed = "; ".join(f"'{d.root}'" for d in found)
            raise DataError(
                f"The folder '{root}' holds several {spec.name} datasets ({listed}); give one "
                "of those folders."
            )
        if found:
            return _in_subfolder(found[0], root, prefix)
    return Detection(spec.name, root, f"forced by {spec.name}=PATH", score=0)

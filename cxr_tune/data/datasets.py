"""The dataset registry: one entry per supported layout, plus the built-in phantom."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_tune.config import Task
from cxr_tune.data.types import Manifest
from cxr_tune.registry import Registry

ParseFn = Callable[[Path, Mapping[str, Any]], Manifest]
# A detector looks at a folder and says whether it holds this layout (and why), cheaply:
# it lists folders and reads at most a header, never decodes images.
DetectFn = Callable[[Path], "Detection | None"]


@dataclass(frozen=True)
class Detection:
    """A detector's verdict: this folder is ``dataset``, found at ``root`` because ``reason``."""

    dataset: str
    root: Path
    reason: str
    # Higher wins when several layouts match (a specific layout beats imagefolder).
    score: int = 1


@dataclass(frozen=True)
class Generated:
    """A built-in dataset generated in memory (no folder): which phantom site, and whether a
    class-correlated marker is burned in (see ``cxr_tune.data.phantom``)."""

    site: str = "a"
    marker: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset layout.

    Attributes:
        name: registry key, used with ``--data KEY=PATH``.
        title: the human name (e.g. the Kaggle title).
        task: multi-class or multi-label.
        parse: folder -> manifest; ``None`` for generated datasets (the phantom).
        detect: folder -> detection or None; ``None`` if the layout cannot be recognised.
        options: names of the parser options this layout accepts (``DataOptions.parser_options``).
        expects: one line saying what the folder must hold (for "not a dataset" messages).
        generated: for a built-in generated dataset (a phantom), what to generate.
    """

    name: str
    title: str
    task: Task
    parse: ParseFn | None = None
    detect: DetectFn | None = None
    options: tuple[str, ...] = ()
    expects: str = ""
    generated: Generated | None = None


DATASETS: Registry[DatasetSpec] = Registry("dataset")

for _name, _title, _generated in (
    (
        "phantom",
        "built-in procedural chest X-ray phantom, site A (4 classes, no patient data)",
        Generated("a"),
    ),
    (
        "phantom_b",
        "built-in phantom, site B: other patients, another acquisition look (contrast, noise, "
        "field of view)",
        Generated("b"),
    ),
    (
        "phantom_marker",
        "built-in phantom, site A with a class-correlated marker burned in outside the lungs "
        "(a planted shortcut)",
        Generated("a", marker=True),
    ),
):
    DATASETS.add(
        _name, DatasetSpec(name=_name, title=_title, task="multiclass", generated=_generated)
    )

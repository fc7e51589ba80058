"""The report as a renderer-neutral document: sections of paragraphs, lists, tables and figures.

Text may carry two inline marks, ```code``` and ``**bold**``; Markdown keeps them as they are
and HTML turns them into ``<code>`` and ``<strong>``. Figures are PNG files under the report's
output folder, named relative to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Links:
    """A list of links to files beside the report (relative paths), shown as links and never
    embedded: e.g. saliency overlays, which hold images from the data."""

    items: tuple[tuple[str, str], ...]  # (label, relative path)


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the output folder, e.g. "plots/efficiency.png"
    caption: str


Block = Paragraph | Bullets | Table | Figure | Links


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    @property
    def anchor(self) -> str:
        """A link target within the page, as GitHub derives it from a heading."""
        kept = "".join(c for c in self.title.lower() if c.isalnum() or c in " -_")
        return kept.strip().replace(" ", "-")


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: NaN and None as an em dash, small floats in scientific notation."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_duration(seconds: Any) -> str:
    """``45 s``, ``12.5 min`` or ``3.20 h``; ``unknown`` for a missing or non-finite value."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "unknown"
    if not math.isfinite(value):
        return "unknown"
    if value >= 7200:
        return f"{value / 3600:.2f} h"
    return f"{value / 60:.1f} min" if value >= 120 else f"{value:.0f} s"


def fmt_ci(ci: Sequence[float] | None, digits: int = 4, scale: float = 1.0) -> str:
    """``[low, high]`` of an interval, or an em dash when it is unknown."""
    if not ci or len(ci) != 2 or any(not _finite(v) for v in ci):
        return "—"
    return f"[{fmt(float(ci[0]) * scale, digits)}, {fmt(float(ci[1]) * scale, digits)}]"


def make_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> Table:
    """A Table with every cell formatted to text."""
    return Table(
        tuple(headers),
        tuple(tuple(fmt(v) if not isinstance(v, str) else v for v in row) for row in rows),
        caption,
    )


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False

"""What every report section builder gets besides the experiment: where the report goes, and a
place to note what could not be shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cxr_tune.constants import PLOTS_DIR
from cxr_tune.report.document import Block, Figure, Paragraph


@dataclass
class Context:
    """Where the report goes, and what went wrong while building it."""

    out: Path
    notes: list[str] = field(default_factory=list)
    # File names of the plots drawn (under ``plots``).
    written: list[str] = field(default_factory=list)

    @property
    def plots(self) -> Path:
        return self.out / PLOTS_DIR

    def figure(self, name: str, caption: str, draw: Callable[[Path], Path]) -> Block:
        """Draw ``plots/<name>.png`` and return its Figure, or a note when drawing failed."""
        path = self.plots / f"{name}.png"
        try:
            draw(path)
        except Exception as exc:  # a plot is never worth losing the report for
            note = f"The plot {path.name} could not be drawn ({type(exc).__name__}: {exc})."
            self.notes.append(note)
            return Paragraph(note)
        self.written.append(path.name)
        return Figure(f"{PLOTS_DIR}/{path.name}", caption)

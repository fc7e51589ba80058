"""Assemble the report document from an experiment, section by section.

Each section is built on its own: one that fails (a damaged file, an odd experiment) becomes a
short note saying what could not be shown, and the rest of the report is still written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cxr_tune.report.document import Block, Document, Figure, Paragraph, Section
from cxr_tune.report.experiment import Experiment

PLOTS_DIR = "plots"


@dataclass
class Context:
    """Where the report goes, and what went wrong while building it."""

    out: Path
    notes: list[str] = field(default_factory=list)

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
        return Figure(f"{PLOTS_DIR}/{path.name}", caption)


SectionBuilder = Callable[[Experiment, Context], list[Section]]


def build_document(exp: Experiment, out: Path) -> tuple[Document, Context]:
    """The whole report for ``exp``, with its plots written under ``out/plots``."""
    from cxr_tune.report import analysis, results

    builders: list[tuple[str, SectionBuilder]] = [
        ("Summary", results.summary_sections),
        ("Results beside the paper", results.paper_sections),
        ("Best configuration per cell", results.best_sections),
        ("Ablation answers", analysis.ablation_sections),
        ("Hyperparameter importance", analysis.importance_sections),
        ("Search efficiency", analysis.efficiency_sections),
        ("Failed, diverged and unfinished trials", analysis.failure_sections),
        ("All trials", analysis.trial_sections),
    ]
    ctx = Context(out)
    doc = Document(str(exp.record.get("name") or exp.folder.name))
    for title, build in builders:
        try:
            doc.sections.extend(build(exp, ctx))
        except Exception as exc:  # keep the other sections; say what is missing
            note = f"This section could not be built ({type(exc).__name__}: {exc})."
            ctx.notes.append(f"{title}: {note}")
            doc.sections.append(Section(title, [Paragraph(note)]))
    return doc, ctx

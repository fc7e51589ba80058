"""Assemble the report document from an experiment, section by section.

Each section is built on its own: one that fails (a damaged file, an odd experiment) becomes a
short note saying what could not be shown, and the rest of the report is still written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cxr_tune.experiment import Experiment
from cxr_tune.report.context import Context
from cxr_tune.report.document import Document, Paragraph, Section
from cxr_tune.report.sections import ablation, best, generalisation, search, summary

SectionBuilder = Callable[[Experiment, Context], list[Section]]


def build_document(exp: Experiment, out: Path) -> tuple[Document, Context]:
    """The whole report for ``exp``, with its plots written under ``out/plots``."""
    builders: list[tuple[str, SectionBuilder]] = [
        ("Summary", summary.summary_sections),
        ("Results beside the paper", best.paper_sections),
        ("Best configuration per cell", best.best_sections),
        ("Generalisation", generalisation.generalisation_sections),
        ("Clinical metrics", generalisation.clinical_sections),
        ("Ablation answers", ablation.ablation_sections),
        ("Hyperparameter importance", ablation.importance_sections),
        ("Search efficiency", search.efficiency_sections),
        ("Failed, diverged and unfinished trials", search.failure_sections),
        ("All trials", search.trial_sections),
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

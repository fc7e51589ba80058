"""The report as Markdown: summary, best trial per cell, final evaluation, trial outcomes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from cxr_tune.report.experiment import Experiment, TrialRecord

SEARCHED_KEYS: tuple[str, ...] = ("optimizer", "lr", "batch_size", "weight_decay", "momentum")
METRIC_COLUMNS: tuple[str, ...] = (
    "val_accuracy",
    "val_macro_precision",
    "val_macro_recall",
    "val_macro_f1",
)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: NaN as an em dash, small floats in scientific notation."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_section(exp: Experiment) -> str:
    record = exp.record
    counts = exp.state_counts()
    lines = [f"# {record.get('name', exp.folder.name)}", ""]
    space = record.get("space", {})
    if space:
        lines.append(
            f"- space: `{space.get('name')}` ({space.get('algorithm')}), metric "
            f"`{exp.metric}` ({exp.mode})"
        )
    profile = record.get("profile", {})
    if profile:
        lines.append(
            f"- profile: `{profile.get('name')}` ({profile.get('reason', '')}), "
            f"{record.get('epochs')} epochs max, {record.get('num_samples')} trials per cell"
        )
    for ds in record.get("datasets", []):
        sizes = ", ".join(f"{k} {v}" for k, v in ds.get("sizes", {}).items())
        lines.append(
            f"- dataset `{ds['name']}` ({ds.get('source')}): {len(ds.get('classes', []))} "
            f"classes, {sizes}; dataset {ds.get('dataset_hash')}, split {ds.get('split_hash')}"
        )
    states = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n)
    lines.append(f"- trials: {len(exp.trials)} ({states or 'none'})")
    if not exp.finished:
        lines.append("- **the search did not finish**: this report covers the trials so far")
    for problem in exp.problems:
        lines.append(f"- note: {problem}")
    return "\n".join(lines)


def best_section(exp: Experiment) -> str:
    rows = []
    for cell in exp.cells():
        best = exp.best_trial(cell, completed_only=False)
        if best is None:
            rows.append([cell, "no trial with a result", *["—"] * (len(METRIC_COLUMNS) + 1)])
            continue
        config = ", ".join(f"{k}={fmt(best.config[k])}" for k in SEARCHED_KEYS if k in best.config)
        rows.append(
            [
                cell,
                f"`{best.trial_id}` ({best.state.replace('_', ' ')})",
                config,
                *[best.value(m) for m in METRIC_COLUMNS],
            ]
        )
    headers = [
        "cell",
        "best trial",
        "configuration",
        "val accuracy",
        "val precision",
        "val recall",
        "val macro-F1",
    ]
    return "## Best trial per cell (validation)\n\n" + table(headers, rows)


def evaluation_section(exp: Experiment) -> str:
    if not exp.evaluation:
        return (
            "## Final evaluation (test split)\n\nNot run yet: `python -m cxr_tune.evaluate "
            f"{exp.folder}`."
        )
    rows = []
    for entry in exp.evaluation.get("entries", []):
        summary = entry.get("summary", {})
        cells = [entry["cell"], entry.get("role", ""), len(entry.get("runs", []))]
        for metric in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
            stats = summary.get(metric, {})
            low, high = stats.get("ci95", [math.nan, math.nan])
            cells.append(f"{fmt(stats.get('mean', math.nan))} [{fmt(low)}, {fmt(high)}]")
        rows.append(cells)
    headers = [
        "cell",
        "configuration",
        "seeds",
        "test accuracy",
        "test precision",
        "test recall",
        "test macro-F1",
    ]
    return "## Final evaluation (test split, mean over seeds [bootstrap 95% CI])\n\n" + table(
        headers, rows
    )


def outcomes_section(exp: Experiment) -> str:
    rows = [
        [
            t.cell,
            t.trial_id,
            t.state.replace("_", " "),
            f"{t.epochs_done}/{t.planned_epochs}",
            t.value(exp.metric),
            t.failure_reason or "",
        ]
        for t in sorted(exp.trials, key=lambda t: (t.cell, t.trial_id))
    ]
    return "## All trials\n\n" + table(
        ["cell", "trial", "outcome", "epochs", exp.metric, "reason"], rows
    )


def render(exp: Experiment) -> str:
    sections = [
        summary_section(exp),
        best_section(exp),
        evaluation_section(exp),
        outcomes_section(exp),
    ]
    return "\n\n".join(sections) + "\n"


def trial_label(trial: TrialRecord) -> str:
    return f"{trial.cell} {trial.trial_id}"

"""Report sections about the search itself: its efficiency (what early stopping saved, the
budget), the failed trials and the list of all trials."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cxr_tune.report.plots as plots
from cxr_tune.constants import EPOCH, STOPPED_EARLY, UNFINISHED
from cxr_tune.experiment import Experiment
from cxr_tune.metrics import learned_nothing
from cxr_tune.report.conclusions import (
    metric_label,
)
from cxr_tune.report.context import Context
from cxr_tune.report.document import (
    Block,
    Bullets,
    Paragraph,
    Section,
    fmt,
    fmt_duration,
    make_table,
)
from cxr_tune.report.tables import (
    config_text,
    early_stopping_savings,
    efficiency_frame,
    epochs_trained,
    failures_frame,
    trials_frame,
)

# All trials are in trials.csv; the page lists this many.
MAX_TRIAL_ROWS = 300


def epoch_budget(exp: Experiment) -> int | None:
    """The search's epoch budget per cell (``search.budget_epochs``), if it had one."""
    for line in exp.record.get("plan", []):
        budget = line.get("search", {}).get("budget_epochs")
        if budget:
            return int(budget)
    return None


def no_skill_stops(exp: Experiment) -> tuple[int, int]:
    """(the search's no-skill epoch, trials its check stopped); (0, 0) without the check."""
    epoch = max(
        (
            int(line.get("scheduler", {}).get("no_skill_epoch") or 0)
            for line in exp.record.get("plan", [])
        ),
        default=0,
    )
    if not epoch:
        return 0, 0
    stopped = 0
    for trial in exp.trials:
        last = trial.results[-1] if trial.results else {}
        if trial.state == STOPPED_EARLY and last.get(EPOCH) == epoch and learned_nothing(last):
            stopped += 1
    return epoch, stopped


def epochs_per_cell(exp: Experiment) -> dict[str, int]:
    """Epochs trained per cell, every trial counted."""
    spent: dict[str, int] = {}
    for trial in exp.trials:
        spent[trial.cell] = spent.get(trial.cell, 0) + epochs_trained(trial)
    return spent


def efficiency_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """Best-so-far metric vs compute, and the epochs early stopping saved."""
    section = Section("Search efficiency")
    savings = early_stopping_savings(exp)
    frame = efficiency_frame(exp)
    unfinished = sum(t.state == UNFINISHED for t in exp.trials)
    lines = []
    if savings.planned:
        share = savings.saved_by_asha / savings.planned
        lines.append(
            f"epochs trained: {savings.trained} of the {savings.planned} that training every "
            "ended trial to its last epoch would take"
        )
        budget = epoch_budget(exp)
        stoppers = "ASHA and the epoch budget" if budget else "ASHA"
        no_skill_epoch, no_skill = no_skill_stops(exp)
        of_them = (
            f" ({no_skill} of them by the no-skill check: nothing learned by epoch "
            f"{no_skill_epoch})"
            if no_skill_epoch
            else ""
        )
        lines.append(
            f"early stopping ({stoppers}) stopped {savings.stopped_early} trials{of_them}, "
            f"saving {savings.saved_by_asha} epochs ({_percent(share)}), about "
            f"{savings.saved_seconds / 3600:.2f} trial-hours at those trials' own pace"
        )
        if budget:
            spent = ", ".join(f"{cell} {n}" for cell, n in epochs_per_cell(exp).items())
            lines.append(f"epoch budget: at most {budget} epochs per cell; trained: {spent}")
    else:
        lines.append("no trial has ended yet, so early stopping has saved nothing so far")
    if unfinished:
        lines.append(f"{unfinished} unfinished trials are left out of these counts")
    if savings.ended_on_their_own:
        lines.append(
            f"diverged or failed trials ended on their own, {savings.ended_on_their_own} epochs "
            "before their end"
        )
    lines += _first_reached(exp, frame)
    section.blocks.append(Bullets(tuple(lines)))
    budget = exp.record.get("budget")
    if budget:
        section.blocks.append(Bullets(tuple(budget_lines(exp, budget))))
        if len(frame) and frame["best_so_far"].notna().any():
            section.blocks.append(
                ctx.figure(
                    "budget",
                    "Best validation metric found so far vs wall-clock time since the "
                    "experiment started (decoding the data and starting Ray count too), per "
                    "cell; the dashed line is the search's share of the time budget.",
                    lambda path: plots.plot_budget(
                        frame,
                        exp.metric,
                        budget.get("search_time_s"),
                        path,
                        origin=budget.get("origin_unix"),
                    ),  # fmt: skip
                )
            )
    if len(frame) and frame["best_so_far"].notna().any():
        planned = {
            cell: sum(t.planned_epochs for t in exp.trials_of(cell) if t.state != UNFINISHED)
            for cell in exp.cells()
        }
        section.blocks.append(
            ctx.figure(
                "efficiency",
                "Best validation metric found so far vs compute spent, per cell.",
                lambda path: plots.plot_efficiency(frame, exp.metric, planned, path),
            )
        )
    return [section]


def budget_lines(exp: Experiment, budget: Mapping[str, Any]) -> list[str]:
    """What the experiment's time or GPU-hour budget was, and what it bought."""
    spent = budget.get("spent") or {}
    share = float(budget.get("evaluation_share") or 0.0)
    margin = float(budget.get("margin") or 0.0)
    lines = []
    if budget.get("time_budget_s"):
        wall_share = float(budget.get("wall_reserve_share", share) or 0.0)
        basis = budget.get("reserve_basis")
        lines.append(
            f"time budget: {fmt_duration(budget['time_budget_s'])} of wall-clock time for the "
            f"whole experiment; the search's share {fmt_duration(budget['search_time_s'])}, the "
            f"reserve for the evaluation and report {fmt_duration(budget['evaluation_reserve_s'])} "
            f"({_percent(wall_share)}{', estimated from the measured epochs' if basis == 'measured epochs' else ''}); "
            f"the search spent {fmt_duration(spent.get('wall_s', 0.0))}"
        )
    if budget.get("gpu_hours"):
        lines.append(
            f"GPU-hour budget: {budget['gpu_hours']:g} GPU-hours; the search's share "
            f"{budget['search_gpu_hours']:.2f}, the final evaluation's reserve "
            f"{budget['gpu_hours'] * share:.2f} ({_percent(share)}); the search spent "
            f"{float(spent.get('gpu_hours', 0.0)):.2f}"
        )
    lines.append(
        "no trial started, or went on to, an epoch expected to end past the search's share "
        "(the evaluation's contenders excepted: their remaining epochs were reserved), all "
        f"stopped at once past a {_percent(margin)} margin, and the evaluation scored what "
        "fitted in the rest"
    )
    trained = epochs_per_cell(exp)
    bought = ", ".join(
        f"{cell} {len(exp.trials_of(cell))} trials and {trained.get(cell, 0)} epochs"
        for cell in exp.cells()
    )
    lines.append(f"what the budget bought: {bought}")
    return lines


def _first_reached(exp: Experiment, frame: Any) -> list[str]:
    """Per cell: when the search first reached the best value it ever found."""
    lines = []
    for cell, rows in frame.groupby("cell", sort=False) if len(frame) else []:
        final = rows["best_so_far"].iloc[-1]
        if not math.isfinite(final):
            continue
        first = rows[rows["best_so_far"] == final].iloc[0]
        total = rows["trial_seconds"].iloc[-1]
        share = first["trial_seconds"] / total if total else math.nan
        lines.append(
            f"`{cell}`: best validation {metric_label(exp.metric)} {final:.4f} first reached "
            f"after {int(first['epochs'])} of {int(rows['epochs'].iloc[-1])} epochs "
            f"({_percent(share)} of the cell's trial time)"
        )
    return lines


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if math.isfinite(share) else "—"


def failure_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """Diverged, failed and unfinished trials with their reasons."""
    section = Section("Failed, diverged and unfinished trials")
    frame = failures_frame(exp)
    if not len(frame):
        section.blocks.append(Paragraph("None: every trial trained normally."))
        return [section]
    rows = [
        [
            f"`{r.cell}`",
            f"`{r.trial_id}`",
            r.state.replace("_", " "),
            str(r.epoch),
            r.config,
            r.reason,
        ]
        for r in frame.itertuples()
    ]
    section.blocks.append(
        make_table(["cell", "trial", "outcome", "epoch", "configuration", "reason"], rows)
    )
    return [section]


def trial_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """Every trial in one table (all of them also in trials.csv)."""
    section = Section("All trials")
    frame = trials_frame(exp)
    if not len(frame):
        section.blocks.append(Paragraph("No trial has reported yet."))
        return [section]
    best_column = f"best_{exp.metric}"
    rows = [
        [
            f"`{r['cell']}`",
            f"`{r['trial_id']}`",
            str(r["state"]).replace("_", " "),
            f"{r['epochs_done']}/{r['epochs_planned']}",
            config_text(r),
            fmt(r.get(f"final_{exp.metric}", math.nan)),
            fmt(r[best_column]),
            _seconds(r["time_total_s"]),
            str(r["node"]),
        ]
        for r in frame.head(MAX_TRIAL_ROWS).to_dict("records")
    ]
    headers = ["cell", "trial", "outcome", "epochs", "configuration", f"final {exp.metric}"]
    headers += [f"best {exp.metric}", "time", "node"]
    blocks: list[Block] = [make_table(headers, rows)]
    if len(frame) > MAX_TRIAL_ROWS:
        blocks.append(
            Paragraph(f"The first {MAX_TRIAL_ROWS} of {len(frame)}; all are in `trials.csv`.")
        )
    section.blocks.extend(blocks)
    return [section]


def _seconds(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{number:.0f} s" if math.isfinite(number) else "—"

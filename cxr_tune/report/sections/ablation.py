"""Report sections: the ablation answers (learning rate, batch size, SGD vs Adam) and the
hyperparameters' importance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cxr_tune.report.plots as plots
from cxr_tune.experiment import Experiment
from cxr_tune.report.conclusions import (
    FACTOR_LABELS,
    factor_conclusion,
    matching_test_metric,
    metric_label,
    optimizer_conclusion,
)
from cxr_tune.report.context import Context
from cxr_tune.report.document import Bullets, Paragraph, Section, fmt, make_table
from cxr_tune.report.importance import cell_importances
from cxr_tune.stats import factor_effects


def ablation_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """Metric vs learning rate, vs batch size, and SGD vs Adam, each with a one-line answer."""
    factors, source = _factors(exp)
    intro = Section("Ablation answers")
    intro.blocks.append(
        Paragraph(
            "The paper changed one factor at a time by hand; here the search's own trials answer "
            "the same questions. The factor plots compare every trial at the first epoch all of a "
            "cell's trials reached (the first early-stopping rung, so stopped trials count as much "
            "as completed ones) and completed trials at their last epoch; intervals are bootstrap "
            "95% intervals of the mean over trials, and a difference is called clear only when "
            f"they do not overlap. {source}"
        )
    )
    sections = [intro]
    for factor, title in (("lr", "Learning rate"), ("batch_size", "Batch size")):
        sections.append(_factor_section(exp, ctx, factor, title, factors.get(factor, [])))
    sections.append(_optimizer_section(exp, ctx, factors.get("optimizer", [])))
    return sections


def _factors(exp: Experiment) -> tuple[dict[str, Any], str]:
    if exp.evaluation and "factors" in exp.evaluation:
        return dict(exp.evaluation["factors"]), "Numbers from `evaluation.json`."
    return factor_effects(exp), "Computed from the trials (there is no `evaluation.json` yet)."


def _factor_section(
    exp: Experiment, ctx: Context, factor: str, title: str, rows: Sequence[Mapping[str, Any]]
) -> Section:
    section = Section(title, level=3)
    if not rows:
        section.blocks.append(Paragraph(_not_varied(exp, factor)))
        return section
    section.blocks.append(
        ctx.figure(
            f"ablation-{factor}",
            f"Validation {metric_label(exp.metric)} vs {FACTOR_LABELS[factor]}, per cell.",
            lambda path: plots.plot_factor(rows, factor, exp.metric, path),
        )
    )
    section.blocks.append(Bullets(tuple(_conclusions(exp, factor, rows))))
    return section


def _conclusions(exp: Experiment, factor: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cells = list(dict.fromkeys(str(r["cell"]) for r in rows))
    return [
        factor_conclusion(
            cell, factor, [r for r in rows if r["cell"] == cell], exp.metric, exp.mode
        )
        for cell in cells
    ]


def _not_varied(exp: Experiment, factor: str) -> str:
    values = sorted({t.config[factor] for t in exp.trials if factor in t.config}, key=str)
    word = FACTOR_LABELS.get(factor, factor)
    if not values:
        return f"The {word} is not recorded in any trial, so there is nothing to compare."
    if len(values) == 1:
        return f"The {word} was not searched in this experiment: every trial used {values[0]}."
    if factor == "lr":
        low, high = min(values), max(values)
        return (
            f"Within each cell, all learning rates ({low:.2g} to {high:.2g}) fall in one decade, "
            "so there is no learning-rate comparison to make."
        )
    return f"No cell tried more than one {word}, so there is nothing to compare."


def _optimizer_section(exp: Experiment, ctx: Context, rows: Sequence[Mapping[str, Any]]) -> Section:
    section = Section("SGD vs Adam", level=3)
    comparisons = [
        c for c in (exp.evaluation or {}).get("comparisons", []) if c.get("factor") == "optimizer"
    ]
    if comparisons:
        available = sorted({m for c in comparisons for m in c.get("metrics", {})})
        metric = matching_test_metric(exp.metric, available)
        section.blocks.append(
            Paragraph(
                "The best configuration found with each optimizer, scored on the same test images "
                "(paired bootstrap): the interval is that of the difference."
            )
        )
        section.blocks.append(
            ctx.figure(
                "ablation-optimizer",
                f"Difference in test {metric_label(metric)} between optimizers, per cell.",
                lambda path: plots.plot_optimizer(comparisons, metric, path),
            )
        )
        section.blocks.append(Bullets(tuple(optimizer_conclusion(c, metric) for c in comparisons)))
        shorter = _scored_short(exp)
        if shorter:
            section.blocks.append(
                Paragraph(
                    "Not at equal training: the time budget left no room to retrain "
                    + "; ".join(shorter)
                    + " to the last epoch, so those sides were scored as they stood."
                )
            )
        return section
    if rows:
        section.blocks.append(
            Paragraph("No test-split comparison is available; the validation trials compare:")
        )
        section.blocks.append(
            ctx.figure(
                "ablation-optimizer",
                f"Validation {metric_label(exp.metric)} vs optimizer, per cell.",
                lambda path: plots.plot_factor(rows, "optimizer", exp.metric, path),
            )
        )
        section.blocks.append(Bullets(tuple(_conclusions(exp, "optimizer", rows))))
        return section
    section.blocks.append(Paragraph(_not_varied(exp, "optimizer")))
    return section


def importance_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """fANOVA importance of the searched parameters per cell, or why it cannot be computed."""
    section = Section("Hyperparameter importance")
    results = cell_importances(exp.folder, exp.cells())
    usable = [r for r in results if r.values]
    section.blocks.append(
        Paragraph(
            "Optuna's fANOVA on each cell's completed trials: the share of the variance of the "
            f"final `{exp.metric}` each searched parameter explains. With few completed trials "
            "these shares are rough."
        )
    )
    if usable:
        rows = [
            [f"`{r.cell}`", name, fmt(value, 3), str(r.completed)]
            for r in usable
            for name, value in r.values.items()
        ]
        section.blocks.append(make_table(["cell", "parameter", "importance", "trials"], rows))
        section.blocks.append(
            ctx.figure(
                "importance",
                "fANOVA importance per cell.",
                lambda path: plots.plot_importance(usable, path),
            )
        )
    notes = [f"`{r.cell}`: not computed: {r.reason}." for r in results if not r.values]
    notes += [
        f"`{r.cell}`: {', '.join(r.left_out)} left out (set only in some trials, e.g. only "
        "with SGD)."
        for r in results
        if r.left_out
    ]
    if notes:
        section.blocks.append(Bullets(tuple(notes)))
    return [section]


def _scored_short(exp: Experiment) -> list[str]:
    """'`phantom/vgg11` best_sgd (search checkpoint at epoch 1 of 3, not retrained)' for each
    optimizer's best that a time budget had scored before its last epoch."""
    found = []
    for entry in (exp.evaluation or {}).get("entries", []):
        first_run = (entry.get("runs") or [{}])[0]
        roles = [r for r in entry.get("roles", []) if r.startswith("best_")]
        if roles and first_run.get("epochs_trained") is not None:
            found.append(f"`{entry.get('cell')}` {', '.join(roles)} ({first_run.get('source')})")
    return found

"""Report sections: the paper's four tables beside ours, and the best configuration of each
cell with its test scores."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cxr_tune.report.plots as plots
from cxr_tune.experiment import Experiment
from cxr_tune.report.conclusions import metric_label
from cxr_tune.report.context import Context
from cxr_tune.report.document import (
    Block,
    Bullets,
    Paragraph,
    Section,
    fmt,
    fmt_ci,
    make_table,
)
from cxr_tune.report.paper import MULTILABEL_DATASET, PAPER_DATASETS, PAPER_TABLES
from cxr_tune.report.tables import (
    best_entries,
    best_trials,
    config_text,
    dataset_key,
    paper_frame,
)
from cxr_tune.stats import MULTILABEL_SUMMARY, SUMMARY_METRICS


def paper_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """The paper's four tables (accuracy, precision, recall, F1) with our numbers beside."""
    section = Section("Results beside the paper")
    if not exp.evaluation or not best_entries(exp):
        section.blocks.append(
            Paragraph(
                "The final evaluation on the test split is missing (no `evaluation.json`), so "
                "there is nothing to set beside the paper yet. Run `python -m cxr_tune.evaluate "
                f"{exp.folder}`."
            )
        )
        return [section]
    section.blocks.append(Paragraph(_paper_intro(exp)))
    sections = [section]
    for metric, title, percent in PAPER_TABLES:
        sections.append(_paper_table(exp, metric, title, percent))
    sections.append(_auroc_section(exp))
    return sections


def _paper_intro(exp: Experiment) -> str:
    keys = {dataset_key(exp, str(e["config"].get("dataset"))) for e in best_entries(exp).values()}
    missing = sorted(k for k in keys if k not in PAPER_DATASETS)
    text = (
        "Test split, best configuration of each cell (chosen on validation), mean over the "
        "evaluation seeds with a bootstrap 95% interval over test images. The paper ran each "
        "cell once, without intervals. Accuracy in percent as in the paper; the others are "
        "macro averages over classes."
    )
    if missing:
        text += (
            f" {', '.join(f'`{k}`' for k in missing)}: no paper column (the paper did not use "
            "this dataset)."
        )
    if MULTILABEL_DATASET in keys:
        text += (
            " Dataset 3 is multi-label: its accuracy here is per-label (Hamming) accuracy and the "
            "paper's figure is not comparable; macro AUROC below is the meaningful figure."
        )
    return text


def _paper_table(exp: Experiment, metric: str, title: str, percent: bool) -> Section:
    frame = paper_frame(exp, metric, percent=percent)
    digits = 2 if percent else 4
    rows = [
        [
            r.dataset,
            r.architecture,
            fmt(r.ours, digits),
            fmt_ci([r.ci_low, r.ci_high], digits),
            str(r.seeds),
            fmt(r.paper, digits) if math.isfinite(r.paper) else "—",
            f"{r.difference:+.{digits}f}" if math.isfinite(r.difference) else "—",
        ]
        for r in frame.itertuples()
    ]
    headers = ["dataset", "architecture", "ours", "95% CI", "seeds", "paper", "ours − paper"]
    return Section(title, [make_table(headers, rows)], level=3)


def _auroc_section(exp: Experiment) -> Section:
    section = Section("Macro AUROC (Dataset 3, multi-label)", level=3)
    frame = paper_frame(exp, "macro_auroc")
    frame = frame[frame["dataset"].str.contains(MULTILABEL_DATASET)] if len(frame) else frame
    if not len(frame):
        section.blocks.append(
            Paragraph(
                f"Dataset 3 (`{MULTILABEL_DATASET}`) is not in this experiment; this table is "
                "filled when it is."
            )
        )
        return section
    rows = [
        [r.dataset, r.architecture, fmt(r.ours), fmt_ci([r.ci_low, r.ci_high]), str(r.seeds)]
        for r in frame.itertuples()
    ]
    section.blocks.append(
        make_table(
            ["dataset", "architecture", "ours", "95% CI", "seeds"],
            rows,
            "The paper reported no AUROC; 0.5 is chance.",
        )
    )
    return section


def best_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """The best configuration of every cell: its test metrics, confusion matrix and curves."""
    entries = best_entries(exp)
    chosen = best_trials(exp)
    section = Section("Best configuration per cell")
    section.blocks.append(
        Paragraph(
            f"Chosen by the final validation `{exp.metric}` among completed trials (any trial "
            "with a result when none completed); test metrics from the final evaluation."
        )
    )
    rows = []
    for cell, trial in chosen.items():
        stats = entries.get(cell, {}).get("summary", {})
        test = stats.get(exp.metric.removeprefix("val_"), stats.get("macro_f1", {}))
        rows.append(
            [
                f"`{cell}`",
                f"`{trial.trial_id}` ({trial.state.replace('_', ' ')})" if trial else "—",
                config_text(trial.config) if trial else "no trial with a result",
                fmt(trial.value(exp.metric)) if trial else "—",
                f"{fmt(test.get('mean'))} {fmt_ci(test.get('ci95'))}" if test else "—",
            ]
        )
    label = metric_label(exp.metric)
    section.blocks.append(
        make_table(
            ["cell", "trial", "configuration", f"val {label} (final)", f"test {label} [95% CI]"],
            rows,
        )
    )
    left_out = (exp.evaluation or {}).get("left_out", [])
    if left_out:
        section.blocks.append(Paragraph("Left out of the final evaluation by the time budget:"))
        section.blocks.append(
            Bullets(
                tuple(
                    f"`{each['cell']}` ({', '.join(each['roles'])}, trial `{each['trial_id']}`"
                    + (f", extra seed {each['seed_index']}" if each.get("seed_index") else "")
                    + f"): not scored: {each['reason']}"
                    for each in left_out
                )
            )
        )
    sections = [section]
    for cell, trial in chosen.items():
        sections.append(_cell_section(exp, ctx, cell, trial, entries.get(cell)))
    return sections


def _cell_section(
    exp: Experiment,
    ctx: Context,
    cell: str,
    trial: Any,
    entry: Mapping[str, Any] | None,
) -> Section:
    section = Section(cell, level=3)
    if trial is None:
        budgeted = bool((exp.record.get("budget") or {}).get("time_budget_s")) and exp.finished
        section.blocks.append(
            Paragraph(
                "No trial of this cell finished an epoch within the time budget."
                if budgeted
                else "No trial of this cell has a result yet."
            )
        )
        return section
    best_value, best_epoch = trial.best(exp.metric, exp.mode)
    checkpoint = trial.checkpoints()[-1] if trial.checkpoints() else None
    section.blocks.append(
        Bullets(
            (
                f"trial `{trial.trial_id}` ({trial.state.replace('_', ' ')}), "
                f"{trial.epochs_done}/{trial.planned_epochs} epochs, folder `{trial.folder.name}`",
                f"configuration: {config_text(trial.config)}",
                f"validation `{exp.metric}`: {fmt(trial.value(exp.metric))} at the last epoch, "
                f"best {fmt(best_value)} at epoch {best_epoch}",
                f"checkpoint: `{checkpoint}`" if checkpoint else "checkpoint: none kept",
            )
        )
    )
    first_run = ((entry or {}).get("runs") or [{}])[0]
    if first_run.get("epochs_trained") is not None:
        section.blocks.append(
            Paragraph(
                f"Scored from its {first_run.get('source')}: the time budget left no room to "
                "retrain it to its last epoch, so these test scores are of a model trained for "
                "fewer epochs than planned."
            )
        )
    if entry and entry.get("summary"):
        section.blocks.append(_test_table(entry))
        if entry.get("confusion"):
            section.blocks.append(
                ctx.figure(
                    f"confusion-{plots.slug(cell)}",
                    f"{cell}: test confusion matrix, counts and normalised by true class.",
                    lambda path: plots.plot_confusion(entry, path),
                )
            )
        elif entry.get("per_label"):
            section.blocks.append(
                ctx.figure(
                    f"auroc-{plots.slug(cell)}",
                    f"{cell}: test AUROC per label.",
                    lambda path: plots.plot_label_auroc(entry, path),
                )
            )
    else:
        section.blocks.append(Paragraph("No test-split evaluation of this configuration yet."))
    section.blocks.append(
        ctx.figure(
            f"curves-{plots.slug(cell)}",
            f"{cell}: validation {metric_label(exp.metric)} and losses per epoch; the best "
            "trial in blue, the cell's other trials in grey.",
            lambda path: plots.plot_curves(exp.trials_of(cell), trial, exp.metric, path),
        )
    )
    return section


def _test_table(entry: Mapping[str, Any]) -> Block:
    summary = entry["summary"]
    names = [m for m in (*SUMMARY_METRICS, *MULTILABEL_SUMMARY) if m in summary]
    rows = [
        [
            metric_label(name),
            fmt(summary[name].get("mean")),
            fmt_ci(summary[name].get("ci95")),
            ", ".join(fmt(v) for v in summary[name].get("per_seed", [])),
        ]
        for name in names
    ]
    seeds = len(entry.get("runs", []))
    return make_table(
        ["test metric", "mean", "95% CI", "per seed"],
        rows,
        f"Test split, {seeds} seed(s); roles: {entry.get('role', 'best')}.",
    )

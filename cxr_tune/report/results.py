"""Report sections: the summary, the paper's four tables beside ours, the best configurations."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cxr_tune.constants import STUDY_FILE
from cxr_tune.experiment import Experiment
from cxr_tune.report import plots
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
    checkpoint_usage,
    compute_used,
    config_text,
    dataset_key,
    paper_frame,
)

TEST_METRICS: tuple[str, ...] = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


def summary_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """What ran, on which data, how far it got and what it cost."""
    section = Section("Summary")
    if exp.interrupted:
        section.blocks.append(
            Paragraph(
                "**The search did not finish** (interrupted, or still running): this report "
                "covers the trials so far; unfinished trials are listed below."
            )
        )
    section.blocks.append(Bullets(tuple(_summary_lines(exp))))
    datasets = exp.record.get("datasets", [])
    if datasets:
        section.blocks.append(_datasets_table(datasets))
        section.blocks.append(Bullets(tuple(split_lines(exp))))
    notes = list(exp.problems) + [
        f"trial {t.trial_id} ({t.folder.name}): {'; '.join(t.problems)}"
        for t in exp.trials
        if t.problems
    ]
    if notes:
        section.blocks.append(Paragraph("**Missing or damaged files** (read as far as they go):"))
        section.blocks.append(Bullets(tuple(notes)))
    return [section]


def _summary_lines(exp: Experiment) -> list[str]:
    record = exp.record
    space = record.get("space", {})
    profile = record.get("profile", {})
    lines = [f"experiment: `{exp.folder}`"]
    if space:
        lines.append(
            f"space: `{space.get('name')}` ({space.get('algorithm')}), "
            f"metric `{exp.metric}` ({exp.mode}); {space.get('description', '')}".rstrip("; ")
        )
    if profile:
        lines.append(
            f"profile: `{profile.get('name')}` ({profile.get('reason', '')}); up to "
            f"{record.get('epochs')} epochs per trial, {record.get('num_samples')} trials per "
            f"cell, seed {record.get('seed')}"
        )
    lines.append(f"cells: {len(exp.cells())} ({', '.join(f'`{c}`' for c in exp.cells())})")
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in exp.state_counts().items() if n)
    lines.append(f"trials: {len(exp.trials)} ({counts or 'none has reported yet'})")
    lines.append(_compute_line(exp))
    when = f"started {record.get('started_at', '?')}"
    when += f", ended {record['finished_at']}" if exp.finished else ", not finished"
    lines.append(when)
    count, size = checkpoint_usage(exp)
    lines.append(
        f"checkpoints: {count} kept ({size / 1e9:.2f} GB), in "
        f"`{exp.folder}/<trial folder>/checkpoint_NNNNNN/state.pt`"
    )
    lines.append(f"TensorBoard: `tensorboard --logdir {exp.folder}`")
    if (exp.folder / STUDY_FILE).is_file():
        lines.append(f"Optuna study: `optuna-dashboard sqlite:///{exp.folder / STUDY_FILE}`")
    return lines


def _compute_line(exp: Experiment) -> str:
    used = compute_used(exp)
    wall = _duration(used.wall_seconds) + ("" if used.wall_is_final else " so far")
    text = (
        f"compute: {used.trial_seconds / 3600:.2f} trial-hours, {used.gpu_seconds / 3600:.2f} "
        f"GPU-hours, {used.cpu_seconds / 3600:.2f} CPU-core-hours (trial time x the cell's "
        f"resources); wall time {wall}"
    )
    if used.evaluation_seconds:
        text += f"; final evaluation {_duration(used.evaluation_seconds)} of run time"
    return text


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def split_lines(exp: Experiment) -> list[str]:
    """How each dataset was split: the ``--split`` mode, and for a dataset that publishes a
    split, the pairs across it and the images moved (or kept) because of them."""
    mode = exp.record.get("data_options", {}).get("split", "grouped")
    lines = [
        f"split: `{mode}` (grouped, stratified 70/15/15 by patient, or by near-duplicate "
        "cluster where there is no patient id"
        + ("; a dataset's own split kept exactly" if mode == "published" else "")
        + ")"
    ]
    for info in exp.record.get("datasets", []):
        audit = info.get("published_split")
        if not audit:
            continue
        pairs = (
            f"{audit['crossing_pairs_same_patient']} same-patient and "
            f"{audit['crossing_pairs_near_duplicate']} near-duplicate pairs of images lie on "
            "both sides of it"
        )
        if audit["mode"] == "published":
            what = "kept exactly; its test scores include that leakage"
        else:
            what = f"regrouped, {audit['moved_total']} images moved to keep groups whole"
        test = audit.get("test_images", {})
        lines.append(
            f"`{info.get('name')}` publishes a split: {pairs}; {what} (test split "
            f"{test.get('used', '?')} images, published {test.get('published', '?')})"
        )
    return lines


# How each uncertain-label policy (CheXpert) treats a label of -1, as the report states it.
UNCERTAIN_MEANING = {
    "ones": "U-Ones: counted as positive",
    "zeros": "U-Zeros: counted as negative",
    "ignore": "U-Ignore: masked in the loss and the metrics",
}


def _datasets_table(datasets: list[Mapping[str, Any]]) -> Block:
    rows = []
    for info in datasets:
        sizes = info.get("sizes", {})
        key = str(info.get("key") or info.get("name"))
        rows.append(
            [
                f"`{info.get('name')}`",
                PAPER_DATASETS.get(key, "— (not in the paper)"),
                f"{info.get('task', '?')}, {len(info.get('classes', []))} classes",
                *(str(sizes.get(split, "—")) for split in ("train", "val", "test")),
                f"`{info.get('dataset_hash')}`",
                f"`{info.get('split_hash')}`",
                str(info.get("source", "")),
            ]
        )
    headers = [
        "dataset",
        "paper",
        "task",
        "train",
        "val",
        "test",
        "dataset hash",
        "split hash",
        "source",
    ]
    caption = "Datasets and their splits (grouped by patient where known)."
    policies = [
        f"`{info.get('name')}`: {policy} ({UNCERTAIN_MEANING.get(policy, 'unknown policy')})"
        for info in datasets
        if (policy := str(info.get("uncertain_policy") or ""))
    ]
    if policies:
        caption += " Uncertain labels: " + "; ".join(policies) + "."
    return make_table(headers, rows, caption)


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
        section.blocks.append(Paragraph("No trial of this cell has a result yet."))
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
    names = [
        m for m in (*TEST_METRICS, "macro_auroc", "micro_f1", "subset_accuracy") if m in summary
    ]
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

"""Report section: the summary (what ran, on which data and splits, how far it got, what it
cost)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxr_tune.constants import DEFAULT_SPLIT_MODE, STUDY_FILE
from cxr_tune.experiment import Experiment
from cxr_tune.report.context import Context
from cxr_tune.report.document import (
    Block,
    Bullets,
    Paragraph,
    Section,
    fmt_duration,
    make_table,
)
from cxr_tune.report.paper import PAPER_DATASETS
from cxr_tune.report.tables import (
    checkpoint_usage,
    compute_used,
)


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
    wall = fmt_duration(used.wall_seconds) + ("" if used.wall_is_final else " so far")
    text = (
        f"compute: {used.trial_seconds / 3600:.2f} trial-hours, {used.gpu_seconds / 3600:.2f} "
        f"GPU-hours, {used.cpu_seconds / 3600:.2f} CPU-core-hours (trial time x the cell's "
        f"resources); wall time {wall}"
    )
    if used.evaluation_seconds:
        text += f"; final evaluation {fmt_duration(used.evaluation_seconds)} of run time"
    return text


def split_lines(exp: Experiment) -> list[str]:
    """How each dataset was split: the ``--split`` mode, and for a dataset that publishes a
    split, the pairs across it and the images moved (or kept) because of them."""
    mode = exp.record.get("data_options", {}).get("split", DEFAULT_SPLIT_MODE)
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
                f"`{key}`",
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
        "layout",
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

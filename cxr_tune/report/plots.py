"""The report's plots as PNG files (matplotlib's object API with the Agg canvas, no pyplot,
so no global backend is switched and no window ever opens).

No plot draws an image from a dataset: confusion matrices, curves and bars only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cxr_tune.experiment import TrialRecord, cell_slug
from cxr_tune.files import replacing
from cxr_tune.report.conclusions import (
    FACTOR_LABELS,
    OPTIMIZER_NAMES,
    metric_label,
    orient,
    value_label,
)
from cxr_tune.report.importance import Importance

DPI = 110
BEST_COLOUR = "#1f5fa8"
OTHER_COLOUR = "#8c8c8c"
FINAL_COLOUR = "#d9822b"


def slug(text: str) -> str:
    """A file-name-safe form of a cell id: ``phantom/alexnet`` -> ``phantom-alexnet``."""
    return cell_slug(text)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG (no timestamp or version in its metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:  # a whole PNG or none
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight", metadata={"Software": None})
    return path


def _grid(count: int, *, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    cols = min(3, max(1, count))
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[count:]:
        extra.set_visible(False)
    return fig, axes[:count]


def plot_confusion(entry: Mapping[str, Any], path: Path) -> Path:
    """Counts (summed over seeds) and the row-normalised matrix (recall per class), side by side."""
    counts = np.asarray(entry["confusion"], dtype=float)
    classes = [str(c) for c in entry.get("classes", range(len(counts)))]
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(3.2, 0.55 * len(classes) + 1.8)
    fig = Figure(figsize=(2 * size + 0.8, size), layout="constrained")
    left, right = fig.subplots(1, 2)
    _matrix(left, counts, classes, "counts (summed over seeds)", "{:.0f}")
    _matrix(right, normalised, classes, "normalised by true class (recall)", "{:.2f}")
    fig.suptitle(f"{entry.get('cell', '')}: test split confusion matrix")
    return save(fig, path)


def _matrix(ax: Axes, values: np.ndarray, classes: Sequence[str], title: str, pattern: str) -> None:
    ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() or 1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if len(classes) <= 15:
        high = values.max() or 1
        for (i, j), value in np.ndenumerate(values):
            colour = "white" if value > 0.6 * high else "black"
            ax.text(j, i, pattern.format(value), ha="center", va="center", fontsize=7, color=colour)


def plot_label_auroc(entry: Mapping[str, Any], path: Path) -> Path:
    """Per-label test AUROC of a multi-label configuration (labels without positives: n/a)."""
    labels = sorted(
        entry.get("per_label", []),
        key=lambda r: -r["auroc"] if _finite(r["auroc"]) else math.inf,
    )
    fig = Figure(figsize=(6.5, max(2.5, 0.28 * len(labels) + 1)), layout="constrained")
    ax = fig.subplots()
    names = [f"{r['label']} (n={r['positives']})" for r in labels]
    values = [r["auroc"] if _finite(r["auroc"]) else 0.0 for r in labels]
    ax.barh(range(len(labels)), values, color=BEST_COLOUR)
    for i, row in enumerate(labels):
        if not _finite(row["auroc"]):
            ax.text(0.01, i, "n/a (no positives or no negatives)", va="center", fontsize=7)
    ax.axvline(0.5, color=OTHER_COLOUR, linestyle="--", linewidth=1)
    ax.set_yticks(range(len(labels)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("test AUROC (0.5 = chance)")
    ax.set_title(f"{entry.get('cell', '')}: AUROC per label", fontsize=10)
    return save(fig, path)


def plot_curves(
    trials: Sequence[TrialRecord], best: TrialRecord | None, metric: str, path: Path
) -> Path:
    """Validation metric and train/val loss per epoch: the best trial bold, the others faint."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for trial in sorted(trials, key=lambda t: t is best):
        rows = trial.ok_results
        epochs = [int(r.get("epoch", 0)) for r in rows]
        is_best = trial is best
        style = {"color": BEST_COLOUR if is_best else OTHER_COLOUR, "alpha": 1 if is_best else 0.35}
        style["linewidth"] = 2 if is_best else 1
        label = f"best ({trial.trial_id})" if is_best else None
        left.plot(
            epochs, [_num(r.get(metric)) for r in rows], marker="o", ms=3, label=label, **style
        )
        # Markers: a trial stopped after one epoch is a single point, not a line.
        right.plot(
            epochs, [_num(r.get("train_loss")) for r in rows], marker="o", ms=2,
            label=label and "train", **style,
        )  # fmt: skip
        right.plot(
            epochs, [_num(r.get("val_loss")) for r in rows], linestyle="--", marker="o", ms=2,
            label=label and "validation", **style,
        )  # fmt: skip
    left.set_xlabel("epoch")
    left.set_ylabel(f"validation {metric_label(metric)}")
    right.set_xlabel("epoch")
    right.set_ylabel("loss (solid: train, dashed: validation)")
    if _all_positive(right):
        right.set_yscale("log")  # diverging trials reach 1e5 and more
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    cell = best.cell if best else (trials[0].cell if trials else "")
    fig.suptitle(f"{cell}: learning curves ({len(trials)} trials; grey: the other trials)")
    return save(fig, path)


def plot_factor(rows: Sequence[Mapping[str, Any]], factor: str, metric: str, path: Path) -> Path:
    """Metric vs a factor's settings per cell, mean and 95% interval over trials."""
    cells = list(dict.fromkeys(str(r["cell"]) for r in rows))
    fig, axes = _grid(len(cells))
    for ax, cell in zip(axes, cells):
        mine = [r for r in rows if r["cell"] == cell]
        labels = [value_label(factor, r["value"]) for r in mine]
        x = np.arange(len(mine))
        epoch = mine[0].get("at_epoch", "?") if mine else "?"
        _errorbars(
            ax, x - 0.08, [r["early"] for r in mine], BEST_COLOUR, f"all trials, epoch {epoch}"
        )
        _errorbars(ax, x + 0.08, [r["final"] for r in mine], FINAL_COLOUR, "completed, final")
        ax.set_xticks(x, labels, rotation=30 if factor == "lr" else 0, fontsize=8)
        ax.set_title(cell, fontsize=9)
        ax.set_ylabel(f"validation {metric_label(metric)}", fontsize=8)
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7)
    word = FACTOR_LABELS.get(factor, factor)
    fig.suptitle(f"validation {metric_label(metric)} vs {word} (mean and 95% interval over trials)")
    return save(fig, path)


def _errorbars(
    ax: Axes, x: np.ndarray, stats: Sequence[Mapping[str, Any]], colour: str, label: str
) -> None:
    means = np.array([_num(s.get("mean")) for s in stats])
    lows = np.array([_num(s.get("ci95", [math.nan] * 2)[0]) for s in stats])
    highs = np.array([_num(s.get("ci95", [math.nan] * 2)[1]) for s in stats])
    keep = np.isfinite(means)
    if not keep.any():
        return
    low_err = np.where(np.isfinite(lows), means - lows, 0)[keep]
    high_err = np.where(np.isfinite(highs), highs - means, 0)[keep]
    ax.errorbar(
        x[keep], means[keep], yerr=[np.maximum(low_err, 0), np.maximum(high_err, 0)],
        fmt="o", color=colour, capsize=3, label=label,
    )  # fmt: skip


def plot_optimizer(comparisons: Sequence[Mapping[str, Any]], metric: str, path: Path) -> Path:
    """Paired test-split differences between optimizers per cell, with 95% intervals."""
    usable = [orient(c) for c in comparisons if metric in c.get("metrics", {})]
    fig = Figure(figsize=(7, max(2.2, 0.5 * len(usable) + 1.4)), layout="constrained")
    ax = fig.subplots()
    for i, comparison in enumerate(usable):
        stats = comparison["metrics"][metric]
        low, high = stats["ci95"]
        ax.plot([low, high], [i, i], color=BEST_COLOUR, linewidth=2)
        ax.plot(stats["difference"], i, "o", color=BEST_COLOUR)
    names = [f"{c['cell']}: {_optimizer(c['a'])} − {_optimizer(c['b'])}" for c in usable]
    ax.set_yticks(range(len(usable)), names, fontsize=8)
    ax.axvline(0, color=OTHER_COLOUR, linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in test {metric_label(metric)} (paired bootstrap, 95% interval)")
    ax.set_title("SGD vs Adam at their best settings", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return save(fig, path)


def plot_importance(importances: Sequence[Importance], path: Path) -> Path:
    """fANOVA importance of each searched parameter, one panel per cell."""
    usable = [i for i in importances if i.values]
    fig, axes = _grid(len(usable), height=2.6)
    for ax, item in zip(axes, usable):
        names = list(item.values)
        ax.barh(range(len(names)), list(item.values.values()), color=BEST_COLOUR)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"{item.cell} ({item.completed} completed trials)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("hyperparameter importance (fANOVA, share of explained variance)")
    return save(fig, path)


def plot_efficiency(
    frame: pd.DataFrame, metric: str, planned_epochs: Mapping[str, int], path: Path
) -> Path:
    """Best metric found so far vs compute spent (trial time and epochs), one line per cell."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    hours = frame["trial_seconds"].max() > 2 * 3600 if len(frame) else False
    scale, unit = (3600.0, "trial-hours") if hours else (60.0, "trial-minutes")
    for cell, rows in frame.groupby("cell", sort=False):
        left.step(rows["trial_seconds"] / scale, rows["best_so_far"], where="post", label=str(cell))
        right.step(rows["epochs"], rows["best_so_far"], where="post", label=str(cell))
    # Where each cell would have been had every trial trained all its epochs.
    for planned in sorted({v for v in planned_epochs.values() if v}):
        right.axvline(planned, color=OTHER_COLOUR, linestyle="--", linewidth=1)
        right.annotate(
            "every trial to the end", (planned, 0.02), xycoords=("data", "axes fraction"),
            rotation=90, ha="right", va="bottom", fontsize=7, color=OTHER_COLOUR,
        )  # fmt: skip
    left.set_xlabel(f"compute spent ({unit}, within the cell)")
    right.set_xlabel("epochs trained (within the cell)")
    for ax in (left, right):
        ax.set_ylabel(f"best validation {metric_label(metric)} so far")
        ax.grid(alpha=0.3)
    if frame["cell"].nunique() <= 12:
        left.legend(fontsize=7)
    fig.suptitle("search efficiency")
    return save(fig, path)


def plot_budget(
    frame: pd.DataFrame,
    metric: str,
    search_seconds: float | None,
    path: Path,
    *,
    origin: float | None = None,
) -> Path:
    """Best metric found so far vs wall-clock time since ``origin`` (the budget's time zero;
    default the first result), one line per cell, with the search's share of the time budget
    as a dashed line."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    first = float(frame["timestamp"].min())
    start = first if origin is None or origin > first else float(origin)
    hours = (frame["timestamp"].max() - start) > 2 * 3600 or (search_seconds or 0) > 2 * 3600
    scale, unit = (3600.0, "hours") if hours else (60.0, "minutes")
    for cell, rows in frame.sort_values("timestamp").groupby("cell", sort=False):
        ax.step((rows["timestamp"] - start) / scale, rows["best_so_far"], where="post", label=cell)
    if search_seconds:
        ax.axvline(search_seconds / scale, color=OTHER_COLOUR, linestyle="--", linewidth=1)
        ax.annotate(
            "search's budget", (search_seconds / scale, 0.02), xycoords=("data", "axes fraction"),
            rotation=90, ha="right", va="bottom", fontsize=7, color=OTHER_COLOUR,
        )  # fmt: skip
    since = "the first result" if start == first else "the start"
    ax.set_xlabel(f"wall-clock time since {since} ({unit})")
    ax.set_ylabel(f"best validation {metric_label(metric)} so far")
    ax.grid(alpha=0.3)
    if frame["cell"].nunique() <= 12:
        ax.legend(fontsize=7)
    fig.suptitle("what the time budget bought")
    return save(fig, path)


def _optimizer(name: str) -> str:
    return OPTIMIZER_NAMES.get(name, name)


def _all_positive(ax: Axes) -> bool:
    arrays = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    values = np.concatenate(arrays) if arrays else np.array([])
    values = values[np.isfinite(values)]
    return bool(values.size) and float(values.min()) > 0


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(value: Any) -> bool:
    return math.isfinite(_num(value))


def plot_transfer(transfers: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Heat map per architecture: macro-F1 of models trained on a row's dataset, scored on a
    column's (the diagonal: their own test split, on the classes of the first transfer)."""
    models = sorted({str(t["model"]) for t in transfers})
    fig, axes = _grid(len(models), width=4.6, height=3.8)
    for ax, model in zip(axes, models, strict=True):
        rows = [t for t in transfers if str(t["model"]) == model]
        trained = sorted({str(t["train"]) for t in rows})
        # Columns: the training datasets first (the diagonal), then sets only scored on.
        scored = trained + sorted({str(t["test"]) for t in rows} - set(trained))
        row_of = {n: k for k, n in enumerate(trained)}
        col_of = {n: k for k, n in enumerate(scored)}
        values = np.full((len(trained), len(scored)), np.nan)
        for t in rows:
            values[row_of[t["train"]], col_of[t["test"]]] = t["external"]["macro_f1"]["mean"]
            if math.isnan(values[row_of[t["train"]], col_of[t["train"]]]):
                values[row_of[t["train"]], col_of[t["train"]]] = t["own"]["macro_f1"]["mean"]
        ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(scored)), scored, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(trained)), trained, fontsize=8)
        ax.set_xlabel("scored on (test split)")
        ax.set_ylabel("trained on")
        ax.set_title(f"{model}: macro-F1", fontsize=9)
        for (i, j), value in np.ndenumerate(values):
            if math.isfinite(value):
                colour = "black" if value > 0.6 else "white"  # readable on viridis
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    return save(fig, path)


def plot_roc_pr(clinical: Mapping[str, Any], cell: str, path: Path) -> Path:
    """One-vs-rest ROC (left) and precision-recall (right) curves, one line per class."""
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    for name, curve in clinical["roc"].items():
        if curve["fpr"]:
            roc_ax.plot(curve["fpr"], curve["tpr"], label=f"{name} ({curve['auc']:.2f})")
    roc_ax.plot([0, 1], [0, 1], color=OTHER_COLOUR, linestyle=":", linewidth=1)
    roc_ax.set_xlabel("1 - specificity")
    roc_ax.set_ylabel("sensitivity")
    roc_ax.set_title("ROC (AUC)", fontsize=9)
    roc_ax.legend(fontsize=7, loc="lower right")
    for name, curve in clinical["pr"].items():
        if curve["recall"]:
            pr_ax.plot(
                curve["recall"],
                curve["precision"],
                label=f"{name} (AP {curve['average_precision']:.2f})",
            )
    pr_ax.set_xlabel("recall (sensitivity)")
    pr_ax.set_ylabel("precision")
    pr_ax.set_ylim(0, 1.02)
    pr_ax.set_title("precision-recall", fontsize=9)
    pr_ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{cell}: test split, one class against the rest")
    return save(fig, path)


def plot_reliability(clinical: Mapping[str, Any], cell: str, path: Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, bar width the bin."""
    bins = [b for b in clinical["reliability"] if b["count"]]
    fig = Figure(figsize=(4.4, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(
        [b["lower"] for b in bins],
        [b["accuracy"] for b in bins],
        width=[b["upper"] - b["lower"] for b in bins],
        align="edge",
        color=BEST_COLOUR,
        edgecolor="white",
        label="accuracy in bin",
    )
    ax.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o",
        color=FINAL_COLOUR,
        markersize=4,
        label="at mean confidence",
    )
    ax.plot([0, 1], [0, 1], color=OTHER_COLOUR, linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{cell}: ECE {clinical['ece']['mean']:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)

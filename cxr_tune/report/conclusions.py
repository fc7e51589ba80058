"""Plain-language answers to the ablation questions, computed from the numbers.

A difference is called clear only when the 95% intervals say so: for a factor's settings, the
best setting's interval must not overlap any other's and every setting must rest on at least
two trials; for SGD vs Adam, the paired bootstrap interval of the difference must exclude 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

METRIC_LABELS: dict[str, str] = {
    "accuracy": "accuracy",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
    "macro_f1": "macro-F1",
    "macro_auroc": "macro AUROC",
    "micro_f1": "micro-F1",
    "subset_accuracy": "subset accuracy",
    "loss": "loss",
}
FACTOR_LABELS: dict[str, str] = {
    "lr": "learning rate",
    "batch_size": "batch size",
    "optimizer": "optimizer",
    "weight_decay": "weight decay",
    "momentum": "momentum",
}
OPTIMIZER_NAMES: dict[str, str] = {"adam": "Adam", "sgd": "SGD", "adamw": "AdamW"}


def metric_label(name: str) -> str:
    """``val_macro_f1`` -> ``macro-F1`` (validation or test, the same words)."""
    bare = name.removeprefix("val_")
    return METRIC_LABELS.get(bare, bare.replace("_", " "))


def value_label(factor: str, value: Any) -> str:
    """A factor setting as people read it: learning-rate bins are decades."""
    if factor == "lr" and isinstance(value, str) and value.startswith("1e"):
        upper = int(value[2:]) + 1
        return f"{value}…1e{upper}"
    if factor == "optimizer":
        return OPTIMIZER_NAMES.get(str(value), str(value))
    return str(value)


def factor_conclusion(
    cell: str, factor: str, rows: Sequence[Mapping[str, Any]], metric: str, mode: str
) -> str:
    """One line on a factor within a cell, from evaluation.json's ``factors`` rows.

    Uses the "early" values (every trial at the first rung epoch), which count the trials
    ASHA stopped as much as the completed ones.
    """
    word = FACTOR_LABELS.get(factor, factor)
    scored = [r for r in rows if _finite(r.get("early", {}).get("mean"))]
    if len(scored) < 2:
        return f"{cell}: only one {word} setting has results; nothing to compare."
    sign = 1.0 if mode == "max" else -1.0
    scored.sort(key=lambda r: -sign * float(r["early"]["mean"]))
    best, others = scored[0], scored[1:]
    epoch = best.get("at_epoch", "?")
    head = f"{value_label(factor, best['value'])} scored best ({_stat(best['early'])})"
    notes = _failure_note(factor, rows)
    overlapping = [r for r in others if _overlaps(best["early"], r["early"])]
    thin = [r for r in scored if int(r["early"].get("n", 0)) < 2]
    label = metric_label(metric)
    if not overlapping and not thin:
        runner_up = others[0]
        return (
            f"{cell}: {word} matters: {head}, clearly ahead of every other setting (next: "
            f"{value_label(factor, runner_up['value'])}, {_stat(runner_up['early'])}); "
            f"validation {label} at epoch {epoch}.{notes}"
        )
    if overlapping:
        names = ", ".join(value_label(factor, r["value"]) for r in overlapping)
        return (
            f"{cell}: no clear difference in {word}: {head}, but its interval overlaps "
            f"{names}; validation {label} at epoch {epoch}.{notes}"
        )
    subjects = (["it"] if best in thin else []) + [
        value_label(factor, r["value"]) for r in thin if r is not best
    ]
    names = " and ".join(subjects)
    verb = "rests" if len(subjects) == 1 else "rest"
    return (
        f"{cell}: too few trials to tell for {word}: {head}, but {names} {verb} on a single "
        f"trial; validation {label} at epoch {epoch}.{notes}"
    )


def orient(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison as ``a - b`` with ``a`` first in name order (Adam - SGD), flipping signs
    and intervals when evaluation.json has it the other way round."""
    a, b = str(comparison.get("a")), str(comparison.get("b"))
    if a <= b:
        return dict(comparison)
    flipped = {}
    for name, stats in comparison.get("metrics", {}).items():
        low, high = stats["ci95"]
        flipped[name] = {
            "difference": -float(stats["difference"]),
            "ci95": [-float(high), -float(low)],
            "p_a_better": 1.0 - float(stats.get("p_a_better", 0.5)),
        }
    return {**comparison, "a": b, "b": a, "metrics": flipped}


def optimizer_conclusion(comparison: Mapping[str, Any], metric: str) -> str:
    """One line on a paired test-split comparison of two optimizers' best configurations."""
    comparison = orient(comparison)
    cell = comparison.get("cell", "")
    a = OPTIMIZER_NAMES.get(str(comparison.get("a")), str(comparison.get("a")))
    b = OPTIMIZER_NAMES.get(str(comparison.get("b")), str(comparison.get("b")))
    stats = comparison.get("metrics", {}).get(metric)
    label = metric_label(metric)
    if not stats:
        return f"{cell}: no paired {label} comparison of {a} and {b} was computed."
    diff = float(stats["difference"])
    low, high = (float(v) for v in stats["ci95"])
    if low > 0:
        return (
            f"{cell}: {a} beats {b} by {diff:.2f} {label} [{low:.2f}, {high:.2f}] on the "
            "test split."
        )
    if high < 0:
        return (
            f"{cell}: {b} beats {a} by {-diff:.2f} {label} [{-high:.2f}, {-low:.2f}] on the "
            "test split."
        )
    same = " (they score the same on every resample)" if low == high == 0 else ""
    return (
        f"{cell}: no clear difference between {a} and {b} on the test split ({a} − {b} = "
        f"{diff:+.2f} {label} [{low:+.2f}, {high:+.2f}]; the interval includes 0){same}."
    )


def matching_test_metric(metric: str, available: Sequence[str]) -> str:
    """The test-split metric matching the search metric (macro-F1 when there is none)."""
    bare = metric.removeprefix("val_")
    return bare if bare in available else "macro_f1"


def _stat(stats: Mapping[str, Any]) -> str:
    low, high = stats.get("ci95", [math.nan, math.nan])
    n = int(stats.get("n", 0))
    interval = f" [{low:.2f}, {high:.2f}]" if _finite(low) and _finite(high) and n > 1 else ""
    return f"{float(stats['mean']):.2f}{interval}, {n} trial{'s' if n != 1 else ''}"


def _overlaps(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    a_low, a_high = a.get("ci95", [math.nan, math.nan])
    b_low, b_high = b.get("ci95", [math.nan, math.nan])
    if not all(_finite(v) for v in (a_low, a_high, b_low, b_high)):
        return True  # no interval: no evidence of a difference
    return float(a_low) <= float(b_high) and float(b_low) <= float(a_high)


def _failure_note(factor: str, rows: Sequence[Mapping[str, Any]]) -> str:
    notes = [
        f"{value_label(factor, r['value'])}: {r['diverged_or_failed']} of {r['trials']} "
        "trials diverged or failed"
        for r in rows
        if int(r.get("diverged_or_failed", 0))
    ]
    return f" ({'; '.join(notes)})" if notes else ""


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False

"""Plain-language conclusions follow the intervals."""

from __future__ import annotations

from typing import Any

from cxr_tune.report.conclusions import (
    factor_conclusion,
    metric_label,
    optimizer_conclusion,
    orient,
    value_label,
)


def _row(
    value: str, mean: float, low: float, high: float, n: int = 3, bad: int = 0
) -> dict[str, Any]:
    stats = {"mean": mean, "ci95": [low, high], "n": n}
    return {"cell": "c", "value": value, "trials": n, "at_epoch": 2, "early": stats,
            "final": stats, "diverged_or_failed": bad}  # fmt: skip


def _comparison(a: str, b: str, diff: float, low: float, high: float) -> dict[str, Any]:
    return {"cell": "c", "factor": "optimizer", "a": a, "b": b,
            "metrics": {"macro_f1": {"difference": diff, "ci95": [low, high], "p_a_better": 0.5}}}  # fmt: skip


def test_factor_conclusion_calls_separated_intervals_clear() -> None:
    rows = [_row("1e-4", 0.80, 0.75, 0.85), _row("1e-2", 0.40, 0.30, 0.50, bad=2)]
    line = factor_conclusion("c", "lr", rows, "val_macro_f1", "max")
    assert line.startswith("c: learning rate matters: 1e-4…1e-3 scored best (0.80 [0.75, 0.85]")
    assert "1e-2…1e-1: 2 of 3 trials diverged or failed" in line


def test_factor_conclusion_reports_overlap_as_no_clear_difference() -> None:
    rows = [_row("16", 0.70, 0.60, 0.80), _row("32", 0.65, 0.55, 0.75)]
    line = factor_conclusion("c", "batch_size", rows, "val_macro_f1", "max")
    assert "no clear difference in batch size" in line and "overlaps 32" in line


def test_factor_conclusion_says_when_trials_are_too_few() -> None:
    rows = [_row("16", 0.90, 0.90, 0.90, n=1), _row("32", 0.40, 0.35, 0.45)]
    line = factor_conclusion("c", "batch_size", rows, "val_macro_f1", "max")
    assert "too few trials to tell" in line and "but it rests on a single trial" in line


def test_factor_conclusion_prefers_the_lowest_value_for_min_metrics() -> None:
    rows = [_row("adam", 0.9, 0.85, 0.95), _row("sgd", 0.3, 0.25, 0.35)]
    line = factor_conclusion("c", "optimizer", rows, "val_loss", "min")
    assert "SGD scored best" in line


def test_factor_conclusion_needs_two_settings() -> None:
    line = factor_conclusion("c", "lr", [_row("1e-4", 0.8, 0.7, 0.9)], "val_macro_f1", "max")
    assert "nothing to compare" in line


def test_optimizer_conclusion_names_the_winner_with_its_interval() -> None:
    line = optimizer_conclusion(_comparison("adam", "sgd", 0.21, 0.15, 0.27), "macro_f1")
    assert line == "c: Adam beats SGD by 0.21 macro-F1 [0.15, 0.27] on the test split."


def test_optimizer_conclusion_flips_a_reversed_comparison() -> None:
    line = optimizer_conclusion(_comparison("sgd", "adam", -0.21, -0.27, -0.15), "macro_f1")
    assert line == "c: Adam beats SGD by 0.21 macro-F1 [0.15, 0.27] on the test split."


def test_optimizer_conclusion_reports_an_interval_across_zero_as_no_difference() -> None:
    line = optimizer_conclusion(_comparison("adam", "sgd", 0.02, -0.03, 0.07), "macro_f1")
    assert "no clear difference between Adam and SGD" in line and "[-0.03, +0.07]" in line


def test_orient_keeps_a_then_b_in_name_order() -> None:
    flipped = orient(_comparison("sgd", "adam", -0.1, -0.2, 0.05))
    assert (flipped["a"], flipped["b"]) == ("adam", "sgd")
    assert flipped["metrics"]["macro_f1"]["ci95"] == [-0.05, 0.2]


def test_labels_read_as_words() -> None:
    assert metric_label("val_macro_f1") == "macro-F1"
    assert value_label("lr", "1e-3") == "1e-3…1e-2"
    assert value_label("optimizer", "sgd") == "SGD"

"""Statistics on hand-made predictions and trials: summaries over seeds, bootstrap intervals,
paired comparisons and factor effects."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_tune.stats import bootstrap_indices, bootstrap_scores, compare, factor_effects, summarise
from tests.records import experiment_of, trial_record


def _runs(targets, accuracy, seeds, rng, classes=3):
    runs = []
    for _ in range(seeds):
        right = rng.random(len(targets)) < accuracy
        wrong = (targets + rng.integers(1, classes, len(targets))) % classes
        runs.append({"predictions": np.where(right, targets, wrong).tolist()})
    return runs


def test_summary_has_seed_spread_and_a_bootstrap_interval_around_the_mean():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 400)
    runs = _runs(targets, 0.8, seeds=3, rng=rng)
    boot = bootstrap_scores("multiclass", runs, targets, 3, bootstrap_indices(400, 300, seed=0))
    summary = summarise("multiclass", runs, targets, 3, boot)
    accuracy = summary["accuracy"]
    assert len(accuracy["per_seed"]) == 3 and accuracy["std"] > 0
    low, high = accuracy["ci95"]
    assert low < accuracy["mean"] < high and low > 0.7 and high < 0.9
    assert high - low < 0.1


def test_paired_comparison_separates_a_clearly_better_model():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 300)
    indices = bootstrap_indices(300, 300, seed=1)
    good = bootstrap_scores("multiclass", _runs(targets, 0.9, 1, rng), targets, 3, indices)
    poor = bootstrap_scores("multiclass", _runs(targets, 0.4, 1, rng), targets, 3, indices)
    result = compare(good, poor, ("accuracy", "macro_f1"))
    assert result["accuracy"]["difference"] == pytest.approx(0.5, abs=0.08)
    assert result["accuracy"]["ci95"][0] > 0.3 and result["accuracy"]["p_a_better"] == 1.0


def test_paired_comparison_of_equal_models_straddles_zero():
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 3, 300)
    indices = bootstrap_indices(300, 300, seed=2)
    a = bootstrap_scores("multiclass", _runs(targets, 0.7, 1, rng), targets, 3, indices)
    b = bootstrap_scores("multiclass", _runs(targets, 0.7, 1, rng), targets, 3, indices)
    low, high = compare(a, b, ("accuracy",))["accuracy"]["ci95"]
    assert low < 0 < high


def test_factor_effects_compare_every_trial_at_the_first_rung():
    exp = experiment_of(
        [
            trial_record("a", "phantom/alexnet", [0.5, 0.6, 0.7], lr=1e-3),
            trial_record("b", "phantom/alexnet", [0.4], lr=2e-3),
            trial_record("c", "phantom/alexnet", [0.1], lr=0.05),
            trial_record("d", "phantom/alexnet", [], lr=0.2, status="diverged"),
        ]
    )
    rows = {row["value"]: row for row in factor_effects(exp)["lr"]}
    assert set(rows) == {"1e-3", "1e-2", "1e-1"}
    assert rows["1e-3"]["trials"] == 2 and rows["1e-3"]["at_epoch"] == 1
    assert rows["1e-3"]["early"]["mean"] == pytest.approx(0.45)
    assert rows["1e-3"]["final"]["mean"] == pytest.approx(0.7) and rows["1e-3"]["final"]["n"] == 1
    assert rows["1e-1"]["diverged_or_failed"] == 1 and rows["1e-1"]["early"]["n"] == 0

"""Final-evaluation statistics on hand-made predictions and experiments (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.evaluate import (
    bootstrap_indices,
    bootstrap_scores,
    choose_contenders,
    compare,
    factor_effects,
    retrain_seconds,
    summarise,
)
from cxr_tune.report.experiment import Experiment, TrialRecord


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


def _trial(trial_id, cell, values, *, optimizer="adam", lr=1e-3, batch=32, epochs=3, status="ok"):
    results = [
        {"epoch": e, "status": "ok", "val_macro_f1": v} for e, v in enumerate(values, start=1)
    ]
    if status != "ok":
        results.append({"epoch": len(values) + 1, "status": status, "val_macro_f1": math.nan})
    config = {
        "cell": cell,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": batch,
        "epochs": epochs,
        "dataset": "phantom",
    }
    trial = TrialRecord(trial_id, Path(trial_id), config, results)
    trial.state = (
        status if status != "ok" else ("completed" if len(values) == epochs else "stopped_early")
    )
    return trial


def _experiment(trials):
    record = {
        "metric": {"name": "val_macro_f1", "mode": "max"},
        "plan": [{"cell": "phantom/alexnet"}],
        "finished_at": "x",
    }
    return Experiment(Path("."), record, trials, None)


def test_contenders_are_the_best_trial_and_the_best_of_each_optimizer():
    exp = _experiment(
        [
            _trial("a1", "phantom/alexnet", [0.3, 0.5, 0.7]),
            _trial("a2", "phantom/alexnet", [0.3, 0.4, 0.6]),
            _trial("s1", "phantom/alexnet", [0.2, 0.3, 0.4], optimizer="sgd"),
            _trial(
                "s2", "phantom/alexnet", [0.9], optimizer="sgd"
            ),  # stopped early: not comparable
        ]
    )
    contenders = {c.trial.trial_id: c.roles for c in choose_contenders(exp)}
    assert contenders == {"a1": ("best", "best_adam"), "s1": ("best_sgd",)}


def test_factor_effects_compare_every_trial_at_the_first_rung():
    exp = _experiment(
        [
            _trial("a", "phantom/alexnet", [0.5, 0.6, 0.7], lr=1e-3),
            _trial("b", "phantom/alexnet", [0.4], lr=2e-3),
            _trial("c", "phantom/alexnet", [0.1], lr=0.05),
            _trial("d", "phantom/alexnet", [], lr=0.2, status="diverged"),
        ]
    )
    rows = {row["value"]: row for row in factor_effects(exp)["lr"]}
    assert set(rows) == {"1e-3", "1e-2", "1e-1"}
    assert rows["1e-3"]["trials"] == 2 and rows["1e-3"]["at_epoch"] == 1
    assert rows["1e-3"]["early"]["mean"] == pytest.approx(0.45)
    assert rows["1e-3"]["final"]["mean"] == pytest.approx(0.7) and rows["1e-3"]["final"]["n"] == 1
    assert rows["1e-1"]["diverged_or_failed"] == 1 and rows["1e-1"]["early"]["n"] == 0


def test_retraining_time_is_estimated_from_the_trials_own_epochs():
    stopped = _trial("s", "phantom/vgg11", [0.2], epochs=3)
    stopped.results[-1]["time_total_s"] = 40.0  # one epoch in 40 s -> 3 epochs in 120 s
    assert retrain_seconds(stopped) == 120.0
    assert retrain_seconds(_trial("n", "phantom/vgg11", [], epochs=3)) == 0.0

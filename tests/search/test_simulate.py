"""Replays on stored curves: deterministic, and the decisions of the real search's code."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from cxr_tune.config import PROFILES
from cxr_tune.metrics import NO_SKILL_KEY, TRAIN_NO_SKILL_KEY
from cxr_tune.search.plan import Overrides, Plan, build_plan
from cxr_tune.search.simulate import simulate
from cxr_tune.spaces import parse_space

EPOCHS = 4
CHANCE = math.log(4)
LRS = (1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2)
OPTIMIZERS = ("adam", "sgd")


def _curve(lr: float, optimizer: str) -> list[dict]:
    """Made-up learning curves: Adam learns, best at 3e-4, and starts slowly at 1e-4; SGD learns
    nothing below 1e-2 (losses at chance, so the no-skill check stops it)."""
    learns = optimizer == "adam" or lr >= 1.0e-2
    rows = []
    for epoch in range(1, EPOCHS + 1):
        if learns:
            skill = (1.0 - abs(math.log10(lr / 3.0e-4)) / 3) * epoch / EPOCHS
            if lr == 1.0e-4 and epoch < 3:
                skill *= 0.2  # a slow starter
            loss = CHANCE * (1.0 - 0.5 * skill)
            f1 = 0.25 + 0.6 * skill
        else:
            loss, f1 = CHANCE * (1.0 + 0.001 * epoch), 0.1
        rows.append(
            {
                "status": "ok",
                "val_macro_f1": f1,
                "val_loss": loss,
                "train_loss": loss,
                NO_SKILL_KEY: CHANCE,
                TRAIN_NO_SKILL_KEY: CHANCE,
            }
        )
    return rows


CURVES = {(lr, opt): _curve(lr, opt) for lr in LRS for opt in OPTIMIZERS}


def _results(config) -> list[dict]:
    return CURVES[(float(config["lr"]), config["optimizer"])]


def _seconds(config) -> float:
    return 2.0 if config["optimizer"] == "adam" else 1.5


def _plan(algorithm: str = "optuna", budget: int | None = 24, concurrent: int = 2) -> Plan:
    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {"lr": {"choice": list(LRS)}, "optimizer": {"choice": list(OPTIMIZERS)}},
            "fixed": {"epochs": EPOCHS},
            "search": {
                "algorithm": algorithm,
                "num_samples": len(CURVES),
                "seed": 3,
                **({"budget_epochs": budget} if budget else {}),
            },
            "scheduler": {
                "grace_period": 1,
                "reduction_factor": 2,
                "metric": "val_loss",
                "no_skill_epoch": 2,
            },
        },
        source="replay.yaml",
    )
    overrides = Overrides(seed=3, max_concurrent=concurrent)
    return build_plan(space, PROFILES["gpu"], ("phantom",), overrides)


def _study_rows(study_db: str) -> list[tuple]:
    """What Optuna was told, trial by trial: the searcher's side of the decisions."""
    study = optuna.load_study(study_name="phantom/alexnet", storage=f"sqlite:///{study_db}")
    return [
        (t.number, t.state, t.params, dict(sorted(t.intermediate_values.items())), t.value)
        for t in study.trials
    ]


@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_simulate_gives_the_same_replay_twice(algorithm):
    first = simulate(_plan(algorithm), None, _results, _seconds)
    second = simulate(_plan(algorithm), None, _results, _seconds)
    assert first == second
    assert len(first.trials) > 3 and len(first.decisions) == sum(t.epochs for t in first.trials)


def test_simulate_decides_the_same_with_the_study_in_memory_or_in_sqlite(tmp_path):
    in_memory = simulate(_plan(budget=12), None, _results, _seconds)
    on_disk = simulate(_plan(budget=12), str(tmp_path / "optuna.db"), _results, _seconds)
    assert in_memory == on_disk


def test_simulate_keeps_the_budget_and_stops_flat_trials_at_the_check(tmp_path):
    study_db = str(tmp_path / "optuna.db")
    replay = simulate(_plan(budget=12), study_db, _results, _seconds)
    assert sum(t.epochs for t in replay.trials) == 12
    for trial in replay.trials:
        learns = trial.config["optimizer"] == "adam" or trial.config["lr"] >= 1.0e-2
        if not learns:
            # Stopped by the no-skill check at epoch 2, or at ASHA's first rung before it.
            assert trial.epochs <= 2 and not trial.completed
    # The PRUNED bridge: every trial stopped early reached Optuna as pruned with its epochs.
    states = {row[0]: row for row in _study_rows(study_db)}
    stopped = [t for t in replay.trials if not t.completed]
    assert stopped
    pruned = [r for r in states.values() if r[1] == TrialState.PRUNED]
    assert sorted(len(r[3]) for r in pruned) == sorted(t.epochs for t in stopped)


def test_simulate_orders_results_by_simulated_time():
    replay = simulate(_plan(budget=None), None, _results, _seconds)
    times = [d.time for d in replay.decisions]
    assert times == sorted(times)
    # Two at a time: a 1.5 s SGD epoch ends before a 2 s Adam epoch that started with it.
    assert len({d.trial_id for d in replay.decisions if d.time <= 2.0}) == 2


def _replayed_trial(config: dict) -> None:
    """A Tune trial that reports its configuration's stored curve instead of training."""
    from ray import tune

    for epoch, row in enumerate(_results(config), start=1):
        tune.report({**row, "epoch": epoch})


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_simulate_makes_the_decisions_of_a_real_tune_run(ray_local, tmp_path, algorithm):
    """One trial at a time, so that Tune's order of events is fixed: the replay proposes the
    same configurations, stops the same trials at the same epochs, and tells Optuna the same."""
    from ray import tune

    from cxr_tune.search.scheduler import scheduler_for
    from cxr_tune.search.searcher import CellSearcher

    plan = _plan(algorithm, budget=30, concurrent=1)
    tune_db = str(tmp_path / "tune.db")
    results = tune.Tuner(
        tune.with_resources(_replayed_trial, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, tune_db),
            scheduler=scheduler_for(plan, study_db=tune_db),
            num_samples=plan.total_trials,
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="replayed", storage_path=str(tmp_path), verbose=0),
    ).fit()
    simulated_db = str(tmp_path / "simulated.db")
    replay = simulate(plan, simulated_db, _results, _seconds, max_concurrent=1)
    assert not results.errors
    tune_rows, simulated_rows = _study_rows(tune_db), _study_rows(simulated_db)
    assert simulated_rows == tune_rows
    assert any(row[1] == TrialState.PRUNED for row in tune_rows)
    tune_epochs = sorted(
        ((r.config["lr"], r.config["optimizer"]), int(r.metrics["epoch"])) for r in results
    )
    simulated_epochs = sorted(
        ((t.config["lr"], t.config["optimizer"]), t.epochs) for t in replay.trials
    )
    assert simulated_epochs == tune_epochs

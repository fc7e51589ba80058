"""ASHA compares like with like, and Optuna sees the truth: checked in real Tune runs with a cheap
synthetic objective (two cells of very different difficulty) and directly on the scheduler."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cxr_tune.config import PROFILES
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.search.scheduler import CellASHA
from cxr_tune.spaces import parse_space

EPOCHS = 4


class _Trial:
    """The two attributes a scheduler reads from a Tune trial."""

    def __init__(self, trial_id: str, cell: str) -> None:
        self.trial_id = trial_id
        self.config = {"cell": cell, "epochs": EPOCHS}


def _feed(scheduler, trial, epoch, value):
    return scheduler.on_trial_result(
        None, trial, {"epoch": epoch, "val_macro_f1": value, "status": "ok"}
    )


def test_hard_cell_trial_is_not_stopped_by_the_easy_cells_results():
    ours = CellASHA(
        metric="val_macro_f1", mode="max", grace_period=1, reduction_factor=2, max_t=EPOCHS
    )
    stock = ASHAScheduler(
        time_attr="epoch",
        metric="val_macro_f1",
        mode="max",
        grace_period=1,
        reduction_factor=2,
        max_t=EPOCHS,
    )
    easy = [_Trial(f"e{i}", "easy/alexnet") for i in range(3)]
    hard = _Trial("h0", "hard/alexnet")
    for scheduler in (ours, stock):
        for trial in [*easy, hard]:
            scheduler.on_trial_add(None, trial)
        for trial, value in zip(easy, (0.90, 0.85, 0.95)):
            _feed(scheduler, trial, 1, value)
    # The hard cell's first trial at rung 1 is the best of its cell: it must go on.
    assert _feed(ours, hard, 1, 0.20) == TrialScheduler.CONTINUE
    # Ray's single ASHA compares it with the easy cell and stops it (what this project avoids).
    assert _feed(stock, hard, 1, 0.20) == TrialScheduler.STOP


def test_within_a_cell_asha_still_stops_the_worse_trials():
    ours = CellASHA(
        metric="val_macro_f1", mode="max", grace_period=1, reduction_factor=2, max_t=EPOCHS
    )
    trials = [_Trial(f"h{i}", "hard/alexnet") for i in range(3)]
    for trial in trials:
        ours.on_trial_add(None, trial)
    assert _feed(ours, trials[0], 1, 0.30) == TrialScheduler.CONTINUE
    assert _feed(ours, trials[1], 1, 0.10) == TrialScheduler.STOP
    assert ours.stopped_early() == {"hard/alexnet": 1}


def test_diverged_result_never_enters_the_rungs():
    ours = CellASHA(
        metric="val_macro_f1", mode="max", grace_period=1, reduction_factor=2, max_t=EPOCHS
    )
    a, b = _Trial("a", "c"), _Trial("b", "c")
    ours.on_trial_add(None, a)
    ours.on_trial_add(None, b)
    assert (
        ours.on_trial_result(None, a, {"epoch": 1, "val_macro_f1": math.nan, "status": "diverged"})
        == TrialScheduler.CONTINUE
    )
    assert _feed(ours, b, 1, 0.01) == TrialScheduler.CONTINUE  # first real result of the rung


def _synthetic_trainable(config):
    """A cheap stand-in for training: the cell sets the difficulty, lr the quality."""
    import time

    from ray import tune

    base, spread = (0.80, 0.15) if config["dataset"] == "easy" else (0.05, 0.25)
    quality = 1.0 - abs(math.log10(config["lr"]) + 3.0) / 2.0  # best at lr = 1e-3
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(0.05)
        if config["lr"] > 0.05:  # "diverges" right away
            tune.report(
                {
                    "epoch": epoch,
                    "status": "diverged",
                    "val_macro_f1": math.nan,
                    "failure_reason": "loss became nan",
                }
            )
            return
        value = base + spread * max(0.0, quality) * (1.0 - 0.5**epoch)
        tune.report({"epoch": epoch, "status": "ok", "val_macro_f1": value})


@pytest.fixture(scope="module")
def two_cell_run(ray_local, tmp_path_factory):
    """A real Tune run: CellSearcher (TPE per cell) + CellASHA over an easy and a hard cell."""
    from ray import tune

    from cxr_tune.search.scheduler import CellASHA
    from cxr_tune.search.searcher import CellSearcher

    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {"lr": {"loguniform": [1.0e-5, 1.0e-1]}},
            "fixed": {"epochs": EPOCHS},
            "search": {"num_samples": 8, "initial": [{"lr": 1.0e-3}, {"lr": 1.0e-1}]},
            "scheduler": {"grace_period": 1, "reduction_factor": 2},
        },
        source="two-cells.yaml",
    )
    plan = build_plan(space, PROFILES["gpu"], ("easy", "hard"), Overrides(max_concurrent=2))
    folder = tmp_path_factory.mktemp("two_cells")
    study_db = folder / "optuna.db"
    tuner = tune.Tuner(
        tune.with_resources(_synthetic_trainable, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, str(study_db)),
            scheduler=CellASHA(
                metric="val_macro_f1", mode="max", grace_period=1, reduction_factor=2, max_t=EPOCHS
            ),
            num_samples=plan.total_trials,
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(name="cells", storage_path=str(folder), verbose=0),
    )
    results = tuner.fit()
    return results, study_db


def _history(result):
    return result.metrics_dataframe.sort_values("epoch")


@pytest.mark.integration
def test_asha_decisions_only_use_the_trials_own_cell(two_cell_run):
    results, _ = two_cell_run
    by_cell: dict[str, list] = {}
    for result in results:
        by_cell.setdefault(result.config["cell"], []).append(result)
    assert set(by_cell) == {"easy/alexnet", "hard/alexnet"}
    hard_values = [
        r.metrics["val_macro_f1"]
        for r in by_cell["hard/alexnet"]
        if r.metrics.get("status") == "ok"
    ]
    easy_values = [
        r.metrics["val_macro_f1"]
        for r in by_cell["easy/alexnet"]
        if r.metrics.get("status") == "ok"
    ]
    assert max(hard_values) < min(easy_values)  # the cells really differ
    for cell, cell_results in by_cell.items():
        finished = [
            r
            for r in cell_results
            if r.metrics.get("status") == "ok" and r.metrics["epoch"] == EPOCHS
        ]
        stopped = [
            r
            for r in cell_results
            if r.metrics.get("status") == "ok" and r.metrics["epoch"] < EPOCHS
        ]
        assert finished, f"no trial of {cell} trained to the end"
        assert stopped, f"ASHA stopped no trial of {cell}"
        # A trial stopped at a rung was worse there than some trial of its own cell.
        for trial in stopped:
            epoch = int(trial.metrics["epoch"])
            value = trial.metrics["val_macro_f1"]
            peers = [
                _history(r).set_index("epoch")["val_macro_f1"].get(epoch, -1.0)
                for r in cell_results
                if r is not trial and r.metrics.get("status") == "ok"
            ]
            assert max(peers) > value


@pytest.mark.integration
def test_optuna_sees_pruned_trials_with_intermediate_values_and_failed_divergence(two_cell_run):
    _, study_db = two_cell_run
    for cell in ("easy/alexnet", "hard/alexnet"):
        study = optuna.load_study(study_name=cell, storage=f"sqlite:///{study_db}")
        states = [t.state for t in study.trials]
        assert states.count(TrialState.COMPLETE) >= 1
        pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
        assert pruned and all(t.intermediate_values for t in pruned)
        assert all(max(t.intermediate_values) < EPOCHS for t in pruned)
        assert all(
            len(t.intermediate_values) == EPOCHS
            for t in study.trials
            if t.state == TrialState.COMPLETE
        )
        diverged = [t for t in study.trials if t.user_attrs.get("outcome") == "diverged"]
        assert diverged and all(t.params["lr"] > 0.05 for t in diverged)
        assert all(t.state == TrialState.PRUNED and t.value == 0.0 for t in diverged)
        assert "loss became nan" in diverged[0].user_attrs["failure_reason"]
        assert len(study.trials) == 8

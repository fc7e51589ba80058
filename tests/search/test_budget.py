"""Epoch budgets per cell: the searcher starts trials only while epochs are left, the schedulers
stop trials where they are once the budget is spent, and the sum never exceeds it."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from cxr_tune.config import PROFILES
from cxr_tune.errors import ConfigError
from cxr_tune.search.budget import has_room
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.search.searcher import SEARCH_ENDED, CellSearcher, ended_cells
from cxr_tune.spaces import parse_space

EPOCHS = 4


def _plan(budget: int | None, *, datasets=("phantom",), num_samples: int = 50, overrides=None):
    search = {"num_samples": num_samples, "seed": 1}
    if budget is not None:
        search["budget_epochs"] = budget
    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {"lr": {"loguniform": [1.0e-5, 1.0e-1]}},
            "fixed": {"epochs": EPOCHS},
            "search": search,
            "scheduler": {"grace_period": 1, "reduction_factor": 2},
        },
        source="budget.yaml",
    )
    return build_plan(space, PROFILES["gpu"], datasets, overrides or Overrides(max_concurrent=2))


def test_room_counts_the_epochs_under_way():
    assert has_room(None, 10**6, 10**6)
    assert has_room(10, 7, 2)  # 7 spent + 2 under way + 1 more = 10
    assert not has_room(10, 8, 2)


def test_budget_is_validated_and_overridden_and_shown():
    with pytest.raises(ConfigError, match=r"budget\.yaml.*search\.budget_epochs"):
        _plan(0)
    assert _plan(12).budget_epochs == 12
    assert _plan(None).budget_epochs is None
    assert _plan(12, overrides=Overrides(budget_epochs=30)).budget_epochs == 30
    assert _plan(12).lines()[0]["search"]["budget_epochs"] == 12
    assert any("no trial can train to the end" in n for n in _plan(3).notes)


def test_searcher_waits_for_budget_held_by_live_trials_then_ends_the_cell(tmp_path):
    searcher = CellSearcher(_plan(6), str(tmp_path / "optuna.db"))

    def report(trial_id: str, epoch: int) -> None:
        searcher.on_trial_result(trial_id, {"epoch": epoch, "val_macro_f1": 0.1 * epoch})

    assert isinstance(searcher.suggest("a"), dict)
    assert isinstance(searcher.suggest("b"), dict)
    report("a", 1)
    report("a", 2)
    # 2 spent + 2 under way + 1 = 5 <= 6, then 2 + 3 + 1 = 6 <= 6, then 7 > 6: wait (None).
    assert isinstance(searcher.suggest("c"), dict)
    assert isinstance(searcher.suggest("d"), dict)
    assert searcher.suggest("e") is None
    # "a" stopped at epoch 2 frees its reserved epoch: one more trial fits.
    searcher.on_trial_complete("a", {"epoch": 2, "val_macro_f1": 0.2, "status": "ok"})
    assert isinstance(searcher.suggest("e"), dict)
    assert searcher.suggest("f") is None
    for trial_id in ("b", "c", "d", "e"):
        searcher.on_trial_complete(trial_id, {"epoch": 1, "val_macro_f1": 0.1, "status": "ok"})
    # 2 + 4 = 6 epochs spent, nothing live: the cell is over, and its study says why.
    assert searcher.suggest("g") == CellSearcher.FINISHED
    study = optuna.load_study(
        study_name="phantom/alexnet", storage=f"sqlite:///{searcher.study_db}"
    )
    assert study.user_attrs[SEARCH_ENDED] == "epoch budget spent"
    assert [t.state for t in study.trials].count(TrialState.PRUNED) == 5


def _trainable(config):
    import time

    from ray import tune

    quality = 1.0 - abs(math.log10(config["lr"]) + 3.0) / 4.0
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(0.02)
        tune.report({"epoch": epoch, "status": "ok", "val_macro_f1": quality * epoch / 10})


def _run(plan, scheduler, folder):
    from ray import tune

    return tune.Tuner(
        tune.with_resources(_trainable, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, str(folder / "optuna.db")),
            scheduler=scheduler,
            num_samples=plan.total_trials,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="budget", storage_path=str(folder), verbose=0),
    ).fit()


@pytest.mark.integration
@pytest.mark.parametrize("scheduler_name", ["asha", "fifo"])
def test_a_real_search_spends_exactly_its_budget_per_cell(
    ray_local, tmp_path, monkeypatch, scheduler_name
):
    from cxr_tune.search.runner import was_interrupted
    from cxr_tune.search.scheduler import CellASHA, SavingFIFO

    monkeypatch.delenv("CXR_TUNE_STUDY_DB", raising=False)
    budget = 10  # not a multiple of the 4 epochs: some trial must be cut short by the budget
    plan = _plan(budget, datasets=("easy", "hard"))
    scheduler = (
        CellASHA(
            metric="val_macro_f1",
            mode="max",
            grace_period=1,
            reduction_factor=2,
            max_t=EPOCHS,
            budget_epochs=budget,
        )
        if scheduler_name == "asha"
        else SavingFIFO(budget_epochs=budget)
    )
    results = _run(plan, scheduler, tmp_path)
    spent: dict[str, int] = {}
    for result in results:
        cell = result.config["cell"]
        spent[cell] = spent.get(cell, 0) + int(result.metrics["epoch"])
    # Every cell spent its whole budget and not one epoch more, on fewer trials than planned.
    assert spent == {"easy/alexnet": budget, "hard/alexnet": budget}
    assert len(results) < plan.total_trials
    assert ended_cells(str(tmp_path / "optuna.db")) == {
        "easy/alexnet": "epoch budget spent",
        "hard/alexnet": "epoch budget spent",
    }
    assert not was_interrupted(results, plan, str(tmp_path / "optuna.db"))
    if scheduler_name == "fifo":
        # Without ASHA, only the budget stops trials: 10 = 4 + 4 + 2 in each cell.
        assert sum(scheduler.out_of_budget().values()) >= 2
    for cell in spent:
        study = optuna.load_study(study_name=cell, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        short = [t for t in study.trials if t.state == TrialState.PRUNED]
        assert all(t.intermediate_values for t in short)


def test_trials_expected_under_a_budget_at_ashas_nominal_cost():
    # Rungs at 1 and 2 of 4 epochs, half going on at each: 1 + 1/2 + 2/4 = 2 epochs a trial.
    assert _plan(36).nominal_epochs_per_trial() == 2.0
    assert _plan(36).expected_trials_per_cell() == 18
    assert _plan(36, num_samples=10).expected_trials_per_cell() == 10  # num_samples still caps
    assert _plan(None, num_samples=10).expected_trials_per_cell() == 10

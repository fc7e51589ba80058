"""Time and GPU-hour budgets of a whole experiment: parsed, planned with the final evaluation's
reserve, kept by the searcher (no new trial once spent, nor one whose first epoch would end
past the search's share), the schedulers (a running trial stops once its next epoch would end
past the share, every trial at once past the margin) and a resumed run (what is left)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cxr_tune.config import PROFILES
from cxr_tune.errors import ConfigError
from cxr_tune.search.budget import (
    BUDGET_MARGIN,
    BudgetKeeper,
    ExperimentBudget,
    TimeBudget,
    parse_duration,
)
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.search.searcher import SEARCH_ENDED, CellSearcher
from cxr_tune.spaces import parse_space
from tests.search.fakes import FakeController, FakeTrial

EPOCHS = 8


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plan(overrides: Overrides | None = None, eval_seeds: int = 3, profile: str = "gpu"):
    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {
                "lr": {"loguniform": [1.0e-5, 1.0e-1]},
                "optimizer": {"choice": ["adam", "sgd"]},
            },
            "fixed": {"epochs": EPOCHS},
            "search": {"num_samples": 12, "seed": 1},
            "scheduler": {"grace_period": 1, "reduction_factor": 2},
            "evaluation": {"seeds": eval_seeds},
        },
        source="budget.yaml",
    )
    return build_plan(space, PROFILES[profile], ("phantom",), overrides or Overrides())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3h", 10800), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("2.5h", 9000), ("1d", 86400)],
)
def test_durations_read_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3", "", "h", "3 hours", "-1h", "0m", "1h and a bit"])
def test_a_duration_without_units_or_above_zero_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--time-budget: the value is"):
        parse_duration(text)


def test_the_plan_reserves_the_evaluations_share_and_shows_it() -> None:
    plan = _plan(Overrides(time_budget_s=3600.0, gpu_hours=2.0))
    # Rungs at 1, 2 and 4 of 8 epochs, half going on at each: 1 + 1/2 + 2/4 + 4/8 = 2.5 epochs a
    # trial, 12 trials: 30 epochs of search. Evaluation: the best Adam and the best SGD
    # configurations, retrained with 2 more seeds of 8 epochs: 32 epochs.
    assert plan.rung_epochs() == (1, 2, 4)
    assert plan.search_epochs_per_cell() == 30.0
    assert plan.evaluation_epochs_per_cell() == 32.0
    share = 32 / 62
    assert plan.budget is not None
    assert plan.budget.evaluation_share == pytest.approx(share)
    shown = plan.lines()[0]["budget"]
    assert shown["search_time_s"] == pytest.approx(3600 * (1 - share))
    assert shown["evaluation_reserve_s"] == pytest.approx(3600 * share)
    assert shown["search_gpu_hours"] == pytest.approx(2.0 * (1 - share))
    assert "budget" not in _plan().lines()[0]


def test_gpu_hours_on_a_cpu_profile_say_they_bind_nothing() -> None:
    notes = _plan(Overrides(gpu_hours=1.0), profile="cpu").notes
    assert any("spend no GPU-hours" in note for note in notes)


def _budget(wall_s: float | None = None, gpu_hours: float | None = None, **kwargs):
    clock = Clock()
    limits = ExperimentBudget(wall_s=wall_s, gpu_hours=gpu_hours, evaluation_share=0.5)
    return TimeBudget(limits, {"alexnet": 0.25}, clock=clock, **kwargs), clock


def test_wall_budget_is_spent_at_the_searchs_share_and_overrun_past_the_margin() -> None:
    budget, clock = _budget(wall_s=200.0)  # the search's share: 100 s
    clock.now += 99.0
    assert not budget.spent()
    clock.now += 1.0
    assert budget.spent() and not budget.overrun()
    clock.now += 100.0 * BUDGET_MARGIN
    assert budget.overrun()


def test_a_resumed_run_starts_from_what_earlier_runs_spent() -> None:
    budget, clock = _budget(wall_s=200.0, wall_spent_before_s=90.0)
    assert not budget.spent()
    clock.now += 10.0
    assert budget.spent() and budget.account()["wall_s"] == pytest.approx(100.0)


def test_gpu_hours_are_each_trials_time_times_its_gpu_share() -> None:
    budget, _ = _budget(gpu_hours=2.0)  # the search's share: 1 GPU-hour
    done = FakeTrial("a", {"model": "alexnet"}, last_result={"time_total_s": 7200.0})
    running = FakeTrial("b", {"model": "alexnet"}, last_result={"time_total_s": 100.0})
    budget.observe([done, running], running, {"time_total_s": 7199.0})
    # (7200 + 7199) s x 0.25 GPU = 3599.75 GPU-seconds: not quite one GPU-hour.
    assert not budget.spent()
    budget.observe([done, running], running, {"time_total_s": 7200.0})
    assert budget.spent() and budget.account()["gpu_hours"] == pytest.approx(1.0)


def _result(epoch: int, epoch_s: float = 1.0) -> dict[str, Any]:
    return {"epoch": epoch, "status": "ok", "val_macro_f1": 0.5, "time_total_s": epoch * epoch_s}


def test_a_trial_stops_once_its_next_epoch_would_end_past_the_searchs_share() -> None:
    budget, clock = _budget(wall_s=200.0)  # the search's share: 100 s
    keeper = BudgetKeeper(None, budget)
    trial = FakeTrial("a", {"model": "alexnet", "epochs": EPOCHS, "cell": "c"})
    controller = FakeController([trial])
    assert keeper.lets_go_on(trial, _result(3, 10.0), controller)  # 10 s of 100: go on
    clock.now += 85.0
    assert keeper.lets_go_on(trial, _result(3, 10.0), controller)  # ends at 95 s: go on
    clock.now += 6.0
    assert not keeper.lets_go_on(trial, _result(4, 10.0), controller)  # would end at 101 s
    assert keeper.stopped_for_time == {"c": 1}
    assert keeper.lets_go_on(trial, _result(EPOCHS, 10.0), controller)  # the last ends anyway


def test_once_spent_every_trial_stops_and_past_the_margin_at_once() -> None:
    budget, clock = _budget(wall_s=200.0)
    trial = FakeTrial("a", {"model": "alexnet", "epochs": EPOCHS, "cell": "c"})
    controller = FakeController([trial])
    keeper = BudgetKeeper(None, budget)
    clock.now += 100.0
    assert budget.spent() and not budget.overrun()
    assert not keeper.lets_go_on(trial, _result(3, 0.001), controller)  # spent: no epoch fits
    clock.now += 100.0 * BUDGET_MARGIN
    assert budget.overrun()


def test_the_searcher_starts_no_trial_once_the_budget_is_spent(tmp_path: Path) -> None:
    import optuna

    budget, clock = _budget(wall_s=200.0)
    searcher = CellSearcher(_plan(), str(tmp_path / "optuna.db"))
    searcher.use_time_budget(budget)
    assert isinstance(searcher.suggest("a"), dict)
    clock.now += 100.0
    assert searcher.suggest("b") == CellSearcher.FINISHED
    study = optuna.load_study(
        study_name="phantom/alexnet", storage=f"sqlite:///{searcher.study_db}"
    )
    assert study.user_attrs[SEARCH_ENDED] == "time budget spent"


def test_the_searcher_starts_no_trial_whose_first_epoch_would_end_past_the_share(
    tmp_path: Path,
) -> None:
    from cxr_tune.search.reserve import FinishingCosts

    limits = ExperimentBudget(wall_s=200.0)
    clock = Clock()
    costs = FinishingCosts(seeds=1, slots=1, fixed_s=0.0, contender_s=0.0, task_start_s=0.0)
    budget = TimeBudget(limits, {}, clock=clock, finishing=costs, metric="val_macro_f1")
    searcher = CellSearcher(_plan(), str(tmp_path / "optuna.db"))
    searcher.use_time_budget(budget)
    first = searcher.suggest("a")
    assert isinstance(first, dict)
    cell = first["cell"]
    trial = FakeTrial("a", {**first, "epochs": EPOCHS}, status="RUNNING")
    # One epoch of 40 s measured: the best, live, has 7 left (280 s) and its scoring to
    # go, which leaves the search less than another trial's first epoch.
    budget.observe([trial], trial, {"epoch": 1, "time_total_s": 40.0, "val_macro_f1": 0.5})
    assert budget.epoch_s_by_cell == {cell: 40.0}
    assert not budget.has_time_for(cell)
    assert searcher.suggest("b") is None  # the live trial may still free some time
    searcher.on_trial_complete("a", {"epoch": 1})
    assert searcher.suggest("c") == CellSearcher.FINISHED  # nothing left to report: ended


def _search(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cxr_tune.search", "--space", "smoke", "--profile", "smoke"]
    command += ["--storage", str(tmp_path), "--name", "budgeted", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_search_ends_within_its_time_budget_and_a_resume_starts_nothing_more(
    tmp_path: Path,
) -> None:
    # Far more trials than 90 s buy on 2 cores, one at a time: the budget, not num_samples,
    # ends the search; its evaluation and report still follow, inside the budget.
    budget_s = 90.0
    args = ("--num-samples", "60", "--max-concurrent", "1", "--time-budget", f"{budget_s:g}s")
    started = time.monotonic()
    run = _search(tmp_path, *args)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "budgeted"
    record = json.loads((folder / "cxr_tune.json").read_text())
    budget = record["budget"]
    assert record["finished_at"] and budget["time_budget_s"] == budget_s
    # One evaluation seed, yet the evaluation and report are reserved for, from measured epochs.
    assert budget["reserve_basis"] == "measured epochs"
    assert 0 < budget["evaluation_reserve_s"] < budget_s
    assert budget["search_time_s"] == pytest.approx(budget_s - budget["evaluation_reserve_s"])
    # The whole command, report included, ends within the budget and its margin (the record
    # counts from the command's start; Python's own start adds a few seconds to the outside).
    whole = budget["finishing"]["total_wall_s"]
    assert whole <= budget_s * (1 + BUDGET_MARGIN), (whole, budget)
    assert elapsed <= budget_s * (1 + BUDGET_MARGIN) + 10, elapsed
    assert "the whole run" in run.stdout
    trials = [p for p in folder.iterdir() if (p / "params.json").is_file()]
    assert 1 <= len(trials) < 60
    assert (folder / "evaluation.json").is_file() and (folder / "report.md").is_file()
    assert "time budget" in (folder / "report.md").read_text()
    # Resumed with the same budget: it is spent, so no trial starts and the search finishes.
    again = _search(tmp_path, *args, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len([p for p in folder.iterdir() if (p / "params.json").is_file()]) == len(trials)
    assert "budget: search" in again.stdout

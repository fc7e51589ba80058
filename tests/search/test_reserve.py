"""The finishing's reserve in a time budget: contenders chosen as the evaluation chooses them,
each costed in its own measured epochs, laid on the evaluation's slots, refreshed as trials
report."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cxr_tune.search.budget import ExperimentBudget, TimeBudget
from cxr_tune.search.reserve import (
    FinishingCosts,
    TrialCost,
    contenders,
    finishing_seconds,
    makespan,
    task_seconds,
    trial_costs,
)
from tests.search.fakes import FakeController, FakeTrial

# Round numbers, so each expected figure can be worked out by hand.
COSTS = FinishingCosts(
    seeds=1,
    slots=2,
    best_scoring_epochs=1.0,
    best_scoring_s=2.0,
    other_scoring_epochs=0.5,
    task_start_s=5.0,
    fixed_s=20.0,
    contender_s=0.0,
)


def _trial(cell: str, optimizer: str, value: float, epochs: int, per_epoch: float) -> TrialCost:
    return TrialCost(cell, optimizer, value, epochs, planned=3, seconds_per_epoch=per_epoch)


def test_contenders_are_the_best_and_each_optimizers_best_trained_to_the_end_first() -> None:
    done_adam = _trial("c", "adam", 0.6, 3, 10.0)
    stopped_adam = _trial("c", "adam", 0.9, 1, 10.0)  # better, but stopped: not chosen
    stopped_sgd = _trial("c", "sgd", 0.4, 2, 10.0)
    worse_sgd = _trial("c", "sgd", 0.3, 1, 10.0)
    chosen = contenders([done_adam, stopped_adam, stopped_sgd, worse_sgd])
    assert chosen == [(done_adam, True), (stopped_sgd, False)]


def test_one_optimizer_gives_one_contender_and_unmeasured_trials_none() -> None:
    first = _trial("c", "adam", 0.5, 3, 10.0)
    unmeasured = _trial("c", "sgd", math.nan, 0, math.nan)
    assert contenders([first, _trial("c", "adam", 0.4, 3, 10.0), unmeasured]) == [(first, True)]


def test_a_min_metric_picks_the_lowest() -> None:
    low, high = _trial("c", "adam", 0.2, 3, 1.0), _trial("c", "adam", 0.8, 3, 1.0)
    assert contenders([low, high], mode="min") == [(low, True)]


def test_a_contender_still_training_costs_its_remaining_epochs_not_a_retraining() -> None:
    best = _trial("c", "adam", 0.6, 3, 10.0)
    live = TrialCost("c", "sgd", 0.4, 1, 3, 20.0, live=True)  # 2 epochs of 20 s to go
    assert task_seconds([best, live], COSTS) == [5.0 + 12.0, 5.0 + 5.0 + 40.0]


def test_each_task_costs_its_start_its_scoring_and_any_retraining() -> None:
    best = _trial("c", "adam", 0.6, 3, 10.0)  # trained to the end: its own weights are scored
    alternate = _trial("c", "sgd", 0.4, 2, 20.0)  # stopped at 2 of 3: retrained, 3 x 20 s
    # Scoring is counted in the cell's fastest epoch (10 s): the best's 1 x 10 + 2 s, the
    # alternate's 0.5 x 10 s.
    assert task_seconds([best, alternate], COSTS) == [5.0 + 12.0, 5.0 + 5.0 + 60.0]
    # Two seeds: the second retrains every contender.
    two = FinishingCosts(**{**COSTS.__dict__, "seeds": 2})
    assert task_seconds([best, alternate], two) == [17.0, 47.0, 70.0, 70.0]


def test_tasks_go_longest_first_to_the_slot_that_frees_first() -> None:
    assert makespan([10, 10, 10], slots=2) == 20
    assert makespan([30, 20, 10], slots=2) == 30
    # Longest first: 5 | 4, then each 3 to the slot that frees first: 4+3, 5+3, 7+3.
    assert makespan([5, 4, 3, 3, 3], slots=2) == 10
    assert makespan([], slots=2) == 0


def test_finishing_is_the_makespan_plus_the_fixed_part() -> None:
    cells = [
        _trial("a", "adam", 0.6, 3, 10.0),
        _trial("a", "sgd", 0.4, 1, 10.0),
        _trial("b", "adam", 0.5, 3, 40.0),
    ]
    # Tasks: a's best 5 + 12 = 17 s, a's sgd 5 + 5 + 30 = 40 s, b's best 5 + 42 = 47 s. On 2
    # slots: 47 | 40, then 17 after the 40: 57 s, and the fixed 20 s.
    assert finishing_seconds(cells, COSTS) == pytest.approx(57.0 + 20.0)
    # The assembly and report: a few seconds more per contender (three here).
    per_contender = FinishingCosts(**{**COSTS.__dict__, "contender_s": 4.0})
    assert finishing_seconds(cells, per_contender) == pytest.approx(57.0 + 20.0 + 12.0)


def _result(epoch: int, seconds: float, value: float) -> dict[str, Any]:
    return {"epoch": epoch, "time_total_s": seconds, "val_macro_f1": value, "status": "ok"}


def test_trial_costs_read_the_newest_result_of_the_trial_that_reported() -> None:
    trial = FakeTrial("t", {"cell": "c", "optimizer": "sgd", "epochs": 3}, last_result={})
    (cost,) = trial_costs([trial], "val_macro_f1", {"t": _result(2, 30.0, 0.4)})
    assert cost == TrialCost("c", "sgd", 0.4, 2, 3, 15.0, live=True, trial_id="t")


def test_the_budget_reserves_the_measured_finishing_and_refreshes_it() -> None:
    now = [0.0]
    limits = ExperimentBudget(wall_s=300.0, evaluation_share=0.0)
    budget = TimeBudget(limits, {}, clock=lambda: now[0], finishing=COSTS, metric="val_macro_f1")
    assert budget.search_wall_s() == 300.0  # nothing measured yet: the up-front share (none)
    adam = FakeTrial("a", {"cell": "c", "optimizer": "adam", "epochs": 3}, status="TERMINATED")
    sgd = FakeTrial("s", {"cell": "c", "optimizer": "sgd", "epochs": 3}, status="TERMINATED")
    adam.last_result = _result(3, 30.0, 0.6)
    budget.observe([adam, sgd], sgd, _result(1, 20.0, 0.4))  # sgd stopped after epoch 1
    # The sgd alternate retrains 3 epochs of 20 s: 5 + 0.5 x 10 + 60 = 70 s, beside the best's
    # 5 + 12 = 17 s; and the fixed 20 s.
    assert budget.reserve_s == pytest.approx(70.0 + 20.0)
    assert budget.search_wall_s() == pytest.approx(300.0 - 90.0)
    now[0] = 209.0
    assert not budget.spent()
    now[0] = 211.0
    assert budget.spent()
    # Had sgd trained on to its end, nothing would be left to retrain: the reserve shrinks.
    budget.observe([adam, sgd], sgd, _result(3, 60.0, 0.4))
    # Two tasks side by side: the best's 17 s, the alternate's 5 + 0.5 x 10 = 10 s.
    assert budget.reserve_s == pytest.approx(17.0 + 20.0)
    assert not budget.spent()
    shown = budget.describe()
    assert shown["evaluation_reserve_s"] == pytest.approx(37.0)
    assert shown["search_time_s"] == pytest.approx(263.0)
    assert shown["reserve_basis"] == "measured epochs"


def test_the_asha_scheduler_refreshes_the_reserve_on_a_trials_last_epoch() -> None:
    from cxr_tune.search.scheduler import CellASHA

    limits = ExperimentBudget(wall_s=300.0)
    budget = TimeBudget(limits, {}, clock=lambda: 0.0, finishing=COSTS, metric="val_macro_f1")
    scheduler = CellASHA(
        metric="val_macro_f1", mode="max", grace_period=1, reduction_factor=3, max_t=3
    )
    scheduler.use_time_budget(budget)
    trial = FakeTrial("a", {"cell": "c", "optimizer": "adam", "epochs": 3})
    controller = FakeController([trial])
    scheduler.on_trial_add(controller, trial)
    for epoch in (1, 2):
        scheduler.on_trial_result(controller, trial, _result(epoch, 10.0 * epoch, 0.5))
        trial.last_result = _result(epoch, 10.0 * epoch, 0.5)
    # At epoch 2 of 3 the best trial, still training, has one epoch left: 5 + 12 + 10 s, and
    # the fixed 20 s.
    assert budget.reserve_s == pytest.approx(47.0)
    # Its last epoch, after which ASHA stops it anyway, still refreshes the reserve.
    scheduler.on_trial_result(controller, trial, _result(3, 30.0, 0.5))
    assert budget.reserve_s == pytest.approx(17.0 + 20.0)


def test_once_spent_a_live_contender_goes_on_and_the_others_stop() -> None:
    from cxr_tune.search.budget import BudgetKeeper

    now = [0.0]
    limits = ExperimentBudget(wall_s=300.0)
    budget = TimeBudget(limits, {}, clock=lambda: now[0], finishing=COSTS, metric="val_macro_f1")
    keeper = BudgetKeeper(None, budget)
    config = {"cell": "c", "optimizer": "adam", "epochs": 3}
    best, worse = FakeTrial("b", dict(config)), FakeTrial("w", dict(config))
    controller = FakeController([best, worse])
    worse.last_result = _result(1, 10.0, 0.3)
    assert keeper.lets_go_on(best, _result(1, 10.0, 0.6), controller)
    best.last_result = _result(1, 10.0, 0.6)
    # The best has 2 epochs to go: 5 + 12 + 20 s, and the fixed 20 s: the search has 243 s.
    assert budget.reserve_s == pytest.approx(57.0)
    now[0] = 250.0  # spent, not past the margin
    assert budget.spent() and not budget.overrun()
    assert not keeper.lets_go_on(worse, _result(1, 10.0, 0.3), controller)  # stops
    assert keeper.lets_go_on(best, _result(1, 10.0, 0.6), controller)  # the evaluation's model
    # At its epoch 2 one epoch is left (reserve 47 s, search 253 s). The 20 s it trains after
    # that were reserved: no overrun at 1.1 x 253 s + 10 s ...
    keeper.lets_go_on(best, _result(2, 20.0, 0.6), controller)
    assert budget.search_wall_s() == pytest.approx(253.0)
    now[0] = 1.1 * 253.0 + 9.0
    assert not budget.overrun()
    # ... but past it, once the reserved epoch is used up, every trial stops at once.
    now[0] = 1.1 * 253.0 + 11.0
    assert budget.overrun()
    assert not keeper.lets_go_on(best, _result(2, 20.0, 0.6), controller)


def test_a_contender_stopped_before_its_end_is_reserved_a_retraining() -> None:
    from cxr_tune.search.budget import BudgetKeeper

    limits = ExperimentBudget(wall_s=300.0)
    budget = TimeBudget(limits, {}, clock=lambda: 0.0, finishing=COSTS, metric="val_macro_f1")
    keeper = BudgetKeeper(4, budget)  # the cell's epoch budget: 4
    adam = FakeTrial("a", {"cell": "c", "optimizer": "adam", "epochs": 3}, status="TERMINATED")
    adam.last_result = _result(3, 30.0, 0.9)
    sgd = FakeTrial("s", {"cell": "c", "optimizer": "sgd", "epochs": 3})
    controller = FakeController([adam, sgd])
    # After its epoch 1 the sgd alternate has used the cell's last epoch: it stops. Live, it
    # was reserved its 2 remaining epochs; stopped, it is retrained: 5 + 0.5 x 10 + 3 x 10 s.
    assert not keeper.lets_go_on(sgd, _result(1, 10.0, 0.3), controller)
    assert keeper.stopped == {"c": 1}
    assert budget.reserve_s == pytest.approx(40.0 + 20.0)
    assert budget.contender_ids == set()

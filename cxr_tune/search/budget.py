"""Epoch budgets: the most trial-epochs a search spends on each cell (``search.budget_epochs``).

A budget says what a user can afford in the unit trials are measured in. Unlike a number of
trials it does not depend on how early ASHA stops them: the epochs ASHA saves go to new trials.

The budget is kept exactly. Tune's function trainables wait after each reported epoch until
the driver lets them go on, so every live trial of a cell has exactly one epoch under way (in
training, or, for a trial not started yet, its first). With ``spent`` the epochs reported so far:

- the searcher starts a trial in a cell only if ``spent + live + 1 <= budget``;
- the scheduler lets a trial go on after a result only if ``spent + (other live trials) + 1 <=
  budget``, and otherwise stops it where it is (Optuna hears PRUNED, with its epochs).

So the epochs trained never exceed the budget, and a cell ends when no epoch is left.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray.tune.experiment import Trial

from cxr_tune.constants import EPOCH, STATUS, STATUS_OK

CELL_KEY = "cell"  # the trial config's cell id
EPOCH_KEY = EPOCH  # the result's epoch count (ASHA's time attribute too)


def has_room(budget: int | None, spent: int, under_way: int) -> bool:
    """Whether one more epoch fits in a cell's budget besides ``under_way`` epochs in training."""
    return budget is None or spent + under_way + 1 <= budget


def cell_of(trial: Trial) -> str:
    return str(trial.config.get(CELL_KEY, ""))


def epochs_reported(trial: Trial) -> int:
    return int((trial.last_result or {}).get(EPOCH_KEY, 0) or 0)


def may_go_on(
    budget: int | None, trial: Trial, result: dict[str, Any], trials: Iterable[Trial]
) -> bool:
    """Whether ``trial``, which just reported ``result``, may train another epoch.

    ``trials`` are all of the experiment's trials (the scheduler's view, rebuilt from Tune's
    own records at each result, so it also holds after ``--resume``).
    """
    if budget is None:
        return True
    cell = cell_of(trial)
    others = [t for t in trials if t is not trial and cell_of(t) == cell]
    spent = int(result.get(EPOCH_KEY, 0) or 0) + sum(epochs_reported(t) for t in others)
    under_way = sum(t.status in (Trial.PENDING, Trial.RUNNING) for t in others)
    return has_room(budget, spent, under_way)


class BudgetKeeper:
    """A scheduler's side of the budget: which trials may train another epoch, and how many
    were stopped because their cell's budget was spent."""

    def __init__(self, budget_epochs: int | None) -> None:
        self.budget = budget_epochs
        self.stopped: dict[str, int] = {}

    def lets_go_on(self, trial: Trial, result: dict[str, Any], tune_controller: Any) -> bool:
        """False when ``trial`` must stop for the budget. A trial that ends anyway (its last
        epoch, or a diverged or failed result) is never stopped, nor counted, here."""
        ends_anyway = result.get(STATUS, STATUS_OK) != STATUS_OK or int(
            result.get(EPOCH_KEY, 0) or 0
        ) >= int(trial.config.get("epochs", 0))
        if self.budget is None or ends_anyway:
            return True
        if may_go_on(self.budget, trial, result, tune_controller.get_trials()):
            return True
        self.stopped[cell_of(trial)] = self.stopped.get(cell_of(trial), 0) + 1
        return False

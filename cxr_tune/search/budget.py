"""Budgets: the most trial-epochs a search spends on each cell (``search.budget_epochs``), and
the wall-clock time and GPU-hours a whole experiment may take (``--time-budget``,
``--gpu-hours``; see ``TimeBudget`` below).

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

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cxr_tune.constants import EPOCH, STATUS, STATUS_OK, TIME_TOTAL_S
from cxr_tune.errors import ConfigError
from cxr_tune.search.reserve import (
    LIVE_STATUSES,
    FinishingCosts,
    contenders,
    epoch_seconds_by_cell,
    finishing_seconds,
    trial_costs,
)

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

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
    under_way = sum(t.status in LIVE_STATUSES for t in others)
    return has_room(budget, spent, under_way)


class BudgetKeeper:
    """A scheduler's side of the budgets: which trials may train another epoch, and how many
    were stopped because their cell's epoch budget, or the experiment's time budget, was spent.

    Args:
        budget_epochs: the most epochs trained per cell (None: no limit).
        time_budget: the experiment's wall-clock and GPU-hour budget (None: none). A trial the
            evaluation would not score stops at the first result after which its next epoch
            would end past the search's share; one it would score goes on (the reserve counts
            its remaining epochs); past the budget's margin every trial stops at once.
    """

    def __init__(self, budget_epochs: int | None, time_budget: TimeBudget | None = None) -> None:
        self.budget = budget_epochs
        self.time = time_budget
        self.stopped: dict[str, int] = {}
        self.stopped_for_time: dict[str, int] = {}

    def use_time_budget(self, budget: TimeBudget | None) -> None:
        """Keep ``budget`` from now on."""
        self.time = budget

    def observe(
        self,
        trial: Trial,
        result: Mapping[str, Any],
        tune_controller: Any,
        *,
        ending: bool = False,
    ) -> None:
        """Account ``trial``'s newest ``result`` in the time budget (its GPU time, and the
        finishing's reserve). A scheduler calls this on every result, also those after which
        the trial stops anyway (its last epoch, or a stop by early stopping), and again with
        ``ending`` when it stops the trial: a contender stopped before its end is retrained by
        the evaluation, which the reserve must count from then on."""
        time_budget = getattr(self, "time", None)  # a keeper saved before time budgets: none
        if time_budget is not None:
            time_budget.observe(tune_controller.get_trials(), trial, result, ending=ending)

    def lets_go_on(self, trial: Trial, result: dict[str, Any], tune_controller: Any) -> bool:
        """False when ``trial`` must stop for a budget. A trial that ends anyway (its last
        epoch, or a diverged or failed result) is never stopped, nor counted, here."""
        epoch = int(result.get(EPOCH_KEY, 0) or 0)
        ends_anyway = result.get(STATUS, STATUS_OK) != STATUS_OK or epoch >= int(
            trial.config.get("epochs", 0)
        )
        self.observe(trial, result, tune_controller)
        time_budget = getattr(self, "time", None)
        if ends_anyway:
            return True
        cell = cell_of(trial)
        seconds = float(result.get(TIME_TOTAL_S, math.nan) or math.nan)
        if time_budget is not None and time_budget.stops(
            str(trial.trial_id), seconds / epoch if epoch else math.nan
        ):
            for_time = self.__dict__.setdefault("stopped_for_time", {})
            for_time[cell] = for_time.get(cell, 0) + 1
            time_budget.stopped_trials.add(str(trial.trial_id))
            self.observe(trial, result, tune_controller, ending=True)
            return False
        if self.budget is None or may_go_on(
            self.budget, trial, result, tune_controller.get_trials()
        ):
            return True
        self.stopped[cell] = self.stopped.get(cell, 0) + 1
        self.observe(trial, result, tune_controller, ending=True)
        return False


# --- Time and GPU-hour budgets of a whole experiment ----------------------------------------

# Past the search's share of a budget by this fraction (the contenders' reserved epochs not
# counted), running trials stop at once, mid-epoch: a slow epoch must not overrun by much.
BUDGET_MARGIN = 0.10
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|min|s)", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}


def parse_duration(text: str, flag: str = "--time-budget") -> float:
    """``3h``, ``90m``, ``1h30m``, ``45s``, ``2.5h``, ``1d`` -> seconds.

    Raises:
        ConfigError: the text is not a positive duration with units.
    """
    cleaned = str(text).strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ConfigError(
            f"{flag}: the value is {text!r}, but must be a duration with units, e.g. 3h, 90m, "
            "1h30m or 45s."
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{flag}: the value is {text!r}, but must be more than 0.")
    return seconds


@dataclass(frozen=True)
class ExperimentBudget:
    """What a whole experiment may cost, and the share of it kept for the final evaluation.

    Attributes:
        wall_s: wall-clock seconds from the start of the command (``--time-budget``).
        gpu_hours: GPU-hours summed over trials, each trial's time times its GPU share
            (``--gpu-hours``).
        evaluation_share: the part of each budget reserved up front for the final evaluation;
            the search spends the rest.
    """

    wall_s: float | None = None
    gpu_hours: float | None = None
    evaluation_share: float = 0.0

    @property
    def search_wall_s(self) -> float | None:
        return None if self.wall_s is None else self.wall_s * (1.0 - self.evaluation_share)

    @property
    def search_gpu_s(self) -> float | None:
        if self.gpu_hours is None:
            return None
        return self.gpu_hours * 3600.0 * (1.0 - self.evaluation_share)

    def describe(self) -> dict[str, Any]:
        """The budget as the plan (``--dry-run``) and the experiment record show it."""
        return {
            "time_budget_s": self.wall_s,
            "gpu_hours": self.gpu_hours,
            "evaluation_share": round(self.evaluation_share, 4),
            "search_time_s": self.search_wall_s,
            "evaluation_reserve_s": None
            if self.wall_s is None
            else self.wall_s * self.evaluation_share,
            "search_gpu_hours": None if self.search_gpu_s is None else self.search_gpu_s / 3600.0,
            "margin": BUDGET_MARGIN,
        }


class TimeBudget:
    """The running account of an experiment's budget, shared by the searcher (which starts no
    trial whose first epoch would end past the search's share), the scheduler (which stops a
    running trial, the evaluation's contenders excepted, once its next epoch would end past
    it) and ``OverrunStopper`` (which stops every trial at once past the margin).

    Wall-clock time counts from the start of this run of the command plus what earlier runs
    of the experiment spent (``--resume`` continues with what is left). GPU time is each
    trial's own time times its GPU share, summed over every trial of the experiment, as the
    scheduler sees them at each result (restored trials included).

    The wall-clock reserve for the finishing (evaluation and report) is ``finishing``'s
    estimate (``reserve.py``), refreshed at every result from the trials' measured epoch
    times; until a trial has reported, and without ``finishing``, it is the budget's up-front
    share. The GPU-hour reserve is always that share.

    Args:
        budget: the limits and the evaluation's share.
        gpu_shares: GPUs per trial, by model (0 where trials run on CPUs).
        wall_spent_before_s: wall-clock seconds earlier runs spent of the budget.
        clock: seconds, monotonic (a replay passes its simulated clock).
        finishing: what the finishing costs besides the trials' epochs (None: the up-front
            share only).
        metric: the search metric, which chooses the contenders the finishing retrains.
        started: when the command started, on ``clock`` (None: now).
        reserve_s: the reserve until a trial reports (None: the up-front share); a resumed
            run starts from the one its last run estimated.
    """

    def __init__(
        self,
        budget: ExperimentBudget,
        gpu_shares: Mapping[str, float] | None = None,
        *,
        wall_spent_before_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        finishing: FinishingCosts | None = None,
        metric: str = "",
        started: float | None = None,
        reserve_s: float | None = None,
    ) -> None:
        self.budget = budget
        self.gpu_shares = dict(gpu_shares or {})
        self.wall_spent_before_s = wall_spent_before_s
        self.clock = clock
        self.started = clock() if started is None else started
        self.gpu_s = 0.0
        self.finishing = finishing
        self.metric = metric
        self.reserve_s = (
            (budget.wall_s or 0.0) * budget.evaluation_share if reserve_s is None else reserve_s
        )
        self.reserve_measured = False
        # Live trials the evaluation would score (each cell's best, the best of each
        # optimizer): the reserve counts their remaining epochs, so they are let finish.
        self.contender_ids: set[str] = set()
        # Each cell's median seconds per epoch so far: whether a new trial's first epoch fits.
        self.epoch_s_by_cell: dict[str, float] = {}
        # When the reserve was last estimated (wall seconds spent), and the longest remaining
        # training of a live contender then: time the search spends on those epochs after
        # the share is spent was reserved for them, and is no overrun.
        self.estimated_at_s = 0.0
        self.contender_left_s = 0.0
        # Trials the schedulers stopped for this budget (the progress lines say so).
        self.stopped_trials: set[str] = set()

    def wall_spent_s(self) -> float:
        return self.wall_spent_before_s + self.clock() - self.started

    def observe(
        self,
        trials: Iterable[Trial],
        trial: Trial,
        result: Mapping[str, Any],
        *,
        ending: bool = False,
    ) -> None:
        """Recount the GPU time of every trial, ``trial`` at its newest ``result``, and the
        finishing's reserve (``ending``: ``trial`` stops after this result)."""
        total = 0.0
        for each in trials:
            last = result if each is trial else (each.last_result or {})
            seconds = float(last.get(TIME_TOTAL_S, 0.0) or 0.0)
            if math.isfinite(seconds):
                total += seconds * self.gpu_shares.get(str(each.config.get("model")), 0.0)
        self.gpu_s = total
        if self.finishing is not None and self.budget.wall_s is not None:
            self._estimate_reserve(trials, trial, result, ending)

    def _estimate_reserve(
        self, trials: Iterable[Trial], trial: Trial, result: Mapping[str, Any], ending: bool
    ) -> None:
        """The finishing's reserve, from every trial's measured epochs (``reserve.py``)."""
        assert self.finishing is not None
        ended = {str(trial.trial_id)} if ending else set()
        costs = trial_costs(trials, self.metric, {trial.trial_id: result}, ended)
        if not any(math.isfinite(c.seconds_per_epoch) for c in costs):
            return
        self.reserve_s = finishing_seconds(costs, self.finishing)
        self.reserve_measured = True
        live = [c for c, _ in contenders(costs, self.finishing.mode) if c.live]
        self.contender_ids = {c.trial_id for c in live}
        self.contender_left_s = max(
            ((c.planned - c.epochs) * c.seconds_per_epoch for c in live), default=0.0
        )
        self.estimated_at_s = self.wall_spent_s()
        self.epoch_s_by_cell = epoch_seconds_by_cell(costs)

    def search_wall_s(self) -> float | None:
        """The search's share of the wall-clock budget: what the finishing's reserve leaves."""
        if self.budget.wall_s is None:
            return None
        return max(self.budget.wall_s - self.reserve_s, 0.0)

    def _contender_credit_s(self) -> float:
        """Seconds since the last estimate that live contenders spent on epochs the reserve
        already counts (at most what they had left then)."""
        since = max(self.wall_spent_s() - self.estimated_at_s, 0.0)
        return min(since, self.contender_left_s)

    def _used(self, credited: bool = False) -> float:
        """The larger of the spent shares of the search's wall and GPU budgets (0..);
        ``credited``: less the reserved contender epochs trained since the last estimate."""
        shares = [0.0]
        search_wall_s = self.search_wall_s()
        if search_wall_s is not None:
            wall = self.wall_spent_s() - (self._contender_credit_s() if credited else 0.0)
            shares.append(wall / max(search_wall_s, 1e-9))
        if self.budget.search_gpu_s is not None:
            shares.append(self.gpu_s / max(self.budget.search_gpu_s, 1e-9))
        return max(shares)

    def spent(self) -> bool:
        """Whether the search's share is used up: no new trial starts."""
        return self._used() >= 1.0

    def overrun(self) -> bool:
        """Whether the search is past its share by the margin, not counting the contenders'
        reserved epochs: running trials stop at once."""
        return self._used(credited=True) >= 1.0 + BUDGET_MARGIN

    def fits(self, seconds: float) -> bool:
        """Whether ``seconds`` more of search end within the search's share (NaN: unknown,
        so it fits while the share is not spent)."""
        if self.spent():
            return False
        search_wall_s = self.search_wall_s()
        if search_wall_s is None or not math.isfinite(seconds):
            return True
        return self.wall_spent_s() + seconds <= search_wall_s

    def has_time_for(self, cell: str) -> bool:
        """Whether a new trial's first epoch in ``cell`` (its median epoch so far) fits."""
        return self.fits(self.epoch_s_by_cell.get(cell, math.nan))

    def stops(self, trial_id: str, epoch_s: float = math.nan) -> bool:
        """Whether a trial that just reported, ``epoch_s`` seconds an epoch, stops for this
        budget: past the margin at once; else when its next epoch would end past the search's
        share, unless the evaluation would score it (stopped, it would be retrained from
        scratch, which costs more than the remaining epochs its reserve counts)."""
        if self.overrun():
            return True
        if trial_id in self.contender_ids:
            return False
        return not self.fits(epoch_s)

    def account(self) -> dict[str, float]:
        """What was spent, for the experiment record."""
        return {"wall_s": self.wall_spent_s(), "gpu_hours": self.gpu_s / 3600.0}

    def describe(self) -> dict[str, Any]:
        """The budget as the experiment record shows it: ``ExperimentBudget.describe`` with
        the wall-clock reserve as last estimated, and where that estimate came from."""
        shown = self.budget.describe()
        wall = self.budget.wall_s
        if wall is not None:
            shown["search_time_s"] = self.search_wall_s()
            shown["evaluation_reserve_s"] = self.reserve_s
            shown["wall_reserve_share"] = round(self.reserve_s / wall, 4)
            shown["reserve_basis"] = (
                "measured epochs" if self.reserve_measured else "up-front share"
            )
        return shown

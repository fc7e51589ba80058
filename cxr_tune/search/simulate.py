"""A search replayed on stored learning curves, on a simulated clock: no trial runs in Ray.

Where a search's learning curves are known (a grid trained once, every configuration to its
last epoch), any search over that grid can be replayed without training: a trial "trains" an
epoch by reading its configuration's next result. The replay runs the real search's decision
code, unchanged: the per-cell searcher (``CellSearcher``: Optuna TPE or random per cell, the
PRUNED bridge for stopped trials, no configuration twice, the epoch budget) and the scheduler
the plan asks for (``scheduler_for``: ASHA per cell with its no-skill check, or FIFO, both
keeping the budget). They are driven as Tune drives them: each result goes to the scheduler,
then to the searcher unless the scheduler stopped the trial; a trial that stops or trains its
last epoch is completed with its last result; free slots (``max_concurrent``) are filled by
asking the searcher.

Time is simulated, as in Syne Tune's simulated backend: every trial's epoch takes the
seconds its configuration is given, results are handled in the order of their simulated
times (ties in the order their epochs started), and nothing depends on the wall clock, so a
replay with the same inputs gives the same decisions every time on the same machine and
library versions, in a fraction of a second per trial. A live Tune run with several trials at
once handles results in the order they arrive, which varies from run to run;
``tests/search/test_simulate.py`` runs Tune at two trials at once on this clock (one result at
a time, released when Tune is idle) and finds the same decisions and the same Optuna records.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from cxr_tune.search.budget import EPOCH_KEY
from cxr_tune.search.plan import Plan
from cxr_tune.search.scheduler import scheduler_for
from cxr_tune.search.searcher import CellSearcher

# A configuration's results, one mapping per epoch (metric, losses, status ...), in order.
Results = Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]]


@dataclass
class SimulatedTrial:
    """A trial as the schedulers read one: the fields of Tune's ``Trial`` they use."""

    trial_id: str
    config: dict[str, Any]
    status: str = Trial.PENDING
    last_result: dict[str, Any] = field(default_factory=dict)


class SimulatedTrials:
    """The schedulers' view of the controller: every trial of the replay, in start order."""

    def __init__(self) -> None:
        self.trials: list[SimulatedTrial] = []

    def get_trials(self) -> list[SimulatedTrial]:
        return list(self.trials)


@dataclass(frozen=True)
class Decision:
    """One result as the decision code saw it: when, which trial and epoch, and what the
    scheduler decided (``CONTINUE`` or ``STOP``)."""

    time: float
    trial_id: str
    epoch: int
    action: str


@dataclass(frozen=True)
class TrialRun:
    """One trial of a replay: its configuration, the epochs it trained and whether that was
    all of them (``completed``), and the simulated time it ended."""

    trial_id: str
    config: Mapping[str, Any]
    epochs: int
    completed: bool
    ended_at: float


@dataclass(frozen=True)
class Replay:
    """What a replayed search did: its trials in start order and every decision in order."""

    trials: tuple[TrialRun, ...]
    decisions: tuple[Decision, ...]


def simulate(
    plan: Plan,
    study_db: str,
    results: Results,
    epoch_seconds: Callable[[Mapping[str, Any]], float],
    *,
    max_concurrent: int | None = None,
) -> Replay:
    """Replay the search of ``plan`` on stored curves.

    Args:
        plan: the search (space, cells, seed, budget, scheduler), as for a real run.
        study_db: the SQLite file for the replay's Optuna studies (a new one per replay).
        results: a configuration's per-epoch results (what its trial would report).
        epoch_seconds: a configuration's simulated seconds per epoch.
        max_concurrent: trials at once (default: the plan's).

    Returns:
        The trials and the scheduler's decisions, in simulated-time order.
    """
    searcher = CellSearcher(plan, study_db)
    scheduler = scheduler_for(plan, study_db=study_db)
    controller = SimulatedTrials()
    # Tune's types in the signatures; the schedulers read only what SimulatedTrial(s) have.
    tune_controller = cast(Any, controller)
    slots = max_concurrent or plan.max_concurrent
    events: list[tuple[float, int, str, int]] = []  # (time, order, trial id, epoch)
    live: dict[str, SimulatedTrial] = {}
    runs: dict[str, TrialRun] = {}
    decisions: list[Decision] = []
    order = 0
    now = 0.0
    finished = False

    def start_epoch(trial: SimulatedTrial, epoch: int) -> None:
        nonlocal order
        heapq.heappush(events, (now + epoch_seconds(trial.config), order, trial.trial_id, epoch))
        order += 1

    def fill_slots() -> bool:
        """Ask the searcher for trials while slots are free; False once it has finished."""
        while len(live) < slots:
            trial_id = f"sim_{len(controller.trials):05d}"
            config = searcher.suggest(trial_id)
            if config is None:  # the budget is held by live trials: ask again later
                return True
            if config == Searcher.FINISHED:
                return False
            trial = SimulatedTrial(trial_id, dict(config), status=Trial.RUNNING)
            controller.trials.append(trial)
            live[trial_id] = trial
            scheduler.on_trial_add(tune_controller, cast(Any, trial))
            start_epoch(trial, 1)
        return True

    def end(trial: SimulatedTrial, result: dict[str, Any], completed: bool) -> None:
        scheduler.on_trial_complete(tune_controller, cast(Any, trial), result)
        searcher.on_trial_complete(trial.trial_id, result)
        trial.status = Trial.TERMINATED
        del live[trial.trial_id]
        runs[trial.trial_id] = TrialRun(
            trial.trial_id, trial.config, int(result[EPOCH_KEY]), completed, now
        )

    while True:
        if not finished:
            finished = not fill_slots()
        if not events:
            break
        now, _, trial_id, epoch = heapq.heappop(events)
        trial = live[trial_id]
        curve = results(trial.config)
        result = {**curve[epoch - 1], EPOCH_KEY: epoch}
        action = scheduler.on_trial_result(tune_controller, cast(Any, trial), result)
        if action != TrialScheduler.STOP:
            searcher.on_trial_result(trial_id, result)
        trial.last_result = result
        decisions.append(Decision(now, trial_id, epoch, action))
        last = epoch >= min(int(trial.config["epochs"]), len(curve))
        if action == TrialScheduler.STOP or last or result.get("status", "ok") != "ok":
            end(trial, result, completed=epoch >= int(trial.config["epochs"]))
        else:
            start_epoch(trial, epoch + 1)
    trials = tuple(runs[t.trial_id] for t in controller.trials if t.trial_id in runs)
    return Replay(trials=trials, decisions=tuple(decisions))

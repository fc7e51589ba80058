"""The finishing's reserve in a time budget: how long the work after the search will take,
estimated from the search's own trials and refreshed at each of their results.

After the search, ``evaluation/`` retrains every contender (a cell's best configuration, and the
best of each optimizer searched) that did not train all its epochs, retrains every contender
once per evaluation seed after the first, scores the models (test split, external sets, the
shortcut probe, calibration, out-of-distribution statistics, saliency), and the report is
written. A budget that reserved only the extra seeds' retraining reserved nothing with one seed,
and the command ran half as long again as its budget.

Here each piece is costed in the unit the search measures, the trial's own seconds per epoch
(``time_total_s / epochs``; ``evaluation/costs.py`` holds what no epoch measures), and the
evaluation's tasks are laid on its slots longest first, as ``evaluation/evaluate.py`` sends
them, to give the wall-clock time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cxr_tune.constants import EPOCH, TIME_TOTAL_S
from cxr_tune.evaluation.contenders import Candidate, pick_contenders
from cxr_tune.evaluation.costs import FinishingCosts, makespan

# Ray Tune's Trial.PENDING and Trial.RUNNING: the trials with an epoch under way.
LIVE_STATUSES = ("PENDING", "RUNNING")


@dataclass(frozen=True)
class TrialCost:
    """What the estimate needs of one trial.

    Attributes:
        cell: the trial's cell id.
        optimizer: its optimizer (contenders are the best of each).
        value: its last value of the search metric (NaN: none yet).
        epochs: epochs it reported.
        planned: epochs it would train to the end.
        seconds_per_epoch: its time so far over its epochs (NaN before its first).
        live: whether it is still training (it may train to its end in the search).
        trial_id: Tune's id of the trial.
    """

    cell: str
    optimizer: str
    value: float
    epochs: int
    planned: int
    seconds_per_epoch: float
    live: bool = False
    trial_id: str = ""

    @property
    def trained_to_the_end(self) -> bool:
        return self.epochs >= self.planned


def contenders(trials: Sequence[TrialCost], mode: str = "max") -> list[tuple[TrialCost, bool]]:
    """The trials the evaluation would score after these, each with whether it is its cell's
    best: ``evaluation/contenders.py``'s own choice (trained to the end first), among the
    trials with a measured epoch."""
    measured = {
        str(k): t
        for k, t in enumerate(trials)
        if math.isfinite(t.value) and math.isfinite(t.seconds_per_epoch)
    }
    candidates = [
        Candidate(key, t.cell, t.optimizer, t.value, t.trained_to_the_end)
        for key, t in measured.items()
    ]
    return [
        (measured[candidate.key], "best" in roles)
        for candidate, roles in pick_contenders(candidates, mode)
    ]


def task_seconds(trials: Sequence[TrialCost], costs: FinishingCosts) -> list[float]:
    """Each evaluation task's expected seconds: one per contender and seed."""
    fastest: dict[str, float] = {}
    for trial in trials:
        if math.isfinite(trial.seconds_per_epoch):
            fastest[trial.cell] = min(fastest.get(trial.cell, math.inf), trial.seconds_per_epoch)
    tasks = []
    for trial, best in contenders(trials, costs.mode):
        epoch = trial.seconds_per_epoch
        for seed in range(costs.seeds):
            # The first seed scores the search trial's own weights when it trained them all. A
            # contender still training is let finish (the budget keeper does not stop it): what
            # is left of it is its remaining epochs, not a retraining.
            if seed > 0 or not (trial.trained_to_the_end or trial.live):
                training = trial.planned * epoch
            else:
                training = (trial.planned - trial.epochs) * epoch
            tasks.append(costs.task_s(best, fastest[trial.cell], training))
    return tasks


def finishing_seconds(trials: Sequence[TrialCost], costs: FinishingCosts) -> float:
    """The finishing's expected wall-clock seconds after a search that ran ``trials``."""
    assembly = costs.assembly_s(len(contenders(trials, costs.mode)))
    return makespan(task_seconds(trials, costs), costs.slots) + assembly


def epoch_seconds_by_cell(trials: Sequence[TrialCost]) -> dict[str, float]:
    """Each cell's median seconds per epoch over its measured trials."""
    by_cell: dict[str, list[float]] = {}
    for trial in trials:
        if math.isfinite(trial.seconds_per_epoch):
            by_cell.setdefault(trial.cell, []).append(trial.seconds_per_epoch)
    return {cell: statistics.median(seconds) for cell, seconds in by_cell.items()}


def trial_costs(
    trials: Iterable[Any],
    metric: str,
    newest: Mapping[str, Mapping[str, Any]] | None = None,
    ended: Collection[str] = (),
) -> list[TrialCost]:
    """``TrialCost`` of Ray Tune trials (``newest``: a trial id's result not yet in its
    ``last_result``, as a scheduler sees it; ``ended``: trials being stopped, no longer
    live whatever their status says)."""
    costs = []
    for trial in trials:
        last = (newest or {}).get(trial.trial_id) or trial.last_result or {}
        epochs = int(last.get(EPOCH, 0) or 0)
        seconds = float(last.get(TIME_TOTAL_S, math.nan) or math.nan)
        value = last.get(metric)
        costs.append(
            TrialCost(
                cell=str(trial.config.get("cell", "")),
                optimizer=str(trial.config.get("optimizer", "")),
                value=float(value) if isinstance(value, (int, float)) else math.nan,
                epochs=epochs,
                planned=int(trial.config.get("epochs", 0) or 0),
                seconds_per_epoch=seconds / epochs if epochs else math.nan,
                live=str(getattr(trial, "status", "")) in LIVE_STATUSES
                and str(trial.trial_id) not in ended,
                trial_id=str(trial.trial_id),
            )
        )
    return costs


@dataclass(frozen=True)
class ContenderIds:
    """The ids of the trials the evaluation would score (a cell's best, the best of each
    optimizer), from Ray Tune's trials: what checkpoint retention keeps under a time budget.
    A class, not a closure: Tune pickles its callbacks with the experiment."""

    metric: str
    mode: str = "max"

    def __call__(self, trials: Iterable[Any]) -> set[str]:
        costs = trial_costs(trials, self.metric)
        return {cost.trial_id for cost, _ in contenders(costs, self.mode)}

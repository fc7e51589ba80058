"""Which configurations the final evaluation scores, and where their weights are.

For each cell: the best configuration and, where the optimizer was searched, the best
configuration of each optimizer, so "SGD vs Adam at their best settings" is a paired comparison
on the same test images. The first seed reuses the search trial's own final checkpoint when the
trial trained all its epochs (same seed, same result); other seeds retrain from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr_tune.constants import CHECKPOINT_FILE, COMPLETED
from cxr_tune.experiment import Experiment, TrialRecord


@dataclass(frozen=True)
class Contender:
    """A configuration to evaluate: the best of a cell, or the best with one optimizer."""

    cell: str
    roles: tuple[str, ...]
    trial: TrialRecord

    @property
    def key(self) -> str:
        return f"{self.cell}#{self.trial.trial_id}"


@dataclass(frozen=True)
class Candidate:
    """What the choice of contenders reads of a trial (an evaluated experiment's, or a running
    search's: ``search/reserve.py`` costs the contenders a time budget must leave room for)."""

    key: str
    cell: str
    optimizer: str
    value: float
    completed: bool


def pick_contenders(
    candidates: Sequence[Candidate], mode: str = "max"
) -> list[tuple[Candidate, tuple[str, ...]]]:
    """Per cell: the best candidate (role ``best``) and, where the cell tried several
    optimizers, the best of each (``best_<optimizer>``); completed trials first, else any with
    a finite value. A candidate chosen twice is listed once, with both roles."""
    sign = 1.0 if mode == "max" else -1.0
    scored = [c for c in candidates if math.isfinite(c.value)]

    def top(pool: list[Candidate]) -> Candidate | None:
        pool = [c for c in pool if c.completed] or pool
        return max(pool, key=lambda c: sign * c.value) if pool else None

    chosen: list[tuple[Candidate, tuple[str, ...]]] = []
    for cell in dict.fromkeys(c.cell for c in scored):
        mine = [c for c in scored if c.cell == cell]
        roles: dict[str, list[str]] = {}
        picked: dict[str, Candidate] = {}
        best = top(mine)
        assert best is not None
        roles[best.key], picked[best.key] = ["best"], best
        optimizers = sorted({c.optimizer for c in mine})
        if len(optimizers) > 1:
            for optimizer in optimizers:
                alternate = top([c for c in mine if c.optimizer == optimizer])
                if alternate is not None:
                    roles.setdefault(alternate.key, []).append(f"best_{optimizer}")
                    picked[alternate.key] = alternate
        chosen += [(picked[key], tuple(roles[key])) for key in picked]
    return chosen


def choose_contenders(exp: Experiment) -> list[Contender]:
    """Per cell: the best trial, plus the best trial of each optimizer searched in the cell."""
    by_key = {trial.trial_id: trial for trial in exp.trials}
    candidates = [
        Candidate(
            key=trial.trial_id,
            cell=cell,
            optimizer=str(trial.config.get("optimizer")),
            value=trial.value(exp.metric),
            completed=trial.state == COMPLETED,
        )
        for cell in exp.cells()
        for trial in exp.trials_of(cell)
    ]
    return [
        Contender(candidate.cell, roles, by_key[candidate.key])
        for candidate, roles in pick_contenders(candidates, exp.mode)
    ]


def final_checkpoint(trial: TrialRecord) -> Path | None:
    """The trial's checkpoint after its last planned epoch, if it trained that far."""
    if trial.state != COMPLETED:
        return None
    for folder in reversed(trial.checkpoints()):
        if (folder / CHECKPOINT_FILE).is_file():
            return folder
    return None


def retrain_seconds(trial: TrialRecord) -> float:
    """About how long retraining ``trial``'s configuration takes: its own time per epoch, times
    its planned epochs (0 when it has no timed epoch)."""
    epochs = trial.epochs_done
    per_epoch = trial.time_total_s() / epochs if epochs else math.nan
    return per_epoch * trial.planned_epochs if math.isfinite(per_epoch) else 0.0

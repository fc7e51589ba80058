"""Which configurations the final evaluation scores, and where their weights are.

For each cell: the best configuration and, where the optimizer was searched, the best
configuration of each optimizer, so "SGD vs Adam at their best settings" is a paired comparison
on the same test images. The first seed reuses the search trial's own final checkpoint when the
trial trained all its epochs (same seed, same result); other seeds retrain from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def choose_contenders(exp: Experiment) -> list[Contender]:
    """Per cell: the best trial, plus the best trial of each optimizer searched in the cell."""
    contenders: list[Contender] = []
    for cell in exp.cells():
        best = exp.best_trial(cell, completed_only=False)
        if best is None:
            continue
        roles: dict[str, list[str]] = {best.trial_id: ["best"]}
        chosen: dict[str, TrialRecord] = {best.trial_id: best}
        optimizers = sorted({str(t.config.get("optimizer")) for t in exp.trials_of(cell)})
        if len(optimizers) > 1:
            for optimizer in optimizers:
                trial = _best_of(exp, cell, _with_optimizer(optimizer))
                if trial is not None:
                    roles.setdefault(trial.trial_id, []).append(f"best_{optimizer}")
                    chosen[trial.trial_id] = trial
        contenders += [Contender(cell, tuple(roles[i]), chosen[i]) for i in chosen]
    return contenders


def _with_optimizer(optimizer: str) -> Callable[[TrialRecord], bool]:
    return lambda trial: str(trial.config.get("optimizer")) == optimizer


def _best_of(exp: Experiment, cell: str, keep: Callable[[TrialRecord], bool]) -> TrialRecord | None:
    """Best completed trial passing ``keep``; failing that, the best with any finite result."""
    sign = 1.0 if exp.mode == "max" else -1.0
    trials = [t for t in exp.trials_of(cell) if keep(t) and math.isfinite(t.value(exp.metric))]
    completed = [t for t in trials if t.state == COMPLETED]
    pool = completed or trials
    return max(pool, key=lambda t: sign * t.value(exp.metric)) if pool else None


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

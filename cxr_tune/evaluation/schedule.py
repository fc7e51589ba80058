"""Which evaluation tasks run, and from which weights.

Without a deadline every contender is scored as trained to its last epoch: the first seed from
the search trial's final checkpoint when it trained that far, else retrained from scratch; every
further seed retrained.

With a deadline (what a time budget leaves the finishing), the tasks are chosen to fit it. Each
cell's best model is always scored; the rest is bought in this order while the tasks, laid
longest first on the evaluation's slots, and the report still end by the deadline:

1. retraining a cell's best that stopped before its last epoch (else: its last checkpoint is
   scored, and says so);
2. the other contenders (the best of each optimizer): from a final checkpoint, else retrained
   (else: their last checkpoint, or left out, with the reason);
3. the extra seeds.

Costs come from ``costs.py``, in each trial's own measured seconds per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr_tune.constants import CHECKPOINT_FILE
from cxr_tune.evaluation.contenders import Contender, final_checkpoint, retrain_seconds
from cxr_tune.evaluation.costs import FinishingCosts, makespan
from cxr_tune.experiment import TrialRecord

NO_ROOM = "the time budget left no room to retrain it to its last epoch"
NO_ROOM_TO_SCORE = "the time budget left no room to score it"


@dataclass(frozen=True)
class Job:
    """One evaluation task: a contender with one seed.

    Attributes:
        contender: what is scored.
        seed_index: 0 for the configuration's own seed, k for its k-th extra seed.
        checkpoint: the weights scored (None: trained in the task).
        epochs_trained: the checkpoint's epoch where it is from before the trial's last
            (scored as it is, not retrained); None otherwise.
        seconds: the task's estimated seconds.
    """

    contender: Contender
    seed_index: int
    checkpoint: Path | None
    epochs_trained: int | None
    seconds: float

    @property
    def source(self) -> str:
        """Where the scored weights come from, as the evaluation records it."""
        if self.checkpoint is None:
            return "retrained"
        if self.epochs_trained is None:
            return "search checkpoint"
        planned = self.contender.trial.planned_epochs
        return f"search checkpoint at epoch {self.epochs_trained} of {planned}, not retrained"


@dataclass(frozen=True)
class LeftOut:
    """A contender (or one of its seeds) the evaluation did not score, and why."""

    contender: Contender
    seed_index: int
    reason: str

    def describe(self) -> dict[str, object]:
        return {
            "cell": self.contender.cell,
            "roles": list(self.contender.roles),
            "trial_id": self.contender.trial.trial_id,
            "seed_index": self.seed_index,
            "reason": self.reason,
        }


def last_checkpoint(trial: TrialRecord) -> tuple[Path, int] | None:
    """The trial's newest checkpoint on disk and the epoch it was written after."""
    for result in reversed(trial.results):
        name = result.get("checkpoint_dir_name")
        if name and (trial.folder / str(name) / CHECKPOINT_FILE).is_file():
            return trial.folder / str(name), int(result.get("epoch", 0) or 0)
    return None


def fastest_epochs(trials: Sequence[TrialRecord]) -> dict[str, float]:
    """Each cell's fastest measured seconds per epoch (scoring is counted in it)."""
    fastest: dict[str, float] = {}
    for trial in trials:
        seconds, epochs = trial.time_total_s(), trial.epochs_done
        if epochs and math.isfinite(seconds):
            fastest[trial.cell] = min(fastest.get(trial.cell, math.inf), seconds / epochs)
    return fastest


def schedule(
    contenders: Sequence[Contender],
    seeds: int,
    fastest: Mapping[str, float],
    costs: FinishingCosts,
    deadline_s: float | None = None,
) -> tuple[list[Job], list[LeftOut]]:
    """The evaluation's tasks, longest first, and what was left out to meet ``deadline_s``
    (seconds from now for the tasks, the assembly and the report; None: no deadline)."""
    chosen: dict[tuple[str, int], Job] = {}
    # What a deadline buys if it can, in the order the module docstring gives.
    best_retrains: list[Job] = []
    alternates: list[Job] = []
    extra_seeds: list[Job] = []
    left: dict[tuple[str, int], LeftOut] = {}
    for contender in contenders:
        best = "best" in contender.roles
        final = final_checkpoint(contender.trial)
        first = _job(contender, 0, final, None, fastest, costs)
        seeds_after = [_job(contender, k, None, None, fastest, costs) for k in range(1, seeds)]
        if deadline_s is None:
            for each in (first, *seeds_after):
                chosen[(contender.key, each.seed_index)] = each
            continue
        last = None if final is not None else last_checkpoint(contender.trial)
        fallback = _job(contender, 0, *last, fastest, costs) if last is not None else None
        if best:
            # Always scored: as trained to its end where it can be, else as it stands.
            chosen[(contender.key, 0)] = fallback or first
            if fallback is not None:
                best_retrains.append(first)
        else:
            alternates += [j for j in (fallback, first) if j is not None]
            reason = NO_ROOM_TO_SCORE if final is not None else NO_ROOM
            left[(contender.key, 0)] = LeftOut(contender, 0, reason)
        extra_seeds += seeds_after
        left.update(
            {
                (contender.key, j.seed_index): LeftOut(contender, j.seed_index, NO_ROOM)
                for j in seeds_after
            }
        )
    if deadline_s is not None:
        for wanted in (*best_retrains, *alternates, *extra_seeds):
            _buy(chosen, left, wanted, costs, deadline_s)
    jobs = sorted(chosen.values(), key=lambda j: -j.seconds)
    return jobs, list(left.values())


def _buy(
    chosen: dict[tuple[str, int], Job],
    left: dict[tuple[str, int], LeftOut],
    job: Job,
    costs: FinishingCosts,
    deadline_s: float,
) -> None:
    """Add ``job`` (or put it in place of its cheaper stand-in) if the tasks, laid on the
    evaluation's slots, and the assembly and report still end by the deadline."""
    key = (job.contender.key, job.seed_index)
    if key in chosen and chosen[key].seconds >= job.seconds:
        return
    tried = {**chosen, key: job}
    contenders = {contender for contender, _ in tried}
    ends = makespan((j.seconds for j in tried.values()), costs.slots)
    if ends + costs.assembly_s(len(contenders)) <= deadline_s:
        chosen[key] = job
        left.pop(key, None)


def _job(
    contender: Contender,
    seed_index: int,
    checkpoint: Path | None,
    epochs_trained: int | None,
    fastest: Mapping[str, float],
    costs: FinishingCosts,
) -> Job:
    """A task and its cost: scoring, and without a checkpoint training every planned epoch."""
    training = 0.0 if checkpoint is not None else retrain_seconds(contender.trial)
    best = "best" in contender.roles
    seconds = costs.task_s(best, fastest.get(contender.cell, 0.0), training)
    return Job(contender, seed_index, checkpoint, epochs_trained, seconds)

"""What the finishing (the final evaluation and the report) costs, in the unit the search
measures: a trial's own seconds per epoch. The search's time budget reserves it
(``search/reserve.py``), and an evaluation with a deadline chooses what it can afford with it
(``evaluation/schedule.py``).

Constants cover what no epoch measures (a task's worker start, decoding the external sets, the
report); they were measured on the main job with ``scripts/bench/main_job.py``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

# Scoring a cell's best model (test split, external sets, probe, validation logits for the
# calibration, features for the OOD statistics, Grad-CAM overlays) is forward passes, whatever
# the batch size the trial trained with: so it is counted in the cell's fastest epoch (its
# largest batch), plus the OOD statistics' fit. The other contenders score the test split only.
# Measured on the main job (external set 1.4x the training split), with the test split and the
# external sets scored from the features pass: 1.0-1.4 of the cell's fastest epochs (AlexNet
# 12.5 s, ResNet50 40 s, VGG11 66 s, on a quiet machine; 1.44 epochs for VGG11 on a loaded one).
BEST_SCORING_EPOCHS = 1.3
BEST_SCORING_S = 6.0
OTHER_SCORING_EPOCHS = 0.2
# A new Ray worker for each evaluation task: Python, torch and the task's data.
TASK_START_S = 6.0
# Besides the tasks: the assembly (bootstrap intervals, transfer, artefacts) and the report
# with its figures, a few seconds and a few more per contender (36 s for the main job's 6 here).
FIXED_S = 5.0
CONTENDER_S = 5.0


@dataclass(frozen=True)
class FinishingCosts:
    """What the finishing does besides the contenders' own training.

    Attributes:
        seeds: evaluation seeds per contender.
        slots: evaluation tasks that run at once.
        mode: ``max`` or ``min``, the metric's direction.
    """

    seeds: int
    slots: int
    mode: str = "max"
    best_scoring_epochs: float = BEST_SCORING_EPOCHS
    best_scoring_s: float = BEST_SCORING_S
    other_scoring_epochs: float = OTHER_SCORING_EPOCHS
    task_start_s: float = TASK_START_S
    fixed_s: float = FIXED_S
    contender_s: float = CONTENDER_S

    def scoring_s(self, best: bool, fastest_epoch_s: float) -> float:
        """Scoring one model: a cell's best (everything) or another contender (test split)."""
        if best:
            return self.best_scoring_epochs * fastest_epoch_s + self.best_scoring_s
        return self.other_scoring_epochs * fastest_epoch_s

    def task_s(self, best: bool, fastest_epoch_s: float, training_s: float) -> float:
        """One evaluation task: its worker's start, any training, and the scoring."""
        return self.task_start_s + training_s + self.scoring_s(best, fastest_epoch_s)

    def assembly_s(self, contenders: int) -> float:
        """The assembly and the report, after the tasks."""
        return self.fixed_s + self.contender_s * contenders


def makespan(durations: Iterable[float], slots: int) -> float:
    """Wall-clock time of tasks handed longest first to whichever of ``slots`` frees first."""
    ends = [0.0] * max(1, slots)
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(ends, ends[0] + duration)
    return max(ends)

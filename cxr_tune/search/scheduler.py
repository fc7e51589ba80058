"""ASHA per cell: a trial is only ever compared with trials of its own cell.

Ray's ``ASHAScheduler`` keeps one set of rungs for the whole experiment, so a trial on an easy
dataset would stop a trial on a hard one. ``CellASHA`` keeps one ASHA instance (one bracket set)
per cell, created on first sight of the cell, and routes every event to it.

Both schedulers here also keep a search's epoch budget per cell (``search/budget.py``): a trial
that may not train another epoch within it is stopped where it is.

What the schedulers read of Tune is small, and it is all their decisions depend on: of a trial,
``trial_id``, ``config``, ``status`` and ``last_result`` (the result before the one being
decided on); of the controller, ``get_trials()``. ``search/simulate.py`` drives the same
schedulers (and the same searcher) with trials of its own that have just these, on a simulated
clock, to replay stored learning curves without Ray running any trial.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from cxr_tune.constants import RAY_TRIAL_ID_ATTR, TRIAL_FILE
from cxr_tune.metrics import learned_nothing
from cxr_tune.search import _optuna_internals as optuna_private
from cxr_tune.search._ray_internals import (
    asha_brackets,
    asha_trial_table,
    bracket_rung_count,
    save_experiment_soon,
)
from cxr_tune.search.budget import EPOCH_KEY, BudgetKeeper, TimeBudget, cell_of

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

    from cxr_tune.search.plan import Plan

TIME_ATTR = EPOCH_KEY


def scheduler_for(
    plan: Plan, time_budget: TimeBudget | None = None, *, study_db: str | None = None
) -> CellASHA | SavingFIFO:
    """The Tune scheduler a plan asks for: ASHA per cell, or none; both keep its epoch budget,
    and ``time_budget`` (the experiment's time and GPU-hours) where one is given.

    ``study_db`` is the run's Optuna study file, the record of which trials ended that a
    resumed run checks its restored trials against (None: nothing to check).
    """
    scheduler = _scheduler_for(plan, study_db)
    scheduler.use_time_budget(time_budget)
    return scheduler


def _scheduler_for(plan: Plan, study_db: str | None) -> CellASHA | SavingFIFO:
    if plan.scheduler.name != "asha":
        return SavingFIFO(budget_epochs=plan.budget_epochs, study_db=study_db)
    rung_metric, rung_mode = plan.scheduler.rung_metric(plan.space.metric, plan.space.mode)
    return CellASHA(
        metric=rung_metric,
        mode=rung_mode,
        grace_period=plan.scheduler.grace_period,
        reduction_factor=plan.scheduler.reduction_factor,
        brackets=plan.scheduler.brackets,
        max_t=plan.epochs,
        budget_epochs=plan.budget_epochs,
        no_skill_epoch=plan.scheduler.no_skill_epoch,
        study_db=study_db,
        seed=plan.seed,
    )


class _RetiresEndedTrials:
    """Retires, once per run of a driver, restored trials that had already ended.

    Which run has checked is state of the scheduler object, not of the process: a scheduler
    is built (or unpickled from the experiment's state by ``--resume``) once per run of a
    driver, and the flag is never pickled, so every restored scheduler checks again.
    """

    study_db: str | None = None
    _retired = False

    def use_study_db(self, study_db: str | None) -> None:
        """The study file this run keeps (a restored scheduler holds the starting run's)."""
        self.study_db = study_db

    def _retire_once(self, tune_controller: TuneController) -> None:
        if not self._retired:
            self._retired = True
            retire_ended_trials(tune_controller, self.study_db)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_retired", None)
        return state


class CellASHA(_RetiresEndedTrials, FIFOScheduler):
    """Asynchronous successive halving with one bracket set per cell.

    Args:
        metric, mode: what to compare and in which direction.
        grace_period: epochs before a trial can be stopped.
        reduction_factor: keep the top 1/reduction_factor at each rung.
        brackets: ASHA brackets per cell.
        max_t: default last epoch; a trial's own ``epochs`` wins.
        budget_epochs: the most epochs trained per cell (None: no limit).
        no_skill_epoch: at this epoch, stop a trial that has learned nothing, whatever its rank
            at a rung (0: never; see ``metrics.learned_nothing``).
        study_db: the run's Optuna study file (see ``retire_ended_trials``).
        seed: seeds the draw of each new trial's bracket (with one bracket there is no draw).
    """

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        grace_period: int,
        reduction_factor: float,
        brackets: int = 1,
        max_t: int = 100,
        budget_epochs: int | None = None,
        no_skill_epoch: int = 0,
        study_db: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.study_db = study_db
        # Ray's ASHA draws a trial's bracket from numpy's global generator: unseeded, so two
        # runs of one search could put a trial in different brackets.
        self._rng = np.random.default_rng(seed)
        self._budget = BudgetKeeper(budget_epochs)
        self._no_skill_epoch = no_skill_epoch
        self._no_skill: dict[str, int] = {}
        self._metric = metric
        self._mode = mode
        self._grace_period = grace_period
        self._reduction_factor = reduction_factor
        self._brackets = brackets
        self._max_t = max_t
        self._cells: dict[str, AsyncHyperBandScheduler] = {}
        self._stopped: dict[str, int] = {}

    @property
    def metric(self) -> str | None:
        return self._metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # metric and mode come from the space; a different pair from Tune is a conflict.
        return (metric is None or metric == self._metric) and (mode is None or mode == self._mode)

    def _cell_of(self, trial: Trial) -> AsyncHyperBandScheduler:
        cell = cell_of(trial)
        if cell not in self._cells:
            max_t = int(trial.config.get("epochs", self._max_t))
            self._cells[cell] = AsyncHyperBandScheduler(
                time_attr=TIME_ATTR,
                metric=self._metric,
                mode=self._mode,
                max_t=max_t,
                grace_period=min(self._grace_period, max_t),
                reduction_factor=self._reduction_factor,
                brackets=self._brackets,
            )
        return self._cells[cell]

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        save_experiment_soon(tune_controller)
        scheduler = self._cell_of(trial)
        # Ray's rule for the bracket (softmax over the brackets' rung counts, so brackets with
        # more rungs get more trials), drawn from this scheduler's own seeded generator.
        brackets = asha_brackets(scheduler)
        sizes = np.array([bracket_rung_count(b) for b in brackets], dtype=float)
        weights = np.exp(sizes - sizes.max())
        index = int(self._rng.choice(len(brackets), p=weights / weights.sum()))
        asha_trial_table(scheduler)[trial.trial_id] = brackets[index]

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        # Every result counts in the time budget, whatever ASHA decides below.
        self._budget.observe(trial, result, tune_controller)
        # A diverged or failed trial ends by itself; its NaN must not enter the rungs.
        if result.get("status", "ok") != "ok":
            return TrialScheduler.CONTINUE
        last_epoch = result.get(TIME_ATTR, 0) >= int(trial.config.get("epochs", self._max_t))
        action = self._cell_of(trial).on_trial_result(tune_controller, trial, result)
        cell = cell_of(trial)
        if not last_epoch and self._learned_nothing(result):
            # Stopped whatever its rank. ASHA has still recorded it at the rung it reached: a
            # rung keeps the top 1/reduction_factor of every trial that got there.
            self._no_skill[cell] = self._no_skill.get(cell, 0) + 1
            action = TrialScheduler.STOP
        if action == TrialScheduler.STOP and not last_epoch:
            self._stopped[cell] = self._stopped.get(cell, 0) + 1
            # Stopped before its end: a contender now costs the evaluation a retraining.
            self._budget.observe(trial, result, tune_controller, ending=True)
        if action == TrialScheduler.CONTINUE and not self._budget.lets_go_on(
            trial, result, tune_controller
        ):
            return TrialScheduler.STOP
        return action

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        save_experiment_soon(tune_controller)
        scheduler = self._cell_of(trial)
        if result.get("status", "ok") != "ok" or TIME_ATTR not in result:
            asha_trial_table(scheduler).pop(trial.trial_id, None)
            return
        if trial.trial_id in asha_trial_table(scheduler):
            scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        save_experiment_soon(tune_controller)
        asha_trial_table(self._cell_of(trial)).pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        asha_trial_table(self._cell_of(trial)).pop(trial.trial_id, None)

    def _learned_nothing(self, result: dict[str, Any]) -> bool:
        if not self._no_skill_epoch or result.get(TIME_ATTR) != self._no_skill_epoch:
            return False
        return learned_nothing(result)

    def stopped_no_skill(self) -> dict[str, int]:
        """Trials the no-skill check stopped, per cell (also counted in ``stopped_early``)."""
        return dict(self._no_skill)

    def stopped_early(self) -> dict[str, int]:
        """Trials ASHA stopped before their last epoch, per cell."""
        return dict(self._stopped)

    def out_of_budget(self) -> dict[str, int]:
        """Trials stopped before their last epoch because their cell's budget was spent."""
        return dict(self._budget.stopped)

    def use_time_budget(self, budget: TimeBudget | None) -> None:
        """Keep ``budget`` from now on (a restored scheduler holds the previous run's)."""
        self._budget.use_time_budget(budget)

    def debug_string(self) -> str:
        stopped = sum(self._stopped.values())
        return f"ASHA per cell: {len(self._cells)} cells, {stopped} trials stopped early"

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        self._retire_once(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class SavingFIFO(_RetiresEndedTrials, FIFOScheduler):
    """First in, first out (no early stopping), saving the experiment as each trial ends.

    Args:
        budget_epochs: the most epochs trained per cell (None: no limit).
        study_db: the run's Optuna study file (see ``retire_ended_trials``).
    """

    def __init__(self, budget_epochs: int | None = None, study_db: str | None = None) -> None:
        super().__init__()
        self.study_db = study_db
        self._budget = BudgetKeeper(budget_epochs)

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        if self._budget.lets_go_on(trial, result, tune_controller):
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP

    def out_of_budget(self) -> dict[str, int]:
        """Trials stopped before their last epoch because their cell's budget was spent."""
        return dict(self._budget.stopped)

    def use_time_budget(self, budget: TimeBudget | None) -> None:
        """Keep ``budget`` from now on (a restored scheduler holds the previous run's)."""
        self._budget.use_time_budget(budget)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        self._retire_once(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        save_experiment_soon(tune_controller)

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        save_experiment_soon(tune_controller)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        save_experiment_soon(tune_controller)


def retire_ended_trials(tune_controller: TuneController, study_db: str | None) -> None:
    """End, without training them, restored trials that had already ended before a restart.

    The experiment state ``--resume`` starts from can be older than a trial's end: the driver
    may stop after Optuna was told the outcome and the trial's checkpoints were pruned, but
    before Tune saved the state. The study (written at once, at the end of each trial) is the
    record of which trials ended; such trials are stopped here, with their last logged result,
    instead of trained again (or failing on a checkpoint that is gone).
    """
    ended = ended_trial_ids(study_db or "")
    for trial in list(tune_controller.get_trials()):
        if trial.status == Trial.PENDING and trial.trial_id in ended:
            last = logged_last_result(trial)
            if last is not None:
                trial.update_last_result(last)
            tune_controller.stop_trial(trial)


def ended_trial_ids(study_db: str) -> set[str]:
    """Ray trial ids of the study's trials that ended (complete, pruned or failed)."""
    if not study_db or not Path(study_db).is_file():
        return set()
    return {
        str(value) for value in optuna_private.ended_trial_attribute(study_db, RAY_TRIAL_ID_ATTR)
    }


def logged_last_result(trial: Trial) -> dict[str, Any] | None:
    """The trial's last result as the storage has it: the last line of its ``result.json``, or
    the result saved with its latest checkpoint when that is newer (``result.json`` reaches the
    storage with the experiment syncs, checkpoints at once)."""
    storage = trial.storage
    if storage is None:
        return None
    fs = storage.storage_filesystem
    found = [
        r
        for r in (
            _last_json_line(fs, f"{storage.trial_fs_path}/result.json"),
            _checkpoint_result(fs, storage.trial_fs_path),
        )
        if r is not None
    ]
    return max(found, key=lambda r: int(r.get("epoch", 0))) if found else None


def _last_json_line(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(path) as f:
            lines = f.read().decode("utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return dict(json.loads(line))
        except json.JSONDecodeError:
            continue
    return None


def _checkpoint_result(fs: Any, trial_path: str) -> dict[str, Any] | None:
    """The result the trainable saved in its latest checkpoint's ``trial.json``."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True))
    except OSError:
        return None
    folders = sorted(i.path for i in infos if i.base_name.startswith("checkpoint_"))
    if not folders:
        return None
    try:
        with fs.open_input_stream(f"{folders[-1]}/{TRIAL_FILE}") as f:
            saved = json.loads(f.read().decode("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    result = saved.get("result")
    return dict(result) if isinstance(result, dict) else None


class OverrunStopper(Stopper):
    """Stops every running trial at once when the search is past its share of the time budget
    by the margin (Tune asks ``stop_all`` at every step of its loop, results or not)."""

    def __init__(self, budget: TimeBudget) -> None:
        self.budget = budget

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.budget.overrun()

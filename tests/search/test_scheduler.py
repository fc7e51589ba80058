"""The schedulers' own state: restored trials retired once per run, brackets drawn reproducibly."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
from ray.tune.experiment import Trial

from cxr_tune.search.scheduler import CellASHA, SavingFIFO


class _Trial:
    def __init__(self, trial_id: str, status: str = Trial.PENDING) -> None:
        self.trial_id = trial_id
        self.status = status
        self.config = {"cell": "phantom/alexnet", "epochs": 9}
        self.last_result: dict = {}
        self.storage = None  # no logged result to restore: stopped as it is


class _Controller:
    """What retiring reads and does: the trials, and stopping one."""

    def __init__(self, trials: list[_Trial]) -> None:
        self.trials = trials
        self.stopped: list[str] = []

    def get_trials(self) -> list[_Trial]:
        return list(self.trials)

    def get_live_trials(self) -> list[_Trial]:
        return [t for t in self.trials if t.status != Trial.TERMINATED]

    def stop_trial(self, trial: _Trial) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = Trial.TERMINATED


def _study_with_ended(db: Path, ray_ids: list[str]) -> None:
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="phantom/alexnet")
    for ray_id in ray_ids:
        trial = study.ask()
        trial.set_user_attr("ray_trial_id", ray_id)
        study.tell(trial, 0.5)


def _asha(study_db: str | None, brackets: int = 1, seed: int = 0) -> CellASHA:
    return CellASHA(
        metric="val_loss",
        mode="min",
        grace_period=1,
        reduction_factor=3,
        brackets=brackets,
        max_t=9,
        study_db=study_db,
        seed=seed,
    )


@pytest.mark.parametrize("make", [_asha, lambda db: SavingFIFO(study_db=db)])
def test_scheduler_retires_ended_trials_of_its_study_once_per_run(tmp_path, make):
    db = tmp_path / "optuna.db"
    _study_with_ended(db, ["a"])
    scheduler = make(str(db))
    first = _Controller([_Trial("a"), _Trial("b")])
    scheduler.choose_trial_to_run(first)
    assert first.stopped == ["a"]
    # Tune hands each call a new wrapper object: the check must not run again in this run,
    # whatever the objects' ids.
    later = _Controller([_Trial("a"), _Trial("b")])
    scheduler.choose_trial_to_run(later)
    assert later.stopped == []
    # The next run of the driver unpickles the scheduler from the experiment: it checks again.
    restored = pickle.loads(pickle.dumps(scheduler))
    resumed = _Controller([_Trial("a"), _Trial("b")])
    restored.choose_trial_to_run(resumed)
    assert resumed.stopped == ["a"]


def test_scheduler_reads_the_study_it_was_given_not_the_environment(tmp_path, monkeypatch):
    db = tmp_path / "optuna.db"
    _study_with_ended(db, ["a"])
    monkeypatch.setenv("CXR_TUNE_STUDY_DB", str(db))
    controller = _Controller([_Trial("a")])
    _asha(None).choose_trial_to_run(controller)
    assert controller.stopped == []
    moved = _asha(str(tmp_path / "gone.db"))
    moved.use_study_db(str(db))  # a restored scheduler, pointed at this run's study
    moved.choose_trial_to_run(controller)
    assert controller.stopped == ["a"]


def test_asha_draws_brackets_from_its_own_seed():
    def brackets(seed: int) -> list[int]:
        scheduler = _asha(None, brackets=3, seed=seed)
        controller = _Controller([])
        drawn = []
        for i in range(40):
            trial = _Trial(f"t{i}", Trial.RUNNING)
            scheduler.on_trial_add(controller, trial)
            cell = scheduler._cells["phantom/alexnet"]
            drawn.append(cell._brackets.index(cell._trial_info[trial.trial_id]))
        return drawn

    assert brackets(0) == brackets(0)
    assert brackets(0) != brackets(1)
    # Ray's weights: brackets with more rungs get more trials (3, 2 and 1 rungs here).
    drawn = brackets(0)
    assert drawn.count(0) > drawn.count(2) and set(drawn) == {0, 1, 2}

"""Replays on stored curves: deterministic, and the decisions of the real search's code."""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cxr_tune.config import PROFILES
from cxr_tune.metrics import NO_SKILL_KEY, TRAIN_NO_SKILL_KEY
from cxr_tune.search.plan import Overrides, Plan, build_plan
from cxr_tune.search.simulate import simulate
from cxr_tune.spaces import parse_space

EPOCHS = 4
CHANCE = math.log(4)
LRS = (1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2)
OPTIMIZERS = ("adam", "sgd")


def _curve(lr: float, optimizer: str) -> list[dict]:
    """Made-up learning curves: Adam learns, best at 3e-4, and starts slowly at 1e-4; SGD learns
    nothing below 1e-2 (losses at chance, so the no-skill check stops it)."""
    learns = optimizer == "adam" or lr >= 1.0e-2
    rows = []
    for epoch in range(1, EPOCHS + 1):
        if learns:
            skill = (1.0 - abs(math.log10(lr / 3.0e-4)) / 3) * epoch / EPOCHS
            if lr == 1.0e-4 and epoch < 3:
                skill *= 0.2  # a slow starter
            loss = CHANCE * (1.0 - 0.5 * skill)
            f1 = 0.25 + 0.6 * skill
        else:
            loss, f1 = CHANCE * (1.0 + 0.001 * epoch), 0.1
        rows.append(
            {
                "status": "ok",
                "val_macro_f1": f1,
                "val_loss": loss,
                "train_loss": loss,
                NO_SKILL_KEY: CHANCE,
                TRAIN_NO_SKILL_KEY: CHANCE,
            }
        )
    return rows


CURVES = {(lr, opt): _curve(lr, opt) for lr in LRS for opt in OPTIMIZERS}


def _results(config) -> list[dict]:
    return CURVES[(float(config["lr"]), config["optimizer"])]


def _seconds(config) -> float:
    return 2.0 if config["optimizer"] == "adam" else 1.5


def _plan(algorithm: str = "optuna", budget: int | None = 24, concurrent: int = 2) -> Plan:
    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {"lr": {"choice": list(LRS)}, "optimizer": {"choice": list(OPTIMIZERS)}},
            "fixed": {"epochs": EPOCHS},
            "search": {
                "algorithm": algorithm,
                "num_samples": len(CURVES),
                "seed": 3,
                **({"budget_epochs": budget} if budget else {}),
            },
            "scheduler": {
                "grace_period": 1,
                "reduction_factor": 2,
                "metric": "val_loss",
                "no_skill_epoch": 2,
            },
        },
        source="replay.yaml",
    )
    overrides = Overrides(seed=3, max_concurrent=concurrent)
    return build_plan(space, PROFILES["gpu"], ("phantom",), overrides)


def _study_rows(study_db: str) -> list[tuple]:
    """What Optuna was told, trial by trial: the searcher's side of the decisions."""
    study = optuna.load_study(study_name="phantom/alexnet", storage=f"sqlite:///{study_db}")
    return [
        (t.number, t.state, t.params, dict(sorted(t.intermediate_values.items())), t.value)
        for t in study.trials
    ]


# Optuna's GP sampler imports PyTorch on first use: seconds on a small machine.
@pytest.mark.parametrize(
    "algorithm", ["optuna", "random", pytest.param("gp", marks=pytest.mark.slow)]
)
def test_simulate_gives_the_same_replay_twice(algorithm):
    first = simulate(_plan(algorithm), None, _results, _seconds)
    second = simulate(_plan(algorithm), None, _results, _seconds)
    assert first == second
    assert len(first.trials) > 3 and len(first.decisions) == sum(t.epochs for t in first.trials)


def test_simulate_decides_the_same_with_the_study_in_memory_or_in_sqlite(tmp_path):
    in_memory = simulate(_plan(budget=12), None, _results, _seconds)
    on_disk = simulate(_plan(budget=12), str(tmp_path / "optuna.db"), _results, _seconds)
    assert in_memory == on_disk


def test_simulate_keeps_the_budget_and_stops_flat_trials_at_the_check(tmp_path):
    study_db = str(tmp_path / "optuna.db")
    replay = simulate(_plan(budget=12), study_db, _results, _seconds)
    assert sum(t.epochs for t in replay.trials) == 12
    for trial in replay.trials:
        learns = trial.config["optimizer"] == "adam" or trial.config["lr"] >= 1.0e-2
        if not learns:
            # Stopped by the no-skill check at epoch 2, or at ASHA's first rung before it.
            assert trial.epochs <= 2 and not trial.completed
    # The PRUNED bridge: every trial stopped early reached Optuna as pruned with its epochs.
    states = {row[0]: row for row in _study_rows(study_db)}
    stopped = [t for t in replay.trials if not t.completed]
    assert stopped
    pruned = [r for r in states.values() if r[1] == TrialState.PRUNED]
    assert sorted(len(r[3]) for r in pruned) == sorted(t.epochs for t in stopped)


def test_simulate_orders_results_by_simulated_time():
    replay = simulate(_plan(budget=None), None, _results, _seconds)
    times = [d.time for d in replay.decisions]
    assert times == sorted(times)
    # Two at a time: a 1.5 s SGD epoch ends before a 2 s Adam epoch that started with it.
    assert len({d.trial_id for d in replay.decisions if d.time <= 2.0}) == 2


def _replayed_trial(config: dict) -> None:
    """A Tune trial that reports its configuration's stored curve instead of training."""
    from ray import tune

    for epoch, row in enumerate(_results(config), start=1):
        tune.report({**row, "epoch": epoch})


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_simulate_makes_the_decisions_of_a_real_tune_run(ray_local, tmp_path, algorithm):
    """One trial at a time, so that Tune's order of events is fixed: the replay proposes the
    same configurations, stops the same trials at the same epochs, and tells Optuna the same."""
    from ray import tune

    from cxr_tune.search.scheduler import scheduler_for
    from cxr_tune.search.searcher import CellSearcher

    plan = _plan(algorithm, budget=30, concurrent=1)
    tune_db = str(tmp_path / "tune.db")
    results = tune.Tuner(
        tune.with_resources(_replayed_trial, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, tune_db),
            scheduler=scheduler_for(plan, study_db=tune_db),
            num_samples=plan.total_trials,
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="replayed", storage_path=str(tmp_path), verbose=0),
    ).fit()
    simulated_db = str(tmp_path / "simulated.db")
    replay = simulate(plan, simulated_db, _results, _seconds, max_concurrent=1)
    assert not results.errors
    tune_rows, simulated_rows = _study_rows(tune_db), _study_rows(simulated_db)
    assert simulated_rows == tune_rows
    assert any(row[1] == TrialState.PRUNED for row in tune_rows)
    tune_epochs = sorted(
        ((r.config["lr"], r.config["optimizer"]), int(r.metrics["epoch"])) for r in results
    )
    simulated_epochs = sorted(
        ((t.config["lr"], t.config["optimizer"]), t.epochs) for t in replay.trials
    )
    assert simulated_epochs == tune_epochs


def _clocked_trial(config: dict, folder: str) -> None:
    """A Tune trial that reports its configuration's stored curve, each epoch only when the
    clock (``_Clock``) lets it: it says it is waiting (``<trial>.<epoch>.wait``) and reports
    once the clock has written ``<trial>.<epoch>.go``."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    for epoch, row in enumerate(_results(config), start=1):
        (Path(folder) / f"{trial_id}.{epoch}.wait").touch()
        go = Path(folder) / f"{trial_id}.{epoch}.go"
        deadline = time.monotonic() + 60.0
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{trial_id}: epoch {epoch} was never released")
            time.sleep(0.005)
        tune.report({**row, "epoch": epoch})


def _clock_callback(folder: Path, seconds):
    """A Tune callback that runs the live search on the simulator's clock.

    Live Tune at two trials at once is not repeatable by itself: its controller handles one
    event per step, whichever future ``ray.wait`` returns first among all of them, shuffled
    with Python's unseeded ``random`` first (``ray/air/execution/_internal/actor_manager.py``,
    ``RayActorManager.next``), and how long a trial takes to start (a reused actor's reset, a
    new worker) varies from run to run. Two results due at nearly the same time are then handled
    in either order, and the searcher and ASHA decide differently.

    This clock takes both out. Each epoch of a trial lasts its configuration's fixed seconds
    (``seconds``), in simulated time: a trial's first epoch starts at the simulated time of the
    result after which Tune started it. The clock releases one result at a time, the one due
    first (ties to the epoch that started first), and only when Tune is idle: the last released
    result has been handled, no trial is pending, every running trial waits for the clock, and
    nothing changed for a whole step of the controller (each step first asks the searcher for
    trials, so it has been asked after the last result). What Tune does with each result (the
    scheduler's decision, the searcher's records, starting and stopping trials) is its own.
    """
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    class Clock(Callback):
        def __init__(self) -> None:
            self.now = 0.0
            self.order = 0
            self.due: dict[str, tuple[float, int, int]] = {}  # trial -> (time, order, epoch)
            self.released: tuple[str, int] | None = None
            self.last_released: str | None = None
            self.previous: tuple | None = None
            self.sequence: list[tuple[float, tuple, int]] = []
            self.most_live = 0

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if self.released == (trial.trial_id, int(result["epoch"])):
                self.released = None

        def on_step_end(self, iteration, trials, **info) -> None:
            state = tuple((t.trial_id, t.status, _epochs_of(t)) for t in trials)
            stable, self.previous = state == self.previous, state
            live = [t for t in trials if t.status in (Trial.PENDING, Trial.RUNNING)]
            waiting = all(
                t.status == Trial.RUNNING
                and (folder / f"{t.trial_id}.{_epochs_of(t) + 1}.wait").exists()
                for t in live
            )
            if self.released is not None or not stable or not live or not waiting:
                return
            self.most_live = max(self.most_live, len(live))
            # The epochs that start now, in the simulator's order: the trial whose result was
            # handled last goes on first, then the trials Tune started after it, in order.
            starting = sorted(
                (t for t in live if t.trial_id not in self.due),
                key=lambda t: (t.trial_id != self.last_released, trials.index(t)),
            )
            for trial in starting:
                epoch = _epochs_of(trial) + 1
                self.due[trial.trial_id] = (self.now + seconds(trial.config), self.order, epoch)
                self.order += 1
            trial_id = min(self.due, key=lambda k: self.due[k][:2])
            when, _, epoch = self.due.pop(trial_id)
            trial = next(t for t in live if t.trial_id == trial_id)
            self.now, self.released, self.last_released = when, (trial_id, epoch), trial_id
            self.sequence.append((when, _config_key(trial.config), epoch))
            (folder / f"{trial_id}.{epoch}.go").touch()

    return Clock()


def _epochs_of(trial) -> int:
    return int((trial.last_result or {}).get("epoch", 0) or 0)


def _config_key(config) -> tuple:
    return (float(config["lr"]), config["optimizer"])


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_simulate_makes_the_decisions_of_a_real_tune_run_two_at_a_time(
    ray_local, tmp_path, algorithm
):
    """Two trials at once, as the benchmark replays searches, with every epoch lasting its
    configuration's fixed seconds on a clock that lets Tune handle one result at a time: the
    replay proposes the same configurations, stops the same trials at the same epochs, and
    tells Optuna the same, row for row."""
    from ray import tune

    from cxr_tune.search.scheduler import scheduler_for
    from cxr_tune.search.searcher import CellSearcher

    plan = _plan(algorithm, budget=30, concurrent=2)
    folder = tmp_path / "clock"
    folder.mkdir()
    clock = _clock_callback(folder, _seconds)
    tune_db = str(tmp_path / "tune.db")
    results = tune.Tuner(
        tune.with_resources(tune.with_parameters(_clocked_trial, folder=str(folder)), {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, tune_db),
            scheduler=scheduler_for(plan, study_db=tune_db),
            num_samples=plan.total_trials,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="replayed", storage_path=str(tmp_path), verbose=0, callbacks=[clock]
        ),
    ).fit()
    simulated_db = str(tmp_path / "simulated.db")
    replay = simulate(plan, simulated_db, _results, _seconds, max_concurrent=2)
    assert not results.errors
    assert clock.most_live == 2
    tune_rows, simulated_rows = _study_rows(tune_db), _study_rows(simulated_db)
    assert simulated_rows == tune_rows
    assert any(row[1] == TrialState.PRUNED for row in tune_rows)
    tune_epochs = sorted(
        ((r.config["lr"], r.config["optimizer"]), int(r.metrics["epoch"])) for r in results
    )
    simulated_epochs = sorted((_config_key(t.config), t.epochs) for t in replay.trials)
    assert simulated_epochs == tune_epochs
    # The results reached the decision code in the same order, at the same simulated times.
    configs = {t.trial_id: _config_key(t.config) for t in replay.trials}
    simulated_order = [(d.time, configs[d.trial_id], d.epoch) for d in replay.decisions]
    assert clock.sequence == simulated_order

"""ASHA's no-skill check: a trial whose validation loss is not below that of predicting the
training class frequencies is stopped at ``scheduler.no_skill_epoch``, before its rung."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from cxr_tune.config import PROFILES
from cxr_tune.engine import loss_function
from cxr_tune.errors import ConfigError
from cxr_tune.metrics import (
    NO_SKILL_KEY,
    NO_SKILL_MARGIN,
    TRAIN_NO_SKILL_KEY,
    learned_nothing,
    no_skill_loss,
)
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.search.scheduler import CellASHA, scheduler_for
from cxr_tune.spaces import parse_space

EPOCHS = 4
CHANCE = math.log(4)


def test_no_skill_loss_is_the_training_loss_of_a_constant_prediction_multiclass():
    rng = np.random.default_rng(0)
    train = rng.choice(4, size=500, p=[0.1, 0.2, 0.3, 0.4])
    val = rng.choice(4, size=120, p=[0.25, 0.25, 0.25, 0.25])
    counts = np.bincount(train, minlength=4) + 1.0
    logits = torch.log(torch.tensor(counts / counts.sum())).repeat(len(val), 1)
    expected = loss_function("multiclass")(logits, torch.as_tensor(val))
    assert no_skill_loss(train, val, "multiclass", 4) == pytest.approx(float(expected), rel=1e-6)


def test_no_skill_loss_is_the_training_loss_of_a_constant_prediction_multilabel():
    rng = np.random.default_rng(1)
    train = (rng.random((400, 3)) < [0.05, 0.3, 0.6]).astype(np.uint8)
    val = (rng.random((90, 3)) < [0.05, 0.3, 0.6]).astype(np.uint8)
    prevalence = (train.sum(axis=0) + 1.0) / (len(train) + 2.0)
    logits = torch.logit(torch.tensor(prevalence)).repeat(len(val), 1)
    expected = loss_function("multilabel")(logits, torch.as_tensor(val, dtype=torch.float64))
    assert no_skill_loss(train, val, "multilabel", 3) == pytest.approx(float(expected), rel=1e-6)


def test_no_skill_loss_is_finite_for_a_class_missing_from_training():
    train = np.array([0, 0, 1, 1, 2, 2])
    val = np.array([3, 0])
    assert math.isfinite(no_skill_loss(train, val, "multiclass", 4))
    # Balanced classes: the loss of a uniform guess, ln 4.
    assert no_skill_loss(np.arange(400) % 4, np.arange(40) % 4, "multiclass", 4) == pytest.approx(
        CHANCE
    )


@pytest.mark.parametrize(
    ("val_loss", "no_skill", "stopped"),
    [
        (CHANCE, CHANCE, True),
        (CHANCE * 1.05, CHANCE, True),  # worse than guessing
        (CHANCE * (1 - NO_SKILL_MARGIN / 2), CHANCE, True),  # within the margin: noise
        (CHANCE * (1 - 2 * NO_SKILL_MARGIN), CHANCE, False),
        (0.9, CHANCE, False),
        (None, CHANCE, False),  # nothing to compare: never stopped here
        (CHANCE, None, False),
        (math.nan, CHANCE, False),
    ],
)
def test_learned_nothing_on_validation_alone(val_loss, no_skill, stopped):
    assert learned_nothing({"val_loss": val_loss, NO_SKILL_KEY: no_skill}) is stopped


@pytest.mark.parametrize(
    ("train_loss", "stopped"),
    [
        (CHANCE, True),  # neither loss below chance: nothing learned
        (CHANCE * 1.2, True),
        (0.8 * CHANCE, False),  # fits its training data while validation lags: kept
        (math.nan, True),  # no usable training loss: validation decides
    ],
)
def test_learned_nothing_needs_the_training_loss_at_chance_too(train_loss, stopped):
    result = {
        "val_loss": 1.45,  # above chance, as a young batch-norm network's can be
        NO_SKILL_KEY: CHANCE,
        "train_loss": train_loss,
        TRAIN_NO_SKILL_KEY: CHANCE,
    }
    assert learned_nothing(result) is stopped


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.config = {"cell": "phantom/alexnet", "epochs": EPOCHS}


def _result(epoch: int, val_loss: float, train_loss: float = CHANCE) -> dict:
    return {
        "epoch": epoch,
        "status": "ok",
        "val_loss": val_loss,
        NO_SKILL_KEY: CHANCE,
        "train_loss": train_loss,
        TRAIN_NO_SKILL_KEY: CHANCE,
    }


def test_the_check_stops_at_its_epoch_only_and_the_rung_still_counts_the_trial():
    scheduler = CellASHA(
        metric="val_loss", mode="min", grace_period=2, reduction_factor=2, max_t=EPOCHS,
        no_skill_epoch=2,
    )  # fmt: skip
    flat, learner, worse = _Trial("flat"), _Trial("learner"), _Trial("worse")
    for trial in (flat, learner, worse):
        scheduler.on_trial_add(None, trial)
    # Epoch 1: no check yet, even for a loss above chance (first epochs can overshoot).
    assert scheduler.on_trial_result(None, flat, _result(1, 1.45)) == TrialScheduler.CONTINUE
    # Epoch 2, ASHA's first rung and the no-skill epoch: the flat trial is the first to reach
    # the rung, which plain ASHA would let through; the check stops it.
    assert scheduler.on_trial_result(None, flat, _result(2, CHANCE)) == TrialScheduler.STOP
    scheduler.on_trial_complete(None, flat, _result(2, CHANCE))
    assert scheduler.stopped_no_skill() == {"phantom/alexnet": 1}
    assert scheduler.stopped_early() == {"phantom/alexnet": 1}
    # The rung still counts it, as ASHA counts every trial that reached the rung: with
    # reduction factor 2, a learner better than the flat trial is in the top half and goes on,
    # and so does a second one between the two (the median of the flat and the first).
    assert scheduler.on_trial_result(None, learner, _result(2, 1.0, 1.0)) == (
        TrialScheduler.CONTINUE
    )
    assert scheduler.on_trial_result(None, worse, _result(2, 1.1, 1.0)) == (TrialScheduler.CONTINUE)
    assert scheduler.stopped_early() == {"phantom/alexnet": 1}
    # The check runs at its epoch only (ASHA's rungs judge from there): a result first seen
    # at epoch 3 (a trial resumed past epoch 2) meets an empty rung and goes on.
    fresh = CellASHA(
        metric="val_loss", mode="min", grace_period=2, reduction_factor=2, max_t=EPOCHS,
        no_skill_epoch=2,
    )  # fmt: skip
    late = _Trial("late")
    fresh.on_trial_add(None, late)
    assert fresh.on_trial_result(None, late, _result(3, CHANCE)) == TrialScheduler.CONTINUE
    assert fresh.stopped_no_skill() == {}


def test_without_the_check_a_flat_trial_passes_an_empty_rung():
    scheduler = CellASHA(
        metric="val_loss", mode="min", grace_period=2, reduction_factor=2, max_t=EPOCHS
    )
    flat = _Trial("flat")
    scheduler.on_trial_add(None, flat)
    assert scheduler.on_trial_result(None, flat, _result(2, CHANCE)) == TrialScheduler.CONTINUE


def _space(scheduler: dict, epochs: int = EPOCHS):
    return parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {"lr": {"loguniform": [1.0e-5, 1.0e-1]}},
            "fixed": {"epochs": epochs},
            "scheduler": scheduler,
        },
        source="no-skill.yaml",
    )


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ({"no_skill_epoch": -1}, "must be an integer >= 0"),
        ({"no_skill_epoch": 1.5}, "must be an integer >= 0"),
        ({"no_skill_epoch": True}, "must be an integer >= 0"),
        ({"name": "none", "no_skill_epoch": 2}, "needs `name: asha`"),
    ],
)
def test_bad_no_skill_epoch_names_file_and_key(scheduler, message):
    with pytest.raises(ConfigError) as error:
        _space(scheduler)
    assert "no-skill.yaml" in str(error.value)
    assert "scheduler.no_skill_epoch" in str(error.value) and message in str(error.value)


def test_plan_keeps_the_check_or_turns_it_off_with_a_note():
    plan = build_plan(_space({"no_skill_epoch": 2}), PROFILES["gpu"], ("phantom",), Overrides())
    assert plan.scheduler.no_skill_epoch == 2
    assert scheduler_for(plan)._no_skill_epoch == 2
    # A check at or after the last epoch cannot stop anything: off, and the plan says so.
    short = build_plan(
        _space({"no_skill_epoch": 3}, epochs=3), PROFILES["gpu"], ("phantom",), Overrides()
    )
    assert short.scheduler.no_skill_epoch == 0
    assert any("no-skill check at epoch 3" in note for note in short.notes)


def _flat_or_learning(config):
    """Trials with lr < 1e-3 never learn (their losses stay at chance); the others do, and
    at lr 1e-3 the validation loss lags above chance for two epochs while training learns."""
    import time

    from ray import tune

    learns, lags = config["lr"] >= 1.0e-3, config["lr"] == 1.0e-3
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(0.05)
        train_loss = CHANCE * (0.9**epoch if learns else 1.0 - 1e-4 * epoch)
        val_loss = CHANCE * 1.05 if lags and epoch <= 2 else train_loss
        tune.report(
            {
                "epoch": epoch,
                "status": "ok",
                "val_loss": val_loss,
                "train_loss": train_loss,
                "val_macro_f1": 0.6 - 0.05 / epoch if learns else 0.1,
                NO_SKILL_KEY: CHANCE,
                TRAIN_NO_SKILL_KEY: CHANCE,
            }
        )


@pytest.mark.integration
def test_a_tune_run_stops_flat_trials_at_the_no_skill_epoch(ray_local, tmp_path):
    from ray import tune

    from cxr_tune.search.searcher import CellSearcher

    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {"lr": {"choice": [1.0e-5, 1.0e-4, 3.0e-4, 1.0e-3, 1.0e-2]}},
            "fixed": {"epochs": EPOCHS},
            "search": {"algorithm": "grid", "num_samples": 1},
            # ASHA on F1, so that only the no-skill check can stop the lagging learner.
            "scheduler": {"grace_period": 1, "reduction_factor": 2, "no_skill_epoch": 2},
        },
        source="flat.yaml",
    )
    plan = build_plan(space, PROFILES["gpu"], ("phantom",), Overrides(max_concurrent=2))
    study_db = tmp_path / "optuna.db"
    results = tune.Tuner(
        tune.with_resources(_flat_or_learning, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, str(study_db)),
            scheduler=scheduler_for(plan),
            num_samples=plan.total_trials,
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(name="flat", storage_path=str(tmp_path), verbose=0),
    ).fit()
    last_epoch = {r.config["lr"]: int(r.metrics["epoch"]) for r in results}
    assert len(last_epoch) == 5
    # Every trial that never learned ended at the no-skill epoch, even those that reached an
    # empty rung first; the learners, the lagging one too, went past it.
    assert all(last_epoch[lr] == 2 for lr in (1.0e-5, 1.0e-4, 3.0e-4))
    assert last_epoch[1.0e-3] > 2 and last_epoch[1.0e-2] > 2
    study = optuna.load_study(study_name="phantom/alexnet", storage=f"sqlite:///{study_db}")
    flat = [t for t in study.trials if t.params["lr"] < 3]  # positions of the three low lrs
    assert len(flat) == 3
    assert all(
        t.state == TrialState.PRUNED and sorted(t.intermediate_values) == [1, 2] for t in flat
    )


class _Ended:
    """What the progress callback reads from a Tune trial that ended."""

    def __init__(self, trial_id: str, result: dict) -> None:
        self.trial_id = trial_id
        self.config = {"cell": "phantom/alexnet", "epochs": EPOCHS, "lr": 1e-5}
        self.last_result = result


def test_progress_says_why_a_trial_stopped(capsys):
    from cxr_tune.search.progress import ProgressLines

    progress = ProgressLines("val_macro_f1", no_skill_epoch=2)
    flat = _Ended("flat", _result(2, CHANCE))
    ranked = _Ended("ranked", _result(2, 1.2, 1.1))
    for trial in (flat, ranked):
        progress.on_trial_result(0, [], trial, {**trial.last_result, "val_macro_f1": 0.1})
        progress.on_trial_complete(0, [flat, ranked], trial)
    lines = capsys.readouterr().out.splitlines()
    flat_end, ranked_end = lines[1], lines[3]
    assert "flat" in flat_end and "stopped after epoch 2: it has learned nothing" in flat_end
    assert f"{CHANCE:.4f}" in flat_end
    assert "ranked" in ranked_end and "stopped early by ASHA after epoch 2" in ranked_end

"""CellSearcher without a Tune run: what it suggests and what Optuna is told."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from cxr_tune.config import PROFILES
from cxr_tune.search.plan import build_plan
from cxr_tune.search.searcher import CellSearcher, ended_cells, grid_points
from cxr_tune.spaces import load_space, parse_space


@pytest.fixture
def plan():
    space = load_space("ablation")
    return build_plan(space, PROFILES["cpu"], ("phantom",), cpu_count=2)


@pytest.fixture
def searcher(plan, tmp_path):
    return CellSearcher(plan, str(tmp_path / "optuna.db"))


def _study(searcher, cell):
    return optuna.load_study(study_name=cell, storage=f"sqlite:///{searcher.study_db}")


def test_suggestions_deal_cells_round_robin_and_start_with_the_papers_points(searcher, plan):
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [c["cell"] for c in configs] == [
        "phantom/alexnet",
        "phantom/vgg11",
        "phantom/resnet50",
    ] * 2
    first = configs[0]
    assert (first["lr"], first["batch_size"], first["optimizer"]) == (1e-4, 32, "adam")
    assert first["epochs"] == 3 and first["image_size"] == 64 and first["dataset"] == "phantom"


def test_conditional_weight_decay_only_for_sgd(searcher):
    configs = [searcher.suggest(f"t{i}") for i in range(18)]
    assert any(c["optimizer"] == "sgd" for c in configs)
    study = _study(searcher, "phantom/alexnet")
    for trial in study.trials:
        sampled_wd = "weight_decay" in trial.params
        assert sampled_wd == (trial.params["optimizer"] == "sgd")
    sgd_paper = [
        c for c in configs if c["optimizer"] == "sgd" and c["lr"] == 1e-4 and c["batch_size"] == 32
    ]
    assert sgd_paper and sgd_paper[0]["weight_decay"] == 0.5


def test_finishes_after_num_samples_per_cell(searcher, plan):
    for i in range(plan.total_trials):
        assert isinstance(searcher.suggest(f"t{i}"), dict)
    assert searcher.suggest("extra") == CellSearcher.FINISHED
    assert set(ended_cells(searcher.study_db).values()) == {"all trials dealt"}
    assert set(ended_cells(searcher.study_db)) == {cell.id for cell in plan.cells}


def test_early_stopped_trial_reaches_optuna_as_pruned_with_its_epochs(searcher):
    config = searcher.suggest("t0")
    searcher.on_trial_result("t0", {"epoch": 1, "val_macro_f1": 0.31, "status": "ok"})
    searcher.on_trial_complete("t0", {"epoch": 1, "val_macro_f1": 0.31, "status": "ok"})
    trial = _study(searcher, config["cell"]).trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.31}
    assert trial.user_attrs["outcome"] == "stopped_early"


def test_trial_that_trained_every_epoch_is_complete(searcher):
    config = searcher.suggest("t0")
    for epoch, value in enumerate([0.2, 0.4, 0.5], start=1):
        searcher.on_trial_result("t0", {"epoch": epoch, "val_macro_f1": value, "status": "ok"})
    searcher.on_trial_complete("t0", {"epoch": 3, "val_macro_f1": 0.5, "status": "ok"})
    trial = _study(searcher, config["cell"]).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5
    assert trial.intermediate_values == {1: 0.2, 2: 0.4, 3: 0.5}


def test_diverged_trial_is_pruned_at_the_worst_value_so_tpe_avoids_it(searcher):
    config = searcher.suggest("t0")
    searcher.on_trial_result("t0", {"epoch": 1, "val_macro_f1": 0.3, "status": "ok"})
    searcher.on_trial_complete(
        "t0",
        {
            "epoch": 2,
            "status": "diverged",
            "val_macro_f1": float("nan"),
            "failure_reason": "training loss became nan",
        },
    )
    trial = _study(searcher, config["cell"]).trials[0]
    assert trial.state == TrialState.PRUNED and trial.value == 0.0
    assert trial.intermediate_values == {1: 0.3, 2: 0.0}
    assert trial.user_attrs["outcome"] == "diverged"
    assert "training loss became nan" in trial.user_attrs["failure_reason"]


@pytest.mark.parametrize(
    ("result", "error", "reason"),
    [
        (
            {"epoch": 1, "status": "failed", "failure_reason": "out of memory: CUDA"},
            False,
            "out of memory: CUDA",
        ),
        (None, True, "the trial raised an error"),
    ],
)
def test_failed_trials_are_fail_with_the_reason(searcher, result, error, reason):
    config = searcher.suggest("t0")
    searcher.on_trial_complete("t0", result, error=error)
    trial = _study(searcher, config["cell"]).trials[0]
    assert trial.state == TrialState.FAIL
    assert reason in trial.user_attrs["failure_reason"]


def test_save_and_restore_keep_the_history(searcher, plan, tmp_path):
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"epoch": 3, "val_macro_f1": 0.5, "status": "ok"})
    searcher.suggest("t1")  # still running when the driver stops
    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))
    # Another machine: the live study file is gone, the checkpoint brings it back there.
    restored = CellSearcher(plan, "the-starting-run.db")
    restored.use_study_db(str(tmp_path / "elsewhere" / "optuna.db"))
    restored.restore(str(checkpoint))
    assert (tmp_path / "elsewhere" / "optuna.db").is_file()
    restored.on_trial_complete("t1", {"epoch": 3, "val_macro_f1": 0.6, "status": "ok"})
    trials = _study(restored, "phantom/alexnet").trials + _study(restored, "phantom/vgg11").trials
    assert sorted(t.value for t in trials if t.state == TrialState.COMPLETE) == [0.5, 0.6]
    assert restored.suggest("t2")["cell"] == "phantom/resnet50"


def test_orphans_of_a_killed_driver_are_failed_on_restore(searcher, plan, tmp_path):
    searcher.suggest("t0")
    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))
    searcher.suggest("t1")  # asked after the last checkpoint: Ray will never run it
    restored = CellSearcher(plan, searcher.study_db)
    restored.restore(str(checkpoint))
    lost = _study(restored, "phantom/vgg11").trials[0]
    assert lost.state == TrialState.FAIL and "driver stopped" in lost.user_attrs["failure_reason"]
    assert _study(restored, "phantom/alexnet").trials[0].state == TrialState.RUNNING


def test_a_point_queued_but_never_asked_is_failed_on_restore(searcher, plan, tmp_path):
    for i in range(3):  # one trial per cell
        searcher.suggest(f"t{i}")
    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))
    # A driver killed between queueing a cell's next point and asking for it.
    _study(searcher, "phantom/alexnet").enqueue_trial({"lr": 0.05, "batch_size": 8})
    restored = CellSearcher(plan, searcher.study_db)
    restored.restore(str(checkpoint))
    assert _study(restored, "phantom/alexnet").trials[1].state == TrialState.FAIL
    config = restored.suggest("t3")
    # The stale point is not handed out: the cell's second trial is the paper's second point.
    assert config["cell"] == "phantom/alexnet"
    assert (config["lr"], config["batch_size"], config["optimizer"]) == (0.1, 32, "adam")


def test_grid_enumerates_choices_and_repeats_with_new_seeds(tmp_path):
    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {
                "optimizer": {"choice": ["adam", "sgd"]},
                "batch_size": {"choice": [16, 32]},
            },
            "search": {"algorithm": "grid", "num_samples": 2},
            "scheduler": {"name": "none"},
        },
        source="grid.yaml",
    )
    plan = build_plan(space, PROFILES["gpu"], ("phantom",))
    assert plan.total_trials == 8
    assert len(grid_points(space.params)) == 4
    searcher = CellSearcher(plan, str(tmp_path / "optuna.db"))
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    assert searcher.suggest("t8") == CellSearcher.FINISHED
    points = [(c["optimizer"], c["batch_size"], c["seed"]) for c in configs]
    grid = [(p["optimizer"], p["batch_size"]) for p in grid_points(space.params)]
    # Grid order, then the same grid again with the next seed.
    assert points == [(*p, 0) for p in grid] + [(*p, 1) for p in grid]


def test_searcher_pickles_without_database_handles(searcher):
    import pickle

    searcher.suggest("t0")
    clone = pickle.loads(pickle.dumps(searcher))
    assert clone._studies == {} and clone._trials == searcher._trials


def _choices_plan(algorithm: str, num_samples: int):
    space = parse_space(
        {
            "cells": {"model": ["alexnet"]},
            "params": {
                "lr": {"choice": [1e-4, 1e-3, 1e-2]},
                "optimizer": {"choice": ["adam", "sgd"]},
            },
            "search": {"algorithm": algorithm, "num_samples": num_samples, "seed": 3},
        },
        source="choices.yaml",
    )
    return build_plan(space, PROFILES["gpu"], ("phantom",))


@pytest.mark.parametrize("algorithm", ["optuna", "random"])
def test_no_configuration_is_trained_twice_and_a_used_up_cell_ends(tmp_path, algorithm):
    plan = _choices_plan(algorithm, num_samples=10)
    searcher = CellSearcher(plan, str(tmp_path / "optuna.db"))
    configs = []
    for i in range(7):
        config = searcher.suggest(f"t{i}")
        if config == CellSearcher.FINISHED:
            break
        configs.append(config)
        # One point is far better than the rest, so TPE keeps proposing it.
        value = 0.9 if (config["lr"], config["optimizer"]) == (1e-3, "adam") else 0.1
        result = {"epoch": config["epochs"], "val_macro_f1": value, "status": "ok"}
        searcher.on_trial_result(f"t{i}", result)
        searcher.on_trial_complete(f"t{i}", result)
    points = [(c["lr"], c["optimizer"]) for c in configs]
    # The 6 configurations of the space, each once; then the cell has nothing left.
    assert sorted(points) == sorted((lr, o) for lr in (1e-4, 1e-3, 1e-2) for o in ("adam", "sgd"))
    assert searcher.suggest("t-last") == CellSearcher.FINISHED
    # The study says the cell ended (so the run is not taken for an interrupted one).
    assert ended_cells(searcher.study_db) == {"phantom/alexnet": "every configuration tried"}
    trials = _study(searcher, "phantom/alexnet").trials
    repeats = [t for t in trials if t.state == TrialState.FAIL]
    assert repeats, "the samplers proposed no configuration twice: the test shows nothing"
    for repeat in repeats:
        assert repeat.user_attrs["outcome"] == "repeat"
        assert trials[repeat.user_attrs["repeat_of"]].params == repeat.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6


def test_untried_point_of_a_continuous_space_is_new(plan):
    from cxr_tune.search.searcher import _key, _untried_point

    first = _untried_point(plan.params, set(), "0|a")
    assert first is not None and 1e-5 <= first["lr"] <= 1e-1
    assert _untried_point(plan.params, set(), "0|a") == first  # reproducible from its salt
    again = _untried_point(plan.params, {_key(first)}, "0|a")
    assert again is not None and again != first


def test_numeric_choices_reach_optuna_as_ordered_positions(searcher, plan):
    from cxr_tune.search.searcher import from_optuna, is_ordinal

    assert is_ordinal(plan.params["batch_size"]) and not is_ordinal(plan.params["optimizer"])
    for i in range(12):
        searcher.suggest(f"t{i}")
    study = _study(searcher, "phantom/alexnet")
    assert study.user_attrs["ordinal_choices"]["batch_size"] == [8, 16, 32, 64, 128]
    assert len(study.trials) == 4
    for trial in study.trials:
        config = trial.user_attrs["config"]  # what the trial trained with
        # Optuna holds the position (an ordered integer domain), the trial gets the value.
        assert trial.params["batch_size"] == [8, 16, 32, 64, 128].index(config["batch_size"])
        assert trial.distributions["batch_size"].high == 4
        assert from_optuna(trial.params, plan.params) == {k: config[k] for k in trial.params}

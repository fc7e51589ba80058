"""Real searches with the real trainable on tiny phantom data (integration: Ray + training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cxr_tune.config import PROFILES, DataSource
from cxr_tune.metrics import NO_SKILL_KEY, TRAIN_NO_SKILL_KEY, no_skill_loss
from cxr_tune.search import runner as runner_module
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.search.runner import SearchRequest, run_search
from cxr_tune.spaces import load_space
from cxr_tune.storage import Storage

pytestmark = pytest.mark.integration


def _results(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for trial in sorted(p for p in folder.iterdir() if (p / "result.json").exists()):
        out[trial.name] = [
            json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line
        ]
    return out


@pytest.fixture(scope="module")
def diverging_run(ray_local, tmp_path_factory, monkeypatch_module):
    """Two trials of one cell, one with a learning rate that makes the loss NaN at once."""
    folder = tmp_path_factory.mktemp("diverging")
    space_file = folder / "diverge.yaml"
    space_file.write_text(
        yaml.safe_dump(
            {
                "name": "diverge",
                "cells": {"model": ["alexnet"]},
                "params": {"lr": {"choice": [1.0e-3, 1.0e3]}},
                # Every epoch checkpointed (the smoke profile keeps the final one only), so that
                # the retention of ended trials has an earlier checkpoint to remove.
                "fixed": {"epochs": 2, "batch_size": 16, "image_size": 64, "checkpoint_every": 1},
                "search": {"algorithm": "grid", "num_samples": 1, "max_concurrent": 2},
                "scheduler": {"name": "none"},
                "evaluation": {"seeds": 1, "bootstrap": 200},
            }
        )
    )
    plan = build_plan(load_space(str(space_file)), PROFILES["smoke"], ("phantom",), Overrides())
    seen: dict[str, object] = {}
    original = runner_module.build_tuner

    def spy(request, data, study_db, *rest):
        seen["data"] = dict(data)
        tuner = original(request, data, study_db, *rest)
        config = tuner._local_tuner._tune_config
        seen["study_dbs"] = (config.search_alg.study_db, config.scheduler.study_db)
        return tuner

    monkeypatch_module.setattr(runner_module, "build_tuner", spy)
    request = SearchRequest(
        plan=plan,
        sources=(DataSource("phantom", None),),
        dataset_names=("phantom",),
        dataset_keys=("phantom",),
        storage=Storage.parse(str(folder / "results")),
        name="diverge",
    )
    lines: list[str] = []
    outcome = run_search(request, echo=lines.append)
    return outcome, seen, Path(outcome.experiment), lines


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_diverged_trial_is_recorded_and_the_search_finishes(diverging_run):
    outcome, _, folder, _ = diverging_run
    assert outcome.states["diverged"] == 1 and outcome.states["completed"] == 1
    results = _results(folder)
    diverged = [r for r in results.values() if r[-1]["status"] == "diverged"]
    assert len(diverged) == 1
    assert (
        diverged[0][-1]["epoch"] == 1
        and "training loss became nan" in diverged[0][-1]["failure_reason"]
    )
    report = (folder / "report.md").read_text()
    assert "diverged" in report and "training loss became nan" in report


def test_trials_never_receive_the_test_split(diverging_run):
    _, seen, folder, _ = diverging_run
    data = seen["data"]
    assert data and all(set(arrays.splits) == {"train", "val"} for arrays in data.values())
    # Only the final evaluation scored the test split, after the search.
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["split"] == "test"
    test_size = json.loads((folder / "cxr_tune.json").read_text())["datasets"][0]["sizes"]["test"]
    assert all(
        len(run["predictions"]) == test_size for e in evaluation["entries"] for run in e["runs"]
    )
    assert not any(
        key.startswith("test_") for rows in _results(folder).values() for row in rows for key in row
    )


def test_every_trial_records_hashes_versions_and_config(diverging_run):
    _, seen, folder, _ = diverging_run
    record = json.loads((folder / "cxr_tune.json").read_text())
    dataset = record["datasets"][0]
    arrays = seen["data"]["phantom"]
    train = arrays.split("train").labels
    no_skill = no_skill_loss(train, arrays.split("val").labels, arrays.task, arrays.num_classes)
    train_no_skill = no_skill_loss(train, train, arrays.task, arrays.num_classes)
    for rows in _results(folder).values():
        completed = [r for r in rows if r["status"] == "ok"]
        for row in completed:
            assert (
                row["dataset_hash"] == dataset["dataset_hash"]
                and row["split_hash"] == dataset["split_hash"]
            )
            assert {"torch", "torchvision", "ray", "optuna"} <= set(row["versions"])
            # What ASHA's no-skill check compares the validation loss with.
            assert row[NO_SKILL_KEY] == pytest.approx(no_skill)
            assert row[TRAIN_NO_SKILL_KEY] == pytest.approx(train_no_skill)
            assert (
                row["config"]["seed"] == record["seed"]
                and row["config"]["cell"] == "phantom/alexnet"
            )


def test_tensorboard_events_per_trial_and_checkpoints_slimmed_when_trials_end(diverging_run):
    _, _, folder, _ = diverging_run
    trials = [p for p in folder.iterdir() if (p / "params.json").exists()]
    assert len(trials) == 2
    for trial in trials:
        assert list(trial.glob("events.out.tfevents.*")), f"no TensorBoard events in {trial.name}"
    completed = [
        t
        for t in trials
        if json.loads((t / "result.json").read_text().splitlines()[-1])["status"] == "ok"
    ]
    (diverged,) = [t for t in trials if t not in completed]
    # A finished trial keeps its final weights only; a diverged one keeps nothing.
    assert [p.name for p in completed[0].glob("checkpoint_*")] == ["checkpoint_000001"]
    state = torch.load(completed[0] / "checkpoint_000001" / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["optimizer"] is None and state["model"]
    assert not list(diverged.glob("checkpoint_*"))


def test_evaluation_on_demand_reuses_the_checkpoint_and_retrains_other_seeds(diverging_run):
    from cxr_tune.evaluation.evaluate import evaluate_experiment
    from cxr_tune.experiment import load_experiment

    _, _, folder, _ = diverging_run
    experiment = load_experiment(folder)
    result = evaluate_experiment(experiment, seeds=2, echo=lambda _: None)
    assert experiment.evaluation is result  # a report written next sees it
    (entry,) = result["entries"]  # the diverged trial is no contender
    assert entry["config"]["lr"] == pytest.approx(1e-3)
    assert [run["source"] for run in entry["runs"]] == ["search checkpoint", "retrained"]
    assert [run["seed"] for run in entry["runs"]] == [0, 1]
    summary = entry["summary"]["macro_f1"]
    assert (
        len(summary["per_seed"]) == 2
        and summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    )
    assert sum(map(sum, entry["confusion"])) == 2 * len(result["targets"]["phantom"])


def test_a_seed_reproduces_its_search_trial(diverging_run):
    """Retraining the best configuration with its seed gives the trial's own final model."""
    from cxr_tune.evaluation.contenders import final_checkpoint
    from cxr_tune.evaluation.runs import evaluate_run
    from cxr_tune.evaluation.sources import reload_datasets
    from cxr_tune.experiment import load_experiment

    _, _, folder, _ = diverging_run
    experiment = load_experiment(folder)
    trial = experiment.best_trial("phantom/alexnet")
    dataset = reload_datasets(experiment)["phantom"]
    from_checkpoint = evaluate_run(trial.config, 0, dataset, str(final_checkpoint(trial)))
    retrained = evaluate_run(trial.config, 0, dataset, None)
    assert retrained["predictions"] == from_checkpoint["predictions"]


def test_the_study_location_is_handed_to_the_searcher_and_the_scheduler(diverging_run):
    outcome, seen, folder, _ = diverging_run
    # Passed to each, not through the environment, where it would outlive the run.
    assert seen["study_dbs"] == (str(folder / "optuna.db"), str(folder / "optuna.db"))

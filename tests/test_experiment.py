"""The loader on hand-written experiment folders: states, half-written trials, bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxr_tune.errors import DataError
from cxr_tune.experiment import latest_per_epoch, load_experiment, read_ray_statuses
from tests.report.builders import TrialSpec, ablation_trials, write_experiment


def test_load_experiment_classifies_every_outcome(tmp_path: Path) -> None:
    exp = load_experiment(write_experiment(tmp_path / "exp", ablation_trials()))
    states = {t.trial_id: t.state for t in exp.trials}
    assert states == {
        "a1": "completed",
        "a2": "completed",
        "a3": "stopped_early",
        "a4": "diverged",
        "b1": "completed",
        "b2": "failed",
    }
    assert exp.state_counts()["completed"] == 3
    assert not exp.interrupted


def test_load_experiment_reads_failure_reasons(tmp_path: Path) -> None:
    exp = load_experiment(write_experiment(tmp_path / "exp", ablation_trials()))
    reasons = {t.trial_id: t.failure_reason for t in exp.trials}
    assert "training loss became inf" in str(reasons["a4"])
    assert "out of memory" in str(reasons["b2"])
    assert reasons["a1"] is None


def test_load_experiment_marks_an_errored_trial_failed(tmp_path: Path) -> None:
    exp = load_experiment(
        write_experiment(tmp_path / "exp", [TrialSpec("e1", f1=(0.4,), end="error")])
    )
    assert exp.trials[0].state == "failed"
    assert exp.trials[0].failure_reason == "RuntimeError: worker died"


def test_load_experiment_reads_a_truncated_result_line(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1", f1=(0.4, 0.5))], finished=False)
    result = next(folder.glob("*-t1")) / "result.json"
    result.write_text(result.read_text() + '{"epoch": 3, "val_macro', encoding="utf-8")
    trial = load_experiment(folder).trials[0]
    assert [r["epoch"] for r in trial.results] == [1, 2]
    assert any("cut short" in p for p in trial.problems)


def test_load_experiment_takes_the_config_from_results_without_params(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1")])
    (next(folder.glob("*-t1")) / "params.json").unlink()
    trial = load_experiment(folder).trials[0]
    assert trial.cell == "covid19_radiography/alexnet"
    assert any("params.json is missing" in p for p in trial.problems)


def test_load_experiment_marks_running_trials_unfinished(tmp_path: Path) -> None:
    folder = write_experiment(
        tmp_path / "exp", [TrialSpec("r1", f1=(0.4,)), TrialSpec("r2", f1=(0.4,))]
    )
    state = {
        "trial_data": [
            [json.dumps({"trial_id": "r1", "status": "RUNNING"}), "{}"],
            [json.dumps({"trial_id": "r2", "status": "TERMINATED"}), "{}"],
        ]
    }
    (folder / "experiment_state-2026-01-01_10-00-00.json").write_text(json.dumps(state))
    exp = load_experiment(folder)
    assert {t.trial_id: t.state for t in exp.trials} == {"r1": "unfinished", "r2": "stopped_early"}
    assert exp.interrupted


def test_read_ray_statuses_ignores_an_unexpected_state_file(tmp_path: Path) -> None:
    (tmp_path / "experiment_state-x.json").write_text('{"trial_data": [["not json"]]}')
    assert read_ray_statuses(tmp_path) == {}


def test_load_experiment_rejects_a_folder_without_an_experiment(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="is not a cxr_tune experiment"):
        load_experiment(tmp_path)


def test_load_experiment_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_experiment(tmp_path / "nowhere")


def test_load_experiment_reads_a_record_without_trials(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [])
    exp = load_experiment(folder)
    assert exp.trials == [] and exp.record["name"] == "mini"


def test_an_epoch_reported_again_after_a_restart_counts_once() -> None:
    rows = [{"epoch": 1, "v": 0.1}, {"epoch": 2, "v": 0.2}, {"epoch": 1, "v": 0.3}]
    assert latest_per_epoch(rows) == [{"epoch": 1, "v": 0.3}, {"epoch": 2, "v": 0.2}]

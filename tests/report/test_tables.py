"""Frames and figures computed from hand-written experiments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cxr_tune.experiment import Experiment, load_experiment
from cxr_tune.report.tables import (
    best_trials,
    compute_used,
    early_stopping_savings,
    efficiency_frame,
    failures_frame,
    paper_frame,
    trials_frame,
)
from tests.report.builders import ablation_evaluation, ablation_trials, write_experiment


@pytest.fixture
def exp(tmp_path: Path) -> Experiment:
    folder = write_experiment(tmp_path / "exp", ablation_trials(), evaluation=ablation_evaluation())
    return load_experiment(folder)


def test_trials_frame_has_one_row_per_trial_with_results(exp: Experiment) -> None:
    frame = trials_frame(exp).set_index("trial_id")
    assert len(frame) == len(exp.trials) == 6
    assert frame.loc["a1", "final_val_macro_f1"] == pytest.approx(0.80)
    assert frame.loc["a1", "best_val_macro_f1"] == pytest.approx(0.80)
    assert frame.loc["a3", "epochs_done"] == 1 and frame.loc["a3", "epochs_planned"] == 2
    assert frame.loc["a3", "state"] == "stopped_early"
    assert "inf" in frame.loc["a4", "failure_reason"]
    assert frame.loc["b2", "batch_size"] == 64
    assert frame.loc["a1", "node"] == "node-a"
    assert frame.loc["a1", "time_total_s"] == pytest.approx(20.0)


def test_compute_used_weights_trial_time_by_the_cell_resources(exp: Experiment) -> None:
    used = compute_used(exp)
    total = sum(t.time_total_s() for t in exp.trials)
    assert used.trial_seconds == pytest.approx(total)
    assert used.gpu_seconds == pytest.approx(total * 0.5)
    assert used.cpu_seconds == pytest.approx(total * 2.0)
    assert used.wall_seconds == 3600.0 and used.wall_is_final
    assert used.evaluation_seconds == pytest.approx(3 * 42.0)


def test_compute_used_measures_wall_time_so_far_when_unfinished(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", ablation_trials(), finished=False)
    record = json.loads((folder / "cxr_tune.json").read_text())
    started = record["started_at"]
    used = compute_used(load_experiment(folder))
    assert not used.wall_is_final
    assert math.isfinite(used.wall_seconds) and started


def test_early_stopping_savings_count_asha_stops_only(exp: Experiment) -> None:
    savings = early_stopping_savings(exp)
    assert savings.stopped_early == 1 and savings.saved_by_asha == 1
    assert savings.saved_seconds == pytest.approx(10.0)
    assert savings.planned == 12
    assert savings.trained == 2 + 2 + 1 + 2 + 2 + 2
    assert savings.ended_on_their_own == 0


def test_efficiency_frame_best_so_far_never_decreases(exp: Experiment) -> None:
    frame = efficiency_frame(exp)
    for _, rows in frame.groupby("cell"):
        best = rows["best_so_far"].dropna().tolist()
        assert best == sorted(best)
        assert rows["trial_seconds"].is_monotonic_increasing
    covid = frame[frame["cell"] == "covid19_radiography/alexnet"]
    assert covid["best_so_far"].iloc[-1] == pytest.approx(0.80)


def test_paper_frame_puts_the_paper_beside_ours(exp: Experiment) -> None:
    frame = paper_frame(exp, "macro_f1").set_index("cell")
    covid = frame.loc["covid19_radiography/alexnet"]
    assert covid["dataset"] == "Dataset 1 (covid19_radiography)"
    assert covid["architecture"] == "AlexNet"
    assert covid["paper"] == pytest.approx(0.9152)
    assert covid["difference"] == pytest.approx(0.81 - 0.9152)
    assert (covid["ci_low"], covid["ci_high"]) == pytest.approx((0.76, 0.86))
    assert math.isnan(frame.loc["phantom/resnet50", "paper"])


def test_paper_frame_gives_accuracy_in_percent(exp: Experiment) -> None:
    frame = paper_frame(exp, "accuracy", percent=True).set_index("cell")
    assert frame.loc["covid19_radiography/alexnet", "ours"] == pytest.approx(90.0)
    assert frame.loc["covid19_radiography/alexnet", "difference"] == pytest.approx(90.0 - 91.51)


def test_best_trials_follow_the_evaluation(exp: Experiment) -> None:
    best = best_trials(exp)
    assert best["covid19_radiography/alexnet"].trial_id == "a1"
    assert best["phantom/resnet50"].trial_id == "b1"


def test_failures_frame_lists_diverged_and_failed_trials(exp: Experiment) -> None:
    frame = failures_frame(exp).set_index("trial_id")
    assert sorted(frame.index) == ["a4", "b2"]
    assert frame.loc["a4", "state"] == "diverged" and frame.loc["a4", "epoch"] == 2
    assert "lr=0.1" in frame.loc["a4", "config"]

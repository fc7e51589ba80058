"""Trials that go wrong inside a real search: one diverges, one runs out of memory, one raises.
The search goes on, exits 0, says how many trials failed, and its report names each reason.
Also the search-level bad input that needs the data or the cluster to be seen."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_tune.experiment import load_experiment
from tests.adversarial.conftest import assert_no_files, assert_user_error, call_main, command
from tests.adversarial.faults import OOM_BATCH, RAISE_BATCH, RAISED
from tests.conftest import repo_root

pytestmark = pytest.mark.integration
search_main = command("search")

FAULTS_SPACE = f"""
name: faults
cells: {{model: [alexnet]}}
params:
  batch_size: {{choice: [8, {RAISE_BATCH}, {OOM_BATCH}]}}
  lr: {{choice: [1.0e-3, 1.0e+4]}}
fixed: {{epochs: 1, image_size: 64, optimizer: sgd, augment: none}}
search: {{algorithm: grid, num_samples: 1, max_concurrent: 2, seed: 0}}
scheduler: {{name: none}}
"""


@pytest.fixture(scope="module")
def ray_with_faults() -> Iterator[None]:
    """A local Ray whose trial workers carry the planted faults (see ``faults.py``)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONPATH": str(repo_root())}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": env,
            "worker_process_setup_hook": "tests.adversarial.faults.install",
        },
    )
    try:
        yield
    finally:
        ray.shutdown()


def write_space(folder: Path, text: str) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_failing_trials_are_counted_and_named_and_the_search_goes_on(
    ray_with_faults: None, capsys, tmp_path: Path
) -> None:
    storage = tmp_path / "results"
    outcome = call_main(
        search_main, capsys, "--space", write_space(tmp_path, FAULTS_SPACE),
        "--profile", "smoke", "--storage", storage, "--name", "faults", "--no-eval",
    )  # fmt: skip
    assert outcome.code == 0, outcome.out[-3000:] + outcome.err[-3000:]
    assert "Traceback" not in outcome.err
    assert "note: 5 of 6 trials failed or diverged; see the report." in outcome.out
    experiment = load_experiment(storage / "faults")
    by_setting = {(t.config["batch_size"], t.config["lr"]): t for t in experiment.trials}
    assert len(by_setting) == 6
    assert by_setting[(8, 1e-3)].state == "completed"
    assert by_setting[(8, 1e4)].state == "diverged"
    assert "training loss became" in by_setting[(8, 1e4)].failure_reason
    for lr in (1e-3, 1e4):
        oom = by_setting[(OOM_BATCH, lr)]
        assert oom.state == "failed" and oom.failure_reason.startswith("out of memory")
        raised = by_setting[(RAISE_BATCH, lr)]
        assert raised.state == "failed" and RAISED in raised.failure_reason
    report = (storage / "faults" / "report.md").read_text()
    assert RAISED in report and "out of memory" in report and "training loss became" in report


def test_batch_size_larger_than_the_training_split(
    ray_with_faults: None, capsys, tmp_path: Path
) -> None:
    space = "cells: {model: [alexnet]}\nfixed: {epochs: 1, batch_size: 500}\n"
    outcome = call_main(
        search_main, capsys, "--space", write_space(tmp_path, space), "--profile", "smoke",
        "--storage", tmp_path / "results", "--name", "big", "--no-eval",
    )  # fmt: skip
    assert_user_error(
        outcome, "space.yaml: fixed.batch_size: the batch size 500 is larger than the", "phantom"
    )
    assert_no_files(tmp_path / "results")


def test_gpu_profile_without_gpus_fails_at_once(
    ray_with_faults: None, capsys, tmp_path: Path
) -> None:
    started = time.monotonic()
    outcome = call_main(
        search_main, capsys, "--space", "smoke", "--profile", "gpu",
        "--storage", tmp_path / "results", "--name", "gpu", "--no-eval",
    )  # fmt: skip
    assert_user_error(outcome, "--profile gpu: the cluster has no GPU", "--profile full")
    assert time.monotonic() - started < 60
    assert_no_files(tmp_path / "results")
    assert os.environ.get("CXR_TUNE_STUDY_DB") is None

"""Expensive artefacts that many tests read, built once per test run (the session fixtures in
``tests/conftest.py`` call these).

The finished smoke experiment is the main job as a user runs it, shrunk: the command line in a
subprocess, its own local Ray, search, evaluation and report. Tests of the report, the command
line, security and the evaluation read it; none of them changes it (a test that must write into
an experiment works on a copy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Planted in the finished search's environment: none may reach its files or its output
# (tests/test_security.py).
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-5f1c9e",
    "AWS_SESSION_TOKEN": "aws-session-77ab02",
    "HF_TOKEN": "hf_token_c0ffee42",
    "WANDB_API_KEY": "wandb-key-9d3e1a",
}
SMOKE_SEARCH = [sys.executable, "-m", "cxr_tune.search", "--space", "smoke", "--profile", "smoke"]
SMOKE_TRIALS = 4


@dataclass(frozen=True)
class FinishedSearch:
    """A search run to its end: its experiment folder and what the command printed."""

    folder: Path
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_finished_search(base: Path) -> FinishedSearch:
    """``python -m cxr_tune.search --space smoke --profile smoke --num-samples 4`` into ``base``,
    with secrets in its environment and a private decoded-data cache."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="cxrfin", dir="/tmp"))  # Ray's sockets: a short path
    env = {
        **os.environ,
        **SECRETS,
        "PYTHONPATH": str(REPO),
        "CXR_TUNE_CACHE": str(base / "cache"),
        "RAY_TMPDIR": str(ray_tmp),
    }
    command = [
        *SMOKE_SEARCH,
        *("--num-samples", str(SMOKE_TRIALS), "--storage", str(base / "results"), "--name", "done"),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=900, cwd=REPO
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return FinishedSearch(base / "results" / "done", done.stdout, done.stderr)


def drop_checkpoint_weights(experiment: Path) -> None:
    """Smoke checkpoints weigh ~0.7 GB each; tests only need to see that they exist."""
    for state in experiment.glob("*/checkpoint_*/state.pt"):
        state.unlink()

"""A full disk while a trial writes its checkpoint: that trial fails with a clear reason, the
other trials and the search go on.

The disk is a real small file system (tmpfs, where the tests may mount one: as root) holding
the trials' temporary folder, where each checkpoint is written before Ray copies it to
storage. Elsewhere the trial workers get a file-size limit (RLIMIT_FSIZE) instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_tune.experiment import load_experiment
from tests.adversarial.conftest import call_main, command
from tests.adversarial.faults import FILE_SIZE_LIMIT_ENV
from tests.conftest import repo_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]
search_main = command("search")

# ResNet50's final checkpoint (~95 MB) fits; VGG11's (~530 MB) does not.
DISK_MB = 200
SPACE = """
name: disk
params: {model: {choice: [resnet50, vgg11]}}
fixed: {epochs: 1, image_size: 64, batch_size: 16, optimizer: sgd, augment: none}
search: {algorithm: grid, num_samples: 1, max_concurrent: 1, seed: 0}
scheduler: {name: none}
"""


def _mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk_ray() -> Iterator[str]:
    """A local Ray whose trial workers write checkpoints onto a disk of ``DISK_MB``."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    folder = Path(tempfile.mkdtemp(prefix="cxrdisk", dir="/tmp"))
    mounted = _mount_tmpfs(folder)
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONPATH": str(repo_root())}
    runtime_env: dict = {"env_vars": env}
    if mounted:
        env["TMPDIR"] = str(folder)
    else:
        env[FILE_SIZE_LIMIT_ENV] = str(DISK_MB * 1024 * 1024)
        runtime_env["worker_process_setup_hook"] = "tests.adversarial.faults.limit_file_size"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    try:
        yield "tmpfs" if mounted else "RLIMIT_FSIZE"
    finally:
        ray.shutdown()
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_full_disk_fails_the_trial_that_writes_and_the_search_goes_on(
    small_disk_ray: str, capsys, tmp_path: Path
) -> None:
    space = tmp_path / "disk.yaml"
    space.write_text(SPACE)
    storage = tmp_path / "results"
    outcome = call_main(
        search_main, capsys, "--space", space, "--profile", "smoke", "--storage", storage,
        "--name", "disk", "--no-eval",
    )  # fmt: skip
    assert outcome.code == 0, f"{small_disk_ray}: {outcome.out[-3000:]}{outcome.err[-3000:]}"
    assert "note: 1 of 2 trials failed or diverged" in outcome.out
    trials = {t.config["model"]: t for t in load_experiment(storage / "disk").trials}
    assert trials["resnet50"].state == "completed"
    assert trials["resnet50"].checkpoints(), "the trial that fitted lost its checkpoint"
    full = trials["vgg11"]
    assert full.state == "failed", (full.state, full.failure_reason)
    assert full.failure_reason.startswith("no room to write the checkpoint of epoch 1: ")
    expected = "No space left on device" if small_disk_ray == "tmpfs" else "File too large"
    assert expected in full.failure_reason
    assert "report: " in outcome.out

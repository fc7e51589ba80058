"""``data prepare`` stopped half-way (Ctrl-C, or killed): the caches built before stay usable,
nothing half-built is ever read, and the next run finishes with the same result as a run that
was never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.data.cache import open_cache
from tests.conftest import repo_root
from tests.data.builders import save_image

pytestmark = pytest.mark.slow

IMAGES_PER_CLASS = 300


def build(root: Path, start: int, count: int) -> None:
    for name in ("normal", "effusion"):
        for k in range(start, start + count):
            save_image(root / name / f"{k}.png", 10_000 * len(name) + k, size=(96, 96))


def data_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "cxr_tune.data", *map(str, args), "--image-size", "128"]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    return subprocess.run(data_command(*args), capture_output=True, text=True, env=env, timeout=600)


def inspect(root: Path, cache: Path) -> dict:
    done = run("inspect", root, "--json", "--workers", "1", "--cache-dir", cache)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()} if cache.is_dir() else set()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_prepare_keeps_old_caches_and_the_next_run_finishes(
    tmp_path: Path, sig: signal.Signals
) -> None:
    root, cache = tmp_path / "xr", tmp_path / "cache"
    build(root, 0, IMAGES_PER_CLASS)
    before = inspect(root, cache)
    old_cache = Path(before["cache"]["path"])
    old_files = {p.name: p.read_bytes() for p in old_cache.iterdir()}
    build(root, IMAGES_PER_CLASS, 20)  # the dataset grew: a new cache is due

    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    stopped = subprocess.Popen(
        data_command("prepare", root, "--workers", "1", "--cache-dir", cache),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while entries(cache) <= {old_cache.name} and stopped.poll() is None:
        assert time.monotonic() < deadline, "prepare never started writing"
        time.sleep(0.02)
    assert stopped.poll() is None, "prepare finished before it could be stopped"
    time.sleep(0.3)  # into the decoding
    stopped.send_signal(sig)
    out, err = stopped.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert stopped.returncode == 130, err
        lines = err.strip().splitlines()
        assert "Traceback" not in err and len(lines) == 1 and "interrupted" in lines[0], err
    else:
        assert stopped.returncode == -signal.SIGKILL

    # The cache built before is untouched and still what a search would load.
    assert {p.name: p.read_bytes() for p in old_cache.iterdir()} == old_files
    reopened = open_cache(old_cache)
    assert sum(reopened.sizes().values()) == 2 * IMAGES_PER_CLASS

    # The next run finishes, and its cache equals one built without interruption.
    finished = run("prepare", root, "--workers", "1", "--cache-dir", cache)
    assert finished.returncode == 0, finished.stderr
    after = inspect(root, cache)
    clean = inspect(root, tmp_path / "clean_cache")
    assert after["cache"]["built_now"] is False
    for key in ("dataset_hash", "sizes", "counts"):
        assert after[key] == clean[key], key
    assert after["split"]["hash"] == clean["split"]["hash"]
    resumed, fresh = (
        open_cache(Path(after["cache"]["path"])),
        open_cache(Path(clean["cache"]["path"])),
    )
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(resumed.split(split).images, fresh.split(split).images)
        np.testing.assert_array_equal(resumed.split(split).labels, fresh.split(split).labels)
    # Nothing half-built is left beside the two caches.
    assert entries(cache) == {old_cache.name, Path(after["cache"]["path"]).name}

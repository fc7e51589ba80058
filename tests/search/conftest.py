"""Multi-node Ray clusters in one process (``ray.cluster_utils.Cluster``) for the fault tests."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder under /tmp: Ray's unix socket paths must stay under ~100 characters."""
    folder = Path(tempfile.mkdtemp(prefix="cxr", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ray_cluster(
    request: pytest.FixtureRequest, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A head node (2 CPUs, or ``indirect`` param CPUs), stopped at the end; no driver joined."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp / "ray"))
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": getattr(request, "param", 2), "include_dashboard": False},
    )
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def read_results(trial_folder: Path) -> list[dict[str, Any]]:
    """The result lines of one trial (a half-written last line is skipped)."""
    path = trial_folder / "result.json"
    if not path.is_file():
        return []
    results = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return results


def trial_folders(experiment: Path) -> list[Path]:
    if not experiment.is_dir():
        return []
    return sorted(p for p in experiment.iterdir() if (p / "params.json").is_file())

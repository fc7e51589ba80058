"""Session-wide test settings: private caches, a shared local Ray runtime for integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep decoded-data caches and study scratch files out of the user's home."""
    base = tmp_path_factory.mktemp("cxr_tune_home")
    saved = {k: os.environ.get(k) for k in ("CXR_TUNE_CACHE", "CXR_TUNE_SCRATCH")}
    os.environ["CXR_TUNE_CACHE"] = str(base / "cache")
    os.environ["CXR_TUNE_SCRATCH"] = str(base / "scratch")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray runtime shared by a module's tests (searches then join it, not restart it)."""
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]

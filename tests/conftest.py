"""Session-wide test settings: private caches, a shared local Ray runtime for integration tests,
and the quick loop's guard: an unmarked test must take under 5 s.

``python -m pytest -m "not integration and not slow"`` is the loop a developer runs between
edits; it stays quick only if every test that starts Ray, trains or otherwise takes seconds
carries a marker. A test without ``integration`` or ``slow`` fails, naming the marker to add,
when it spends more than ``UNMARKED_LIMIT_S`` of CPU time itself (with the subprocesses it
waited for), or more than that in wall time scaled by how loaded the machine was (the 1-minute
load average per core, when above 1): a test that waits on other processes is caught on a quiet
machine, and a busy machine (CI's two cores shared with other work) does not fail a quick test.
``CXR_TUNE_UNMARKED_LIMIT_S`` changes the limit.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.experiments import FinishedSearch, drop_checkpoint_weights, run_finished_search

UNMARKED_LIMIT_S = float(os.environ.get("CXR_TUNE_UNMARKED_LIMIT_S", "5"))
LONG_MARKERS = ("integration", "slow")


def _cpu_seconds() -> float:
    """CPU time of this process and the subprocesses it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# Tests that share a session's artefact run in one xdist worker (``--dist loadgroup``), so that
# the artefact is built once, not once per worker.
SHARED_FIXTURES = ("finished_search", "ray_local")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The group marker is xdist's own: without the plugin, --strict-markers would refuse it.
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        shared = [name for name in SHARED_FIXTURES if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


def _load_per_core() -> float:
    """The 1-minute load average per CPU core (0 where the system does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def over_the_limit(wall_s: float, cpu_s: float, load_per_core: float) -> bool:
    """Whether an unmarked test took too long: its own CPU time, or its wall time beyond the
    limit scaled by the machine's load (a loaded machine stretches wall time, not CPU time)."""
    return cpu_s > UNMARKED_LIMIT_S or wall_s > UNMARKED_LIMIT_S * max(1.0, load_per_core)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    started, cpu, load = time.perf_counter(), _cpu_seconds(), _load_per_core()
    yield
    item.user_properties.append(("wall_s", time.perf_counter() - started))
    item.user_properties.append(("cpu_s", _cpu_seconds() - cpu))
    item.user_properties.append(("load_per_core", max(load, _load_per_core())))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.passed:
        return
    if any(item.get_closest_marker(name) for name in LONG_MARKERS):
        return
    taken = dict(item.user_properties)
    wall, cpu = taken.get("wall_s", 0.0), taken.get("cpu_s", 0.0)
    load = taken.get("load_per_core", 0.0)
    if over_the_limit(wall, cpu, load):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {wall:.1f} s ({cpu:.1f} s of CPU, load {load:.1f} per core) "
            f"without an `integration` or `slow` marker (the quick loop allows "
            f"{UNMARKED_LIMIT_S:g} s): mark it `slow`, or `integration` if it starts Ray or trains."
        )


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


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedSearch]:
    """The smoke version of the main job, run once per test run as users run it
    (``tests/experiments.py``); read it, never change it."""
    finished = run_finished_search(tmp_path_factory.mktemp("finished"))
    yield finished
    drop_checkpoint_weights(finished.folder)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray runtime in the test process, shared by the in-process searches of every module
    that asks for it (searches join it rather than start their own: a start costs seconds of CPU).
    It stays up after the module; a test that needs its own cluster shuts it down first, and the
    next module that asks starts it again. Stopped when the test run ends."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
        )
    yield


@pytest.fixture(scope="session", autouse=True)
def _stop_ray_at_the_end() -> Iterator[None]:
    yield
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]

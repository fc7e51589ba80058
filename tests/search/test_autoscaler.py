"""``--profile gpu`` against a real Ray autoscaler: it waits, saying so, until a GPU node joins.

The head runs Ray's own autoscaler (``ray start --head --autoscaling-config``) with its
fake multi-node provider, which starts each requested node as a real raylet on this machine.
Its one worker type has a GPU resource, so the autoscaler can grow the cluster with a GPU node
when asked, as ``ray up cluster.yaml`` would with a cloud provider.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_tune.constants import ENV_GPU_CHECK_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEAD_READY_S = 90.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cluster_config(gcs_address: str) -> dict:
    """A one-CPU head and a GPU worker type (at most one node), the fake provider's way."""
    provider: dict = {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
        "gcs_address": gcs_address,
    }
    return {
        "cluster_name": "cxr_tune_test",
        "max_workers": 1,
        "provider": provider,
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "ray.worker.gpu": {
                "resources": {"CPU": 1, "GPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def _pids_using(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (every Ray process of this cluster names
    its session folder under it); only these are ended, never another Ray on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(folder).encode() in cmdline:
            found.append(int(entry.name))
    return found


def _end(head: subprocess.Popen, folder: Path) -> None:
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)  # ``ray start --block`` stops its own processes
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
    deadline = time.monotonic() + 10
    while _pids_using(folder) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _pids_using(folder):  # nodes the provider started, should any outlive the head
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# The driver: the GPU check of ``--profile gpu`` joined to the cluster at argv[1]. It runs in
# its own process, so that this cluster's settings (no auth token) stay out of the test
# process's Ray, which later tests start clusters with.
DRIVER = """
import json, sys
import ray
from cxr_tune.config import PROFILES
from cxr_tune.search import resources
from cxr_tune.search.plan import build_plan
from cxr_tune.spaces import parse_space

ray.init(address=sys.argv[1], log_to_driver=False)
before = ray.cluster_resources().get("GPU", 0)
resources.PROGRESS_EVERY_S = 1.0
space = parse_space(
    {"cells": {"model": ["alexnet"]}, "fixed": {"epochs": 1, "image_size": 64}},
    source="test.yaml",
)
plan = build_plan(space, PROFILES["gpu"], ("phantom",))
said = []
can_add = resources.autoscaler_can_add_nodes()
resources.check_gpus_reachable(plan, echo=said.append)
after = ray.cluster_resources().get("GPU", 0)
ray.shutdown()
print(json.dumps({"before": before, "can_add": can_add, "said": said, "after": after}))
"""


@pytest.fixture
def autoscaling_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head with a real autoscaler (v1: the fake provider's v2 mode ends its own head here)
    that can add one GPU node; yields its address and the environment to join it with."""
    folder = Path(tempfile.mkdtemp(prefix="cxras", dir="/tmp"))  # short: unix socket paths
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = folder / "cluster.json"
    config.write_text(json.dumps(_cluster_config(address)))
    # A loopback cluster private to the test: no token to share between head and driver.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(folder)}
    ray_cli = Path(sys.executable).parent / "ray"
    command = [
        str(ray_cli),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        f"--autoscaling-config={config}",
        f"--temp-dir={folder}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    head_env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    log_path = folder / "head.log"
    with log_path.open("w") as log:
        head = subprocess.Popen(command, env=head_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + HEAD_READY_S
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield address, env
    finally:
        _end(head, folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_gpu_profile_waits_for_the_autoscaler_to_add_a_gpu_node(
    autoscaling_cluster: tuple[str, dict[str, str]],
) -> None:
    address, env = autoscaling_cluster
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, address],
        env={**env, ENV_GPU_CHECK_TIMEOUT: "180"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["before"] == 0
    assert found["can_add"]
    said = found["said"]
    assert said[0].startswith("resources: no GPU yet; asking the cluster's autoscaler")
    assert any(line.startswith("resources: still waiting for a GPU node") for line in said)
    assert said[-1] == "resources: 1 GPU(s) in the cluster"
    assert found["after"] == 1

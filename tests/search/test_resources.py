"""The GPU-share check: what is measured, how it is judged, and that CPU runs skip it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cxr_tune.config import PROFILES
from cxr_tune.errors import ConfigError
from cxr_tune.search import resources
from cxr_tune.search.plan import Plan, build_plan
from cxr_tune.search.resources import GIB, Measurement, Probe
from cxr_tune.spaces import parse_space

SPACE: dict[str, Any] = {
    "cells": {"model": ["alexnet", "resnet50"]},
    "params": {
        "batch_size": {"choice": [8, 64]},
        "optimizer": {"choice": ["sgd", "adam"]},
    },
    "fixed": {"epochs": 2, "image_size": 224},
    "resources": {"gpus_per_trial": {"alexnet": 0.25, "resnet50": 1}},
}
DATASETS: Any = {"phantom": SimpleNamespace(num_classes=4, task="multiclass")}


def plan_for(profile: str, space: dict[str, Any] = SPACE) -> Plan:
    return build_plan(parse_space(space, source="test.yaml"), PROFILES[profile], ("phantom",))


def probe(share: float = 0.25) -> Probe:
    return Probe("alexnet", share, 64, 512, 224, 4, "multiclass", "adam", "auto")


def test_probes_measure_fractional_shares_at_the_largest_batch() -> None:
    found = resources.probes(plan_for("gpu"), DATASETS)
    assert [p.model for p in found] == ["alexnet"]  # resnet50 has a whole GPU
    assert found[0].share == 0.25
    assert found[0].batch_size == 64
    assert found[0].optimizer == "adam"  # more state per parameter than SGD
    assert (found[0].image_size, found[0].num_classes) == (224, 4)


def test_problems_name_the_share_that_fits() -> None:
    got = Measurement("alexnet", needed_bytes=7 * GIB, total_bytes=24 * GIB, device="A10G")
    [line] = resources.problems([(probe(), got)])
    assert "needs 7.0 GiB" in line and "0.25 share" in line
    assert "resources.gpus_per_trial.alexnet to 0.333" in line


def test_problems_accept_a_share_that_fits() -> None:
    got = Measurement("alexnet", needed_bytes=5 * GIB, total_bytes=24 * GIB, device="A10G")
    assert resources.problems([(probe(), got)]) == []


def test_problems_say_when_nothing_fits_one_gpu() -> None:
    got = Measurement("alexnet", needed_bytes=30 * GIB, total_bytes=24 * GIB, device="A10G")
    [line] = resources.problems([(probe(), got)])
    assert "does not fit one GPU at all" in line


def test_check_raises_config_error_on_a_share_too_small(monkeypatch: pytest.MonkeyPatch) -> None:
    def too_big(todo: list[Probe], echo: Any) -> list[Measurement]:
        return [Measurement(p.model, 20 * GIB, 24 * GIB, "A10G") for p in todo]

    monkeypatch.setattr(resources, "_measure_on_cluster", too_big)
    with pytest.raises(ConfigError, match=r"GPU shares too small: alexnet at batch 64"):
        resources.check_gpu_shares(plan_for("gpu"), DATASETS, echo=lambda line: None)


def test_check_skips_cpu_runs_without_touching_ray() -> None:
    said: list[str] = []
    assert resources.check_gpu_shares(plan_for("cpu"), DATASETS, echo=said.append) == []
    assert said == ["resources: no GPUs asked for (CPU profile); no GPU shares to check"]


def test_smallest_share_packs_evenly() -> None:
    assert resources.smallest_share(3 * GIB, 24 * GIB) == 1 / 8
    assert resources.smallest_share(13 * GIB, 24 * GIB) == 1.0
    assert resources.smallest_share(25 * GIB, 24 * GIB) is None


@pytest.mark.gpu
def test_measure_on_a_real_gpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    small = Probe("alexnet", 0.25, 8, 64, 64, 4, "multiclass", "adam", "auto")
    large = Probe("alexnet", 0.25, 64, 64, 224, 4, "multiclass", "adam", "auto")
    got_small, got_large = resources.measure(small), resources.measure(large)
    assert 0 < got_small.needed_bytes < got_large.needed_bytes < got_large.total_bytes


def test_readonly_status_is_a_cluster_no_autoscaler_can_grow() -> None:
    node = "node_" + "ab" * 28
    local = {"autoscaler_report": {"active_nodes": {node: 1}, "pending_launches": {}}}
    assert resources.readonly_status(local)
    assert resources.readonly_status({"load_metrics_report": {}})  # no autoscaler at all
    cloud = {
        "autoscaler_report": {
            "active_nodes": {"ray.head.default": 1},
            "pending_nodes": [["10.0.0.7", "gpu_worker", "setting-up"]],
        }
    }
    assert not resources.readonly_status(cloud)


def test_wait_for_says_it_is_still_waiting_and_gives_up_at_the_timeout() -> None:
    said: list[str] = []
    assert not resources.wait_for(
        lambda: False,
        timeout_s=0.35,
        echo=said.append,
        waiting_for="a GPU",
        every_s=0.1,
        poll_s=0.05,
    )
    assert said and all("still waiting for a GPU (" in line for line in said)
    calls = iter([False, False, True])
    assert resources.wait_for(
        lambda: next(calls), timeout_s=5, echo=said.append, waiting_for="x", poll_s=0.01
    )


@pytest.mark.integration
def test_gpu_profile_fails_at_once_on_a_cluster_without_gpus_or_autoscaler(ray_local) -> None:
    import time

    plan = plan_for("gpu")
    started = time.monotonic()
    with pytest.raises(
        ConfigError, match=r"--profile gpu: the cluster has no GPU .* no autoscaler"
    ):
        resources.check_gpus_reachable(plan, echo=lambda line: None)
    assert time.monotonic() - started < 30
    resources.check_gpus_reachable(plan_for("cpu"), echo=lambda line: None)  # no GPU asked for

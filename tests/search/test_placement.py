"""The plan's choice of each cell's data path: device-resident, or streamed from host memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torchvision  # noqa: F401  (loaded while collecting: the meta-device models need it)

from cxr_tune.config import PROFILES, DataSource
from cxr_tune.errors import ConfigError
from cxr_tune.search.placement import parse_size, place, trial_bytes, trials_per_device
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.spaces import load_space, parse_space


def test_parse_size_reads_units_and_rejects_the_rest() -> None:
    assert parse_size("16GB") == 16 * 10**9
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("2e9") == 2 * 10**9
    for bad in ("12XB", "-1GB", "0", "GB"):
        with pytest.raises(ConfigError, match="--device-memory: the value is"):
            parse_size(bad)


def _place(budget: int | None, per_device: int = 1, images: int = 20_000):
    return place(
        model="alexnet",
        optimizer="adam",
        batch_size=64,
        image_size=64,
        num_classes=4,
        bf16=False,
        data_images=images,
        trials_per_device=per_device,
        budget=budget,
        budget_source="test",
    )


def test_place_streams_only_when_the_packed_trials_do_not_fit() -> None:
    trial = sum(
        trial_bytes(
            "alexnet", optimizer="adam", batch_size=64, image_size=64, num_classes=4, bf16=False
        ).values()
    )
    data = 20_000 * 64 * 64
    roomy = _place(int((trial + data) / 0.9) + 1)
    assert roomy.path == "resident" and roomy.reason.startswith("fits")
    tight = _place(int((trial + data) / 0.9) - 1)
    assert tight.path == "streaming" and "does not fit" in tight.reason
    assert tight.memory["data"] == data and tight.memory["per_trial"] == trial
    # Four trials packed on the device hold four copies of the data.
    packed = _place(int(2 * (trial + data) / 0.9), per_device=4)
    assert packed.path == "streaming" and packed.memory["trials_per_device"] == 4
    unknown = _place(None)
    assert unknown.path == "resident" and "--device-memory" in unknown.reason


def test_trials_per_device_follow_the_gpu_share() -> None:
    assert [trials_per_device(s) for s in (0.0, 1.0, 0.5, 0.25, 0.3)] == [1, 1, 2, 4, 3]


def test_plan_sets_each_cells_data_path_and_the_dry_run_line_says_why() -> None:
    space = load_space("smoke")
    plain = build_plan(space, PROFILES["smoke"], ("phantom",))
    assert plain.base_config(plain.cells[0])["data_path"] == "resident"
    assert "--device-memory" in plain.lines()[0]["data_path"]["reason"]
    tight = build_plan(space, PROFILES["smoke"], ("phantom",), Overrides(device_memory=10**6))
    placed = tight.placed({"phantom": (500, 4)})
    for cell, line in zip(placed.cells, placed.lines(), strict=True):
        assert placed.base_config(cell)["data_path"] == "streaming"
        assert line["data_path"]["path"] == "streaming"
        assert "does not fit" in line["data_path"]["reason"]
        assert line["data_path"]["memory"]["data_images"] == 500


def test_batch_size_and_optimizer_are_planned_at_their_hungriest() -> None:
    space = parse_space(
        {
            "params": {
                "batch_size": {"choice": [8, 128]},
                "optimizer": {"choice": ["sgd", "adamw"]},
            }
        },
        source="x.yaml",
    )
    plan = build_plan(space, PROFILES["smoke"], ("phantom",), Overrides(device_memory=10**12))
    assert plan.largest("batch_size", 32) == 128
    assert plan.hungriest("optimizer", "adam") == "adamw"
    memory = plan.placed({"phantom": (100, 4)}).lines()[0]["data_path"]["memory"]
    assert memory["optimizer"] == 2 * memory["model"]  # AdamW keeps two states a parameter


@pytest.mark.integration
@pytest.mark.slow
def test_search_with_a_small_device_memory_trains_on_streamed_batches(
    ray_local, tmp_path: Path
) -> None:
    from cxr_tune.search.runner import SearchRequest, run_search
    from cxr_tune.storage import Storage

    space = parse_space(
        {
            "name": "stream",
            "cells": {"model": ["alexnet"]},
            "fixed": {"epochs": 1, "batch_size": 16, "image_size": 64},
            "search": {"algorithm": "random", "num_samples": 1, "max_concurrent": 1},
            "scheduler": {"name": "none"},
        },
        source="stream.yaml",
    )
    plan = build_plan(space, PROFILES["smoke"], ("phantom",), Overrides(device_memory=10**6))
    request = SearchRequest(
        plan=plan,
        sources=(DataSource.phantom(),),
        dataset_names=("phantom",),
        dataset_keys=("phantom",),
        storage=Storage.parse(str(tmp_path / "results")),
        name="stream",
        evaluate=False,
    )
    lines: list[str] = []
    outcome = run_search(request, echo=lines.append)
    assert any(line.startswith("data path: phantom/alexnet: streaming") for line in lines)
    results = [
        json.loads(line)
        for path in Path(outcome.experiment).glob("*/result.json")
        for line in path.read_text().splitlines()
        if line
    ]
    assert results and all(r["config"]["data_path"] == "streaming" for r in results)
    assert all(r["status"] == "ok" for r in results)

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxr_tune.config import PROFILES
from cxr_tune.errors import ConfigError
from cxr_tune.search.plan import Overrides, build_plan, resolve_profile
from cxr_tune.spaces import load_space, parse_space


def test_cells_cross_datasets_with_cell_factors():
    plan = build_plan(load_space("optimizers"), PROFILES["gpu"], ("phantom", "covid_chestxray"))
    assert len(plan.cells) == 2 * 3 * 3
    ids = {c.id for c in plan.cells}
    assert "covid_chestxray/resnet50/optimizer=adamw" in ids
    assert plan.total_trials == 18 * plan.num_samples


def test_cpu_profile_shrinks_the_space():
    space = load_space("ablation")
    plan = build_plan(space, PROFILES["cpu"], ("phantom",), cpu_count=2)
    assert plan.fixed["image_size"] == 64 and plan.epochs == 3
    assert plan.num_samples == 6 and plan.max_concurrent == 2 and plan.eval_seeds == 1
    assert plan.scheduler.grace_period == 1
    gpu = build_plan(space, PROFILES["gpu"], ("phantom",))
    assert gpu.fixed["image_size"] == 224 and gpu.epochs == 50 and gpu.num_samples == 32
    assert gpu.eval_seeds == 3 and gpu.resources("alexnet") == {"CPU": 2.0, "GPU": 0.25}
    # CPU trials keep only their final checkpoint; GPU trials one per epoch; a space's own
    # value wins over the profile's.
    assert plan.fixed["checkpoint_every"] == 3 and gpu.fixed["checkpoint_every"] == 1
    own = parse_space({"fixed": {"checkpoint_every": 1}}, source="own.yaml")
    assert build_plan(own, PROFILES["cpu"], ("phantom",)).fixed["checkpoint_every"] == 1


def test_overrides_win():
    plan = build_plan(
        load_space("ablation"),
        PROFILES["cpu"],
        ("phantom",),
        Overrides(seed=7, num_samples=9, max_concurrent=1, eval_seeds=2),
    )
    assert (plan.seed, plan.num_samples, plan.max_concurrent, plan.eval_seeds) == (7, 9, 1, 2)
    assert all(plan.base_config(c)["seed"] == 7 for c in plan.cells)


def test_explicit_epochs_image_size_and_samples_win_over_every_profile_cap():
    space = load_space("ablation")
    for name in ("cpu", "smoke", "gpu"):
        plan = build_plan(
            space,
            PROFILES[name],
            ("phantom",),
            Overrides(num_samples=11, epochs=7, image_size=96),
            cpu_count=2,
        )
        assert (plan.num_samples, plan.epochs, plan.fixed["image_size"]) == (11, 7, 96), name
        assert all(line["fixed"]["epochs"] == 7 for line in plan.lines())


def test_full_profile_runs_the_space_as_written_on_whatever_devices_exist():
    space = load_space("ablation")
    on_cpus, why = resolve_profile("full", gpus_available=0)
    assert (on_cpus.name, on_cpus.uses_gpu) == ("full", False) and "no GPU" in why
    plan = build_plan(space, on_cpus, ("phantom",), cpu_count=2)
    assert (plan.epochs, plan.fixed["image_size"], plan.num_samples) == (50, 224, 32)
    assert plan.resources("alexnet") == {"CPU": 1.0, "GPU": 0.0} and plan.max_concurrent == 2
    on_gpus, why = resolve_profile("full", gpus_available=2)
    assert (on_gpus.name, on_gpus.uses_gpu) == ("full", True) and "2 GPU(s)" in why
    gpu_plan = build_plan(space, on_gpus, ("phantom",))
    assert (gpu_plan.epochs, gpu_plan.num_samples) == (50, 32)
    assert gpu_plan.resources("alexnet")["GPU"] == 0.25


def test_auto_profile_follows_the_gpus():
    assert resolve_profile("auto", gpus_available=0)[0].name == "cpu"
    assert resolve_profile("auto", gpus_available=4)[0].name == "gpu"
    assert resolve_profile("smoke", gpus_available=4)[0].name == "smoke"


def test_unknown_model_in_yaml_names_file_and_key():
    space = parse_space({"cells": {"model": ["alexnet", "resnet5"]}}, source="mine.yaml")
    with pytest.raises(
        ConfigError,
        match=r"mine.yaml: cells.model: Unknown model 'resnet5'. Did you mean 'resnet50'\?",
    ):
        build_plan(space, PROFILES["gpu"], ("phantom",))


def test_unknown_optimizer_in_yaml():
    space = parse_space({"params": {"optimizer": {"choice": ["adam", "sdg"]}}}, source="mine.yaml")
    with pytest.raises(
        ConfigError,
        match=r"mine.yaml: params.optimizer.choice: Unknown optimizer 'sdg'. Did you mean 'sgd'\?",
    ):
        build_plan(space, PROFILES["gpu"], ("phantom",))


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxr_tune.search", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.slow  # the model registry imports torch in a fresh interpreter
def test_dry_run_prints_one_json_object_per_cell():
    out = _cli("--space", "ablation", "--profile", "cpu", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["cell"] for line in lines] == [
        "phantom/alexnet",
        "phantom/vgg11",
        "phantom/resnet50",
    ]
    assert all(
        line["fixed"]["epochs"] == 3 and line["search"]["num_samples"] == 6 for line in lines
    )
    assert lines[0]["scheduler"]["name"] == "asha"


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda tmp: ["--space", "ablaton"], "Unknown space 'ablaton'. Did you mean 'ablation'?"),
        pytest.param(
            lambda tmp: ["--space", str(_write(tmp, "cells: {model: [resnet5]}"))],
            "cells.model: Unknown model 'resnet5'",
            marks=pytest.mark.slow,  # the model registry imports torch
        ),
        (
            lambda tmp: ["--space", str(_write(tmp, "fixed: {lr: 0}"))],
            "fixed.lr: The value of `lr` is 0.0, but must be a number > 0",
        ),
        (
            lambda tmp: ["--space", str(_write(tmp, "params: {lr: {loguniform: [-1, 0.1]}}"))],
            "a log scale needs low > 0",
        ),
        (
            lambda tmp: ["--space", str(_write(tmp, "params: {optimizer: {choice: []}}"))],
            "params.optimizer.choice: expected a non-empty list",
        ),
        (lambda tmp: ["--data", str(tmp / "missing")], "--data: the folder"),
        (lambda tmp: ["--num-samples", "0"], "--num-samples: the value is 0, but must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, make_args, message):
    out = _cli(*make_args(tmp_path), "--dry-run")
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def _write(folder, text):
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def test_batch_sizes_larger_than_the_training_split_are_refused():
    from cxr_tune.search.plan import check_batch_sizes

    space = parse_space({"params": {"batch_size": {"choice": [8, 64, 128]}}}, source="mine.yaml")
    plan = build_plan(space, PROFILES["cpu"], ("phantom", "tiny"), cpu_count=2)
    check_batch_sizes(plan, {"phantom": 448, "tiny": 200})
    with pytest.raises(
        ConfigError,
        match=r"mine.yaml: params.batch_size.choice: the batch size 128 is larger than the 90 "
        r"training images of tiny, but must be at most 90",
    ):
        check_batch_sizes(plan, {"phantom": 448, "tiny": 90})
    default = build_plan(parse_space({}, source="d.yaml"), PROFILES["cpu"], ("x",), cpu_count=2)
    with pytest.raises(ConfigError, match=r"batch_size \(the default, not set in the space\)"):
        check_batch_sizes(default, {"x": 20})


def test_data_options_come_from_the_space_and_the_command_line():
    space = parse_space({"data": {"uncertain": "ones", "views": ["PA"]}}, source="x.yaml")
    plan = build_plan(
        space, PROFILES["cpu"], ("phantom",), Overrides(data_options={"uncertain": "zeros"})
    )
    assert plan.data_options == {"uncertain": "zeros", "views": ["PA"]}
    assert plan.lines()[0]["data_options"] == {"uncertain": "zeros", "views": ["PA"]}


@pytest.mark.slow  # two fresh interpreters import torch
def test_dry_run_shows_the_uncertain_policy_and_rejects_unknown_options(tmp_path):
    out = _cli("--space", "smoke", "--profile", "smoke", "--uncertain", "ones", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["data_options"] == {"uncertain": "ones"}
    bad = _cli("--space", str(_write(tmp_path, "data: {uncertian: ones}")), "--dry-run")
    assert bad.returncode == 2 and "Did you mean 'uncertain'" in bad.stderr

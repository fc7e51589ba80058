"""Smoke tests of the benchmark scripts: each runs in its quick mode and writes sound JSON.

Never timing assertions: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench"
MACHINE_KEYS = {"cpu_model", "cpu_count", "torch", "ray", "gpu", "load_average"}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
# Run a script with Ray and Optuna unimportable, as on a GPU machine that has only PyTorch.
WITHOUT_RAY = (
    "import runpy, sys; sys.modules['ray'] = None; sys.modules['optuna'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.integration
@pytest.mark.slow
def test_train_throughput_quick_writes_json_without_ray_or_optuna(tmp_path):
    output = tmp_path / "train_throughput.json"
    script = str(BENCH / "train_throughput.py")
    done = _run(
        [sys.executable, "-c", WITHOUT_RAY, script, "--quick", "--archs", "alexnet", "resnet50"]
        + ["--output", str(output)]
    )
    assert "train img/s" in done.stdout
    result = json.loads(output.read_text())
    assert set(result["machine"]) >= MACHINE_KEYS and result["machine"]["gpu"] in (
        "none",
        result["device"],
    )
    rows = result["results"]
    assert {(r["arch"], r["loop"]) for r in rows} == {
        (a, loop) for a in ("alexnet", "resnet50") for loop in ("naive", "cxr_tune")
    }
    for row in rows:
        assert row["error"] is None
        for key in ("train_images_per_s", "eval_images_per_s", "train_seconds", "eval_seconds"):
            assert _positive(row[key]), (key, row)
        assert row["peak_memory_mib"] >= 0
    assert all(_positive(v) for v in result["speedups"]["64"].values())
    assert result["projection"] is None  # no 224 px row in a quick run


def test_train_throughput_projects_the_paper_grid_from_224_px_rows():
    sys.path.insert(0, str(BENCH))
    try:
        import train_throughput as tt
    finally:
        sys.path.remove(str(BENCH))
    rows = [
        tt.Measurement(a, 224, loop, 32, 1.0, ips, 32, 1.0, ips, 1.0, None)
        for a in tt.ARCHS
        for loop, ips in (("naive", 100.0), ("cxr_tune", 1000.0))
    ]
    projection = tt.project_grid(rows, 32)
    per_arch = 50 * (14_815 / 1000.0 + 3_175 / 1000.0)
    assert projection["seconds"]["cxr_tune"]["total"] == pytest.approx(3 * per_arch)
    assert projection["seconds"]["naive"]["total"] == pytest.approx(30 * per_arch)
    assert all(projection["complete"].values())
    speedup = tt.speedups(rows)
    assert speedup["224"] == pytest.approx(dict.fromkeys(tt.ARCHS, 10.0))
    assert tt.targets(speedup, projection)["grid_target_met"]


@pytest.mark.integration
def test_ray_overhead_quick_writes_json_for_both_modes(tmp_path):
    output = tmp_path / "ray_overhead.json"
    done = _run(
        [sys.executable, str(BENCH / "ray_overhead.py"), "--quick", "--output", str(output)]
    )
    assert "ratio" in done.stdout
    result = json.loads(output.read_text())
    assert set(result["machine"]) >= MACHINE_KEYS
    modes = {m["mode"]: m for m in result["modes"]}
    assert set(modes) == {"reuse", "fresh"}
    for mode in modes.values():
        assert mode["errored_trials"] == 0 and mode["trials"] == result["params"]["trials"]
        for key in ("wall_s", "work_s", "ratio", "work_per_trial_s"):
            assert _positive(mode[key]), (key, mode)
        assert mode["zero_copy_data"], "trials received a private copy of the data"
    # Reuse: one worker per concurrent slot; fresh: one per trial.
    assert modes["reuse"]["worker_processes"] <= modes["reuse"]["concurrency"]
    assert modes["fresh"]["worker_processes"] == modes["fresh"]["trials"]
    assert {"reuse_saves_s", "target_met"} <= set(result)
    checkpoint = result["checkpoint"]
    assert 0 < checkpoint["final_megabytes"] < checkpoint["megabytes"]  # no Adam state at the end


def _search_efficiency_module():
    sys.path.insert(0, str(BENCH))
    try:
        import search_efficiency
    finally:
        sys.path.remove(str(BENCH))
    return search_efficiency


@pytest.mark.integration
@pytest.mark.slow
def test_search_load_quick_accounts_for_every_trial(tmp_path):
    output = tmp_path / "search_load.json"
    done = _run(
        [sys.executable, str(BENCH / "search_load.py"), "--quick", "--output", str(output)]
        + ["--runs", str(tmp_path / "runs")],
        timeout=900,
    )
    assert "RSS MiB" in done.stdout
    result = json.loads(output.read_text())
    assert set(result["machine"]) >= MACHINE_KEYS
    assert result["trials"] == 12 and result["all_accounted_for"] is True
    counted = result["accounting"]
    assert counted["trials_csv_rows"] == counted["ray_trial_folders"] == 12
    assert counted["optuna_ended"] == counted["report_trials"] == 12
    assert _positive(result["driver_rss_mib"]["12"]["rss_mib"])


def test_seed_spread_compares_a_grid_trained_under_several_seeds():
    se = _search_efficiency_module()
    table = {
        "epochs": 2,
        "repeats": {
            "a": {"3": [0.2, 0.60], "4": [0.3, 0.50]},
            "b": {"3": [0.1, 0.58], "4": [0.2, 0.62]},
            "c": {"3": [0.1, 0.10], "4": [0.1, 0.10]},
            # Stopped before its last epoch under one seed: not compared.
            "d": {"3": [0.9, 0.99], "4": [0.9]},
        },
    }
    spread = se.seed_spread(table)
    assert spread["seeds"] == ["3", "4"]
    assert list(spread["configurations"]) == ["b", "a", "c"]  # by the mean, best first
    assert spread["configurations"]["a"]["mean"] == pytest.approx(0.55)
    assert spread["configurations"]["a"]["spread"] == pytest.approx(0.10)
    assert spread["best_by_seed"]["3"] == {"configuration": "a", "value": 0.60}
    assert spread["best_by_seed"]["4"] == {"configuration": "b", "value": 0.62}
    assert spread["best_by_mean"]["configuration"] == "b"
    assert spread["best_depends_on_seed"] is True
    # One seed's best everywhere: the best does not depend on the seed.
    table["repeats"]["a"]["4"] = [0.3, 0.70]
    assert se.seed_spread(table)["best_depends_on_seed"] is False
    # A grid trained once has no spread to report.
    assert se.seed_spread({"epochs": 2, "curves": {"a": [0.1, 0.2]}}) is None


@pytest.mark.integration
@pytest.mark.slow
def test_search_efficiency_quick_trains_a_grid_and_replays_every_method(tmp_path):
    output = tmp_path / "search_efficiency.json"
    script = str(BENCH / "search_efficiency.py")
    # ASHA on the validation loss, as `scheduler: {metric: val_loss}` in a space.
    command = [sys.executable, script, "--quick", "--asha-metric", "val_loss", "--budget", "0.5"]
    # Every configuration trained twice, with initialisation seeds 0 and 1.
    done = _run([*command, "--repeats", "2", "--output", str(output)], timeout=600)
    assert "target (TPE + ASHA)" in done.stdout
    result = json.loads(output.read_text())
    table = json.loads((tmp_path / "search_efficiency_table.json").read_text())
    # The quick grid: 2 learning rates x 1 batch size x 2 optimizers, trained to the end.
    assert len(table["curves"]) == 4 and all(len(c) == 2 for c in table["curves"].values())
    # The replays read the first repeat; the table keeps both seeds' curves.
    assert set(table["repeats"]) == set(table["curves"])
    for key, by_seed in table["repeats"].items():
        assert set(by_seed) == {"0", "1"} and by_seed["0"] == table["curves"][key]
    spread = result["seed_spread"]
    assert spread["seeds"] == ["0", "1"] and set(spread["configurations"]) == set(table["curves"])
    for key, row in spread["configurations"].items():
        finals = [table["repeats"][key][seed][-1] for seed in ("0", "1")]
        assert row["finals"] == {"0": finals[0], "1": finals[1]}
        assert row["spread"] == pytest.approx(max(finals) - min(finals))
    assert "initialisation seeds 0, 1" in done.stdout
    best = max(c[-1] for c in table["curves"].values())
    assert result["grid"]["best"] == best and result["grid"]["epochs"] == 8
    assert set(result["methods"]) == {"tpe_asha", "random_asha", "random_full", "tpe_full"}
    for method in result["methods"].values():
        assert method["runs"] == 2 and 0 < method["epoch_share"] <= 1
        # A replayed trial reads its curve from the table: no method beats the grid's best.
        assert method["mean_best"] is None or method["mean_best"] <= best + 1e-12
        # No run trains a configuration twice (the searcher skips repeats), and the epochs
        # consumed are those of the trials it lists.
        for trials in method["trials"]:
            assert len({config for config, _ in trials}) == len(trials)
        assert sum(sum(e for _, e in t) for t in method["trials"]) / 2 == method["mean_epochs"]
        # Every run kept the epoch budget (half the grid's 8 epochs).
        assert all(sum(e for _, e in t) <= 4 for t in method["trials"])
    assert result["params"]["budget_epochs"] == 4
    assert result["methods"]["random_full"]["mean_best"] is not None  # 2 whole trials fit
    assert result["params"]["asha_metric"] == "val_loss"
    signal = result["early_signal"]["epochs"]["1"]
    assert set(signal) == {"val_macro_f1", "val_loss", "val_accuracy"}
    assert all(1 <= v["rank_of_best"] <= 4 for v in signal.values())
    assert set(result["machine"]) >= MACHINE_KEYS
    # Replays of the written table alone, for one method and other ASHA settings.
    again = tmp_path / "again.json"
    table_path = str(tmp_path / "search_efficiency_table.json")
    options = ["--methods", "tpe_asha", "--reduction-factor", "2", "--seeds", "1"]
    options += ["--no-skill-epoch", "1"]
    _run([sys.executable, script, "--table", table_path, *options, "--output", str(again)])
    replayed = json.loads(again.read_text())
    assert set(replayed["methods"]) == {"tpe_asha"} and replayed["methods"]["tpe_asha"]["runs"] == 1
    assert replayed["params"]["reduction_factor"] == 2 and replayed["grid"]["best"] == best
    # The grid recorded what the no-skill check reads: both no-skill losses, training losses.
    assert replayed["params"]["no_skill_epoch"] == 1
    assert replayed["grid"]["train_loss_recorded"] is True
    for key in ("val_loss_no_skill", "train_loss_no_skill"):
        assert replayed["grid"][key] == table[key] and 1.0 < table[key] < 2.0


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--methods", "tpe_asha,bohb", "random_full"),
        ("--reduction-factor", "1", "2 or more"),
        ("--no-skill-epoch", "-1", "0 (off) or more"),
        ("--repeats", "0", "1 or more"),
        ("--seeds", "-1", "0 (train the grid only) or more"),
    ],
)
def test_search_efficiency_rejects_bad_options_before_ray_starts(option, value, says):
    script = str(BENCH / "search_efficiency.py")
    done = subprocess.run(
        [sys.executable, script, option, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert option in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr


def _efficiency_report(
    grid_seed: int, best: float, params: dict[str, Any], methods, configurations: int = 4
) -> dict:
    """A search-efficiency report as the script writes it, with only what the summary reads."""
    return {
        "benchmark": "search_efficiency",
        "grid": {"seed": grid_seed, "best": best, "configurations": configurations},
        "early_signal": {
            "best_configuration": "0.001|16|adam",
            "epochs": {
                "1": {"val_loss": {"rank_of_best": 3}},
                "2": {"val_loss": {"rank_of_best": 1}},
            },
        },
        "params": {"budget": 0.3, "seeds": 2, "quick": False, **params},
        "methods": {
            name: {
                "runs": runs,
                "runs_within_1_point": within,
                "mean_best": mean,
                "epoch_share": 0.3,
            }
            for name, (runs, within, mean) in methods.items()
        },
    }


def test_search_efficiency_summary_pools_settings_across_files_and_grids(tmp_path):
    asha = {"asha_metric": "val_loss", "grace_period": 1, "reduction_factor": 3, "brackets": 1}
    reports = {
        # Grid 0: one ASHA setting with the check; random search without early stopping beside it.
        "search_efficiency_a.json": _efficiency_report(
            0,
            0.70,
            {**asha, "no_skill_epoch": 2},
            {"tpe_asha": (2, 2, 0.695), "random_full": (2, 0, 0.5)},
        ),
        # Grid 0 again, another ASHA setting (written before the check existed: no key, so off);
        # its random_full runs pool with the first file's.
        "search_efficiency_b.json": _efficiency_report(
            0,
            0.70,
            dict(asha),
            {"tpe_asha": (2, 1, 0.65), "random_full": (2, 1, 0.6)},
        ),
        # Grid 1: the first setting again.
        "search_efficiency_seed1_a.json": _efficiency_report(
            1, 0.60, {**asha, "no_skill_epoch": 2}, {"tpe_asha": (2, 0, 0.55)}
        ),
        # A smoke test and a grid table are not results.
        "search_efficiency_quick.json": {
            **_efficiency_report(1, 0.9, {**asha, "no_skill_epoch": 2}, {"tpe_asha": (2, 0, 0.1)}),
            "params": {"quick": True},
        },
        "search_efficiency_table.json": {
            "epochs": 2,
            "curves": {"x": [0.3, 0.70], "y": [0.2, 0.66], "z": [0.1], "w": [0.1, 0.1]},
        },
        # Half of grid 1 (one optimizer): a grid of its own, named with its size.
        "search_efficiency_seed1_half.json": _efficiency_report(
            1, 0.60, {**asha, "no_skill_epoch": 2}, {"tpe_asha": (2, 2, 0.6)}, configurations=2
        ),
        # A grid trained without replays has nothing to summarise.
        "search_efficiency_seed2.json": _efficiency_report(2, 0.5, {**asha}, {}),
    }
    for name, report in reports.items():
        (tmp_path / name).write_text(json.dumps(report))
    out = tmp_path / "summary.json"
    done = _run(
        [
            sys.executable,
            str(BENCH / "search_efficiency_summary.py"),
            "--results",
            str(tmp_path),
            "--output",
            str(out),
        ],
        timeout=60,
    )
    summary = json.loads(out.read_text())
    assert list(summary["grids"]) == ["0", "1 (2 configurations)", "1 (4 configurations)"]
    # The runner-up is read from grid 0's table: 0.70 - 0.66, the stopped configuration left out.
    assert summary["grids"]["0"]["runner_up_gap"] == pytest.approx(0.04)
    assert summary["grids"]["1 (4 configurations)"]["runner_up_gap"] is None  # no table beside it
    assert summary["grids"]["0"]["val_loss_rank_of_best"] == {"1": 3, "2": 1}
    settings = summary["settings"]
    assert len(settings) == 3
    with_check = next(row for row in settings.values() if row["setting"].get("no_skill_epoch") == 2)
    assert with_check["grids"]["0"]["target_met"] is True  # 0.70 - 0.695 <= 0.01
    assert with_check["grids"]["1 (4 configurations)"]["target_met"] is False  # 0.05 below
    assert with_check["grids"]["1 (2 configurations)"]["target_met"] is True
    assert (with_check["met_on"], with_check["grids_measured"]) == (2, 3)
    assert with_check["mean_gap"] == pytest.approx((0.005 + 0.05 + 0.0) / 3)
    without = next(row for row in settings.values() if row["setting"].get("no_skill_epoch") == 0)
    assert without["grids"]["0"]["gap"] == pytest.approx(0.05)
    full = next(row for row in settings.values() if row["setting"]["method"] == "random_full")
    pooled = full["grids"]["0"]
    assert pooled["runs"] == 4 and pooled["within_1_point"] == 1
    assert pooled["mean_best"] == pytest.approx(0.55)
    assert sorted(pooled["files"]) == ["search_efficiency_a.json", "search_efficiency_b.json"]
    assert "2/3" in done.stdout  # met on two grids of three, printed


def test_search_efficiency_summary_says_when_there_is_nothing_to_read(tmp_path):
    script = str(BENCH / "search_efficiency_summary.py")
    for folder in (tmp_path / "missing", tmp_path):
        done = subprocess.run(
            [sys.executable, script, "--results", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert "--results" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_data_plane_smoke_test_runs():
    done = _run([sys.executable, str(BENCH / "data_plane.py"), "--smoke-test", "--workers", "1"])
    assert "speedup:" in done.stdout


def test_gpu_check_says_so_and_passes_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: gpu_check.sh would run the real checks")
    done = _run(["bash", str(REPO / "scripts" / "gpu_check.sh")], timeout=60)
    assert "no NVIDIA GPU" in done.stdout


@pytest.mark.gpu
@CUDA
def test_train_throughput_on_cuda_uses_the_fast_path(tmp_path):
    output = tmp_path / "gpu.json"
    _run(
        [sys.executable, str(BENCH / "train_throughput.py"), "--quick", "--device", "cuda"]
        + ["--archs", "resnet50", "--output", str(output)]
    )
    result = json.loads(output.read_text())
    assert result["device"] != "cpu" and result["machine"]["gpu"] == result["device"]
    fast = [r for r in result["results"] if r["loop"] == "cxr_tune"]
    assert fast and all(r["error"] is None and r["peak_memory_mib"] > 0 for r in fast)


def test_dedup_calibration_smoke_test_prints_the_table():
    done = _run([sys.executable, str(BENCH / "dedup_calibration.py"), "--smoke-test"])
    lines = done.stdout.splitlines()
    head = next(k for k, line in enumerate(lines) if line.split()[:2] == ["threshold", "recall"])
    rows = [line.split() for line in lines[head + 1 : head + 13]]
    assert [float(r[0]) for r in rows] == sorted(float(r[0]) for r in rows)
    # Recall can only fall as the threshold rises; so can the false pairs.
    recalls = [float(r[1]) for r in rows]
    assert recalls == sorted(recalls, reverse=True) and 0 < recalls[-1] <= recalls[0] <= 1
    assert any(line.startswith("chosen: ") for line in lines)

"""Smoke tests of the benchmark scripts: each runs in its quick mode and writes sound JSON.

Never timing assertions: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import math
import os
import re
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_scale_smoke_runs_prepare_audit_and_throughput(tmp_path):
    script = str(BENCH / "scale.py")
    done = _run([sys.executable, script, "--smoke-test", "--layouts", "chexpert"], timeout=600)
    assert re.search(r"chexpert\s+100% all views\s+800 ", done.stdout)
    assert "audit recall 1.0000" in done.stdout
    assert "streaming / resident" in done.stdout
    output = tmp_path / "scale.json"
    output.write_text(json.dumps({"benchmark": "scale", "results": []}))
    _run([sys.executable, script, "--throughput-only", "--output", str(output),
          "--throughput-images", "128", "--throughput-epochs", "1"], timeout=600)  # fmt: skip
    result = json.loads(output.read_text())
    assert result["benchmark"] == "scale"  # kept: the throughput is added to the file
    rows = result["throughput"]["rows"]
    assert {r["model"] for r in rows} == {"alexnet", "tiny"}
    assert all(_positive(r["ratio_best"]) and _positive(r["ratio_median"]) for r in rows)

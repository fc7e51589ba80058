"""Smoke test of the predict benchmark: its quick mode runs and writes sound JSON (never a
timing assertion: the figures depend on the machine and what else runs on it)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench" / "predict_throughput.py"


@pytest.mark.slow
def test_predict_throughput_quick_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "predict.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--images", "6", "--side", "256",
         "--workers", "1", "--batch-sizes", "4", "--runs", str(tmp_path / "runs"),
         "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "predict img/s" in done.stdout and "ratio" in done.stdout
    result = json.loads(output.read_text())
    assert result["params"]["images"] == 6 and result["params"]["side"] == 256
    (row,) = result["rows"]
    assert row["workers"] == 1 and row["batch_size"] == 4
    for key in ("decode_images_per_s", "predict_images_per_s", "ratio"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert set(result["best"]) >= {"decode", "predict", "ratio", "goal_met"}
    assert len(list((tmp_path / "runs" / "png_256").glob("*.png"))) == 6

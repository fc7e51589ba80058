"""The main job as users run it: the CLI in a subprocess, on the smoke space."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.experiments import SMOKE_TRIALS, FinishedSearch

pytestmark = pytest.mark.integration


def test_smoke_search_from_the_command_line_writes_a_report(finished_search: FinishedSearch):
    out = finished_search.stdout
    assert "profile: smoke" in out and f"report: {finished_search.folder / 'report.md'}" in out
    folder = finished_search.folder
    report = (folder / "report.md").read_text()
    record = json.loads((folder / "cxr_tune.json").read_text())
    assert record["finished_at"] and record["profile"]["name"] == "smoke"
    trials = [p for p in folder.iterdir() if (p / "params.json").exists()]
    assert len(trials) == SMOKE_TRIALS
    # The report names the cell's best trial, with the value from that trial's own results.
    finals = {}
    for trial in trials:
        last = json.loads((trial / "result.json").read_text().splitlines()[-1])
        finals[trial.name.rsplit("-", 1)[-1]] = last["val_macro_f1"]
    best_id = max(finals, key=finals.get)
    best_lines = [line for line in report.splitlines() if best_id in line]
    assert best_lines, f"best trial {best_id} not named in report.md"
    assert any(f"{finals[best_id]:.4f}" in line for line in best_lines)
    assert (folder / "optuna.db").is_file() and (folder / "evaluation.json").is_file()


def test_a_search_with_an_epoch_budget_spends_it_and_finishes(tmp_path):
    command = [sys.executable, "-m", "cxr_tune.search", "--space", "smoke", "--profile", "smoke"]
    command += ["--num-samples", "4", "--budget-epochs", "5", "--no-eval"]
    command += ["--storage", str(tmp_path), "--name", "budget"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "at most 5 epochs per cell" in run.stdout
    folder = tmp_path / "budget"
    epochs = [
        json.loads((p / "result.json").read_text().splitlines()[-1])["epoch"]
        for p in folder.iterdir()
        if (p / "result.json").exists()
    ]
    # 4 trials of 2 epochs would take 8: the budget stops the search at exactly 5.
    assert sum(epochs) == 5
    record = json.loads((folder / "cxr_tune.json").read_text())
    assert record["finished_at"]  # ended by its budget, not taken for an interrupted search
    assert "epoch budget: at most 5 epochs per cell" in (folder / "report.md").read_text()

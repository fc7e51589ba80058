"""Reports of real experiments: the finished smoke search shared by the test run
(``tests/experiments.py``), and one interrupted with Ctrl+C (run here, once per module).

The report's numbers are checked against the files they came from: result.json,
evaluation.json and the event files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.experiments import SMOKE_SEARCH, SMOKE_TRIALS, FinishedSearch, drop_checkpoint_weights
from tests.report.checks import assert_self_contained, assert_valid_pngs, markdown_images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CELL = "phantom/alexnet"


def trial_folders(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if (p / "params.json").is_file())


def last_result(folder: Path) -> dict:
    lines = [line for line in (folder / "result.json").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def finished(finished_search: FinishedSearch) -> Path:
    return finished_search.folder


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A search stopped with SIGINT (Ctrl+C) once its first epoch has reported."""
    storage = tmp_path_factory.mktemp("searches")
    command = [*SMOKE_SEARCH, "--storage", str(storage), "--name", "stopped", "--num-samples", "4"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 300
    for line in process.stdout:
        if " epoch 1/" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        raise
    yield storage / "stopped"
    drop_checkpoint_weights(storage / "stopped")


def run_report(experiment: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cxr_tune.report", str(experiment), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_search_writes_the_whole_report(finished: Path) -> None:
    for name in ("report.md", "report.html", "trials.csv"):
        assert (finished / name).is_file(), name
    assert assert_valid_pngs(finished / "plots")


@pytest.fixture(scope="module")
def report(finished: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = run_report(finished, out)
    assert result.returncode == 0, result.stderr
    return out


def test_report_files_are_complete_and_self_contained(report: Path) -> None:
    text = (report / "report.md").read_text()
    assert "could not be built" not in text and "could not be drawn" not in text
    plots = assert_valid_pngs(report / "plots")
    assert {f"plots/{p.name}" for p in plots} == set(markdown_images(text))
    names = {p.name for p in plots}
    assert {"confusion-phantom-alexnet.png", "curves-phantom-alexnet.png"} <= names
    assert "efficiency.png" in names
    page = (report / "report.html").read_text()
    assert assert_self_contained(page) == len(plots)


def test_trials_csv_has_one_row_per_trial_folder(finished: Path, report: Path) -> None:
    rows = list(csv.DictReader((report / "trials.csv").open()))
    folders = trial_folders(finished)
    assert len(rows) == len(folders) == SMOKE_TRIALS
    for row in rows:
        result = last_result(finished / row["folder"])
        assert float(row["final_val_macro_f1"]) == pytest.approx(result["val_macro_f1"])
        assert int(row["epochs_done"]) == result["epoch"]
        assert row["node"] == result["hostname"]


def test_best_trial_row_matches_its_result_file(finished: Path, report: Path) -> None:
    text = (report / "report.md").read_text()
    row = re.search(rf"\| `{CELL}` \| `(\w+)` \(([a-z ]+)\) \| [^|]+ \| ([\d.]+) \|", text)
    assert row, "no best-trial row"
    folder = next(finished.glob(f"phantom-alexnet-{row.group(1)}"))
    assert float(row.group(3)) == pytest.approx(last_result(folder)["val_macro_f1"], abs=5e-5)
    evaluation = json.loads((finished / "evaluation.json").read_text())
    best = next(e for e in evaluation["entries"] if "best" in e["roles"])
    assert best["trial_id"] == row.group(1)


def test_paper_tables_show_the_evaluation_numbers(finished: Path, report: Path) -> None:
    text = (report / "report.md").read_text()
    evaluation = json.loads((finished / "evaluation.json").read_text())
    summary = next(e for e in evaluation["entries"] if "best" in e["roles"])["summary"]
    f1 = summary["macro_f1"]
    low, high = f1["ci95"]
    assert f"| phantom | AlexNet | {f1['mean']:.4f} | [{low:.4f}, {high:.4f}] | 1 | — | — |" in text
    accuracy = summary["accuracy"]["mean"] * 100
    assert f"| phantom | AlexNet | {accuracy:.2f} |" in text
    assert "`phantom`: no paper column" in text


def assert_events_match_results(folder: Path) -> None:
    """The trial's event file holds each reported epoch's metrics and its hyperparameters."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    lines = (
        (folder / "result.json").read_text().splitlines()
        if (folder / "result.json").exists()
        else []
    )
    ok = [r for r in map(json.loads, filter(None, lines)) if r["status"] == "ok"]
    steps = [(s.step, s.value) for s in events.Scalars("val/macro_f1")] if ok else []
    assert steps == [(r["epoch"], pytest.approx(r["val_macro_f1"], rel=1e-6)) for r in ok]
    if ok:
        assert {"loss/train", "loss/val", "val/accuracy"} <= set(events.Tags()["scalars"])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    params = json.loads((folder / "params.json").read_text())
    assert start.hparams["lr"].number_value == pytest.approx(params["lr"])
    assert start.hparams["optimizer"].string_value == params["optimizer"]
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # no second, Ray-default file


def test_tensorboard_events_hold_every_epoch_and_the_hparams(finished: Path) -> None:
    for folder in trial_folders(finished):
        assert_events_match_results(folder)


def test_interrupted_search_gets_a_report(interrupted: Path, tmp_path: Path) -> None:
    result = run_report(interrupted, tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    assert "could not be built" not in text
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert len(rows) == len(trial_folders(interrupted)) >= 1
    unfinished = [r for r in rows if r["state"] == "unfinished"]
    if unfinished:  # stopped while trials ran: said so, and listed with a reason
        assert "**The search did not finish**" in text
        assert "still running when the search stopped" in text or "no result yet" in text
    for row in rows:
        result_file = interrupted / row["folder"] / "result.json"
        if result_file.is_file() and result_file.read_text().strip():
            value = last_result(interrupted / row["folder"]).get("val_macro_f1", math.nan)
            assert float(row["final_val_macro_f1"]) == pytest.approx(value, nan_ok=True)
    assert_valid_pngs(tmp_path / "plots")
    assert_self_contained((tmp_path / "report.html").read_text())
    for folder in trial_folders(interrupted):  # the epochs just before Ctrl+C included
        assert_events_match_results(folder)

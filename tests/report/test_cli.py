"""``python -m cxr_tune.report`` as a user runs it: exit codes, one-line errors, partial reports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.report.builders import TrialSpec, ablation_trials, write_experiment

ROOT = Path(__file__).resolve().parents[2]


def run_report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxr_tune.report", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, match: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    prefix = "python -m cxr_tune.report: error: "
    assert len(lines) == 1 and lines[0].startswith(prefix) and match in lines[0], lines


def test_cli_help_is_fast_and_imports_nothing_heavy() -> None:
    started = time.perf_counter()
    result = run_report("--help")
    assert result.returncode == 0 and "EXPERIMENT" in result.stdout.upper()
    assert time.perf_counter() - started < 20  # a loaded CI machine; pandas alone takes longer
    probe = (
        "import sys, cxr_tune.report.__main__ as m\n"
        "heavy = {'pandas', 'matplotlib', 'optuna', 'ray', 'torch'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_cli_rejects_a_missing_folder(tmp_path: Path) -> None:
    assert_one_line_error(run_report(tmp_path / "nowhere"), 2, "does not exist")


def test_cli_rejects_a_folder_that_is_not_an_experiment(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    assert_one_line_error(run_report(tmp_path), 2, "is not a cxr_tune experiment")


def test_cli_rejects_an_empty_ray_folder(tmp_path: Path) -> None:
    # What a search leaves when it stops before writing its record: Ray's files only.
    (tmp_path / "experiment_state-2026-01-01_10-00-00.json").write_text('{"trial_data": []}')
    (tmp_path / ".validate_storage_marker").write_text("")
    assert_one_line_error(run_report(tmp_path), 2, "is not a cxr_tune experiment")


def test_cli_rejects_an_output_path_that_is_a_file(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1")])
    (tmp_path / "taken").write_text("")
    assert_one_line_error(run_report(folder, "--out", tmp_path / "taken"), 2, "cannot write")


def test_cli_writes_a_partial_report_for_an_experiment_without_trials(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [], finished=False)
    result = run_report(folder)
    assert result.returncode == 0, result.stderr
    text = (folder / "report.md").read_text()
    assert "No trial has reported yet." in text and "**The search did not finish**" in text
    assert (folder / "report.html").is_file() and (folder / "trials.csv").is_file()


@pytest.mark.slow
def test_cli_writes_a_partial_report_for_half_written_files(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", ablation_trials(), finished=False)
    trial = next(folder.glob("*-a1"))
    (trial / "params.json").unlink()
    result_file = trial / "result.json"
    result_file.write_text(result_file.read_text()[:-40], encoding="utf-8")  # cut mid-line
    (next(folder.glob("*-b1")) / "result.json").write_text('{"epoch": 1, "val_ma')
    (folder / "evaluation.json").write_text('{"entries": [')
    result = run_report(folder)
    assert result.returncode == 0, result.stderr
    assert "did not finish" in result.stdout
    text = (folder / "report.md").read_text()
    assert "**Missing or damaged files**" in text
    assert "params.json is missing" in text and "cut short" in text
    assert "evaluation.json is not valid JSON" in text
    assert "could not be built" not in text


def test_cli_writes_a_partial_report_when_the_record_is_damaged(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1")])
    (folder / "cxr_tune.json").write_text("{not json")
    result = run_report(folder, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "cxr_tune.json is not valid JSON" in (tmp_path / "out" / "report.md").read_text()


def test_cli_never_imports_ray(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1"), TrialSpec("t2", f1=(0.2,))])
    probe = (
        "import sys\nfrom cxr_tune.report.__main__ import main\n"
        f"code = main([{str(folder)!r}])\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\nsys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data.builders import Expected

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CXR_TUNE_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "cxr_tune.data", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_help_is_fast_and_imports_nothing_heavy(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = run_cli("--help", cache=tmp_path)
    assert result.returncode == 0 and "inspect" in result.stdout
    assert time.perf_counter() - started < 5
    probe = (
        "import sys, cxr_tune.cli as m; m.build_parser();"
        "print(sorted(k for k in ('torch', 'ray', 'openpyxl', 'tqdm') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_inspect_json(layouts: dict[str, Expected], tmp_path: Path) -> None:
    expected = layouts["covid_chestxray"]
    result = run_cli("inspect", str(expected.root), "--json", "--image-size", "32", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "covid_chestxray"
    assert summary["leakage_audit"]["crossing"] == 0
    assert summary["skipped"]["counts"] == expected.skips
    assert summary["image_stats_from"] == f"all {expected.images} decoded images"
    assert sorted(summary["labels_dropped"]) == sorted(expected.dropped_labels)


def test_inspect_text_mentions_every_section(layouts: dict[str, Expected], tmp_path: Path) -> None:
    expected = layouts["covid19_radiography"]
    result = run_cli(
        "inspect", f"covid19_radiography={expected.root}", "--image-size", "32", cache=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for text in (
        "detected:",
        "Viral Pneumonia",
        "Image modes (all 24 decoded images)",
        "I;16",
        "truncated or corrupt image data: 1",
        "Read 24 lung masks",
        "0 groups cross splits",
        "Split: hash",
    ):
        assert text in result.stdout, text


def test_prepare_prints_where_and_how_long(layouts: dict[str, Expected], tmp_path: Path) -> None:
    expected = layouts["imagefolder"]
    args = ("prepare", str(expected.root), "--image-size", "32", "--cache-dir", str(tmp_path / "c"))
    first = run_cli(*args, cache=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "decoded 12 images" in first.stdout and str(tmp_path / "c") in first.stdout
    second = run_cli(*args, cache=tmp_path)
    assert "reused cache" in second.stdout


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("{tmp}/missing", "does not exist"),
        ("covid19_radiografy={root}", "Did you mean 'covid19_radiography'?"),
        ("{tmp}", "is not a dataset layout cxr_tune knows"),
    ],
    ids=["missing-folder", "unknown-key", "not-a-dataset"],
)
def test_bad_input_is_one_line_and_exit_2(
    layouts: dict[str, Expected], tmp_path: Path, arg: str, message: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    text = arg.format(tmp=empty, root=layouts["covid19_radiography"].root)
    result = run_cli("inspect", text, cache=tmp_path / "cache")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_inspect_states_the_uncertain_label_policy(
    layouts: dict[str, Expected], tmp_path: Path
) -> None:
    expected = layouts["chexpert"]
    args = ("inspect", str(expected.root), "--image-size", "32", "--uncertain")
    zeros = run_cli(*args, "zeros", cache=tmp_path)
    assert zeros.returncode == 0, zeros.stderr
    assert "uncertain labels: zeros (0 label values masked" in zeros.stdout
    assert "policy zeros (U-Zeros, counted as negative)" in zeros.stdout
    bad = run_cli(*args, "maybe", cache=tmp_path)
    assert bad.returncode == 2
    assert "Unknown value 'maybe'" in bad.stderr and "Traceback" not in bad.stderr

"""A search over a user's class folders: where a transfer compares datasets, a misspelt class
stops it before any trial, and ``--label-map`` maps it for the whole run (the search's
evaluation and a later ``evaluate``); a folder with its own class names, compared with nothing,
is searched through to its report without a map."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_tune.spaces import spaces_dir
from tests.data.builders import save_image

pytestmark = pytest.mark.integration

CLASSES = ("COVID", "Normal", "Pnuemonia")  # the last one misspelt, as folders sometimes are


# A 4-class folder with its own names: words of aliases ('Bacterial Pneumonia'), not typos.
OWN_CLASSES = ("Bacterial", "Normal", "Viral-COVID19", "Viral-Other")


def _folder(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    seed = 7000
    for name in classes:
        for k in range(10):
            seed += 1
            save_image(root / name / f"{name}_{k}.png", seed)
    return root


def _space(tmp_path: Path) -> Path:
    text = (spaces_dir() / "smoke.yaml").read_text().replace("batch_size: 16", "batch_size: 4")
    path = tmp_path / "smoke_small.yaml"
    path.write_text(text)
    return path


def _search(
    tmp_path: Path, *extra: str, classes: tuple[str, ...] = CLASSES
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "cxr_tune.search",
        "--space",
        str(_space(tmp_path)),
        "--profile",
        "smoke",
        "--num-samples",
        "1",
        "--data",
        str(_folder(tmp_path / "xrays", classes)),
        "--storage",
        str(tmp_path / "results"),
        "--name",
        "mine",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_misspelt_class_stops_a_comparing_search_before_any_trial(tmp_path: Path) -> None:
    # With an external set, the folder's classes are compared with another dataset's.
    run = _search(tmp_path, "--external", "phantom_b")
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert "'Pnuemonia'" in run.stderr and "Did you mean 'pneumonia'?" in run.stderr
    # Read from the folder names: nothing was decoded (a decoded dataset prints its splits).
    assert not re.search(r"data: \S+: \d+ classes", run.stdout), run.stdout
    folder = tmp_path / "results" / "mine"
    trials = (
        [p for p in folder.iterdir() if (p / "result.json").exists()] if folder.exists() else []
    )
    assert trials == []


def test_label_map_maps_the_class_for_the_whole_run(tmp_path: Path) -> None:
    label_map = tmp_path / "maps.yaml"
    label_map.write_text("datasets:\n  xrays:\n    classes:\n      Pnuemonia: pneumonia\n")
    run = _search(tmp_path, "--label-map", str(label_map))
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "results" / "mine"
    record = json.loads((folder / "cxr_tune.json").read_text())
    assert record["label_map"] == str(label_map.resolve())
    # The evaluation mapped the class (without the map it exits 2, as above).
    assert (folder / "evaluation.json").is_file() and (folder / "report.md").is_file()
    # A later evaluation uses the search's label map without being told again.
    again = subprocess.run(
        [sys.executable, "-m", "cxr_tune.evaluate", str(folder)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]


def test_own_class_names_are_searched_through_to_the_report_without_a_map(tmp_path: Path) -> None:
    run = _search(tmp_path, classes=OWN_CLASSES)
    assert run.returncode == 0, run.stderr[-3000:]
    # Named, not refused: the classes that match no shared class.
    assert "Bacterial, Viral-COVID19, Viral-Other: no shared class" in run.stdout, run.stdout
    folder = tmp_path / "results" / "mine"
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert [e["classes"] for e in evaluation["entries"]][0] == sorted(OWN_CLASSES)
    assert "## Best configuration per cell" in (folder / "report.md").read_text()

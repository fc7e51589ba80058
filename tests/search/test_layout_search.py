"""A smoke search over a miniature copy of every dataset layout, as users point at them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxr_tune.spaces import spaces_dir
from tests.data.builders import BUILDERS

pytestmark = pytest.mark.integration


def _tiny_batch_space(tmp_path):
    """The smoke space with a batch of 4: the smallest miniature trains on 8 images."""
    text = (spaces_dir() / "smoke.yaml").read_text().replace("batch_size: 16", "batch_size: 4")
    assert "batch_size: 4" in text
    path = tmp_path / "smoke_tiny_batch.yaml"
    path.write_text(text)
    return path


def test_smoke_search_runs_on_every_miniature_layout(tmp_path):
    built = {name: build(tmp_path / "data" / name) for name, build in BUILDERS.items()}
    data_args = []
    for name, expected in built.items():
        # Half the layouts are detected from the folder, half are forced with KEY=PATH.
        text = (
            str(expected.root)
            if name in ("covid19_radiography", "covid_chestxray")
            else f"{name}={expected.root}"
        )
        data_args += ["--data", text]
    # Named after their layouts, but the last (imagefolder) after its folder, by default.
    assert list(built)[-1] == "imagefolder"
    data_args += [arg for name in list(built)[:-1] for arg in ("--data-name", name)]
    names = {key: key for key in built} | {"imagefolder": built["imagefolder"].root.name}
    command = [
        sys.executable,
        "-m",
        "cxr_tune.search",
        "--space",
        str(_tiny_batch_space(tmp_path)),
        "--profile",
        "smoke",
        "--num-samples",
        "1",
        "--storage",
        str(tmp_path / "results"),
        "--name",
        "layouts",
        *data_args,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "covid19_radiography (" in run.stdout  # detection says what it found
    folder = tmp_path / "results" / "layouts"
    record = json.loads((folder / "cxr_tune.json").read_text())
    datasets = {d["name"]: d for d in record["datasets"]}
    assert set(datasets) == set(names.values())
    for key, expected in built.items():
        assert sum(datasets[names[key]]["sizes"].values()) == expected.images, key
        assert datasets[names[key]]["key"] == key
    assert datasets["covid_chestxray"]["task"] == "multilabel"
    results = {}
    for trial in (p for p in folder.iterdir() if (p / "result.json").exists()):
        rows = [
            json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line
        ]
        results[rows[-1]["config"]["dataset"]] = rows
    assert set(results) == set(names.values())
    for name, rows in results.items():
        assert rows[-1]["status"] == "ok" and rows[-1]["epoch"] == 2, name
        assert rows[-1]["split_hash"] == datasets[name]["split_hash"]
    assert "val_macro_auroc" in results["covid_chestxray"][-1]
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert {e["cell"].split("/")[0] for e in evaluation["entries"]} == set(names.values())
    assert "| `my_xrays` | `imagefolder` |" in (folder / "report.md").read_text()
    assert (folder / "report.md").is_file()

"""One test per security promise of README.md and DESIGN.md.

1. Checkpoints and caches load without executing code (``weights_only=True``; no pickles).
2. YAML is read with a safe loader.
3. Paths in a dataset's metadata cannot reach outside the dataset folder.
4. The dashboard and the job server listen on localhost only (reached through the SSH tunnel).
5. No token or secret is written to the results or printed.
6. Reports carry no images from the data: their only images are the report's own plots.
"""

from __future__ import annotations

import ast
import base64
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxr_tune.errors import ConfigError, DataError
from tests.conftest import repo_root
from tests.experiments import SECRETS, FinishedSearch

PACKAGE = repo_root() / "cxr_tune"


def calls(name: str) -> Iterator[tuple[Path, ast.Call]]:
    """Every call of ``name`` (dotted, e.g. ``torch.load``) in the package's source."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path, node


def keyword(call: ast.Call, name: str) -> str | None:
    return next((ast.unparse(k.value) for k in call.keywords if k.arg == name), None)


class _Planted:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# --- 1. no code runs when a checkpoint or a cache is loaded -------------------------------------


def test_every_checkpoint_load_is_weights_only() -> None:
    found = list(calls("torch.load"))
    assert found, "no torch.load found: the scan is broken"
    for path, call in found:
        assert keyword(call, "weights_only") == "True", f"{path}:{call.lineno}"
    for path, call in calls("np.load"):
        assert keyword(call, "allow_pickle") in (None, "False"), f"{path}:{call.lineno}"


def test_no_pickle_is_read_outside_the_searchers_own_state() -> None:
    # The Optuna searcher and the scheduler save their state through Ray Tune's checkpoint
    # protocol (Tune pickles the whole experiment state anyway); nothing else may unpickle.
    allowed = {PACKAGE / "search" / "searcher.py", PACKAGE / "search" / "scheduler.py"}
    readers = [p for name in ("pickle.load", "pickle.loads") for p, _ in calls(name)]
    assert set(readers) <= allowed, readers


@pytest.mark.slow  # imports torch and ray.tune: about 5 s of CPU in a fresh process
def test_a_checkpoint_with_planted_code_is_refused_unrun(tmp_path: Path) -> None:
    import torch
    from ray import tune
    from torch import nn

    from cxr_tune.trainable import CHECKPOINT_FILE, TrainingState, restore_state

    marker = tmp_path / "code-ran"
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"model": _Planted(marker), "epoch": 1}, folder / CHECKPOINT_FILE)
    model = nn.Linear(2, 2)
    state = TrainingState(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    with pytest.raises(Exception, match="Weights only load failed"):
        restore_state(state, tune.Checkpoint.from_directory(folder), torch.device("cpu"))
    assert not marker.exists()


def test_a_cache_with_planted_objects_is_refused_unrun(tmp_path: Path) -> None:
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions
    from cxr_tune.data.cache import open_cache
    from cxr_tune.data.prepare import prepare
    from tests.data.builders import build_imagefolder

    expected = build_imagefolder(tmp_path)
    entry = prepare(DataSource(None, expected.root), DataOptions(32, cache_dir=tmp_path / "c"))
    marker = tmp_path / "code-ran"
    planted = np.empty(1, dtype=object)
    planted[0] = _Planted(marker)
    np.save(entry.path / "labels.npy", planted, allow_pickle=True)
    with pytest.raises(DataError, match="is damaged"):
        open_cache(entry.path)
    assert not marker.exists()


# --- 2. YAML -------------------------------------------------------------------------------------


def test_yaml_is_only_read_with_a_safe_loader() -> None:
    from cxr_tune.spaces import SpaceLoader, read_yaml

    assert issubclass(SpaceLoader, yaml.SafeLoader)
    for name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
        assert not list(calls(name)), name
    for path, call in calls("yaml.load"):
        assert keyword(call, "Loader") == "SpaceLoader", f"{path}:{call.lineno}"
    with pytest.raises(yaml.YAMLError):
        read_yaml("x: !!python/object/apply:os.system ['true']")


# --- 3. metadata paths stay inside the dataset -----------------------------------------------


def test_metadata_paths_cannot_leave_the_dataset_folder(tmp_path: Path) -> None:
    from cxr_tune.data.datasets import DATASETS
    from tests.data.builders import build_covid_chestxray, save_image

    root = build_covid_chestxray(tmp_path).dataset_root
    save_image(tmp_path / "outside.png", 3)
    text = (root / "metadata.csv").read_bytes().decode("latin-1")
    header, first = text.split("\n")[:2]
    columns = header.split(",")
    extra = io.StringIO()
    for folder, name in (
        ("images", "../../outside.png"),
        ("..", "outside.png"),
        ("/", "etc/hosts"),
    ):
        row = next(csv.reader([first]))
        row[columns.index("folder")], row[columns.index("filename")] = folder, name
        csv.writer(extra, lineterminator="\n").writerow(row)
    (root / "metadata.csv").write_bytes((text + extra.getvalue()).encode("latin-1"))
    manifest = DATASETS.get("covid_chestxray").parse(root, {})
    assert manifest.records
    for record in manifest.records:
        assert record.path.resolve().is_relative_to(root.resolve()), record.path


# --- 4. dashboard and job server on localhost ------------------------------------------------


def test_no_ray_start_opens_the_dashboard_beyond_localhost() -> None:
    for path, call in calls("ray.init"):
        host = keyword(call, "dashboard_host")
        assert host in (None, "'127.0.0.1'", "'localhost'"), f"{path}:{call.lineno}"
    texts = [repo_root() / "cluster.yaml", *(repo_root() / "scripts").glob("*.sh")]
    texts.append(repo_root() / "scripts" / "cluster_local.yaml")
    for path in texts:
        text = path.read_text(encoding="utf-8")
        commands = [line for line in text.splitlines() if re.search(r"\bray\b|dashboard", line)]
        assert not [c for c in commands if "0.0.0.0" in c and not c.lstrip().startswith("#")]
        for host in re.findall(r"--dashboard-host[= ](\S+)", text):
            assert host.strip("'\"") in ("127.0.0.1", "localhost", "$DASHBOARD_HOST"), (path, host)


# --- 5. secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["s3://AKIAEXAMPLE:s3cr3t-value@bucket/cxr", "s3://bucket/cxr?secret_key=s3cr3t-value"],
)
def test_storage_uri_with_credentials_is_refused_without_showing_them(uri: str) -> None:
    from cxr_tune.storage import Storage

    with pytest.raises(ConfigError, match="carries credentials") as err:
        Storage.parse(uri)
    assert "s3cr3t-value" not in str(err.value)


@pytest.fixture(scope="module")
def searched_with_secrets(finished_search: FinishedSearch) -> tuple[Path, str]:
    """The shared smoke search (with its evaluation and report), run with SECRETS in its
    environment (``tests/experiments.py``)."""
    return finished_search.folder, finished_search.output


@pytest.mark.integration
@pytest.mark.slow
def test_no_secret_reaches_the_results_or_the_output(searched_with_secrets) -> None:
    experiment, output = searched_with_secrets
    assert (experiment / "evaluation.json").is_file() and (experiment / "report.html").is_file()
    for value in SECRETS.values():
        assert value not in output
        for path in experiment.rglob("*"):
            if path.is_file() and path.stat().st_size < 50 << 20:
                assert value.encode() not in path.read_bytes(), f"{value} in {path}"


# --- 6. reports carry no images from the data --------------------------------------------------


def test_report_code_reads_no_images() -> None:
    for path in sorted((PACKAGE / "report").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            alias.name if isinstance(node, ast.Import) else (node.module or "")
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        banned = {m for m in imported if m.startswith(("cxr_tune.data", "PIL", "torchvision"))}
        assert not banned, f"{path} imports {banned}"


@pytest.mark.integration
@pytest.mark.slow
def test_report_images_are_its_own_plots(searched_with_secrets) -> None:
    experiment, _ = searched_with_secrets
    html = (experiment / "report.html").read_text(encoding="utf-8")
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    plots = {p.read_bytes() for p in (experiment / "plots").glob("*.png")}
    assert embedded and plots
    for data in embedded:
        assert base64.b64decode(data) in plots
    assert not re.search(r"<img(?![^>]*data:image/png;base64)", html), "an image from elsewhere"
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (experiment / "report.md").read_text()):
        assert name.startswith("plots/") and (experiment / name).read_bytes() in plots

"""``--split``: passed to the data options, recorded in the experiment, rebuilt from the record."""

from __future__ import annotations

from pathlib import Path

import pytest

import cxr_tune.models  # noqa: F401  (build_plan reads the model registry: torch loads here)
from cxr_tune.config import PROFILES, DataSource
from cxr_tune.data import DataOptions
from cxr_tune.search.plan import Overrides, build_plan
from cxr_tune.search.runner import SearchRequest, data_options, experiment_record
from cxr_tune.spaces import load_space
from cxr_tune.storage import Storage


def _request(tmp_path: Path, **changes) -> SearchRequest:
    plan = build_plan(load_space("smoke"), PROFILES["smoke"], ("phantom",), Overrides())
    values = {
        "plan": plan,
        "sources": (DataSource.phantom(),),
        "dataset_names": ("phantom",),
        "dataset_keys": ("phantom",),
        "storage": Storage.parse(str(tmp_path / "results")),
        "name": "exp",
    }
    values.update(changes)
    return SearchRequest(**values)


def test_split_option_recorded_and_rebuilt(tmp_path: Path) -> None:
    plain = _request(tmp_path)
    assert experiment_record(plain, {})["data_options"]["split"] == "grouped"
    given = _request(tmp_path, split="published")
    assert data_options(given.plan, None, "published").split == "published"
    record = experiment_record(given, {})
    assert record["data_options"]["split"] == "published"
    # Evaluation and resume rebuild the data from the record's options.
    assert DataOptions.from_record(record["data_options"]).split == "published"


def test_search_cli_rejects_unknown_split(capsys: pytest.CaptureFixture[str]) -> None:
    from cxr_tune.cli import run_command

    with pytest.raises(SystemExit) as info:
        run_command("search", ["--split", "publshed", "--dry-run"])
    assert info.value.code == 2
    assert "invalid choice: 'publshed'" in capsys.readouterr().err

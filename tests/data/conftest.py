"""Fixtures of the data-layer tests: each miniature layout is built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_tune.data import DataOptions
from tests.data import builders
from tests.data.builders import Expected


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Expected]:
    """Every miniature layout, built once; tests must not modify these folders."""
    base = tmp_path_factory.mktemp("layouts")
    built = {name: build(base / name) for name, build in builders.BUILDERS.items()}
    built["covid19_radiography_v3"] = builders.build_covid19_radiography_v3(base / "v3")
    built["imagefolder_splits"] = builders.build_imagefolder_splits(base / "splits")
    built["imagefolder_no_val"] = builders.build_imagefolder_splits(base / "noval", with_val=False)
    return built


@pytest.fixture
def options(tmp_path: Path) -> DataOptions:
    """Small cache images in a cache folder of the test's own."""
    return DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1)

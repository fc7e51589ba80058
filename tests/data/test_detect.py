from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cxr_tune.config import DataSource
from cxr_tune.data.detect import resolve
from cxr_tune.errors import ConfigError, DataError
from tests.data import builders
from tests.data.builders import Expected


def test_detect_looks_one_level_down(layouts: dict[str, Expected]) -> None:
    expected = layouts["covid19_radiography"]  # built as archive/COVID-19_Radiography_Dataset/
    found = resolve(DataSource(None, expected.root))
    assert found.root == expected.dataset_root
    assert "in subfolder 'COVID-19_Radiography_Dataset'" in found.reason


def test_detect_not_a_dataset_names_folder_and_layouts(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError) as err:
        resolve(DataSource(None, tmp_path))
    message = str(err.value)
    assert f"'{tmp_path}'" in message and "KEY=PATH" in message
    for name in ("covid19_radiography", "covid19_pneumonia_normal", "covid_chestxray"):
        assert name in message


def test_detect_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve(DataSource(None, tmp_path / "nope"))


def test_detect_two_datasets_below_is_ambiguous(tmp_path: Path) -> None:
    builders.build_covid19_pneumonia_normal(tmp_path / "a", per_class=1, copies=0)
    builders.build_covid19_radiography_v3(tmp_path / "b", per_class=1)
    shutil.move(str(tmp_path / "a" / "Data"), str(tmp_path / "both" / "Data"))
    shutil.move(str(tmp_path / "b" / "COVID-19 Radiography Database"), str(tmp_path / "both"))
    with pytest.raises(DataError, match="several datasets"):
        resolve(DataSource(None, tmp_path / "both"))


def test_forced_key_wins_over_detection(layouts: dict[str, Expected]) -> None:
    expected = layouts["covid19_pneumonia_normal"]
    found = resolve(DataSource("imagefolder", expected.root))
    assert found.dataset == "imagefolder"
    assert found.reason.startswith("forced by imagefolder=PATH")


def test_forced_key_finds_the_layout_one_level_down(layouts: dict[str, Expected]) -> None:
    expected = layouts["covid19_radiography"]
    found = resolve(DataSource("covid19_radiography", expected.root))
    assert found.root == expected.dataset_root


def test_unknown_key_suggests(layouts: dict[str, Expected]) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'covid_chestxray'"):
        resolve(DataSource("covid_chestxrays", layouts["covid_chestxray"].root))


def test_phantom_key_takes_no_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="built in"):
        resolve(DataSource("phantom", tmp_path))


def test_a_resolved_source_is_loaded_without_detecting_again(
    layouts: dict[str, Expected], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxr_tune.data import DataOptions, load_dataset, resolve_source
    from cxr_tune.data import detect as detect_module

    expected = layouts["covid19_radiography"]
    source = resolve_source(DataSource(None, expected.root))
    assert source.key == "covid19_radiography" and source.path == expected.dataset_root
    assert source.detected and "in subfolder" in source.detected

    def detect_again(_: DataSource) -> None:
        raise AssertionError("the layout was detected a second time")

    monkeypatch.setattr(detect_module, "resolve", detect_again)
    monkeypatch.setattr("cxr_tune.data.prepare.resolve", detect_again)
    arrays = load_dataset(source, DataOptions(image_size=32, cache_dir=tmp_path))
    assert arrays.name == "covid19_radiography" and len(arrays.split("train")) > 0


def test_detect_finds_a_dataset_three_levels_down_and_names_the_folder(tmp_path: Path) -> None:
    # As unzip tools leave Kaggle's archive.zip inside a download folder of its own.
    expected = builders.build_covid19_radiography(tmp_path / "downloads", per_class=1)
    found = resolve(DataSource(None, tmp_path))
    assert found.dataset == "covid19_radiography"
    assert found.root == expected.dataset_root
    assert found.reason.endswith("in subfolder 'downloads/archive/COVID-19_Radiography_Dataset'")


def test_detect_two_datasets_three_levels_down_is_ambiguous(tmp_path: Path) -> None:
    builders.build_covid19_radiography(tmp_path / "one", per_class=1)
    builders.build_covid19_radiography(tmp_path / "two", per_class=1)
    with pytest.raises(DataError, match="several datasets") as err:
        resolve(DataSource(None, tmp_path))
    assert "one/archive" in str(err.value) and "two/archive" in str(err.value)


def test_detect_names_the_subfolder_it_chose(tmp_path: Path) -> None:
    expected = builders.build_covid19_radiography(tmp_path / "dl", per_class=1)
    found = resolve(DataSource(None, tmp_path))
    assert found.root == expected.dataset_root
    assert found.reason.endswith("in subfolder 'dl/archive/COVID-19_Radiography_Dataset'")


def test_detect_stops_three_levels_down(tmp_path: Path) -> None:
    builders.build_covid19_radiography(tmp_path / "a" / "b", per_class=1)  # 4 levels down
    with pytest.raises(DataError, match="up to 3 levels down"):
        resolve(DataSource(None, tmp_path))


def test_forced_key_finds_the_layout_two_levels_down_and_names_it(tmp_path: Path) -> None:
    expected = builders.build_covid19_radiography(tmp_path / "dl", per_class=1)
    found = resolve(DataSource("covid19_radiography", tmp_path / "dl"))
    assert found.root == expected.dataset_root
    assert found.reason.startswith("forced by covid19_radiography=PATH; ")
    assert found.reason.endswith("in subfolder 'archive/COVID-19_Radiography_Dataset'")


def test_detect_prefers_a_specific_layout_below_class_folders(tmp_path: Path) -> None:
    # The given folder's subfolders look like classes, but one of them is a known dataset.
    expected = builders.build_covid19_pneumonia_normal(tmp_path, per_class=1, copies=0)
    builders.save_image(tmp_path / "other" / "x.png", 1)
    found = resolve(DataSource(None, tmp_path))
    assert (found.dataset, found.root) == ("covid19_pneumonia_normal", expected.dataset_root)

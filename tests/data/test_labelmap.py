"""Label mappings between datasets: shared classes, index maps, left-out classes, user files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data.labelmap import (
    LEFT_OUT,
    DatasetClasses,
    classes_of,
    is_near_spelling,
    load_label_maps,
    map_dataset,
    shared_classes,
)
from cxr_tune.errors import ConfigError
from tests.data.builders import Expected, save_image

DS1 = DatasetClasses(
    "covid19_radiography",
    "covid19_radiography",
    "multiclass",
    ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"),
)
DS2 = DatasetClasses(
    "covid19_pneumonia_normal",
    "covid19_pneumonia_normal",
    "multiclass",
    ("covid", "normal", "pneumonia"),
)
DS3 = DatasetClasses(
    "covid_chestxray",
    "covid_chestxray",
    "multilabel",
    ("Bacterial", "COVID-19", "No Finding", "Pneumonia", "Tuberculosis", "Viral"),
)


def test_shared_classes_dataset1_to_dataset2_leaves_out_lung_opacity() -> None:
    shared = shared_classes(DS1, DS2)
    assert shared.classes == ("covid", "normal", "pneumonia")
    assert shared.train.index == (0, LEFT_OUT, 1, 2)
    assert shared.test.index == (0, 1, 2)
    assert shared.train.mapping == {
        "COVID": "covid",
        "Normal": "normal",
        "Viral Pneumonia": "pneumonia",
    }
    assert list(shared.train.left_out) == ["Lung_Opacity"]
    assert "no counterpart in covid19_pneumonia_normal" in shared.train.left_out["Lung_Opacity"]
    assert shared.test.left_out == {}
    text = "\n".join(shared.describe())
    assert "Lung_Opacity" in text and "shared classes covid, normal, pneumonia" in text


def test_shared_classes_dataset1_with_itself_keeps_four_classes() -> None:
    shared = shared_classes(DS1, DS1)
    assert shared.classes == ("covid", "normal", "pneumonia", "lung_opacity")
    assert shared.train.index == (0, 3, 1, 2)


def test_shared_classes_labels_and_scores_multiclass() -> None:
    shared = shared_classes(DS1, DS2)
    # Test side (Dataset 2) labels are already shared indices.
    assert shared.test_labels(np.array([2, 0, 1])).tolist() == [2, 0, 1]
    # Train side (Dataset 1) softmax: Lung_Opacity's mass is dropped, the rest renormalised.
    probs = np.array([[0.1, 0.5, 0.2, 0.2], [0.0, 1.0, 0.0, 0.0]])
    out = shared.train_scores(probs)
    assert np.allclose(out[0], [0.2, 0.4, 0.4])
    assert np.allclose(out[1], [1 / 3, 1 / 3, 1 / 3])  # no mass on shared classes: uniform
    # Reversed: Dataset 1 as the test side drops its Lung_Opacity images.
    back = shared_classes(DS2, DS1)
    assert back.test_labels(np.array([0, 1, 2, 3])).tolist() == [0, LEFT_OUT, 1, 2]


def test_shared_classes_dataset3_rules_first_match_wins() -> None:
    shared = shared_classes(DS2, DS3)
    assert shared.classes == ("covid", "normal", "pneumonia")
    assert shared.test.mapping == {
        "COVID-19": "covid",
        "Pneumonia": "pneumonia",
        "No Finding": "normal",
    }
    columns = {name: k for k, name in enumerate(DS3.classes)}

    def hot(*names: str) -> list[int]:
        row = [0] * len(DS3.classes)
        for name in names:
            row[columns[name]] = 1
        return row

    labels = np.array(
        [
            hot("COVID-19", "Pneumonia", "Viral"),  # covid, though it carries Pneumonia too
            hot("Pneumonia", "Bacterial"),
            hot("No Finding"),
            hot("Tuberculosis"),  # no rule: left out
        ]
    )
    assert shared.test_labels(labels).tolist() == [0, 2, 1, LEFT_OUT]
    assert "other findings" in shared.test.left_out


def test_shared_classes_multilabel_scores_first_match_chain() -> None:
    shared = shared_classes(DS3, DS2)
    probs = np.zeros((1, len(DS3.classes)))
    cols = {name: k for k, name in enumerate(DS3.classes)}
    probs[0, cols["COVID-19"]], probs[0, cols["Pneumonia"]], probs[0, cols["No Finding"]] = (
        0.5,
        0.8,
        0.5,
    )
    # covid 0.5; pneumonia 0.8 * 0.5 = 0.4; normal 0.5 * 0.5 * 0.2 = 0.05; over 0.95.
    expected = np.array([0.5, 0.05, 0.4]) / 0.95
    assert np.allclose(shared.train_scores(probs)[0], expected)


def test_map_dataset_multilabel_rule_label_missing_is_left_out() -> None:
    small = DatasetClasses(
        "covid_chestxray", "covid_chestxray", "multilabel", ("COVID-19", "Pneumonia")
    )
    shared = shared_classes(small, DS2)
    assert shared.classes == ("covid", "pneumonia")
    assert "not in the dataset's kept labels" in shared.train.left_out["No Finding"]


def test_map_dataset_imagefolder_matches_by_name_any_case() -> None:
    kermany = DatasetClasses("imagefolder", "imagefolder", "multiclass", ("NORMAL", "PNEUMONIA"))
    side = map_dataset(kermany, load_label_maps())
    assert dict(side.shared) == {"NORMAL": "normal", "PNEUMONIA": "pneumonia"}
    four = DatasetClasses(
        "imagefolder",
        "imagefolder",
        "multiclass",
        ("COVID19", "NORMAL", "PNEUMONIA", "TURBERCULOSIS"),
    )
    with pytest.raises(ConfigError, match="TURBERCULOSIS.*Did you mean 'tuberculosis'"):
        map_dataset(four, load_label_maps())


def test_map_dataset_imagefolder_unknown_class_did_you_mean() -> None:
    typo = DatasetClasses("imagefolder", "imagefolder", "multiclass", ("covid", "Pneumnia"))
    with pytest.raises(
        ConfigError, match=r"'Pneumnia'.*Did you mean 'pneumonia'\?.*Shared classes"
    ):
        shared_classes(typo, DS2)


def test_map_dataset_registered_layout_unmatched_class_is_left_out() -> None:
    odd = DatasetClasses(
        "covid19_radiography", "covid19_radiography", "multiclass", ("COVID", "Zebra")
    )
    shared = shared_classes(odd, DS2)
    assert shared.classes == ("covid",)
    assert shared.train.left_out == {"Zebra": "no shared class"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_label_maps_user_file_maps_and_leaves_out(tmp_path: Path) -> None:
    user = _write(
        tmp_path / "maps.yaml",
        "datasets:\n"
        "  hospital:\n"
        "    classes: {bacteria: pneumonia, virus: pneumonia, other: null}\n"
        "classes:\n"
        "  normal: [Normal, clear]\n",
    )
    maps = load_label_maps(user)
    assert maps.sources[-1] == str(user)
    hospital = DatasetClasses(
        "hospital", "imagefolder", "multiclass", ("bacteria", "clear", "other", "virus")
    )
    shared = shared_classes(hospital, DS2, maps)
    assert shared.classes == ("normal", "pneumonia")
    assert shared.train.index == (1, 0, LEFT_OUT, 1)
    assert shared.train.left_out == {"other": "left out by the mapping"}
    probs = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert np.allclose(shared.train_scores(probs), [[1 / 3, 2 / 3]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datasets:\n  hospital:\n    classes: {bacteria: pnemonia}\n", "Did you mean 'pneumonia'"),
        ("dataset:\n  x: 1\n", "label-map key 'dataset'. Did you mean 'datasets'"),
        ("datasets:\n  hospital: {classes: {}, rules: []}\n", "exactly one of"),
        ("datasets:\n  h:\n    rules: [{label: A}]\n", r"rules\[0\]"),
        ("classes:\n  covid: COVID\n", "must be a list"),
        ("- just a list\n", "must be a mapping"),
        ("classes: [unclosed\n", "not valid YAML"),
    ],
)
def test_load_label_maps_bad_user_file(tmp_path: Path, text: str, message: str) -> None:
    user = _write(tmp_path / "maps.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_label_maps(user)
    assert str(user) in str(info.value)


def test_map_dataset_user_file_names_a_class_the_dataset_lacks(tmp_path: Path) -> None:
    user = _write(
        tmp_path / "maps.yaml", "datasets:\n  hospital:\n    classes: {Bacteria: pneumonia}\n"
    )
    hospital = DatasetClasses("hospital", "imagefolder", "multiclass", ("bacteria", "normal"))
    with pytest.raises(ConfigError, match="no class 'Bacteria'. Did you mean 'bacteria'"):
        map_dataset(hospital, load_label_maps(user))


def test_load_label_maps_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_label_maps(tmp_path / "nope.yaml")


def test_classes_of_reads_layouts(layouts: dict[str, Expected]) -> None:
    found = classes_of(DataSource(None, layouts["covid19_radiography"].root))
    assert found.key == "covid19_radiography"
    assert found.classes == layouts["covid19_radiography"].classes
    assert classes_of(DataSource("phantom", None)).classes[0] == "COVID"


def test_labels_cli_unknown_class_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxr_tune.data.__main__ import main

    for k, name in enumerate(("covid", "Pneumnia", "normal")):
        for i in range(2):
            save_image(tmp_path / "folder" / name / f"{i}.png", seed=10 * k + i)
    assert main(["labels", str(tmp_path / "folder"), "phantom"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean 'pneumonia'?" in err
    user = _write(
        tmp_path / "maps.yaml", "datasets:\n  imagefolder:\n    classes: {Pneumnia: pneumonia}\n"
    )
    assert main(["labels", str(tmp_path / "folder"), "phantom", "--label-map", str(user)]) == 0
    out = capsys.readouterr().out
    assert "imagefolder -> phantom: shared classes covid, normal, pneumonia." in out
    assert re.search(r"phantom leaves out: Lung_Opacity \(lung_opacity: no counterpart", out)


def test_label_maps_yaml_ships_as_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert "cxr_tune.data" in setuptools["packages"]
    patterns = setuptools["package-data"]["cxr_tune.data"]
    shipped = {p.name for g in patterns for p in (root / "cxr_tune" / "data").glob(g)}
    assert "label_maps.yaml" in shipped


def test_labels_cli_phantom_sites(capsys: pytest.CaptureFixture[str]) -> None:
    from cxr_tune.data.__main__ import main

    assert main(["labels", "phantom", "phantom_b"]) == 0
    out = capsys.readouterr().out
    assert "phantom -> phantom_b: shared classes covid, normal, pneumonia, lung_opacity." in out
    assert main(["labels", "phantom", "phantom_q"]) == 2
    assert "Did you mean 'phantom_b'" in capsys.readouterr().err


def test_map_dataset_imagefolder_class_close_to_none_is_left_out() -> None:
    # A user's own finding (not a typo of a shared class) must not stop a search.
    own = DatasetClasses("imagefolder", "imagefolder", "multiclass", ("effusion", "normal"))
    side = map_dataset(own, load_label_maps())
    assert dict(side.shared) == {"effusion": None, "normal": "normal"}
    assert side.how["effusion"] == "no shared class"


def test_a_word_inside_an_alias_is_a_class_of_its_own_not_a_typo() -> None:
    # 'Bacterial' is a word of the alias 'Bacterial Pneumonia', 'Viral-COVID19' contains the
    # alias 'COVID19': different classes, left out, where 'Pnuemonia' is a misspelling.
    four = DatasetClasses(
        "itu4", "imagefolder", "multiclass", ("Bacterial", "Normal", "Viral-COVID19", "Viral-Other")
    )
    side = map_dataset(four, load_label_maps())
    assert dict(side.shared) == {
        "Bacterial": None,
        "Normal": "normal",
        "Viral-COVID19": None,
        "Viral-Other": None,
    }


@pytest.mark.parametrize(
    ("name", "alias", "near"),
    [
        ("pnuemonia", "pneumonia", True),  # a transposed pair: one edit
        ("pneumnia", "pneumonia", True),
        ("covd", "covid", True),
        ("bacterial", "bacterialpneumonia", False),  # a word of the alias
        ("abnormal", "normal", False),  # contains the alias
        ("a", "tb", False),  # too short to call a typo
        ("effusion", "opacity", False),
        ("turberculosis", "tuberculosis", True),
    ],
)
def test_near_spelling(name: str, alias: str, near: bool) -> None:
    assert is_near_spelling(name, alias) is near


def test_a_run_that_compares_no_datasets_never_stops_over_a_misspelt_class() -> None:
    typo = DatasetClasses("mine", "imagefolder", "multiclass", ("covid", "Pnuemonia"))
    side = map_dataset(typo, load_label_maps(), strict=False)
    assert dict(side.shared) == {"covid": "covid", "Pnuemonia": None}
    with pytest.raises(ConfigError, match="Did you mean 'pneumonia'"):
        map_dataset(typo, load_label_maps())

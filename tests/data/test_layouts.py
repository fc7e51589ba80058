from __future__ import annotations

from pathlib import Path

import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions
from cxr_tune.data.cache import read_manifest
from cxr_tune.data.datasets import DATASETS
from cxr_tune.data.detect import resolve
from cxr_tune.data.prepare import prepare
from cxr_tune.errors import ConfigError, DataError
from tests.data import builders
from tests.data.builders import Expected

LAYOUTS = tuple(builders.BUILDERS)


def test_registry_lists_every_layout() -> None:
    generated = {n for n in DATASETS.names() if DATASETS.get(n).generated is not None}
    assert generated == {"phantom", "phantom_b", "phantom_marker"}
    assert set(LAYOUTS) | generated == set(DATASETS.names())
    assert DATASETS.names()[-1] == "imagefolder"


@pytest.mark.parametrize("name", [*LAYOUTS, "covid19_radiography_v3", "imagefolder_splits"])
def test_layout_detected_at_its_root(layouts: dict[str, Expected], name: str) -> None:
    expected = layouts[name]
    found = resolve(DataSource(None, expected.root))
    assert found.dataset == expected.dataset
    assert found.root == expected.dataset_root


@pytest.mark.parametrize("name", [*LAYOUTS, "covid19_radiography_v3"])
def test_layout_cache_has_exact_counts_and_skips(
    layouts: dict[str, Expected], options: DataOptions, name: str
) -> None:
    expected = layouts[name]
    entry = prepare(DataSource(None, expected.root), options)
    meta = entry.meta
    assert tuple(meta["classes"]) == expected.classes
    assert sum(meta["sizes"].values()) == expected.images
    totals = {
        c: sum(meta["counts"][s][c] for s in ("train", "val", "test")) for c in meta["classes"]
    }
    assert totals == expected.counts
    assert entry.skipped()["counts"] == expected.skips
    for note in expected.notes:
        assert any(note in n for n in meta["notes"]), (note, meta["notes"])
    assert sorted(meta["labels_dropped"]) == sorted(expected.dropped_labels)


def test_covid19_radiography_reads_sources_case_insensitively(layouts: dict[str, Expected]) -> None:
    expected = layouts["covid19_radiography"]
    manifest = DATASETS.get("covid19_radiography").parse(expected.dataset_root, {})
    by_name = {r.path.name: r for r in manifest.records}
    # FILE NAME "NORMAL-1" in the sheet, "Normal-1.png" on disk; "Normal-2.PNG" upper-case.
    assert by_name["Normal-1.png"].source == builders.D1_SOURCES["Normal"]
    assert by_name["Normal-2.PNG"].source == builders.D1_SOURCES["Normal"]
    assert by_name["Viral Pneumonia-1.png"].labels == ("Viral Pneumonia",)
    assert by_name["Viral Pneumonia-6.png"].source is None  # no row in its sheet
    assert all("masks" not in r.path.parts for r in manifest.records)
    assert all(r.group is None for r in manifest.records)


def test_covid19_radiography_old_release_is_named(layouts: dict[str, Expected]) -> None:
    found = resolve(DataSource(None, layouts["covid19_radiography_v3"].root))
    assert "older release (v1-v3)" in found.reason
    manifest = DATASETS.get("covid19_radiography").parse(found.root, {})
    assert manifest.classes == ("COVID-19", "NORMAL", "Viral Pneumonia")
    assert manifest.notes[0].startswith("Older release (v1-v3)")


def test_covid_chestxray_labels_groups_and_filters(layouts: dict[str, Expected]) -> None:
    expected = layouts["covid_chestxray"]
    manifest = DATASETS.get("covid_chestxray").parse(expected.dataset_root, {})
    assert manifest.task == "multilabel"
    groups = {
        r.path.relative_to(expected.dataset_root).as_posix(): r.group for r in manifest.records
    }
    assert groups == expected.groups
    labels = {r.labels for r in manifest.records}
    assert labels == {
        ("Pneumonia", "Viral", "COVID-19"),
        ("No Finding",),
        ("Pneumonia", "Viral", "SARS"),
        ("Pneumonia", "Viral", "Herpes"),  # "Herpes " stripped
        ("Pneumonia", "Bacterial", "Streptococcus"),
    }
    assert "patient:101a" in set(groups.values())  # string ids kept as strings
    assert any("latin-1" in note for note in manifest.notes)


def test_covid_chestxray_views_option(layouts: dict[str, Expected]) -> None:
    root = layouts["covid_chestxray"].dataset_root
    parse = DATASETS.get("covid_chestxray").parse
    only_pa = parse(root, {"views": "PA"})
    with_lateral = parse(root, {"covid_chestxray": {"views": ["PA", "AP", "L"]}})
    default = parse(root, {})
    assert 0 < len(only_pa.records) < len(default.records)
    assert "view not chosen (L)" not in with_lateral.skipped.counts
    with pytest.raises(ConfigError, match="`views`"):
        parse(root, {"views": 3})


def test_unknown_parser_option_suggests_the_right_one(layouts: dict[str, Expected]) -> None:
    root = layouts["covid_chestxray"].dataset_root
    with pytest.raises(ConfigError, match="Did you mean 'views'"):
        DATASETS.get("covid_chestxray").parse(root, {"veiws": ["PA"]})


def test_flat_options_of_other_layouts_are_ignored(layouts: dict[str, Expected]) -> None:
    root = layouts["imagefolder"].dataset_root
    manifest = DATASETS.get("imagefolder").parse(root, {"views": ["PA"]})
    assert len(manifest.records) == layouts["imagefolder"].images


def test_covid_chestxray_missing_column_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "metadata.csv").write_text("patientid,finding,filename\n1,No Finding,a.png\n")
    with pytest.raises(DataError, match=r"metadata.csv' has no column 'view', 'modality'"):
        DATASETS.get("covid_chestxray").parse(tmp_path, {})


def test_imagefolder_split_folders_are_kept(
    layouts: dict[str, Expected], options: DataOptions
) -> None:
    entry = prepare(DataSource(None, layouts["imagefolder_splits"].root), options)
    assert entry.meta["sizes"] == {"train": 16, "val": 6, "test": 6}
    rows = read_manifest(entry.path)
    assert all(row["path"].startswith(row["split"] + "/") for row in rows)


def test_imagefolder_missing_val_is_carved_from_train(
    layouts: dict[str, Expected], options: DataOptions
) -> None:
    entry = prepare(DataSource(None, layouts["imagefolder_no_val"].root), options)
    rows = read_manifest(entry.path)
    assert {r["split"] for r in rows if r["path"].startswith("test/")} == {"test"}
    assert {r["split"] for r in rows if r["path"].startswith("train/")} == {"train", "val"}
    assert entry.meta["sizes"]["test"] == 6 and entry.meta["sizes"]["val"] > 0


def test_imagefolder_needs_two_classes(tmp_path: Path) -> None:
    builders.save_image(tmp_path / "only" / "a.png", 1)
    with pytest.raises(DataError, match="at least 2"):
        DATASETS.get("imagefolder").parse(tmp_path, {})


def test_covid19_radiography_unreadable_sheet_is_a_note(tmp_path: Path) -> None:
    root = builders.build_covid19_radiography(tmp_path, per_class=2, wrapper=False).dataset_root
    (root / "COVID.metadata.xlsx").write_bytes(b"this is not a zip archive")
    manifest = DATASETS.get("covid19_radiography").parse(root, {})
    assert any("Could not read 'COVID.metadata.xlsx'" in note for note in manifest.notes)
    assert all(r.source is None for r in manifest.records if r.labels == ("COVID",))


def test_imagefolder_classes_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    for name in ("Effusion", "effusion", "Pleural Thickening", "pleural_thickening", "normal"):
        builders.save_image(tmp_path / "xr" / name / "a.png", len(name))
    options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1)
    with pytest.raises(DataError) as err:
        prepare(DataSource(None, tmp_path / "xr"), options)
    message = str(err.value)
    assert "'Effusion' and 'effusion'" in message
    assert "'Pleural Thickening' and 'pleural_thickening'" in message
    assert "differ only in case or spacing" in message and "rename" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_named_class_folder_twice_in_different_case_is_refused(tmp_path: Path) -> None:
    builders.build_covid19_pneumonia_normal(tmp_path, per_class=1, copies=0)
    builders.save_image(tmp_path / "Data" / "COVID" / "x.png", 99)
    with pytest.raises(DataError, match=r"'COVID' and 'covid', which differ only in case"):
        DATASETS.get("covid19_pneumonia_normal").parse(tmp_path / "Data", {})


# --- NIH ChestX-ray14 and CheXpert ----------------------------------------------------------


def test_nih_chestxray14_labels_groups_and_views(layouts: dict[str, Expected]) -> None:
    expected = layouts["nih_chestxray14"]
    parse = DATASETS.get("nih_chestxray14").parse
    manifest = parse(expected.dataset_root, {})
    by_path = {r.path.relative_to(expected.dataset_root).as_posix(): r for r in manifest.records}
    assert {k: r.group for k, r in by_path.items()} == expected.groups
    # "No Finding" is no positive label; "Effusion|Infiltration" is two.
    labels = {r.labels for r in manifest.records}
    assert () in labels and ("Effusion", "Infiltration") in labels
    assert all("No Finding" not in r.labels for r in manifest.records)
    only_pa = parse(expected.dataset_root, {"views": "pa"})
    assert 0 < len(only_pa.records) < len(manifest.records)
    assert only_pa.skipped.counts["view not chosen (AP)"] > 0
    with pytest.raises(ConfigError, match="Unknown view 'PAA'. Did you mean 'PA'"):
        parse(expected.dataset_root, {"views": ["PAA"]})


def test_nih_chestxray14_official_split_is_kept(
    layouts: dict[str, Expected], options: DataOptions
) -> None:
    expected = layouts["nih_chestxray14"]
    root = expected.dataset_root
    test_names = set((root / "test_list.txt").read_text().split())
    train_names = set((root / "train_val_list.txt").read_text().split())
    entry = prepare(DataSource(None, expected.root), options)
    rows = read_manifest(entry.path)
    split_of = {row["path"].rsplit("/", 1)[-1]: row["split"] for row in rows}
    assert {n for n, s in split_of.items() if s == "test"} == test_names & set(split_of)
    assert {n for n, s in split_of.items() if s != "test"} == train_names & set(split_of)
    assert entry.meta["sizes"]["val"] > 0
    assert entry.split_info()["fixed_by_layout"] and entry.split_info()["audit"]["crossing"] == 0
    # Patient-wise: no patient has images in two splits.
    splits_of_group: dict[str, set[str]] = {}
    for row in rows:
        splits_of_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_nih_chestxray14_without_split_lists_splits_by_patient(tmp_path: Path) -> None:
    root = builders.build_nih_chestxray14(tmp_path, train_patients=10, test_patients=5).dataset_root
    (root / "test_list.txt").unlink()
    manifest = DATASETS.get("nih_chestxray14").parse(root, {})
    assert all(r.split is None for r in manifest.records)
    assert any("split by patient instead of the official split" in n for n in manifest.notes)


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore"])
def test_chexpert_uncertain_label_policies(layouts: dict[str, Expected], policy: str) -> None:
    expected = layouts["chexpert"]
    manifest = DATASETS.get("chexpert").parse(expected.dataset_root, {"uncertain": policy})
    assert manifest.uncertain_policy == policy
    assert any(f"policy {policy}" in note for note in manifest.notes)
    rows = _chexpert_rows(expected.dataset_root)
    for record in manifest.records:
        rel = record.path.relative_to(expected.dataset_root).as_posix()
        positive, masked = builders.chexpert_expected_labels(rows[rel], policy)
        assert set(record.labels) == positive, rel
        assert set(record.masked) == masked, rel
    assert any(r.masked for r in manifest.records) == (policy == "ignore")


def _chexpert_rows(root: Path) -> dict[str, dict[str, str]]:
    import csv

    rows: dict[str, dict[str, str]] = {}
    for name in ("train.csv", "valid.csv"):
        with open(root / name, newline="") as handle:
            for row in csv.DictReader(handle):
                rel = row["Path"].split("/", 1)[1]
                rows[rel] = {k: v for k, v in row.items() if k in builders.CHEXPERT_OBSERVATIONS}
    return rows


def test_chexpert_lateral_views_filtered_by_default(layouts: dict[str, Expected]) -> None:
    expected = layouts["chexpert"]
    parse = DATASETS.get("chexpert").parse
    default = parse(expected.dataset_root, {})
    assert all("frontal" in r.path.name for r in default.records)
    both = parse(expected.dataset_root, {"chexpert": {"views": "Frontal,Lateral"}})
    assert any("lateral" in r.path.name for r in both.records)
    assert "view not chosen (Lateral)" not in both.skipped.counts
    only_pa = parse(expected.dataset_root, {"views": ["PA"]})
    assert 0 < len(only_pa.records) < len(default.records)


def test_chexpert_bad_options_suggest_the_right_one(layouts: dict[str, Expected]) -> None:
    root = layouts["chexpert"].dataset_root
    parse = DATASETS.get("chexpert").parse
    with pytest.raises(ConfigError, match="Unknown value 'ignor'. Did you mean 'ignore'"):
        parse(root, {"uncertain": "ignor"})
    with pytest.raises(ConfigError, match="Unknown view 'frontl'. Did you mean 'Frontal'"):
        parse(root, {"views": "frontl"})
    with pytest.raises(ConfigError, match="Did you mean 'uncertain'"):
        parse(root, {"uncertian": "ones"})


def test_chexpert_valid_csv_is_the_test_split_and_masks_reach_the_cache(
    layouts: dict[str, Expected], options: DataOptions
) -> None:
    import numpy as np

    from cxr_tune.data.types import MASKED_LABEL

    expected = layouts["chexpert"]
    entry = prepare(DataSource(None, expected.root), options)
    rows = read_manifest(entry.path)
    assert {r["split"] for r in rows if r["path"].startswith("valid/")} == {"test"}
    assert {r["split"] for r in rows if r["path"].startswith("train/")} == {"train", "val"}
    assert entry.meta["uncertain_policy"] == "ignore"
    arrays = entry.arrays()
    assert arrays.uncertain_policy == "ignore"
    labels = np.concatenate([arrays.split(s).labels for s in ("train", "val", "test")])
    masked = labels == MASKED_LABEL
    assert masked.any() and not masked[[r["split"] == "test" for r in rows]].any()
    assert entry.meta["masked_labels"] == int(masked.sum())
    ones = prepare(
        DataSource(None, expected.root),
        DataOptions(
            image_size=32,
            cache_dir=options.cache_dir,
            workers=1,
            parser_options={"uncertain": "ones"},
        ),
    )
    assert ones.path != entry.path and ones.meta["masked_labels"] == 0
    totals = {
        c: sum(ones.meta["counts"][s][c] for s in ("train", "val", "test"))
        for c in ones.meta["classes"]
    }
    assert totals["Edema"] > expected.counts["Edema"]  # uncertain Edema counted as positive


def test_chexpert_detected_from_the_folder_above(layouts: dict[str, Expected]) -> None:
    expected = layouts["chexpert"]
    found = resolve(DataSource(None, expected.root))
    assert (found.dataset, found.root) == ("chexpert", expected.dataset_root)
    assert "train.csv" in found.reason

"""A dataset's published split: regrouped (default) or kept exactly, with its leakage counted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions
from cxr_tune.data.cache import read_manifest
from cxr_tune.data.patients import name_patients, patient_from_name
from cxr_tune.data.prepare import prepare
from cxr_tune.data.published import plan_split, published_audit
from cxr_tune.data.splits import grouped_stratified_split
from cxr_tune.data.types import Record
from cxr_tune.errors import ConfigError
from tests.data.builders import Expected, save_image


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("person7_bacteria_29.jpeg", "kermany-person:7"),
        ("PERSON1000_virus_1681.JPEG", "kermany-person:1000"),
        ("00000013_005.png", "nih-patient:13"),
        ("IM-0115-0001.jpeg", None),  # Kermany's normals: not read (unconfirmed)
        ("person7.jpeg", None),
        ("0000013_005.png", None),
    ],
)
def test_patient_from_name_conventions(name: str, group: str | None) -> None:
    found = patient_from_name(name)
    assert (found[0] if found else None) == group


def test_name_patients_keeps_layout_groups() -> None:
    records = [
        Record(Path("/d/a/person3_virus_9.jpeg"), ("a",)),
        Record(Path("/d/a/person3_virus_10.jpeg"), ("a",), group="patient:x"),
        Record(Path("/d/a/other.png"), ("a",)),
    ]
    named, used = name_patients(records)
    assert [r.group for r in named] == ["kermany-person:3", "patient:x", None]
    assert used == {"Kermany person<N>_bacteria|virus_<M>": 1}


def _audit(published, patients, groups, mode, strata=None):
    plan = plan_split(published, groups, (0.7, 0.15, 0.15), mode)
    strata = strata or ["x"] * len(published)
    split = grouped_stratified_split(
        strata, plan.groups, fractions=plan.fractions, seed=0, fixed=plan.fixed
    )
    return split, published_audit(published, patients, groups, split, plan, mode)


def test_published_audit_counts_pairs_and_moves() -> None:
    # Images 0-2 one patient (2 train, 1 test); 3-4 near-duplicates (train, test); 5-7 alone.
    published = ["train", "train", "test", "train", "test", "train", "test", "val"]
    patients = ["p1", "p1", "p1", None, None, None, None, None]
    groups = ["p1", "p1", "p1", "d", "d", "i5", "i6", "i7"]
    split, audit = _audit(published, patients, groups, "grouped")
    assert audit["crossing_pairs_same_patient"] == 2  # (0, 2) and (1, 2)
    assert audit["crossing_pairs_near_duplicate"] == 1  # (3, 4)
    assert audit["crossing_groups"] == 2
    # p1 goes to train (2 of 3 there); the tied pair goes to test.
    assert {int(i) for i in split["train"]} == {0, 1, 2, 5}
    assert {int(i) for i in split["test"]} == {3, 4, 6}
    assert audit["moved"] == {"test->train": 1, "train->test": 1}
    assert audit["test_images"] == {"published": 3, "used": 3}
    _, kept = _audit(published, patients, groups, "published")
    assert kept["moved_total"] == 0 and kept["crossing_pairs_same_patient"] == 2


def test_published_split_carves_val_without_moving_test() -> None:
    published = ["train"] * 20 + ["test"] * 4
    groups = [f"g{i // 2}" for i in range(24)]
    groups[19] = groups[20] = "leak"  # one group across the boundary
    for mode in ("grouped", "published"):
        split, audit = _audit(published, [None] * 24, groups, mode)
        assert len(split["val"]) > 0 and audit["carved"] == ["val"]
        if mode == "published":
            assert {int(i) for i in split["test"]} == set(range(20, 24))
        else:
            assert audit["moved"] == {"train->test": 1}


def test_no_published_split_no_audit() -> None:
    _, audit = _audit([None] * 6, [None] * 6, [f"g{i}" for i in range(6)], "grouped")
    assert audit is None


def test_unknown_split_mode() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'published'"):
        plan_split(["train"], ["g"], (0.7, 0.15, 0.15), "publshed")


def _leaky_folder(layouts: dict[str, Expected], root: Path) -> None:
    """The split imagefolder plus a mirrored copy and a Kermany patient across train/test."""
    shutil.copytree(layouts["imagefolder_splits"].root, root)
    mirrored = Image.open(root / "train" / "a" / "a0.png").transpose(
        Image.Transpose.FLIP_LEFT_RIGHT
    )
    mirrored.save(root / "test" / "a" / "mirrored.png")
    save_image(root / "train" / "b" / "person7_bacteria_1.jpeg", 91_001)
    save_image(root / "train" / "b" / "person7_bacteria_2.jpeg", 91_002)
    save_image(root / "test" / "b" / "person7_virus_3.jpeg", 91_003)


def _test_paths(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "test").rglob("*.*")}


@pytest.mark.parametrize("mode", ["grouped", "published"])
def test_prepare_planted_cross_split_duplicate(
    layouts: dict[str, Expected], tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "leaky"
    _leaky_folder(layouts, root)
    options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1, split=mode)
    entry = prepare(DataSource(None, root), options)
    info = entry.split_info()
    audit = info["published"]
    # Reported the same under both modes: against the split as published.
    assert audit["crossing_pairs_same_patient"] == 2
    assert audit["crossing_pairs_near_duplicate"] == 1
    assert info["patient_ids_from_names"] == {"Kermany person<N>_bacteria|virus_<M>": 3}
    notes = " ".join(entry.meta["notes"])
    assert "Patient ids read from file names: 3 images by Kermany" in notes
    assert entry.arrays().published_split == audit  # what the experiment record keeps
    rows = {r["path"]: r for r in read_manifest(entry.path)}
    test_rows = {p for p, r in rows.items() if r["split"] == "test"}
    if mode == "published":
        assert test_rows == _test_paths(root)  # test images unchanged
        assert audit["moved_total"] == 0 and info["audit"]["crossing"] == 2
        assert "Published split kept exactly" in notes
    else:
        assert info["audit"]["crossing"] == 0
        # The mirrored pair (1 + 1) goes to test; patient 7 (2 train, 1 test) to train.
        assert rows["train/a/a0.png"]["split"] == "test"
        assert rows["test/b/person7_virus_3.jpeg"]["split"] == "train"
        assert audit["moved"] == {"test->train": 1, "train->test": 1}
        assert test_rows == (_test_paths(root) - {"test/b/person7_virus_3.jpeg"}) | {
            "train/a/a0.png"
        }
        assert "2 images moved to keep groups whole" in notes


def test_inspect_split_option(
    layouts: dict[str, Expected], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxr_tune.data.__main__ import main

    root = tmp_path / "leaky"
    _leaky_folder(layouts, root)
    common = [str(root), "--image-size", "32", "--cache-dir", str(tmp_path / "cache")]
    assert main(["inspect", *common]) == 0
    out = capsys.readouterr().out
    assert "published split regrouped (--split grouped): 2 images moved" in out
    assert main(["inspect", *common, "--split", "published"]) == 0
    assert "published split kept exactly" in capsys.readouterr().out
    assert main(["prepare", *common, "--split", "publshed"]) == 2
    assert "Did you mean 'published'" in capsys.readouterr().err

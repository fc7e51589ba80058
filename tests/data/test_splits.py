from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions
from cxr_tune.data.cache import read_manifest
from cxr_tune.data.prepare import prepare
from cxr_tune.data.splits import grouped_stratified_split, leakage_audit, split_hash
from tests.data.builders import Expected


def _random_dataset(n: int = 600, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    strata = [str(s) for s in rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])]
    groups = [f"p{g}" for g in rng.integers(0, n // 3, size=n)]
    # Patients have one class: make each group's stratum its first member's.
    first: dict[str, str] = {}
    strata = [first.setdefault(g, s) for g, s in zip(groups, strata, strict=True)]
    return strata, groups


def test_split_keeps_groups_whole() -> None:
    strata, groups = _random_dataset()
    split = grouped_stratified_split(strata, groups, seed=3)
    assert leakage_audit(groups, split)["crossing"] == 0
    assert sum(len(v) for v in split.values()) == len(strata)


def test_split_is_stratified_within_tolerance() -> None:
    strata, groups = _random_dataset(n=1500)
    split = grouped_stratified_split(strata, groups, seed=1)
    total = Counter(strata)
    for name, share in zip(("train", "val", "test"), (0.70, 0.15, 0.15), strict=True):
        counts = Counter(strata[i] for i in split[name])
        for stratum, n in total.items():
            assert abs(counts[stratum] / n - share) < 0.06, (name, stratum)


def test_split_is_seeded_and_deterministic() -> None:
    strata, groups = _random_dataset()
    ids = [str(i) for i in range(len(strata))]
    a = grouped_stratified_split(strata, groups, seed=7)
    b = grouped_stratified_split(strata, groups, seed=7)
    c = grouped_stratified_split(strata, groups, seed=8)
    assert split_hash(ids, a) == split_hash(ids, b)
    assert split_hash(ids, a) != split_hash(ids, c)


def test_fixed_items_never_move_and_their_group_follows() -> None:
    strata = ["a"] * 6
    groups = ["g1", "g1", "g2", "g2", "g3", "g3"]
    fixed = ["test", None, "train", "val", None, None]
    split = grouped_stratified_split(strata, groups, fixed=fixed)
    where = {int(i): name for name, idx in split.items() for i in idx}
    assert where[0] == "test" and where[1] == "test"
    assert where[2] == "train" and where[3] == "val"  # the layout's own split is kept


def test_zero_share_split_gets_nothing() -> None:
    strata, groups = _random_dataset(n=300)
    split = grouped_stratified_split(strata, groups, fractions=(0.8, 0.2, 0.0))
    assert len(split["test"]) == 0 and len(split["val"]) > 0


def test_invalid_fractions_are_rejected() -> None:
    with pytest.raises(ValueError, match="fractions"):
        grouped_stratified_split(["a"], ["g"], fractions=(0.5, 0.5, 0.5))


def test_near_duplicate_copies_share_a_split(layouts: dict[str, Expected], tmp_path: Path) -> None:
    expected = layouts["covid19_pneumonia_normal"]
    for seed in range(3):
        options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", seed=seed, workers=1)
        entry = prepare(DataSource(None, expected.root), options)
        rows = {r["path"]: r for r in read_manifest(entry.path)}
        for original, copy in expected.copies:
            assert rows[original]["group"] == rows[copy]["group"]
            assert rows[original]["split"] == rows[copy]["split"]
        assert entry.split_info()["audit"]["crossing"] == 0
        assert entry.split_info()["near_duplicates"]["near_duplicate_pairs"] == len(expected.copies)


def test_patients_never_cross_splits(layouts: dict[str, Expected], options: DataOptions) -> None:
    expected = layouts["covid_chestxray"]
    entry = prepare(DataSource(None, expected.root), options)
    rows = read_manifest(entry.path)
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        splits_of.setdefault(expected.groups[row["path"]], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(row["group"].startswith("patient:") for row in rows)


def test_leaky_split_folders_published_are_reported_not_moved(
    layouts: dict[str, Expected], tmp_path: Path
) -> None:
    import shutil

    from PIL import Image

    root = tmp_path / "leaky"
    shutil.copytree(layouts["imagefolder_splits"].root, root)
    # The same radiograph, mirrored, in train/ and test/: the dataset's own split leaks.
    Image.open(root / "train" / "a" / "a0.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        root / "test" / "a" / "mirrored.png"
    )
    options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1, split="published")
    entry = prepare(DataSource(None, root), options)
    rows = {r["path"]: r for r in read_manifest(entry.path)}
    assert rows["test/a/mirrored.png"]["split"] == "test"
    assert rows["train/a/a0.png"]["split"] == "train"
    assert entry.split_info()["audit"]["crossing"] == 1
    assert any("the dataset's split leaks" in note for note in entry.meta["notes"])


def test_check_splits_filled_names_the_empty_split_and_what_to_change() -> None:
    from cxr_tune.data.splits import check_splits_filled
    from cxr_tune.errors import DataError

    groups = ["g1"] * 10 + ["g2"] * 10
    split = grouped_stratified_split(["a"] * 10 + ["b"] * 10, groups, seed=0)
    assert sum(len(v) == 0 for v in split.values()) >= 1
    with pytest.raises(DataError) as err:
        check_splits_filled(split, groups, where="/data/x")
    message = str(err.value)
    assert "'/data/x'" in message and "empty" in message
    assert "20 images form 2 group(s)" in message and "largest holds 10 images" in message
    assert "Add more images" in message and "val/" in message


def test_check_splits_filled_accepts_three_filled_splits() -> None:
    from cxr_tune.data.splits import check_splits_filled

    groups = [f"g{i}" for i in range(40)]
    split = grouped_stratified_split(["a", "b"] * 20, groups, seed=0)
    check_splits_filled(split, groups, where="/data/x")

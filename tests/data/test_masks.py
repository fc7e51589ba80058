"""Dataset 1's lung masks: read by the parser, decoded into the cache beside the images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions
from cxr_tune.data.cache import read_manifest
from cxr_tune.data.datasets import DATASETS
from cxr_tune.data.images import decode_file
from cxr_tune.data.prepare import prepare
from tests.data import builders
from tests.data.builders import Expected


def test_covid19_radiography_parser_pairs_each_image_with_its_mask(
    layouts: dict[str, Expected],
) -> None:
    expected = layouts["covid19_radiography"]
    manifest = DATASETS.get("covid19_radiography").parse(expected.dataset_root, {})
    paired = [r for r in manifest.records if r.mask is not None]
    assert len(paired) == expected.images
    for record in paired:
        assert record.mask is not None and record.mask.parent.name == "masks"
        assert record.mask.stem.lower() == record.path.stem.lower()
        assert record.mask.parent.parent == record.path.parent.parent


def test_prepare_keeps_masks_aligned_with_images(tmp_path: Path) -> None:
    expected = builders.build_covid19_radiography(tmp_path / "src", per_class=3, wrapper=False)
    options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1)
    entry = prepare(DataSource(None, expected.root), options)
    assert entry.meta["masks"] == expected.images
    arrays = entry.arrays()
    rows = read_manifest(entry.path)
    for split in arrays.splits.values():
        assert split.masks is not None and split.masks.shape == split.images.shape
        assert set(np.unique(split.masks)) <= {0, 1}
    # The mask of each cached image is its own file's (builders draw mask k from seed + 50,000).
    test = arrays.split("test")
    start = [r["split"] for r in rows].index("test")
    for k in range(len(test)):
        path = expected.root / rows[start + k]["path"]
        mask_file = path.parent.parent / "masks" / (path.stem + ".png")
        decoded = decode_file(mask_file, 32).pixels
        assert decoded is not None
        assert np.array_equal(test.masks[k], (decoded > 127).astype(np.uint8))


def test_prepare_without_every_mask_keeps_none(tmp_path: Path) -> None:
    expected = builders.build_covid19_radiography(tmp_path / "src", per_class=3, wrapper=False)
    shutil.rmtree(expected.root / "COVID" / "masks")
    options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1)
    entry = prepare(DataSource(None, expected.root), options)
    assert entry.meta["masks"] == 0
    assert not (entry.path / "masks.npy").exists()
    assert any("Lung masks not kept: 3 of" in note for note in entry.meta["notes"])
    assert all(s.masks is None for s in entry.arrays().splits.values())


def test_prepare_dataset_without_masks_has_none(
    layouts: dict[str, Expected], tmp_path: Path
) -> None:
    options = DataOptions(image_size=32, cache_dir=tmp_path / "cache", workers=1)
    entry = prepare(DataSource(None, layouts["imagefolder"].root), options)
    assert entry.meta["masks"] == 0
    assert entry.arrays().split("test").masks is None

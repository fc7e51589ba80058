from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.data import cache as cache_module
from cxr_tune.data import images as image_io
from cxr_tune.data import prepare as prepare_module
from cxr_tune.data.cache import open_cache, read_manifest
from cxr_tune.data.prepare import prepare
from cxr_tune.errors import DataError
from tests.data import builders
from tests.data.builders import Expected

_real_write_manifest = prepare_module._write_manifest


@pytest.fixture
def dataset(tmp_path: Path) -> Expected:
    """A private, modifiable miniature (Dataset 2)."""
    return builders.build_covid19_pneumonia_normal(tmp_path / "src", per_class=4, copies=2)


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = image_io.decode_file

    def counting(path: str, size: int) -> image_io.Decoded:
        calls.append(str(path))
        return real(path, size)

    monkeypatch.setattr(image_io, "decode_file", counting)
    return calls


def test_prepare_writes_every_file(dataset: Expected, options: DataOptions) -> None:
    entry = prepare(DataSource(None, dataset.root), options)
    names = {p.name for p in entry.path.iterdir()}
    assert names == {
        "images.npy",
        "labels.npy",
        "manifest.csv",
        "split.json",
        "skipped.json",
        "meta.json",
    }
    meta = entry.meta
    assert meta["key"] in entry.path.name and meta["image_size"] == 32
    assert set(meta["versions"]) >= {"cxr_tune", "numpy", "pillow", "python"}
    assert len(meta["dataset_hash"]) == 16 and meta["split_hash"] == entry.split_info()["hash"]


def test_splits_are_contiguous_slices_of_one_memmap(
    dataset: Expected, options: DataOptions
) -> None:
    arrays = load_dataset(DataSource(None, dataset.root), options)
    parts = [arrays.split(name).images for name in ("train", "val", "test")]
    base = parts[0].base
    assert isinstance(base, np.memmap) and all(p.base is base for p in parts)
    assert base.shape == (dataset.images, 32, 32) and not base.flags.writeable
    start = base.__array_interface__["data"][0]
    offset = 0
    for part, name in zip(parts, ("train", "val", "test"), strict=True):
        # A view at the split's offset into the one mapping: no copy was made.
        assert isinstance(part, np.memmap) and part.flags.c_contiguous
        assert part.__array_interface__["data"][0] - start == offset * 32 * 32
        assert arrays.split(name).labels.dtype == np.int64
        offset += len(part)
    assert offset == dataset.images
    assert "test" not in arrays.for_search().splits


def test_manifest_rows_follow_the_cache_order(dataset: Expected, options: DataOptions) -> None:
    entry = prepare(DataSource(None, dataset.root), options)
    arrays = entry.arrays()
    rows = read_manifest(entry.path)
    labels = np.concatenate([arrays.split(s).labels for s in ("train", "val", "test")])
    assert [r["labels"] for r in rows] == [arrays.classes[k] for k in labels]
    offsets = entry.meta["offsets"]
    assert [r["split"] for r in rows] == [
        s for s in ("train", "val", "test") for _ in range(offsets[s][1] - offsets[s][0])
    ]


def test_reuse_decodes_nothing(
    dataset: Expected, options: DataOptions, count_decodes: list[str]
) -> None:
    first = prepare(DataSource(None, dataset.root), options)
    assert first.built and len(count_decodes) == dataset.images
    count_decodes.clear()
    mtime = (first.path / "meta.json").stat().st_mtime_ns
    second = prepare(DataSource(None, dataset.root), options)
    assert not second.built and count_decodes == []
    assert second.path == first.path and (first.path / "meta.json").stat().st_mtime_ns == mtime
    assert second.meta["split_hash"] == first.meta["split_hash"]


def test_changed_file_rebuilds(dataset: Expected, options: DataOptions) -> None:
    first = prepare(DataSource(None, dataset.root), options)
    victim = dataset.dataset_root / "normal" / "NORMAL(1).png"
    builders.save_image(victim, 12345)
    os.utime(victim, ns=(1, 1))
    second = prepare(DataSource(None, dataset.root), options)
    assert second.built and second.path != first.path
    assert second.meta["dataset_hash"] != first.meta["dataset_hash"]


def test_changed_image_size_rebuilds_same_dataset_hash(
    dataset: Expected, options: DataOptions
) -> None:
    small = prepare(DataSource(None, dataset.root), options)
    bigger = DataOptions(image_size=48, cache_dir=options.cache_dir, workers=1)
    large = prepare(DataSource(None, dataset.root), bigger)
    assert large.built and large.path != small.path
    assert large.arrays().split("train").images.shape[1:] == (48, 48)
    assert large.meta["dataset_hash"] == small.meta["dataset_hash"]


def test_interrupted_prepare_leaves_no_cache_and_resumes(
    dataset: Expected,
    options: DataOptions,
    monkeypatch: pytest.MonkeyPatch,
    count_decodes: list[str],
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_write_manifest", explode)
    with pytest.raises(KeyboardInterrupt):
        prepare(DataSource(None, dataset.root), options)
    # No cache is published; only the hidden work folder stays, for the next prepare.
    left = [p.name for p in options.cache_dir.iterdir()]
    assert len(left) == 1 and left[0].startswith(".work-")
    assert len(count_decodes) == dataset.images
    monkeypatch.setattr(prepare_module, "_write_manifest", _real_write_manifest)
    count_decodes.clear()
    entry = prepare(DataSource(None, dataset.root), options)
    assert entry.built and count_decodes == []  # every chunk was finished: nothing decoded
    assert entry.meta["decode_resumed_images"] == dataset.images
    assert [p.name for p in options.cache_dir.iterdir()] == [entry.path.name]


def test_killed_prepare_temporaries_are_cleaned(dataset: Expected, options: DataOptions) -> None:
    stale = options.cache_dir / ".tmp-x-999999999-abc"
    stale.mkdir(parents=True)
    prepare(DataSource(None, dataset.root), options)
    assert not stale.exists()


def test_broken_cache_folder_is_rebuilt(dataset: Expected, options: DataOptions) -> None:
    first = prepare(DataSource(None, dataset.root), options)
    (first.path / "images.npy").unlink()
    second = prepare(DataSource(None, dataset.root), options)
    assert second.built and (second.path / "images.npy").is_file()


def test_multilabel_cache_is_multi_hot_uint8(
    layouts: dict[str, Expected], options: DataOptions
) -> None:
    expected = layouts["covid_chestxray"]
    arrays = load_dataset(DataSource(None, expected.root), options)
    assert arrays.task == "multilabel" and arrays.classes == expected.classes
    labels = np.concatenate([arrays.split(s).labels for s in ("train", "val", "test")])
    assert labels.dtype == np.uint8 and labels.shape == (expected.images, len(expected.classes))
    assert dict(zip(arrays.classes, labels.sum(axis=0).tolist(), strict=True)) == expected.counts


def test_pool_decoding_is_deterministic(
    dataset: Expected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare_module, "_POOL_MIN_IMAGES", 1)
    serial = prepare(
        DataSource(None, dataset.root),
        DataOptions(image_size=32, cache_dir=tmp_path / "a", workers=1),
    )
    pooled = prepare(
        DataSource(None, dataset.root),
        DataOptions(image_size=32, cache_dir=tmp_path / "b", workers=2),
    )
    np.testing.assert_array_equal(
        np.load(serial.path / "images.npy"), np.load(pooled.path / "images.npy")
    )
    assert serial.meta["split_hash"] == pooled.meta["split_hash"]


def test_folder_without_decodable_images_is_a_data_error(
    tmp_path: Path, options: DataOptions
) -> None:
    for name in ("a", "b"):
        (tmp_path / "src" / name).mkdir(parents=True)
        (tmp_path / "src" / name / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="no decodable image"):
        prepare(DataSource("imagefolder", tmp_path / "src"), options)
    assert [p for p in options.cache_dir.iterdir()] == []


def test_open_cache_rejects_other_formats(dataset: Expected, options: DataOptions) -> None:
    entry = prepare(DataSource(None, dataset.root), options)
    copy = options.cache_dir / "copy"
    shutil.copytree(entry.path, copy)
    meta = (
        (copy / "meta.json")
        .read_text()
        .replace(f'"format": {cache_module.FORMAT_VERSION}', '"format": 999')
    )
    (copy / "meta.json").write_text(meta)
    with pytest.raises(DataError, match="format 999"):
        open_cache(copy)


def test_tiny_image_size_is_a_config_error(dataset: Expected, tmp_path: Path) -> None:
    from cxr_tune.errors import ConfigError

    with pytest.raises(ConfigError, match="`image_size` is 4"):
        prepare(DataSource(None, dataset.root), DataOptions(image_size=4, cache_dir=tmp_path))


_SLOW_PREPARE = """
import sys, time
from pathlib import Path
from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, images, stream
from cxr_tune.data.prepare import prepare

stream.CHUNK_IMAGES = 4
real = images.decode_file

def slow(path, size):
    time.sleep(0.1)
    return real(path, size)

images.decode_file = slow
options = DataOptions(image_size=32, cache_dir=Path(sys.argv[2]), workers=1)
prepare(DataSource(None, Path(sys.argv[1])), options)
"""


def test_prepare_resumes_after_a_kill(
    dataset: Expected,
    options: DataOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    count_decodes: list[str],
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from cxr_tune.data import stream

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREPARE, str(dataset.root), str(options.cache_dir)], env=env
    )
    chunks: list[Path] = []
    deadline = time.monotonic() + 60
    while len(chunks) < 2 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
        chunks = list(options.cache_dir.glob(".work-*/chunks/*.json"))
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = len(list(options.cache_dir.glob(".work-*/chunks/*.json")))
    assert 2 <= finished < 4, "the child should be killed part-way through"
    monkeypatch.setattr(stream, "CHUNK_IMAGES", 4)
    resumed = prepare(DataSource(None, dataset.root), options)
    # Only the chunks the killed process had not finished were decoded again.
    assert len(count_decodes) == dataset.images - 4 * finished
    assert resumed.meta["decode_resumed_images"] == 4 * finished
    clean = prepare(
        DataSource(None, dataset.root),
        DataOptions(image_size=32, cache_dir=tmp_path / "clean", workers=1),
    )
    np.testing.assert_array_equal(
        np.load(resumed.path / "images.npy"), np.load(clean.path / "images.npy")
    )
    assert resumed.meta["split_hash"] == clean.meta["split_hash"]
    assert not list(options.cache_dir.glob(".work-*"))


def test_cache_rows_are_the_decoded_files_in_manifest_order(
    dataset: Expected, options: DataOptions
) -> None:
    entry = prepare(DataSource(None, dataset.root), options)
    images = np.load(entry.path / "images.npy")
    for row in read_manifest(entry.path):
        pixels = image_io.decode_file(dataset.dataset_root / row["path"], 32).pixels
        np.testing.assert_array_equal(images[int(row["index"])], pixels)


def test_search_images_estimates_before_and_reads_after_prepare(
    layouts: dict[str, Expected], options: DataOptions
) -> None:
    from cxr_tune.data.prepare import search_images

    expected = layouts["nih_chestxray14"]
    source = DataSource(None, expected.root)
    root = expected.dataset_root
    test_names = set((root / "test_list.txt").read_text().split())
    estimate, classes = search_images(source, options)
    # Before decoding: the kept rows less the official test list.
    assert estimate == expected.images - len(test_names & {p.name for p in root.rglob("*.png")})
    assert classes == len(expected.classes) + 1  # Hernia is only dropped once split
    entry = prepare(source, options)
    exact, classes = search_images(source, options)
    assert exact == entry.meta["sizes"]["train"] + entry.meta["sizes"]["val"]
    assert classes == len(entry.meta["classes"])
    phantom = search_images(DataSource.phantom(), options)
    assert phantom == (round(options.phantom_images * 0.85), 4)

"""write_bundle / load_bundle: the MONAI bundle layout, atomic writes, no overwrite without
force, one clear error for a package of another format; MONAI's runner predicts a folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_tune.bundle.inference import reference_probabilities
from cxr_tune.bundle.metadata import FORMAT_VERSION, build_metadata
from cxr_tune.bundle.package import (
    CARD,
    INFERENCE,
    METADATA,
    OOD,
    STATE_DICT,
    TORCHSCRIPT,
    load_bundle,
    write_bundle,
)
from cxr_tune.calibration import Calibration, TemperatureFit
from cxr_tune.data.images import decode_file
from cxr_tune.errors import ConfigError, DataError
from cxr_tune.models import create_model
from cxr_tune.ood import fit_ood
from tests.data.builders import pattern, save_image

SIZE = 64
CLASSES = ("COVID", "Normal", "Viral Pneumonia")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(3)
    return create_model("alexnet", num_classes=len(CLASSES)).eval()


def write(folder: Path, model: torch.nn.Module, **kwargs: object) -> Path:
    rng = np.random.default_rng(0)
    ood = fit_ood(rng.normal(size=(20, 8)), rng.normal(size=(10, 8)))
    calibration = Calibration("multiclass", (TemperatureFit(1.3, 0.9, 0.8, 50),))
    return write_bundle(
        folder, model, architecture="alexnet", classes=CLASSES, task="multiclass",
        image_size=SIZE, dataset="phantom", calibration=calibration, ood=ood,
        info={"split_hash": "abc"}, **kwargs,
    )  # fmt: skip


# A package holds AlexNet twice (state dict and TorchScript, 2 x 230 MB): writing one takes
# seconds on two cores.
@pytest.mark.slow
def test_write_bundle_lays_out_a_package_that_loads_back(tmp_path: Path, model) -> None:
    folder = write(tmp_path / "pkg", model)
    for name in (METADATA, INFERENCE, STATE_DICT, TORCHSCRIPT, OOD, CARD):
        assert (folder / name).is_file(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # no temporary folder left
    bundle = load_bundle(folder)
    assert bundle.classes == CLASSES and bundle.image_size == SIZE and bundle.task == "multiclass"
    assert bundle.calibration.temperatures == (1.3,)
    assert bundle.info["split_hash"] == "abc" and bundle.info["format_version"] == FORMAT_VERSION
    assert bundle.ood is not None and bundle.ood.dimensions == 8
    images = np.stack([pattern(k, SIZE, SIZE) for k in range(3)])
    with torch.no_grad():
        found = bundle.torchscript()(torch.as_tensor(images)).numpy()
    expected = reference_probabilities(
        model, images, task="multiclass", calibration=bundle.calibration
    )
    np.testing.assert_allclose(found, expected, atol=1e-5)
    rebuilt = bundle.model()
    assert all(
        torch.equal(a, b)
        for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values())
    )
    card = (folder / CARD).read_text()
    assert "Not for clinical use" in card and "T = 1.3" in card


@pytest.mark.slow
def test_write_bundle_never_overwrites_without_force(tmp_path: Path, model) -> None:
    folder = write(tmp_path / "pkg", model)
    stamp = (folder / METADATA).stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already exists; .* without --force"):
        write(folder, model)
    assert (folder / METADATA).stat().st_mtime_ns == stamp
    write(folder, model, force=True)
    assert load_bundle(folder).classes == CLASSES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not a model package"):
        write(other, model, force=True)
    assert (other / "mine.txt").read_text() == "keep me"


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, model) -> None:
    with pytest.raises(ValueError):
        write_bundle(
            tmp_path / "pkg", model, architecture="alexnet", classes=CLASSES, task="multiclass",
            image_size=SIZE, dataset="phantom", calibration=Calibration.identity("multilabel", 3),
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_load_bundle_errors_are_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_bundle(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is not a model package"):
        load_bundle(tmp_path / "empty")
    folder = tmp_path / "pkg"
    (folder / "configs").mkdir(parents=True)
    meta = build_metadata(
        classes=CLASSES, image_size=SIZE, task="multiclass", architecture="alexnet", dataset="x"
    )
    (folder / METADATA).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="lacks models/model.ts"):
        load_bundle(folder)
    meta["cxr_tune"]["format_version"] = 7
    (folder / METADATA).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version is 7, but this cxr_tune reads format"):
        load_bundle(folder)
    (folder / METADATA).write_text("{not json")
    with pytest.raises(DataError, match="cannot be read as JSON"):
        load_bundle(folder)


@pytest.mark.slow
def test_monai_bundle_runner_predicts_a_folder_of_pngs(tmp_path: Path, model) -> None:
    pytest.importorskip("monai")
    folder = write(tmp_path / "pkg", model)
    images = tmp_path / "images"
    paths = [save_image(images / name, k) for k, name in enumerate(["b.png", "a.PNG", "c.png"])]
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file",
         str(folder / INFERENCE), "--bundle_root", str(folder), "--dataset_dir", str(images),
         "--output_dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    with open(out / "predictions.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["path", *CLASSES]
    assert [Path(row[0]).name for row in table[1:]] == ["a.PNG", "b.png", "c.png"]
    # The files are at the image size: the same pixels as training's decoder, so the same
    # probabilities as the training path.
    decoded = np.stack([decode_file(p, SIZE).pixels for p in sorted(paths, key=lambda p: p.name)])
    expected = reference_probabilities(
        model, decoded, task="multiclass", calibration=load_bundle(folder).calibration
    )
    np.testing.assert_allclose(
        np.asarray([row[1:] for row in table[1:]], float), expected, atol=1e-5
    )

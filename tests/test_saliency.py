"""Grad-CAM saliency (MONAI): a declared layer per registered model, maps of the image's size,
shares of saliency in the lungs, the flag, and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_tune.engine import LoopSettings, prepare_batch
from cxr_tune.errors import ConfigError
from cxr_tune.models import MODELS, create_model
from cxr_tune.saliency import (
    TARGET_LAYERS,
    lung_saliency,
    lung_shares,
    overlay,
    saliency_maps,
    target_layer,
    write_overlay,
)

CPU = LoopSettings(device=torch.device("cpu"))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_declares_a_convolutional_target_layer(name: str) -> None:
    model = create_model(name, num_classes=2)
    layer = model.get_submodule(target_layer(name))
    shapes: list[torch.Size] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 64, 64))
    handle.remove()
    assert len(shapes[0]) == 4 and shapes[0][1] > 1  # (B, channels, h, w)


def test_a_model_without_a_declared_layer_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delitem(TARGET_LAYERS, "vgg11")
    with pytest.raises(ConfigError, match="No saliency layer is declared for the model 'vgg11'"):
        target_layer("vgg11")
    with pytest.raises(ConfigError, match="Did you mean 'alexnet'"):
        target_layer("alexnt")


@pytest.mark.slow  # importing MONAI takes 5-15 s on two cores
def test_saliency_maps_of_a_random_model_have_the_image_size_and_leave_it_unchanged() -> None:
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    maps, classes = saliency_maps(model, "alexnet", images, settings=CPU, batch_size=2)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert ((maps >= 0) & (maps <= 1)).all()
    with torch.no_grad():
        predicted = model(prepare_batch(torch.as_tensor(images), CPU)).argmax(1).numpy()
    assert classes.tolist() == predicted.tolist()  # the predicted class by default
    _, given = saliency_maps(model, "alexnet", images, settings=CPU, classes=[1, 2, 3])
    assert given.tolist() == [1, 2, 3]
    # MONAI's hooks went on a copy: the model is as it was, and its ReLUs still in place.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and model.features[11].inplace


def test_lung_shares_of_known_maps() -> None:
    masks = np.zeros((3, 10, 10), np.uint8)
    masks[:, 2:8, 2:6] = 1  # 24% of the image
    maps = np.zeros((3, 10, 10))
    maps[0, 3, 3] = 1.0  # all inside
    maps[1] = 1.0  # even spread
    share, field = lung_shares(maps, masks)
    assert share[0] == 1.0 and share[1] == pytest.approx(0.24) and np.isnan(share[2])
    assert field.tolist() == pytest.approx([0.24] * 3)
    with pytest.raises(ValueError, match="differ"):
        lung_shares(maps, masks[:, :5])


def _maps_and_masks(inside: bool, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    masks = np.zeros((n, 32, 32), np.uint8)
    masks[:, 6:26, 4:14] = 1
    masks[:, 6:26, 18:28] = 1
    maps = rng.random((n, 32, 32)) * 0.1
    if inside:
        maps[:, 8:24, 6:12] += 1.0
    else:
        maps[:, 0:4, 0:4] += 1.0  # a corner, outside the lungs
    return maps, masks


@pytest.mark.parametrize(("inside", "flagged"), [(True, False), (False, True)])
def test_lung_saliency_flags_maps_outside_the_lungs(inside: bool, flagged: bool) -> None:
    maps, masks = _maps_and_masks(inside)
    summary = lung_saliency(maps, masks, rounds=200)
    assert summary.flagged is flagged
    assert summary.images == 40 and summary.empty_maps == 0
    low, high = summary.difference["ci95"]
    assert low <= summary.difference["mean"] <= high
    assert (summary.ratio["mean"] > 1.0) is inside
    assert "rule" in summary.to_dict()


def test_lung_saliency_without_any_map_is_flagged() -> None:
    summary = lung_saliency(np.zeros((3, 8, 8)), np.ones((3, 8, 8)))
    assert summary.flagged and summary.images == 0 and summary.empty_maps == 3


def test_overlay_is_rgb_at_the_image_size_and_written_as_png(tmp_path) -> None:
    image = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heat = np.zeros((16, 16), np.float32)
    heat[0, 0] = 1.0
    picture = overlay(image, heat)
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    # Where the map is zero the picture is the gray image.
    assert (picture[-1, -1] == image[-1, -1]).all()
    path = write_overlay(tmp_path / "out" / "a.png", image, heat)
    with Image.open(path) as saved:
        assert saved.size == (64, 64) and saved.mode == "RGB"
    assert not list((tmp_path / "out").glob(".*tmp"))

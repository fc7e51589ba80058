"""Grad-CAM saliency (MONAI): declared blocks per registered model and the one chosen for the
image size, maps of the image's size (a batch's maps are each image's own), shares of saliency
in the lungs, the flag, and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_tune.engine import LoopSettings, prepare_batch
from cxr_tune.errors import ConfigError
from cxr_tune.models import MODELS, create_model
from cxr_tune.saliency import (
    MIN_GRID,
    TARGET_LAYERS,
    choose_layer,
    layer_grids,
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


# The block Grad-CAM reads at each size: the deepest with a map of at least MIN_GRID cells.
CHOSEN = {
    ("alexnet", 64): ("features.4", 7),
    ("alexnet", 128): ("features.11", 7),
    ("vgg11", 64): ("features.14", 8),
    ("resnet50", 64): ("layer2", 8),
}


@pytest.mark.parametrize(("name", "size"), list(CHOSEN))
def test_the_block_is_the_deepest_with_a_fine_enough_map(name: str, size: int) -> None:
    model = create_model(name, num_classes=2)
    chosen = choose_layer(model, name, size)
    assert (chosen.name, chosen.grid) == CHOSEN[(name, size)]
    grids = layer_grids(model, name, size)
    deeper = TARGET_LAYERS[name][TARGET_LAYERS[name].index(chosen.name) + 1 :]
    assert all(grids[layer] < MIN_GRID for layer in deeper)


def test_a_map_coarser_than_any_rule_takes_the_finest_block() -> None:
    model = create_model("resnet50", num_classes=2)
    assert choose_layer(model, "resnet50", 16).name == "layer1"  # 4 x 4 there, the largest


@pytest.mark.slow  # imports MONAI (5-15 s on two cores)
def test_a_batchs_maps_equal_each_images_own() -> None:
    """Images of a batch predicted as different classes each get their own class's map, as
    MONAI's Grad-CAM gives it for the image alone."""
    import copy

    from monai.visualize import GradCAM

    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=4).eval()
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    for layer in ("features.4", "features.11"):
        ours, classes = saliency_maps(
            model, "alexnet", images, settings=CPU, layer=layer, classes=[0, 1, 2]
        )
        cam = GradCAM(nn_module=copy.deepcopy(model), target_layers=layer, postprocessing=_same)
        x = prepare_batch(torch.as_tensor(images), CPU)
        for k in range(len(images)):
            reference = (
                cam(x[k : k + 1], class_idx=int(classes[k]))[0, 0].detach().clamp_min(0).numpy()
            )
            peak = reference.max()
            expected = reference / peak if peak > 0 else reference  # no positive evidence: 0
            np.testing.assert_allclose(ours[k], expected, atol=1e-5)


def _same(x):
    return x


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
    with pytest.raises(ConfigError, match="is not a declared Grad-CAM block"):
        saliency_maps(model, "alexnet", images, settings=CPU, layer="features.12")


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

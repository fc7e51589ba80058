"""Where a model looks: Grad-CAM maps, the share of saliency inside the lungs, overlays.

Grad-CAM (Selvaraju et al., 2017) comes from MONAI (``monai.visualize.GradCAM``), not from code
of our own: the class score's gradient, averaged over a convolutional block's positions, weighs
that block's activation maps; their weighted sum, rectified and upsampled (bilinear) to the
image, is the map.

Which block. A map is as coarse as the block's grid, and the last block of a network trained on
small images has very few cells (AlexNet's last block is 3 x 3 at 64 px, ResNet50's 2 x 2):
upsampled, such a map is nearly even, and no share of it says where the model looks.
:func:`choose_layer` takes the deepest of the architecture's declared blocks
(:data:`TARGET_LAYERS`, shallow to deep) whose map is at least :data:`MIN_GRID` cells a side at
the model's image size: the last block at 224 px (AlexNet 13 x 13, VGG11 14 x 14, ResNet50
7 x 7); at 64 px AlexNet's second block (``features.4``, 7 x 7), VGG11's ``features.14`` (8 x 8)
and ResNet50's ``layer2`` (8 x 8). That keeps the maps and overlays spatially resolved; it does
not make the flag trustworthy on small images. Measured on the phantom (scripts/bench/README.md,
"Saliency in the lungs on the phantom"): at 128 px AlexNet's last block (7 x 7) flags the
models that read the corner marker of ``phantom_marker`` and not the plain phantom's; at 64 px
no block of AlexNet tells the two apart, ``features.4`` included (there the marker's models put
more of their saliency in the lungs, not less).

One number per model says whether the maps sit on the lungs. Per image: the share of the map's
mass inside the lung mask, and the mask's share of the image (what a map spread evenly would
put there). Their difference, averaged over the images, gets a bootstrap 95% interval over the
images; the model is **flagged** when the lower end of that interval is not above
:data:`LUNG_MARGIN` (0 by default): nothing shows that the saliency is concentrated in the lungs
more than an even spread would be. A model that reads a corner marker puts its saliency outside
the lungs (difference below 0); one that reads the findings inside the lung fields puts it
there (difference above 0). The difference rather than the ratio is bootstrapped: it stays
bounded when an image's lung field is small.

Pure PyTorch + MONAI + numpy, no Ray (layer 3, beside ``engine.py``). Importing MONAI takes
5-15 s on two cores, once per process.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxr_tune.engine import LoopSettings, prepare_batch
from cxr_tune.errors import ConfigError
from cxr_tune.models import MODELS
from cxr_tune.stats import bootstrap_indices, interval

# The convolutional blocks of each registered architecture where Grad-CAM may read activations
# and gradients (each block's rectified output), shallow to deep. A model registered without an
# entry here has no saliency: `target_layer` says so.
TARGET_LAYERS: dict[str, tuple[str, ...]] = {
    # The ReLU after each of the five convolutions.
    "alexnet": ("features.1", "features.4", "features.7", "features.9", "features.11"),
    # The ReLU after the second to eighth convolutions.
    "vgg11": ("features.4", "features.7", "features.9", "features.12", "features.14",
              "features.17", "features.19"),
    # The bottleneck stages.
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
}  # fmt: skip
# The least cells a side the chosen block's map has (where some block has that many).
MIN_GRID = 7
# Flag when the lower end of the 95% interval of the mean (share in lungs - lungs' share of the
# image) is not above this.
LUNG_MARGIN = 0.0
BOOTSTRAP_ROUNDS = 1000
OVERLAY_ALPHA = 0.45
OVERLAY_COLORMAP = "jet"


def target_layers(name: str) -> tuple[str, ...]:
    """The declared Grad-CAM blocks of the registered model ``name``, shallow to deep.

    Raises:
        ConfigError: ``name`` is not registered, or has no declared layer.
    """
    MODELS.get(name)  # an unknown name gets the registry's did-you-mean
    if name not in TARGET_LAYERS:
        raise ConfigError(
            f"No saliency layer is declared for the model '{name}': add its convolutional "
            f"blocks to cxr_tune.saliency.TARGET_LAYERS (declared for: "
            f"{', '.join(sorted(TARGET_LAYERS))})."
        )
    return TARGET_LAYERS[name]


def target_layer(name: str) -> str:
    """The deepest declared block of ``name`` (its Grad-CAM layer at large image sizes)."""
    return target_layers(name)[-1]


@dataclass(frozen=True)
class TargetLayer:
    """The block Grad-CAM reads, and the side of its map (cells) at the model's image size."""

    name: str
    grid: int

    def describe(self) -> str:
        return f"{self.name} ({self.grid} x {self.grid} cells)"


def layer_grids(model: nn.Module, name: str, image_size: int) -> dict[str, int]:
    """The map side (the smaller of height and width) of every declared block of ``model`` at
    ``image_size``, from one forward pass of a blank image."""
    grids: dict[str, int] = {}
    handles = [
        model.get_submodule(layer).register_forward_hook(
            lambda _m, _i, out, layer=layer: grids.__setitem__(layer, int(min(out.shape[2:])))
        )
        for layer in target_layers(name)
    ]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return grids


def choose_layer(model: nn.Module, name: str, image_size: int) -> TargetLayer:
    """The deepest declared block whose map is at least :data:`MIN_GRID` cells a side at
    ``image_size``; the one with the largest map where none is."""
    grids = layer_grids(model, name, image_size)
    fitting = [layer for layer in target_layers(name) if grids[layer] >= MIN_GRID]
    chosen = fitting[-1] if fitting else max(grids, key=lambda layer: grids[layer])
    return TargetLayer(chosen, grids[chosen])


class SaliencyMapper:
    """Grad-CAM maps of one model, batch after batch.

    MONAI's hooks stay on the module they are put on (and turn its in-place activation off),
    so they go on a private copy: the caller's model is left as it was.

    Args:
        model: a model built by ``create_model(name, ...)``.
        name: its registered architecture name.
        settings: the loop settings images are prepared with (its device).
        image_size: the side of the images it sees (chooses the block, :func:`choose_layer`).
        layer: a declared block to use instead of the chosen one.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        settings: LoopSettings,
        *,
        image_size: int,
        layer: str | None = None,
    ) -> None:
        from monai.visualize import GradCAM

        self.settings = settings
        self.model = copy.deepcopy(model).to(settings.device).eval()
        if layer is None:
            self.layer = choose_layer(self.model, name, image_size)
        else:
            if layer not in target_layers(name):
                raise ConfigError(
                    f"The layer {layer!r} is not a declared Grad-CAM block of {name} "
                    f"(declared: {', '.join(target_layers(name))})."
                )
            self.layer = TargetLayer(layer, layer_grids(self.model, name, image_size)[layer])
        # Identity post-processing: MONAI's default rescales each map to [1, 0] for display;
        # the shares need the map's own (non-negative) mass.
        self.cam = GradCAM(
            nn_module=self.model, target_layers=self.layer.name, postprocessing=_identity
        )

    def maps(
        self, images: np.ndarray | torch.Tensor, classes: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grad-CAM maps of uint8 images (B, H, W) for the predicted class, or ``classes``.

        Returns:
            (maps float32 (B, H, W), non-negative, each scaled to a maximum of 1 (all zero
            where Grad-CAM found no positive evidence); the class each map explains (B,)).
        """
        data = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
        x = prepare_batch(data.to(self.settings.device), self.settings)
        if classes is None:
            with torch.no_grad():
                index = self.model(x).argmax(dim=1).cpu()
        else:
            index = torch.as_tensor(list(classes), dtype=torch.long)
        raw = torch.zeros((len(x), 1, *x.shape[2:]), dtype=torch.float32)
        with torch.enable_grad():
            # One call per class, with the class as an int: MONAI scores a batch as
            # ``logits[:, class_idx].sum()``, which for a tensor of per-image classes mixes
            # every image's gradient with the other images' classes.
            for c in torch.unique(index).tolist():
                rows = (index == c).nonzero().flatten()
                raw[rows] = self.cam(x[rows.to(x.device)], class_idx=int(c)).detach().float().cpu()
        maps = raw[:, 0].clamp_min(0.0).numpy()
        peak = maps.reshape(len(maps), -1).max(axis=1)
        scaled = np.divide(
            maps, peak[:, None, None], out=np.zeros_like(maps), where=peak[:, None, None] > 0
        )
        return scaled.astype(np.float32), index.numpy()


def _identity(x: Any) -> Any:
    return x


def saliency_maps(
    model: nn.Module,
    name: str,
    images: np.ndarray,
    *,
    settings: LoopSettings,
    classes: Sequence[int] | None = None,
    batch_size: int = 16,
    layer: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps of uint8 images (N, H, W), batch by batch (see :class:`SaliencyMapper`;
    the block is chosen for the images' size unless ``layer`` names one)."""
    images = np.asarray(images)
    mapper = SaliencyMapper(model, name, settings, image_size=int(images.shape[-1]), layer=layer)
    maps: list[np.ndarray] = []
    explained: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chosen = None if classes is None else classes[start : start + batch_size]
        m, c = mapper.maps(images[start : start + batch_size], chosen)
        maps.append(m)
        explained.append(c)
    if not maps:
        size = images.shape[1:]
        return np.zeros((0, *size), np.float32), np.zeros(0, np.int64)
    return np.concatenate(maps), np.concatenate(explained)


def lung_shares(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of the map's mass inside the mask (NaN for an all-zero map) and the
    mask's share of the image.

    Args:
        maps: (N, H, W) non-negative saliency.
        masks: (N, H, W) lung masks (non-zero = lung), the same size as the maps.
    """
    maps = np.asarray(maps, dtype=np.float64)
    inside = np.asarray(masks).astype(bool)
    if maps.shape != inside.shape:
        raise ValueError(f"maps of shape {maps.shape} and masks of shape {inside.shape} differ")
    total = maps.reshape(len(maps), -1).sum(axis=1)
    in_lungs = (maps * inside).reshape(len(maps), -1).sum(axis=1)
    share = np.divide(in_lungs, total, out=np.full(len(maps), np.nan), where=total > 0)
    return share, inside.reshape(len(inside), -1).mean(axis=1)


@dataclass(frozen=True)
class LungSaliency:
    """Whether a model's saliency is inside the lungs, over a set of images.

    Attributes:
        share_in_lungs: mean share of saliency inside the lung masks, with its 95% interval.
        lung_share: mean share of the image the lungs cover (what an even spread would give).
        difference: mean of (share in lungs - lung share) per image, with its 95% interval.
        ratio: mean of (share in lungs / lung share) per image, with its 95% interval.
        images: images with a map (all-zero maps are left out and counted in ``empty_maps``).
        flagged: the lower end of ``difference``'s interval is not above ``margin``.
    """

    share_in_lungs: dict[str, Any]
    lung_share: dict[str, Any]
    difference: dict[str, Any]
    ratio: dict[str, Any]
    images: int
    empty_maps: int
    margin: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "share_in_lungs": self.share_in_lungs,
            "lung_share": self.lung_share,
            "difference": self.difference,
            "ratio": self.ratio,
            "images": self.images,
            "empty_maps": self.empty_maps,
            "margin": self.margin,
            "flagged": self.flagged,
            "rule": "flagged when the lower end of the 95% bootstrap interval of the mean "
            f"(share of saliency in the lungs - the lungs' share of the image) is <= {self.margin:g}",
        }


def lung_saliency(
    maps: np.ndarray,
    masks: np.ndarray,
    *,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
    margin: float = LUNG_MARGIN,
) -> LungSaliency:
    """Summarise where the maps lie against the lung masks, with bootstrap intervals over the
    images, and flag a model whose saliency is not clearly inside the lungs (module doc)."""
    share, field = lung_shares(maps, masks)
    keep = np.isfinite(share) & (field > 0)
    share, field = share[keep], field[keep]
    difference = share - field
    ratio = share / np.where(field > 0, field, 1.0)
    if not len(share):
        nothing = {"mean": math.nan, "ci95": [math.nan, math.nan]}
        return LungSaliency(nothing, nothing, nothing, nothing, 0, int((~keep).sum()), margin, True)
    indices = bootstrap_indices(len(share), rounds, seed)
    summary = {
        name: interval(float(values.mean()), values[indices].mean(axis=1).tolist())
        for name, values in (
            ("share", share),
            ("field", field),
            ("difference", difference),
            ("ratio", ratio),
        )
    }
    low = summary["difference"]["ci95"][0]
    return LungSaliency(
        share_in_lungs=summary["share"],
        lung_share=summary["field"],
        difference=summary["difference"],
        ratio=summary["ratio"],
        images=int(len(share)),
        empty_maps=int((~keep).sum()),
        margin=margin,
        flagged=bool(not math.isfinite(low) or low <= margin),
    )


def overlay(image: np.ndarray, saliency: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """An RGB uint8 picture: the grayscale image with the map drawn over it in a colormap.

    Args:
        image: uint8 (H, W) grayscale.
        saliency: (H, W) map in [0, 1] (resized to the image if its size differs).
        alpha: the map's opacity where it is strongest (weaker saliency is more transparent).
    """
    from matplotlib import colormaps

    gray = np.asarray(image, dtype=np.float32) / 255.0
    heat = np.asarray(saliency, dtype=np.float32)
    if heat.shape != gray.shape:
        resized = torch.nn.functional.interpolate(
            torch.as_tensor(heat)[None, None], size=gray.shape, mode="bilinear", align_corners=False
        )
        heat = resized[0, 0].numpy()
    heat = np.clip(heat, 0.0, 1.0)
    colour = colormaps[OVERLAY_COLORMAP](heat)[..., :3].astype(np.float32)
    weight = alpha * heat[..., None]
    blended = (1.0 - weight) * gray[..., None] + weight * colour
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, saliency: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> bytes:
    """:func:`overlay` encoded as PNG bytes (what an evaluation task hands back to its driver)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(overlay(image, saliency, alpha=alpha), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_overlay(
    path: str | Path, image: np.ndarray, saliency: np.ndarray, *, alpha: float = OVERLAY_ALPHA
) -> Path:
    """Write :func:`overlay` as a PNG file, whole or not at all; returns the path."""
    from cxr_tune.files import write_atomic

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, overlay_png(image, saliency, alpha=alpha))
    return target

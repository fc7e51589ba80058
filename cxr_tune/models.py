"""Architectures from torchvision, adapted to grayscale input and the dataset's classes.

``create_model("resnet50", num_classes=4)`` builds a torchvision model whose first convolution
takes one channel and whose head has ``num_classes`` outputs. With ``pretrained=True`` ImageNet
weights are read from the local torch hub cache, never downloaded: ``check_pretrained`` tells,
before any trial starts, whether they are there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from cxr_tune.errors import ConfigError
from cxr_tune.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture.

    Attributes:
        builder: torchvision constructor (called with ``weights=None``).
        weights: torchvision weights enum member whose file the pretrained path reads.
        first_conv: path of the first convolution, replaced by a 1-channel one.
        head: path of the final linear layer, replaced by a ``num_classes`` one.
        min_image_size: smallest input side the feature stack accepts.
    """

    name: str
    builder: Callable[..., nn.Module]
    weights: torchvision.models.WeightsEnum
    first_conv: str
    head: str
    min_image_size: int


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.add(
    "alexnet",
    ModelSpec(
        "alexnet",
        torchvision.models.alexnet,
        torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
        first_conv="features.0",
        head="classifier.6",
        min_image_size=63,
    ),
)
MODELS.add(
    "vgg11",
    ModelSpec(
        "vgg11",
        torchvision.models.vgg11,
        torchvision.models.VGG11_Weights.IMAGENET1K_V1,
        first_conv="features.0",
        head="classifier.6",
        min_image_size=32,
    ),
)
MODELS.add(
    "resnet50",
    ModelSpec(
        "resnet50",
        torchvision.models.resnet50,
        torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
        first_conv="conv1",
        head="fc",
        min_image_size=32,
    ),
)


def weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``name`` in the local torch hub cache."""
    spec = MODELS.get(name)
    filename = spec.weights.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def check_pretrained(name: str) -> None:
    """Fail early, with the fix, when ImageNet weights for ``name`` are not cached locally.

    Raises:
        ConfigError: the weights file is missing.
    """
    path = weights_path(name)
    if not path.is_file():
        url = MODELS.get(name).weights.url
        raise ConfigError(
            f"pretrained: true needs the ImageNet weights of {name}, which are not in the local "
            f"torch cache ({path}) and are never downloaded during a search. On a machine with "
            f"internet, fetch them once (e.g. `curl -L -o {path} {url}`, or "
            f"`python -c \"import torchvision; torchvision.models.{name}(weights='DEFAULT')\"`), "
            "or set pretrained: false."
        )


def check_image_size(name: str, image_size: int) -> None:
    """Raise ConfigError when ``image_size`` is below what the architecture accepts."""
    spec = MODELS.get(name)
    if image_size < spec.min_image_size:
        raise ConfigError(
            f"The value of `image_size` is {image_size}, but {name} needs at least "
            f"{spec.min_image_size} px."
        )


def create_model(
    name: str, *, num_classes: int, in_channels: int = 1, pretrained: bool = False
) -> nn.Module:
    """Build a registered architecture for ``in_channels``-channel input and ``num_classes`` outputs.

    With ``pretrained`` the first convolution's RGB filters are summed into one grayscale filter,
    which keeps the response to a gray image equal to the RGB model's response.
    """
    spec = MODELS.get(name)
    model = spec.builder(weights=None)
    if pretrained:
        check_pretrained(name)
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    _replace_first_conv(model, spec.first_conv, in_channels)
    _replace_head(model, spec.head, num_classes)
    return model


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, child, new)


def _replace_first_conv(model: nn.Module, path: str, in_channels: int) -> None:
    old = _get(model, path)
    assert isinstance(old, nn.Conv2d)
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
    )
    with torch.no_grad():
        summed = old.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(summed.repeat(1, in_channels, 1, 1) / in_channels)
        if old.bias is not None:
            new.bias.copy_(old.bias)  # type: ignore[union-attr]
    _set(model, path, new)


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    old = _get(model, path)
    assert isinstance(old, nn.Linear)
    _set(model, path, nn.Linear(old.in_features, num_classes))

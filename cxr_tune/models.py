"""Architectures from torchvision, adapted to grayscale input and the dataset's classes.

``create_model("resnet50", num_classes=4)`` builds a torchvision model whose first convolution
takes one channel and whose head has ``num_classes`` outputs. With ``pretrained=True`` ImageNet
weights are read from the local torch hub cache, never downloaded: ``check_pretrained`` tells,
before any trial starts, whether they are there.

The registry itself is plain data: torch and torchvision (whose import costs seconds of CPU)
are imported when a model is built, so planning a search, ``--dry-run`` and the command line's
checks never load them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxr_tune.errors import ConfigError
from cxr_tune.registry import Registry

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture.

    Attributes:
        builder: the name of a ``torchvision.models`` constructor, or a constructor (called
            with ``weights=None``).
        weights: the torchvision weights enum member whose file the pretrained path reads, as
            ``"<Enum>.<member>"`` of ``torchvision.models`` (None: no pretrained weights).
        first_conv: path of the first convolution, replaced by a 1-channel one.
        head: path of the final linear layer, replaced by a ``num_classes`` one.
        min_image_size: smallest input side the feature stack accepts.
    """

    name: str
    builder: str | Callable[..., nn.Module]
    weights: str | None
    first_conv: str
    head: str
    min_image_size: int

    def build(self) -> nn.Module:
        """The architecture with random weights, as torchvision builds it."""
        builder = self.builder
        if isinstance(builder, str):
            import torchvision

            builder = getattr(torchvision.models, builder)
        return builder(weights=None)

    def weights_url(self) -> str:
        """Where torchvision downloads the pretrained weights from.

        Raises:
            ConfigError: the architecture has no pretrained weights.
        """
        if self.weights is None:
            raise ConfigError(f"The model {self.name} has no pretrained weights.")
        import torchvision

        enum_name, member = self.weights.split(".")
        weights: Any = getattr(getattr(torchvision.models, enum_name), member)
        return str(weights.url)


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.add(
    "alexnet",
    ModelSpec(
        "alexnet",
        "alexnet",
        "AlexNet_Weights.IMAGENET1K_V1",
        first_conv="features.0",
        head="classifier.6",
        min_image_size=63,
    ),
)
MODELS.add(
    "vgg11",
    ModelSpec(
        "vgg11",
        "vgg11",
        "VGG11_Weights.IMAGENET1K_V1",
        first_conv="features.0",
        head="classifier.6",
        min_image_size=32,
    ),
)
MODELS.add(
    "resnet50",
    ModelSpec(
        "resnet50",
        "resnet50",
        "ResNet50_Weights.IMAGENET1K_V2",
        first_conv="conv1",
        head="fc",
        min_image_size=32,
    ),
)


def weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``name`` in the local torch hub cache."""
    import torch

    filename = MODELS.get(name).weights_url().rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def check_pretrained(name: str) -> None:
    """Fail early, with the fix, when ImageNet weights for ``name`` are not cached locally.

    Raises:
        ConfigError: the weights file is missing.
    """
    path = weights_path(name)
    if not path.is_file():
        url = MODELS.get(name).weights_url()
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
    import torch

    spec = MODELS.get(name)
    model = spec.build()
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
    import torch
    from torch import nn

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
    from torch import nn

    old = _get(model, path)
    assert isinstance(old, nn.Linear)
    _set(model, path, nn.Linear(old.in_features, num_classes))

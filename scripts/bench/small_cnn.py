"""A small convolutional net registered as model ``smallcnn``, for the search-efficiency grids.

Three 3x3 convolutions (8, 16, 32 channels, each followed by ReLU and 2x2 max pooling), global
average pooling and a linear head: about 6,000 weights. Without batch normalisation the learning
rate matters as it does for AlexNet (too low learns nothing in ten epochs, too high never
leaves chance), yet an epoch on ~1,000 images at 32 px takes under half a second on one CPU
thread, so a grid of 60 configurations under three seeds trains in about 20 CPU-minutes. It is
registered in the benchmark's process by ``register`` (as ``tiny_model.py`` registers ``tiny``).
Not part of the package.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

NAME = "smallcnn"


def build(weights: Any = None) -> nn.Module:
    """Three-channel input and 1000 outputs, as torchvision builders (the search adapts both)."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 8, kernel_size=3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 16, kernel_size=3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(16, 32, kernel_size=3, padding=1),
            relu3=nn.ReLU(),
            pool3=nn.MaxPool2d(2),
            gap=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(32, 1000),
        )
    )


def register() -> None:
    """Add ``smallcnn`` to the model registry of this process (once)."""
    import torchvision

    from cxr_tune.models import MODELS, ModelSpec

    if NAME in MODELS:
        return
    # The weights entry is never read: pretrained is false for this model.
    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    MODELS.add(NAME, ModelSpec(NAME, build, weights, "conv", "fc", min_image_size=32))

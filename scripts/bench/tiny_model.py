"""A tiny convolutional net registered as model ``tiny``, for benchmarks of the search machinery.

A trial of it is one optimiser step in milliseconds and a checkpoint of a few kilobytes, so a
benchmark of hundreds of trials measures the search (Ray Tune, Optuna, ASHA, callbacks,
checkpoints, the report), not training. It is registered in the driver by the benchmark and in
Ray's trial workers by ``register`` as a ``worker_process_setup_hook``. Not part of the package.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

NAME = "tiny"


def build(weights: Any = None) -> nn.Module:
    """Three-channel input and 1000 outputs, as torchvision builders (the search adapts both)."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, kernel_size=3, stride=2),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(4, 1000),
        )
    )


def register() -> None:
    """Add ``tiny`` to the model registry of this process (once)."""
    from cxr_tune.models import MODELS, ModelSpec

    if NAME in MODELS:
        return
    MODELS.add(NAME, ModelSpec(NAME, build, None, "conv", "fc", min_image_size=8))

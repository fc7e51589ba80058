"""Small models trained for a few epochs on the built-in phantom, for tests that need a model
that has learned something (saliency, the model package). Trains: callers are `integration`."""

from __future__ import annotations

import torch
from torch import nn

from cxr_tune.config import DataSource, TrialConfig
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.data.types import DatasetArrays
from cxr_tune.engine import build_state, loop_settings, place_split, train_epochs

# The shortcut probe's test uses the same recipe (tests/test_probe_phantom.py).
RECIPE = {
    "model": "alexnet",
    "optimizer": "adam",
    "lr": 3e-4,
    "batch_size": 32,
    "epochs": 3,
    "image_size": 64,
    "augment": "none",
}


def phantom(dataset: str = "phantom", *, images: int = 640, size: int = 64) -> DatasetArrays:
    """A built-in phantom dataset (``phantom``, ``phantom_b``, ``phantom_marker``), split."""
    return load_dataset(
        DataSource(dataset, None), DataOptions(image_size=size, phantom_images=images)
    )


def train_briefly(arrays: DatasetArrays, *, seed: int = 0, **overrides: object) -> nn.Module:
    """The trials' own loop on the CPU (fp32) for ``RECIPE`` (with ``overrides``); the model in
    eval mode."""
    values = {**RECIPE, "image_size": arrays.image_size, **overrides}
    cfg = TrialConfig.from_dict({**values, "dataset": arrays.name, "seed": seed})
    device = torch.device("cpu")
    settings = loop_settings(device, "fp32")
    state = build_state(cfg, arrays, device)
    train = place_split(arrays.split("train"), device, arrays.task)
    for _ in train_epochs(state, cfg, arrays, train, None, settings):
        pass
    return state.model.eval()

"""Penultimate features of every registered architecture: what its final linear layer reads.

The out-of-distribution statistics (``cxr_tune.ood``) measure distances between images in this
space. "Penultimate" is defined the same way for every model the registry builds: the input of
the head that ``cxr_tune.models.create_model`` replaces (``ModelSpec.head``): AlexNet's and
VGG11's 4096 activations after ``classifier.5``, ResNet50's 2048 pooled activations. A forward
pre-hook on that head reads them during the ordinary forward pass, so one pass gives both the
features and the logits, and no architecture needs code of its own.

:func:`split_head` gives the same computation as two modules (the network up to the head, and
the head), for the TorchScript module of the model package, where hooks are not scripted.

Sits beside ``engine.py`` (layer 3): images are prepared exactly as the training loop prepares
them (``engine.prepare_batch``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from cxr_tune.engine import LoopSettings, prepare_batch
from cxr_tune.models import MODELS


def head_of(model: nn.Module, name: str) -> nn.Linear:
    """The final linear layer of a model built by ``create_model(name, ...)``.

    Raises:
        ConfigError: ``name`` is not a registered model.
        TypeError: the module at the registered head path is not a linear layer.
    """
    spec = MODELS.get(name)
    head = model.get_submodule(spec.head)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{name}: {spec.head} is a {type(head).__name__}, not a linear head")
    return head


def features_and_logits(
    model: nn.Module, name: str, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of normalised input ``x`` (B, 1, H, W): (penultimate features (B, D),
    logits (B, C)). Gradients flow as the caller's mode allows."""
    captured: list[torch.Tensor] = []

    def keep_input(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])

    handle = head_of(model, name).register_forward_pre_hook(keep_input)
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[0].flatten(1), logits


@torch.no_grad()
def penultimate_features(
    model: nn.Module,
    name: str,
    images: np.ndarray | torch.Tensor,
    *,
    settings: LoopSettings,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and logits of uint8 images (N, H, W), in eval mode, in order.

    Args:
        model: a model built by ``create_model(name, ...)``, on ``settings.device``.
        name: its registered architecture name.
        images: uint8 grayscale images at the model's image size (a split's ``images``).
        settings: the loop settings (device, precision) the images are prepared with.

    Returns:
        (features float32 (N, D), logits float32 (N, C)).
    """
    model.eval()
    data = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    features: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size].to(settings.device)
        f, z = features_and_logits(model, name, prepare_batch(batch, settings))
        features.append(f.float().cpu().numpy())
        logits.append(z.float().cpu().numpy())
    if not features:
        head = head_of(model, name)
        return (
            np.zeros((0, head.in_features), np.float32),
            np.zeros((0, head.out_features), np.float32),
        )
    return np.concatenate(features), np.concatenate(logits)


def split_head(model: nn.Module, name: str) -> tuple[nn.Module, nn.Linear]:
    """(body, head): a copy of ``model`` whose head is an identity (it returns the penultimate
    features), and the head itself (a copy). ``head(body(x))`` equals ``model(x)`` for every
    registered architecture, whose head is the last operation of its forward pass (a test
    checks each one)."""
    head = copy.deepcopy(head_of(model, name))
    body = copy.deepcopy(model)
    path = MODELS.get(name).head
    parent_path, _, child = path.rpartition(".")
    parent = body.get_submodule(parent_path) if parent_path else body
    setattr(parent, child, nn.Identity())
    return body, head

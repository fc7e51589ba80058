"""Optimisers by name: ``sgd`` (momentum), ``adam`` (L2 weight decay, as the paper), ``adamw``.

torch is imported when an optimiser is built: planning a search reads the names only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from cxr_tune.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

OptimizerFactory = Callable[..., "torch.optim.Optimizer"]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params, *, lr: float, momentum: float, weight_decay: float, fused: bool):
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)


@OPTIMIZERS.register("adam")
def _adam(params, *, lr: float, momentum: float, weight_decay: float, fused: bool):
    import torch

    # momentum does not apply to Adam (beta1 stays 0.9, PyTorch's default).
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)


@OPTIMIZERS.register("adamw")
def _adamw(params, *, lr: float, momentum: float, weight_decay: float, fused: bool):
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def create_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Build a registered optimiser.

    The fused implementations are used where PyTorch has them for the parameters' device: on
    CPUs fused Adam steps the large linear layers of AlexNet and VGG11 much faster than the
    default (``scripts/bench/train_throughput.py``), and on GPUs it saves a kernel launch per
    parameter tensor.
    """
    factory = OPTIMIZERS.get(name)
    params = list(params)
    try:
        return factory(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return factory(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=None)

"""Where each cell's data live while its trials train: on the device, or streamed from the host.

A trial copies its train and val images to its device once (``resident``), which is fastest.
On a GPU shared by several packed trials (``gpus_per_trial`` below 1), each holds its own copy
beside its model, gradients, optimiser state and activations. When that does not fit in the
device's memory, the cell's trials leave the images in the node's shared copy (Ray's object
store) and stream them a batch at a time through pinned buffers (``streaming``,
``engine.StreamedSplit``); the results are the same, only slower.

The plan computes, per cell, in its most memory-hungry setting (largest batch size, the
optimiser with the most state):

- data: train + val images at the run's size (uint8, one byte a pixel);
- model and gradients: 4 bytes a parameter each; optimiser state: 4 bytes a parameter per
  state tensor (Adam and AdamW keep 2, SGD with momentum 1);
- activations: the outputs of every layer for one image (a forward pass on PyTorch's ``meta``
  device: no memory, no compute), times the batch size, at 2 bytes (bf16) or 4 (fp32);

and streams when ``trials per device x (data + trial) > 90% of the device memory``. The device
memory is ``--device-memory`` when given (on a CPU too, so the streaming path can be exercised
anywhere), else the local GPU's; without either (a CPU run), data stay resident: a CPU trial
reads the shared arrays in place, without a copy. ``--dry-run`` prints each cell's path and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cxr_tune.errors import ConfigError

# Share of the device memory the plan fills at most: the CUDA context, the allocator's
# fragmentation and the evaluation's batches need the rest.
USABLE_SHARE = 0.9
# Bytes per element of state kept per parameter, per optimiser.
OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd": 1}
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1024**2}
_UNITS |= {"g": 1e9, "gb": 1e9, "gib": 1024**3, "t": 1e12, "tb": 1e12, "tib": 1024**4}


@dataclass(frozen=True)
class Placement:
    """One cell's data path and the memory figures it was chosen from (bytes)."""

    path: str
    reason: str
    memory: Mapping[str, int | float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "memory": dict(self.memory)}


def parse_size(text: str, flag: str = "--device-memory") -> int:
    """``"16GB"``, ``"512MiB"``, ``"2e9"`` -> bytes.

    Raises:
        ConfigError: not a positive size.
    """
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = found.group(2).lower() if found else ""
    if not found or unit not in _UNITS or float(found.group(1)) <= 0:
        raise ConfigError(
            f"{flag}: the value is {text!r}, but must be a size such as 16GB, 512MiB or 2e9."
        )
    return int(float(found.group(1)) * _UNITS[unit])


@lru_cache(maxsize=32)
def model_figures(model: str, image_size: int, num_classes: int) -> tuple[int, int]:
    """(parameters, activation values per image) of ``model``, from a ``meta`` forward pass."""
    import torch

    from cxr_tune.models import create_model

    with torch.device("meta"):
        net = create_model(model, num_classes=num_classes, pretrained=False)
    outputs = [0]

    def count(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs[0] += output.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    with torch.no_grad():
        net(torch.empty(1, 1, image_size, image_size, device="meta"))
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in net.parameters()), outputs[0]


def trial_bytes(
    model: str,
    *,
    optimizer: str,
    batch_size: int,
    image_size: int,
    num_classes: int,
    bf16: bool,
) -> dict[str, int]:
    """Device memory of one trial apart from its data: model, gradients, optimiser state and
    activations at ``batch_size``."""
    params, activations = model_figures(model, image_size, num_classes)
    return {
        "model": 4 * params,
        "gradients": 4 * params,
        "optimizer": 4 * params * OPTIMIZER_STATE.get(optimizer, 2),
        "activations": activations * batch_size * (2 if bf16 else 4),
    }


def place(
    *,
    model: str,
    optimizer: str,
    batch_size: int,
    image_size: int,
    num_classes: int,
    bf16: bool,
    data_images: int | None,
    trials_per_device: int,
    budget: int | None,
    budget_source: str,
) -> Placement:
    """Choose one cell's data path (see the module's docstring)."""
    if budget is None:
        return Placement(
            "resident",
            "no device memory to fit (a CPU run reads the node's shared arrays in place); "
            "give --device-memory to plan for one",
        )
    trial = trial_bytes(
        model,
        optimizer=optimizer,
        batch_size=batch_size,
        image_size=image_size,
        num_classes=num_classes,
        bf16=bf16,
    )
    per_trial = sum(trial.values())
    data = (data_images or 0) * image_size * image_size
    # A streamed trial holds the batches in flight on the device (prefetch 2, plus the one
    # being trained on).
    buffers = 3 * batch_size * image_size * image_size
    usable = USABLE_SHARE * budget
    resident_need = trials_per_device * (per_trial + data)
    streaming_need = trials_per_device * (per_trial + buffers)
    memory: dict[str, int | float | None] = {
        "data": data,
        "data_images": data_images,
        **trial,
        "per_trial": per_trial,
        "trials_per_device": trials_per_device,
        "resident_need": resident_need,
        "streaming_need": streaming_need,
        "budget": budget,
    }
    summary = (
        f"{trials_per_device} trial(s) x (data {_gb(data)} + trial {_gb(per_trial)} at batch "
        f"{batch_size}) = {_gb(resident_need)}"
    )
    if resident_need <= usable:
        reason = f"fits: {summary} <= {USABLE_SHARE:.0%} of {_gb(budget)} ({budget_source})"
        return Placement("resident", reason, memory)
    reason = (
        f"does not fit: {summary} > {USABLE_SHARE:.0%} of {_gb(budget)} ({budget_source}); "
        "batches stream from the node's shared memory"
    )
    if streaming_need > usable:
        reason += (
            f", but even streaming needs {_gb(streaming_need)}: lower the batch size or pack "
            "fewer trials per device"
        )
    return Placement("streaming", reason, memory)


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB" if value >= 1e7 else f"{value / 1e6:.1f} MB"


def local_device_memory() -> int | None:
    """Total memory of this machine's first GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def trials_per_device(gpu_share: float) -> int:
    """How many trials share one device: 1/share on a GPU packed with fractions, else 1."""
    if 0 < gpu_share < 1:
        return max(1, int(math.floor(1.0 / gpu_share + 1e-9)))
    return 1

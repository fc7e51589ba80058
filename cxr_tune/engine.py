"""The training loop: pure PyTorch, no Ray.

Data arrive as uint8 grayscale arrays (decoded once, by the cache). A split is moved to the
device once per trial; each step selects a batch by index, converts and normalises it on the
device, augments it there, and runs the model. On a GPU the loop uses bf16 autocast,
channels_last and cuDNN autotuning, and never synchronises with the host per step: losses and
confusion counts are accumulated in device tensors and read once per epoch.

``train_epochs`` is the one epoch loop of a configuration: a search trial (``trainable.py``)
reports and checkpoints each epoch it yields, and the final evaluation's retraining
(``evaluate.py``) runs the same loop without a validation split.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_tune.config import DATA_PATHS, Task, TrialConfig
from cxr_tune.constants import (
    DEFAULT_IMAGE_SIZE,
    EPOCH,
    FAILURE_REASON,
    LEARNING_RATE,
    MULTILABEL_EXTRA,
    STATUS,
    STATUS_DIVERGED,
    STATUS_OK,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_METRICS,
)
from cxr_tune.data.types import DatasetArrays, SplitArrays
from cxr_tune.losses import MaskedBCEWithLogitsLoss
from cxr_tune.metrics import multiclass_metrics, multilabel_metrics
from cxr_tune.models import create_model
from cxr_tune.optim import create_optimizer

# ImageNet's RGB statistics collapsed to one gray channel (the paper normalised with mean/std).
GRAY_MEAN = 0.449
GRAY_STD = 0.226
# How often (in steps) the loop checks for a NaN/inf loss: often enough to stop a diverged
# trial within seconds, rarely enough that the host sync is free.
DIVERGENCE_CHECK_EVERY = 25


@dataclass(frozen=True)
class DeviceSplit:
    """One split as tensors on the training device.

    Attributes:
        images: uint8 (N, H, W).
        labels: int64 (N,) class indices, or float32 (N, C) multi-hot targets.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batches(self, indices: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) of each batch of ``indices`` (CPU index tensors), on the
        device: the indices go over in one transfer, the rows are gathered there."""
        for index in _batches_on_device(iter(indices), self.device):
            yield self.images[index], self.labels[index]


@dataclass(frozen=True)
class StreamedSplit:
    """One split that stays in host memory (the node's shared copy in Ray's object store, or
    the cache's memory map) and reaches the device a batch at a time.

    A background thread gathers each batch's rows into a pinned host buffer and starts its
    copy to the device on a side stream, ``prefetch`` batches ahead; the training loop's
    stream waits for the copy on the device (an event), never on the host. Used when the split
    does not fit in device memory beside the trials packed on it (``search/placement.py``).
    Batches hold exactly the values a device-resident split gives, so an epoch's result is the
    same either way.

    Attributes:
        host_images: uint8 (N, H, W), read-only, in host memory.
        labels: the split's labels on the device (small: they are copied once).
        target: the training device.
        prefetch: batches prepared ahead of the one being trained on.
    """

    host_images: np.ndarray
    labels: torch.Tensor
    target: torch.device
    prefetch: int = 2

    def __len__(self) -> int:
        return int(self.host_images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.target

    def batches(self, indices: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) of each batch of ``indices``, on the device, in order."""
        largest = max((len(i) for i in indices), default=0)
        with _Prefetcher(self.host_images, indices, self.target, largest, self.prefetch) as feed:
            for images, index in feed:
                yield images, self.labels[index]


class _Prefetcher:
    """Produces device batches from host rows in a background thread (see StreamedSplit).

    A ring of pinned buffers, two more than the batches in flight: a buffer is refilled only
    after its previous copy to the device has finished (the producer thread waits on that
    copy's event, so the training thread never does) and after the training thread has moved
    past the batch it held.
    """

    def __init__(
        self,
        host: np.ndarray,
        indices: list[torch.Tensor],
        device: torch.device,
        largest: int,
        depth: int,
    ) -> None:
        import queue
        import threading

        self.host = host
        self.indices = indices
        self.device = device
        self.cuda = device.type == "cuda"
        pin = self.cuda
        shape = (max(largest, 1), *host.shape[1:])
        self.buffers = [
            torch.empty(shape, dtype=torch.uint8, pin_memory=pin) for _ in range(depth + 2)
        ]
        self.events: list[Any] = [None] * len(self.buffers)
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, daemon=True)

    def __enter__(self) -> _Prefetcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.queue.get_nowait()
            self.thread.join(timeout=0.05)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(len(self.indices)):
            item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            images, index, event = item
            if self.cuda:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)  # a wait on the device, not on the host
                images.record_stream(current)
                index.record_stream(current)
            yield images, index

    def _produce(self) -> None:
        try:
            for k, index in enumerate(self.indices):
                if self.stop.is_set():
                    return
                item = self._load(k % len(self.buffers), index)
                while not self.stop.is_set():
                    with contextlib.suppress(Exception):
                        self.queue.put(item, timeout=0.1)
                        break
        except BaseException as exc:  # handed to the training thread, which raises it
            self.queue.put(exc)

    def _load(self, slot: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        rows = index.numpy()
        n = len(rows)
        if self.events[slot] is not None:
            self.events[slot].synchronize()  # this buffer's last copy has left it
        buffer = self.buffers[slot][:n]
        out = buffer.numpy()
        if n and rows[-1] - rows[0] == n - 1 and (np.diff(rows) == 1).all():
            out[...] = self.host[rows[0] : rows[-1] + 1]  # a run of rows: one slice copy
        else:
            np.take(self.host, rows, axis=0, out=out)
        if not self.cuda:
            # On the CPU the buffer is the batch; the ring keeps it intact while it is used.
            return buffer, index, None
        assert self.copy_stream is not None
        with torch.cuda.stream(self.copy_stream):
            images = buffer.to(self.device, non_blocking=True)
            device_index = index.pin_memory().to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        self.events[slot] = event
        return images, device_index, event


TrainSplit = DeviceSplit | StreamedSplit


def place_split(
    split: SplitArrays, device: torch.device, task: Task, path: str = "resident"
) -> TrainSplit:
    """A split ready for the loop: copied to the device once (``resident``), or left in host
    memory and streamed a batch at a time (``streaming``)."""
    if path == "resident":
        return to_device(split, device, task)
    if path != "streaming":
        raise ValueError(f"The data path is {path!r}, but must be one of {', '.join(DATA_PATHS)}.")
    labels = to_device(SplitArrays(split.images[:0], split.labels), device, task).labels
    return StreamedSplit(host_images=np.asarray(split.images), labels=labels, target=device)


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs on its device.

    Attributes:
        device: where the model and data live.
        autocast_dtype: bf16 for mixed precision, or None for plain fp32.
        channels_last: NHWC memory format (faster convolutions on tensor cores).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False


@dataclass(frozen=True)
class EpochStats:
    loss: float
    images: int
    diverged: bool


@dataclass(frozen=True)
class Evaluation:
    """Loss and metrics on one split, plus what the report needs to draw from."""

    loss: float
    metrics: dict[str, float]
    confusion: np.ndarray | None = None  # multi-class
    probabilities: np.ndarray | None = None  # multi-label
    targets: np.ndarray | None = None  # multi-label


def select_device() -> torch.device:
    """The GPU this process was given (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def loop_settings(device: torch.device, precision: str = "auto") -> LoopSettings:
    """Resolve a precision name ('auto', 'bf16', 'fp32') to loop settings for ``device``.

    'auto' is bf16 on a GPU that supports it and fp32 on a CPU, so that a CPU run gives the
    same numbers whatever the CPU. Where a CPU has native bf16 (AVX512-BF16, AMX), asking for
    'bf16' is much faster (``scripts/bench/results/train_throughput_cpu_bf16.json``). An
    explicit 'bf16' on a CPU also uses channels_last, which oneDNN's bf16 kernels prefer.
    """
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = precision == "bf16" or (
        precision == "auto" and on_gpu and torch.cuda.is_bf16_supported()
    )
    return LoopSettings(
        device=device,
        autocast_dtype=torch.bfloat16 if use_bf16 else None,
        channels_last=on_gpu or use_bf16,
    )


def to_device(split: SplitArrays, device: torch.device, task: Task) -> DeviceSplit:
    """Move a split to ``device`` once (uint8 images stay uint8: 1 byte per pixel)."""
    with warnings.catch_warnings():
        # Arrays from Ray's object store are read-only views; the loop never writes to them.
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(np.asarray(split.images))
        labels = torch.from_numpy(np.asarray(split.labels))
    labels = labels.float() if task == "multilabel" else labels.long()
    if device.type == "cuda":
        images = images.pin_memory().to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
    return DeviceSplit(images=images, labels=labels)


def loss_function(task: Task) -> nn.Module:
    """Cross-entropy for multi-class, BCE-with-logits for multi-label (as the paper); masked
    multi-label entries (uncertain labels under the ``ignore`` policy) are skipped."""
    return MaskedBCEWithLogitsLoss() if task == "multilabel" else nn.CrossEntropyLoss()


def iterate_batches(
    n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index tensors of consecutive batches; a trailing batch of one image is dropped when
    shuffling, since BatchNorm cannot train on a single image."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        if shuffle and len(batch) < 2:
            break
        yield batch


def prepare_batch(images_u8: torch.Tensor, settings: LoopSettings) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised float (B, 1, H, W), on the batch's device."""
    x = images_u8.unsqueeze(1).float().mul_(1.0 / 255.0).sub_(GRAY_MEAN).div_(GRAY_STD)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """Random augmentation of a normalised batch, on its device, one draw per image.

    Kinds: ``none``; ``paper`` (random horizontal flip, the paper's preset after its resize and
    centre crop, which the cache already applied); ``light`` (shift <= 6%, zoom 0.9-1.1,
    rotation <= 5 degrees); ``strong`` (shift <= 10%, zoom 0.8-1.2, rotation <= 10 degrees,
    contrast and brightness jitter, horizontal flip).
    """
    if kind == "none":
        return x
    b = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(b, device=x.device, generator=generator) * (high - low) + low

    if kind == "paper":
        flip = torch.rand(b, device=x.device, generator=generator) < 0.5
        return torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    shift, zoom, degrees = (0.06, 0.1, 5.0) if kind == "light" else (0.10, 0.2, 10.0)
    angle = uniform(-degrees, degrees) * (math.pi / 180.0)
    scale = 1.0 / uniform(1.0 - zoom, 1.0 + zoom)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, uniform(-shift, shift) * 2], dim=1),
            torch.stack([sin, cos, uniform(-shift, shift) * 2], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if kind == "strong":
        contrast = uniform(0.85, 1.15).view(b, 1, 1, 1)
        brightness = uniform(-0.15, 0.15).view(b, 1, 1, 1) / GRAY_STD
        out = out * contrast + brightness
        flip = torch.rand(b, device=x.device, generator=generator) < 0.5
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _batches_on_device(batches: Iterator[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The epoch's batch indices on ``device``, copied in one transfer instead of one per step."""
    cpu_batches = list(batches)
    if device.type == "cpu" or not cpu_batches:
        return cpu_batches
    order = torch.cat(cpu_batches).pin_memory().to(device, non_blocking=True)
    return list(order.split([len(b) for b in cpu_batches]))


def compile_supported(device: torch.device) -> bool:
    """Whether ``place_model`` compiles on ``device``: CUDA only. On a CPU the first steps
    would pay minutes of compilation for little gain, so the request is ignored there."""
    return device.type == "cuda"


def place_model(model: nn.Module, settings: LoopSettings, *, compile: bool = False) -> nn.Module:
    """Move ``model`` to the loop's device and memory format; compile it where supported.

    Compilation is in place (``nn.Module.compile``): the module keeps its parameters and its
    ``state_dict`` keys, so checkpoints load into compiled and plain models alike, and an
    optimiser built afterwards from ``model.parameters()`` updates what the compiled forward
    reads.
    """
    model = model.to(settings.device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile and compile_supported(settings.device):
        model.compile()
    return model


def _autocast(settings: LoopSettings) -> contextlib.AbstractContextManager:
    if settings.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=settings.device.type, dtype=settings.autocast_dtype)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainSplit,
    *,
    task: Task,
    batch_size: int,
    settings: LoopSettings,
    augment: str = "paper",
    generator: torch.Generator | None = None,
    device_generator: torch.Generator | None = None,
) -> EpochStats:
    """One pass over ``data``; stops early, flagged ``diverged``, once the loss is NaN/inf.

    Args:
        generator: CPU generator for the shuffling order.
        device_generator: generator on the data's device for augmentation draws.
    """
    model.train()
    criterion = loss_function(task)
    loss_sum = torch.zeros((), device=data.device, dtype=torch.float64)
    seen = 0
    order = list(iterate_batches(len(data), batch_size, shuffle=True, generator=generator))
    for step, (images, y) in enumerate(data.batches(order), start=1):
        x = augment_batch(prepare_batch(images, settings), augment, device_generator)
        with _autocast(settings):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * len(y)
        seen += len(y)
        if step % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            break
    mean_loss = float(loss_sum) / max(seen, 1)
    return EpochStats(loss=mean_loss, images=seen, diverged=not math.isfinite(mean_loss))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor | TrainSplit,
    *,
    batch_size: int,
    settings: LoopSettings,
) -> torch.Tensor:
    """Float32 logits for uint8 images (N, H, W) or a split's images, in eval mode, on the
    device, in order."""
    model.eval()
    outputs = []
    for batch in _consecutive(images, batch_size):
        x = prepare_batch(batch, settings)
        with _autocast(settings):
            outputs.append(model(x).float())
    return torch.cat(outputs)


def _consecutive(images: torch.Tensor | TrainSplit, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(images, DeviceSplit):
        images = images.images
    if isinstance(images, torch.Tensor):
        # Consecutive slices are views: no gather, and no index copied to the device per batch.
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
        return
    order = list(torch.arange(len(images)).split(batch_size))
    for batch, _ in images.batches(order):
        yield batch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TrainSplit,
    *,
    task: Task,
    num_classes: int,
    settings: LoopSettings,
    batch_size: int = 256,
) -> Evaluation:
    """Loss and metrics of ``model`` on ``data`` (no augmentation)."""
    logits = predict_logits(model, data, batch_size=batch_size, settings=settings)
    loss = float(loss_function(task)(logits, data.labels))
    if task == "multilabel":
        probabilities = torch.sigmoid(logits).cpu().numpy()
        targets = data.labels.cpu().numpy().astype(np.uint8)
        metrics = multilabel_metrics(probabilities, targets)
        return Evaluation(loss, metrics, probabilities=probabilities, targets=targets)
    predictions = logits.argmax(dim=1)
    index = data.labels * num_classes + predictions
    confusion = torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)
    confusion_np = confusion.cpu().numpy()
    return Evaluation(loss, multiclass_metrics(confusion_np), confusion=confusion_np)


def eval_batch_size(device: torch.device, image_size: int) -> int:
    """The evaluation batch size that runs fastest on ``device``.

    On a GPU, as large as comfortably fits (no gradients are kept; larger batches keep the GPU
    busy between kernel launches). On a CPU, larger batches only overflow the caches, and
    evaluation slows down past about 32 images a batch.
    """
    pixels = image_size * image_size
    if device.type == "cuda":
        return int(max(32, min(2048, 512 * DEFAULT_IMAGE_SIZE**2 // pixels)))
    return int(max(8, min(32, 32 * DEFAULT_IMAGE_SIZE**2 // pixels)))


# --- Training one configuration -----------------------------------------------------------------


@dataclass
class TrainingState:
    """What a checkpoint holds and a resumed trial restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    epoch: int = 0  # last finished epoch


def build_state(cfg: TrialConfig, dataset: DatasetArrays, device: torch.device) -> TrainingState:
    """Model, optimiser and LR schedule for ``cfg``, initialised from ``cfg.seed``.

    ``cfg.compile`` compiles the model in place on a GPU and is ignored on a CPU (the result's
    ``compiled`` field says which); checkpoints are the same either way.
    """
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=dataset.num_classes, pretrained=cfg.pretrained)
    model = place_model(model, loop_settings(device, cfg.precision), compile=cfg.compile)
    optimizer = create_optimizer(
        cfg.optimizer,
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.lr_schedule == "cosine"
        else None
    )
    return TrainingState(model=model, optimizer=optimizer, scheduler=scheduler)


def train_epochs(
    state: TrainingState,
    cfg: TrialConfig,
    dataset: DatasetArrays,
    train: TrainSplit,
    val: TrainSplit | None,
    settings: LoopSettings,
) -> Iterator[dict[str, Any]]:
    """Train ``state`` from the epoch after ``state.epoch`` to ``cfg.epochs``, yielding each
    epoch's result (validation metrics when ``val`` is given).

    ``state.epoch`` advances before a result is yielded, so a checkpoint written while handling
    it resumes after that epoch. A diverged epoch's result is the last one.
    """
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        result = run_epoch(state, cfg, dataset, train, val, settings, epoch)
        if result[STATUS] != STATUS_OK:
            yield result
            return
        state.epoch = epoch
        yield result


def run_epoch(
    state: TrainingState,
    cfg: TrialConfig,
    dataset: DatasetArrays,
    train: TrainSplit,
    val: TrainSplit | None,
    settings: LoopSettings,
    epoch: int,
) -> dict[str, Any]:
    """Train one epoch and evaluate on the validation split (if given); the epoch's result."""
    started = time.perf_counter()
    stats = fit_epoch(state, cfg, dataset, train, settings, epoch)
    if stats.diverged:
        return diverged_result(cfg, dataset, epoch, stats.loss)
    if state.scheduler is not None:
        state.scheduler.step()
    train_seconds = time.perf_counter() - started
    result: dict[str, Any] = {EPOCH: epoch, STATUS: STATUS_OK, TRAIN_LOSS: stats.loss}
    if val is not None:
        scores = evaluate(
            state.model,
            val,
            task=dataset.task,
            num_classes=dataset.num_classes,
            settings=settings,
            batch_size=eval_batch_size(settings.device, cfg.image_size),
        )
        result[VAL_LOSS] = scores.loss
        result.update({f"val_{name}": value for name, value in scores.metrics.items()})
    return {
        **result,
        LEARNING_RATE: state.optimizer.param_groups[0]["lr"],
        "train_images_per_s": stats.images / train_seconds if train_seconds > 0 else 0.0,
        "epoch_time_s": time.perf_counter() - started,
    }


def fit_epoch(
    state: TrainingState,
    cfg: TrialConfig,
    dataset: DatasetArrays,
    train: TrainSplit,
    settings: LoopSettings,
    epoch: int,
) -> EpochStats:
    """Train ``state`` for one epoch of ``cfg``."""
    # Shuffling and augmentation draws depend only on (seed, epoch): a resumed trial replays
    # exactly the batches it would have seen, and a retrained seed repeats its trial.
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    device_generator = torch.Generator(device=settings.device).manual_seed(cfg.seed * 7919 + epoch)
    return train_one_epoch(
        state.model,
        state.optimizer,
        train,
        task=dataset.task,
        batch_size=cfg.batch_size,
        settings=settings,
        augment=cfg.augment,
        generator=generator,
        device_generator=device_generator,
    )


def nan_metrics(dataset: DatasetArrays) -> dict[str, float]:
    """The validation metrics of an epoch that produced none (a diverged or failed epoch)."""
    names = [VAL_LOSS, *VAL_METRICS]
    if dataset.task == "multilabel":
        names += list(MULTILABEL_EXTRA)
    return dict.fromkeys(names, math.nan)


def diverged_result(
    cfg: TrialConfig, dataset: DatasetArrays, epoch: int, loss: float
) -> dict[str, Any]:
    """The last result of a trial whose training loss became NaN/inf."""
    return {
        EPOCH: epoch,
        STATUS: STATUS_DIVERGED,
        TRAIN_LOSS: loss,
        **nan_metrics(dataset),
        FAILURE_REASON: f"training loss became {loss} in epoch {epoch} (lr={cfg.lr:g})",
    }

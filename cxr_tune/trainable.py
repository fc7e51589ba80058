"""The Ray Tune function trainable: one trial trains one configuration on one dataset.

``train_trial(config, data)`` is wrapped by ``tune.with_parameters(train_trial, data=...)``:
``data`` maps dataset names to decoded arrays (train and val only) held once per node in Ray's
object store. The trial reports once per epoch with a checkpoint, resumes from
``tune.get_checkpoint()`` after a restart, stops itself when its loss diverges, and records a
clean failure (instead of crashing the search) when a batch does not fit in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from torch import nn

from cxr_tune import __version__
from cxr_tune.config import MULTILABEL_EXTRA, TrialConfig
from cxr_tune.data.types import DatasetArrays
from cxr_tune.engine import (
    DeviceSplit,
    EpochStats,
    LoopSettings,
    compile_supported,
    eval_batch_size,
    evaluate,
    loop_settings,
    place_model,
    select_device,
    to_device,
    train_one_epoch,
)
from cxr_tune.metrics import no_skill_losses
from cxr_tune.models import create_model
from cxr_tune.optim import create_optimizer
from cxr_tune.processes import process_alive

CHECKPOINT_FILE = "state.pt"
TRIAL_FILE = "trial.json"  # beside the state: config, result and what the state holds
# Status values a trial's last result carries (the report and the searcher read them).
STATUS_OK, STATUS_DIVERGED, STATUS_FAILED = "ok", "diverged", "failed"


@dataclass
class TrainingState:
    """What a checkpoint holds and a resumed trial restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    epoch: int = 0  # last finished epoch


def train_trial(config: dict[str, Any], data: Mapping[str, DatasetArrays]) -> None:
    """Train one configuration, reporting metrics every epoch and a checkpoint every
    ``checkpoint_every`` epochs and after the last."""
    cfg = TrialConfig.from_dict(config)
    dataset = data[cfg.dataset]
    device = select_device()
    _use_assigned_cpus()
    settings = loop_settings(device, cfg.precision)
    state = build_state(cfg, dataset, device)
    restore_state(state, tune.get_checkpoint(), device)
    train = to_device(dataset.split("train"), device, dataset.task)
    val = to_device(dataset.split("val"), device, dataset.task)
    meta = trial_metadata(cfg, dataset, device)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        try:
            metrics = run_epoch(state, cfg, dataset, train, val, settings, epoch)
        except torch.OutOfMemoryError as exc:
            tune.report(failure_result(cfg, dataset, epoch, meta, f"out of memory: {exc}"))
            return
        if metrics["status"] == STATUS_DIVERGED:
            tune.report({**metrics, **meta})
            return
        state.epoch = epoch
        if cfg.checkpoints_after(epoch):
            report_with_checkpoint({**metrics, **meta}, state, cfg)
        else:
            tune.report({**metrics, **meta})


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


def restore_state(
    state: TrainingState, checkpoint: tune.Checkpoint | None, device: torch.device
) -> None:
    """Load a checkpoint written by ``report_with_checkpoint`` (no-op when there is none)."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        saved = torch.load(Path(folder) / CHECKPOINT_FILE, map_location=device, weights_only=True)
    state.model.load_state_dict(saved["model"])
    if saved.get("optimizer") is not None:  # a slimmed final checkpoint has none
        state.optimizer.load_state_dict(saved["optimizer"])
    if state.scheduler is not None and saved.get("scheduler") is not None:
        state.scheduler.load_state_dict(saved["scheduler"])
    state.epoch = int(saved["epoch"])


def run_epoch(
    state: TrainingState,
    cfg: TrialConfig,
    dataset: DatasetArrays,
    train: DeviceSplit,
    val: DeviceSplit,
    settings: LoopSettings,
    epoch: int,
) -> dict[str, Any]:
    """Train one epoch and evaluate on the validation split; returns the epoch's result."""
    started = time.perf_counter()
    stats = fit_epoch(state, cfg, dataset, train, settings, epoch)
    if stats.diverged:
        return diverged_result(cfg, dataset, epoch, stats.loss)
    if state.scheduler is not None:
        state.scheduler.step()
    train_seconds = time.perf_counter() - started
    result = evaluate(
        state.model,
        val,
        task=dataset.task,
        num_classes=dataset.num_classes,
        settings=settings,
        batch_size=eval_batch_size(settings.device, cfg.image_size),
    )
    metrics = {f"val_{name}": value for name, value in result.metrics.items()}
    return {
        "epoch": epoch,
        "status": STATUS_OK,
        "train_loss": stats.loss,
        "val_loss": result.loss,
        **metrics,
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_images_per_s": stats.images / train_seconds if train_seconds > 0 else 0.0,
        "epoch_time_s": time.perf_counter() - started,
    }


def fit_epoch(
    state: TrainingState,
    cfg: TrialConfig,
    dataset: DatasetArrays,
    train: DeviceSplit,
    settings: LoopSettings,
    epoch: int,
) -> EpochStats:
    """Train ``state`` for one epoch of ``cfg`` (shared by trials and the final evaluation)."""
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


def _nan_metrics(dataset: DatasetArrays) -> dict[str, float]:
    names = ["val_loss", "val_accuracy", "val_macro_precision", "val_macro_recall", "val_macro_f1"]
    if dataset.task == "multilabel":
        names += list(MULTILABEL_EXTRA)
    return dict.fromkeys(names, math.nan)


def diverged_result(
    cfg: TrialConfig, dataset: DatasetArrays, epoch: int, loss: float
) -> dict[str, Any]:
    """The last result of a trial whose training loss became NaN/inf."""
    return {
        "epoch": epoch,
        "status": STATUS_DIVERGED,
        "train_loss": loss,
        **_nan_metrics(dataset),
        "failure_reason": f"training loss became {loss} in epoch {epoch} (lr={cfg.lr:g})",
    }


def failure_result(
    cfg: TrialConfig, dataset: DatasetArrays, epoch: int, meta: Mapping[str, Any], reason: str
) -> dict[str, Any]:
    """The last result of a trial that could not go on (e.g. its batch does not fit)."""
    return {
        "epoch": epoch,
        "status": STATUS_FAILED,
        "train_loss": math.nan,
        **_nan_metrics(dataset),
        "failure_reason": f"{reason.splitlines()[0][:300]} (batch_size={cfg.batch_size})",
        **meta,
    }


def report_with_checkpoint(result: dict[str, Any], state: TrainingState, cfg: TrialConfig) -> None:
    """Report ``result`` with a checkpoint of ``state`` (persisted to storage by Ray)."""
    saved = checkpoint_payload(state, cfg)
    with _staging_folder() as folder:
        torch.save(saved, Path(folder) / CHECKPOINT_FILE)
        described = {
            "config": cfg.to_dict(),
            "result": _jsonable(result),
            "optimizer_state": saved["optimizer"] is not None,
        }
        (Path(folder) / TRIAL_FILE).write_text(json.dumps(described, indent=2))
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))


def checkpoint_payload(state: TrainingState, cfg: TrialConfig) -> dict[str, Any]:
    """What a checkpoint of ``state`` holds.

    After the last epoch nothing resumes the trial: its checkpoint is the final model, which the
    evaluation scores. Without the optimizer state (two thirds of it with Adam) it is written,
    copied to storage and kept at a fraction of the cost.
    """
    # place_model compiles in place (same state_dict keys); unwrap a torch.compile() wrapper too.
    model = getattr(state.model, "_orig_mod", state.model)
    resumable = state.epoch < cfg.epochs
    return {
        "model": model.state_dict(),
        "optimizer": state.optimizer.state_dict() if resumable else None,
        "scheduler": state.scheduler.state_dict() if state.scheduler and resumable else None,
        "epoch": state.epoch,
    }


@contextlib.contextmanager
def _staging_folder() -> Iterator[Path]:
    """Where a checkpoint is written before Ray copies it to storage.

    One fixed folder per trial and worker process (not a fresh temporary one per epoch): a
    worker killed while Ray copies a checkpoint (a lost node, a killed driver) leaves at most
    this folder behind, and the trial's next run clears what dead workers left. The process id
    keeps two runs of one trial apart where nodes share a disk (several Ray nodes on one host):
    a worker of a lost node that has not exited yet never deletes its successor's checkpoint.
    """
    try:
        trial_id = tune.get_context().get_trial_id() or "local"
    except Exception:  # outside a Tune trial
        trial_id = "local"
    trial_folder = Path(tempfile.gettempdir()) / "cxr_tune_checkpoints" / trial_id
    _remove_dead_workers_folders(trial_folder)
    folder = trial_folder / str(os.getpid())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: another worker of the trial is alive
            trial_folder.rmdir()


def _remove_dead_workers_folders(trial_folder: Path) -> None:
    """Remove the staging folders of this trial's earlier worker processes that have exited."""
    if not trial_folder.is_dir():
        return
    for folder in trial_folder.iterdir():
        if folder.name.isdigit() and not process_alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


def trial_metadata(
    cfg: TrialConfig, dataset: DatasetArrays, device: torch.device
) -> dict[str, Any]:
    """What every result records for reproducibility: data hashes, versions, device."""
    import optuna
    import torchvision

    return {
        "dataset_hash": dataset.dataset_hash,
        "split_hash": dataset.split_hash,
        # The losses of predicting the training class frequencies: ASHA's no-skill check
        # stops a trial that is below neither (search/scheduler.py).
        **no_skill_losses(dataset),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "compiled": cfg.compile and compile_supported(device),
        # Which Ray node ran each epoch: a trial moved off a lost node shows it here.
        "node_id": _node_id(),
        "versions": {
            "cxr_tune": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "ray": ray.__version__,
            "optuna": optuna.__version__,
            "python": platform.python_version(),
        },
    }


def _node_id() -> str:
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # outside a Ray worker (e.g. a direct call in a test)
        return ""


def _use_assigned_cpus() -> None:
    """Give torch as many threads as CPUs Ray assigned this trial (Ray's default is 1 thread)."""
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # outside a Ray worker (e.g. a direct call in a test)
        return
    torch.set_num_threads(max(1, int(cpus)))


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool, dict))}

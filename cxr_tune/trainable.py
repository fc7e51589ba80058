"""The Ray Tune function trainable: one trial trains one configuration on one dataset.

``train_trial(config, data)`` is wrapped by ``tune.with_parameters(train_trial, data=...)``:
``data`` maps dataset names to decoded arrays (train and val only) held once per node in Ray's
object store. The trial reports once per epoch with a checkpoint, resumes from
``tune.get_checkpoint()`` after a restart, stops itself when its loss diverges, and records a
clean failure (instead of crashing the search) when a batch does not fit in memory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import ray
import torch
from ray import tune

from cxr_tune import __version__
from cxr_tune.config import TrialConfig
from cxr_tune.constants import (
    CHECKPOINT_FILE,
    EPOCH,
    FAILURE_REASON,
    STATUS,
    STATUS_DIVERGED,
    STATUS_FAILED,
    TRAIN_LOSS,
    TRIAL_FILE,
)
from cxr_tune.data.types import DatasetArrays
from cxr_tune.engine import (
    TrainingState,
    build_state,
    compile_supported,
    loop_settings,
    nan_metrics,
    place_split,
    select_device,
    train_epochs,
)
from cxr_tune.metrics import no_skill_losses
from cxr_tune.processes import process_alive

# errno values of a write that found no room: disk full, quota exceeded, file size limit.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


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
    # Device-resident, or streamed from the node's shared copy when the plan found that the
    # split does not fit beside the trials packed on the device.
    train = place_split(dataset.split("train"), device, dataset.task, cfg.data_path)
    val = place_split(dataset.split("val"), device, dataset.task, cfg.data_path)
    meta = trial_metadata(cfg, dataset, device)
    try:
        for metrics in train_epochs(state, cfg, dataset, train, val, settings):
            if metrics[STATUS] == STATUS_DIVERGED:
                tune.report({**metrics, **meta})
                return
            if not cfg.checkpoints_after(state.epoch):
                tune.report({**metrics, **meta})
                continue
            try:
                report_with_checkpoint({**metrics, **meta}, state, cfg)
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                # Retrying would fill the same disk again: the trial ends, the search goes on.
                reason = disk_full_reason(exc, state.epoch)
                tune.report(failure_result(cfg, dataset, state.epoch, meta, reason))
                return
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        tune.report(failure_result(cfg, dataset, state.epoch + 1, meta, f"out of memory: {exc}"))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a failed allocation: CUDA's ``OutOfMemoryError``, or the plain RuntimeError
    that torch's CPU allocator raises (retrying such a trial would only fail the same way)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(
        exc
    )


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


def failure_result(
    cfg: TrialConfig, dataset: DatasetArrays, epoch: int, meta: Mapping[str, Any], reason: str
) -> dict[str, Any]:
    """The last result of a trial that could not go on (e.g. its batch does not fit)."""
    return {
        EPOCH: epoch,
        STATUS: STATUS_FAILED,
        TRAIN_LOSS: math.nan,
        **nan_metrics(dataset),
        FAILURE_REASON: f"{reason.splitlines()[0][:300]} (batch_size={cfg.batch_size})",
        **meta,
    }


def disk_full_reason(exc: OSError, epoch: int) -> str:
    """The failure reason of a trial whose checkpoint found no room on its disk."""
    where = f" ({exc.filename})" if exc.filename else ""
    return (
        f"no room to write the checkpoint of epoch {epoch}: {exc.strerror or exc}{where}; "
        "free space on the trial's temporary folder and on --storage"
    )


def report_with_checkpoint(result: dict[str, Any], state: TrainingState, cfg: TrialConfig) -> None:
    """Report ``result`` with a checkpoint of ``state`` (persisted to storage by Ray)."""
    saved = checkpoint_payload(state, cfg)
    with _staging_folder() as folder:
        save_checkpoint(saved, Path(folder) / CHECKPOINT_FILE)
        described = {
            "config": cfg.to_dict(),
            "result": _jsonable(result),
            "optimizer_state": saved["optimizer"] is not None,
        }
        (Path(folder) / TRIAL_FILE).write_text(json.dumps(described, indent=2))
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` into ``path``; a write that finds no room raises its own OSError (errno,
    path), not the RuntimeError ("unexpected pos") that torch's zip writer makes of it."""
    with open(path, "wb") as handle:
        writer = _RecordingWriter(handle)
        try:
            torch.save(payload, cast(IO[bytes], writer))
        except RuntimeError:
            if writer.error is None:
                raise
            raise OSError(writer.error.errno, writer.error.strerror, str(path)) from None


class _RecordingWriter:
    """A file's write/flush that remembers the OSError torch's writer would swallow."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self.handle.write(data))
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


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

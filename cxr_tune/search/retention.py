"""Checkpoint retention: keep what resuming and the final evaluation need, not gigabytes more.

A checkpoint holds the model and the optimizer state: for AlexNet with Adam that is ~0.7 GB,
for VGG11 ~1.6 GB. While a trial runs, its last two checkpoints are kept in full (a trial on a
lost node, or after ``--resume``, continues from the one the saved experiment state names).
When a trial ends, nothing will ever resume it:

- a trial that trained every epoch keeps its final model weights (the final evaluation scores
  them as its first seed); the trainable writes that last checkpoint without optimizer state
  (a third of the size with Adam), and one written with it is slimmed here;
- a trial stopped early, diverged or failed drops its checkpoints; under a time budget, a
  trial stopped early that the evaluation would score (its cell's best, or the best of an
  optimizer) keeps its last weights, slimmed, so the evaluation can score it as it stands when
  the budget leaves no room to retrain it; they go once another trial takes its place.

``--keep-checkpoints`` turns this off.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs
import torch
from ray.tune import Callback

from cxr_tune.constants import CHECKPOINT_FILE, EPOCH, STATUS, STATUS_OK, TRIAL_FILE


class CheckpointRetention(Callback):
    """Slim or remove a trial's checkpoints once the trial has ended.

    Args:
        contenders_of: under a time budget, the ids of the ended trials the evaluation would
            score, from all trials (``search/reserve.py``); their last weights are kept.
    """

    def __init__(self, contenders_of: Callable[[list[Any]], set[str]] | None = None) -> None:
        self.contenders_of = contenders_of
        self.kept_stopped: set[str] = set()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        planned = int(trial.config.get("epochs", 0))
        last = trial.last_result or {}
        ok = last.get(STATUS, STATUS_OK) == STATUS_OK
        completed = ok and int(last.get(EPOCH, 0)) >= planned > 0
        if completed or not ok or self.contenders_of is None:
            self._apply(trial, keep_final=completed)
            return
        contenders = self.contenders_of(trials)
        self._apply(trial, keep_final=str(trial.trial_id) in contenders)
        if str(trial.trial_id) in contenders:
            self.kept_stopped.add(str(trial.trial_id))
        # Stopped contenders another trial has since replaced: nothing will score them now.
        for other in trials:
            other_id = str(other.trial_id)
            if other_id in self.kept_stopped and other_id not in contenders:
                self._apply(other, keep_final=False)
                self.kept_stopped.discard(other_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._apply(trial, keep_final=False)

    def _apply(self, trial: Any, *, keep_final: bool) -> None:
        storage = trial.storage
        fs: pyarrow.fs.FileSystem = storage.storage_filesystem
        folders = checkpoint_folders(fs, storage.trial_fs_path)
        if not folders:
            return
        keep = folders[-1] if keep_final else None
        for folder in folders:
            if folder != keep:
                fs.delete_dir(folder)
        if keep is not None:
            drop_optimizer_state(fs, f"{keep}/{CHECKPOINT_FILE}")


def checkpoint_folders(fs: pyarrow.fs.FileSystem, trial_path: str) -> list[str]:
    """The trial's ``checkpoint_NNNNNN`` folders, oldest first."""
    selector = pyarrow.fs.FileSelector(trial_path, allow_not_found=True)
    found = [
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.Directory
        and PurePosixPath(info.path).name.startswith("checkpoint_")
    ]
    return sorted(found)


def drop_optimizer_state(fs: pyarrow.fs.FileSystem, path: str) -> None:
    """Rewrite a checkpoint file with the model weights and epoch only."""
    info = fs.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File or not _holds_optimizer_state(fs, path):
        return
    with fs.open_input_file(path) as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    if state.get("optimizer") is None:
        return
    slim = {"model": state["model"], "optimizer": None, "scheduler": None, "epoch": state["epoch"]}
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(buffer.getvalue())
    fs.move(tmp, path)


def _holds_optimizer_state(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    """What the checkpoint's small ``trial.json`` says, so a final checkpoint the trial already
    wrote without optimizer state is not read back in full; True when it does not say."""
    described = f"{PurePosixPath(path).parent}/{TRIAL_FILE}"
    try:
        with fs.open_input_file(described) as f:
            return bool(json.loads(f.read()).get("optimizer_state", True))
    except (OSError, ValueError):
        return True

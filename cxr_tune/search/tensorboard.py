"""TensorBoard events per trial: per-epoch scalars and the trial's hyperparameters.

Ray's default ``TBXLoggerCallback`` writes every numeric result key under ``ray/tune/`` against
Ray's iteration counter, and writes the hyperparameters only when a trial ends: trials still
running when a search is interrupted, or that crash before their first result, never reach the
HParams tab. Its writer also reaches the disk only every 30 s from a background thread, so the
last epochs before a Ctrl+C miss Ray's final copy of the trial folders. ``TrialTensorBoard``
replaces it (Tune adds its default only when no callback of that class is given) and writes,
in each trial folder, with a flush that waits until the events are on disk:

- scalars per epoch: ``loss/train``, ``loss/val``, ``val/<metric>`` and ``train/lr``,
  ``train/images_per_s``, ``time/epoch_s``;
- the hyperparameters (the trial's whole config) when the trial starts, and its outcome when
  it ends. No experiment summary is written, so TensorBoard builds the HParams table from all
  trials' hyperparameters and scalars together (conditional parameters included).

``tensorboard --logdir EXPERIMENT_DIR`` then shows every trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from cxr_tune.constants import EPOCH, STATUS, STATUS_OK, TRAIN_LOSS, VAL_LOSS
from cxr_tune.search._ray_internals import add_summary

# Result keys written as scalars, besides every ``val_*`` metric.
SCALAR_TAGS: dict[str, str] = {
    TRAIN_LOSS: "loss/train",
    VAL_LOSS: "loss/val",
    "lr": "train/lr",
    "train_images_per_s": "train/images_per_s",
    "epoch_time_s": "time/epoch_s",
}
HPARAM_TYPES = (str, bool, int, float)


def scalar_tags(result: Mapping[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> finite value for one epoch's result."""
    tags: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in SCALAR_TAGS:
            tag = SCALAR_TAGS[key]
        elif key.startswith("val_") and key != VAL_LOSS:
            tag = f"val/{key.removeprefix('val_')}"
        else:
            continue
        if math.isfinite(float(value)):
            tags[tag] = float(value)
    return tags


def hparams_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config values TensorBoard's HParams tab can show (strings, booleans, numbers)."""
    return {k: v for k, v in config.items() if isinstance(v, HPARAM_TYPES)}


class TrialTensorBoard(TBXLoggerCallback):
    """Per-trial TensorBoard events with hyperparameters from the start (see module doc)."""

    def log_trial_start(self, trial: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        trial.init_local_path()
        self._trial_writer[trial] = SummaryWriter(trial.local_path)
        self._trial_result[trial] = {}
        self._write_summary(trial, _session_start(hparams_of(trial.config)))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        # The epoch, not Ray's iteration counter: the two differ once a trial is restored.
        step = int(result.get(EPOCH) or result.get("training_iteration") or iteration)
        writer = self._trial_writer[trial]
        for tag, value in scalar_tags(result).items():
            writer.add_scalar(tag, value, global_step=step)
        self._trial_result[trial] = result
        writer.flush()  # on disk before Ray copies the trial folder to the storage

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial not in self._trial_writer:
            return
        last = self._trial_result.get(trial) or {}
        ok = not failed and last.get(STATUS, STATUS_OK) == STATUS_OK
        self._write_summary(trial, _session_end(ok))
        self._trial_writer.pop(trial).close()
        self._trial_result.pop(trial, None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # An interrupted search ends with trials still open: close their files (their outcome
        # stays unknown in the HParams tab).
        for trial in list(self._trial_writer):
            self._trial_writer.pop(trial).close()
            self._trial_result.pop(trial, None)

    def _write_summary(self, trial: Any, summary: Any) -> None:
        writer = self._trial_writer[trial]
        add_summary(writer, summary)
        writer.flush()


def _session_start(hparams: Mapping[str, Any]) -> Any:
    """The HParams plugin's session-start summary: the trial's hyperparameters."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    for key, value in hparams.items():
        if isinstance(value, bool):  # before int: True is an int too
            start.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[key].number_value = float(value)
        else:
            start.hparams[key].string_value = str(value)
    data = plugin_data_pb2.HParamsPluginData(session_start_info=start, version=0)
    return _hparams_summary("_hparams_/session_start_info", data)


def _session_end(ok: bool) -> Any:
    """The HParams plugin's session-end summary with the trial's outcome."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    status = api_pb2.Status.STATUS_SUCCESS if ok else api_pb2.Status.STATUS_FAILURE
    end = plugin_data_pb2.SessionEndInfo(status=status)
    data = plugin_data_pb2.HParamsPluginData(session_end_info=end, version=0)
    return _hparams_summary("_hparams_/session_end_info", data)


def _hparams_summary(tag: str, data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

    plugin = SummaryMetadata.PluginData(plugin_name="hparams", content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])

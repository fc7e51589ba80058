"""The per-trial TensorBoard callback, driven by hand (no Ray runtime is started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cxr_tune.search.tensorboard import TrialTensorBoard, hparams_of, scalar_tags


class FakeTrial:
    """What the callback reads from a Tune trial."""

    def __init__(self, folder: Path) -> None:
        self.local_path = str(folder)
        self.trial_id = folder.name
        self.evaluated_params: dict[str, Any] = {}
        self.config = {"lr": 1e-3, "optimizer": "sgd", "batch_size": 16, "pretrained": False,
                       "cell": "phantom/alexnet", "versions": {"torch": "2"}}  # fmt: skip

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def _epoch(epoch: int, **extra: Any) -> dict[str, Any]:
    return {"epoch": epoch, "status": "ok", "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch,
            "val_macro_f1": 0.2 * epoch, "lr": 1e-3, "done": False, "training_iteration": epoch + 5,
            "time_total_s": 3.0, **extra}  # fmt: skip


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


def hparams_plugin_data(events: EventAccumulator, tag: str) -> plugin_data_pb2.HParamsPluginData:
    content = events.PluginTagToContent("hparams")[tag]
    return plugin_data_pb2.HParamsPluginData.FromString(content)


def test_scalar_tags_keep_losses_and_validation_metrics() -> None:
    tags = scalar_tags(_epoch(2, val_macro_auroc=float("nan"), done=True, device="cpu"))
    assert tags == {"loss/train": 0.5, "loss/val": 1.0, "val/macro_f1": 0.4, "train/lr": 1e-3}


def test_hparams_of_keeps_plain_values() -> None:
    assert "versions" not in hparams_of(FakeTrial(Path("x")).config)


def test_callback_writes_epoch_scalars_and_hparams(tmp_path: Path) -> None:
    trial = FakeTrial(tmp_path / "trial")
    callback = TrialTensorBoard()
    callback.log_trial_start(trial)
    for epoch in (1, 2):
        callback.log_trial_result(epoch, trial, _epoch(epoch))
    callback.log_trial_end(trial)
    events = read_events(tmp_path / "trial")
    assert [(s.step, s.value) for s in events.Scalars("val/macro_f1")] == [
        (1, pytest.approx(0.2)),
        (2, pytest.approx(0.4)),
    ]
    assert {"loss/train", "loss/val", "train/lr"} <= set(events.Tags()["scalars"])
    start = hparams_plugin_data(events, "_hparams_/session_start_info").session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(1e-3)
    assert start.hparams["optimizer"].string_value == "sgd"
    assert start.hparams["pretrained"].WhichOneof("kind") == "bool_value"
    end = hparams_plugin_data(events, "_hparams_/session_end_info").session_end_info
    assert end.status == 1  # STATUS_SUCCESS
    assert "_hparams_/experiment" not in events.PluginTagToContent("hparams")


def test_callback_writes_hparams_before_the_trial_ends(tmp_path: Path) -> None:
    trial = FakeTrial(tmp_path / "trial")
    callback = TrialTensorBoard()
    callback.log_trial_start(trial)  # an interrupted search never ends this trial
    callback.log_trial_result(1, trial, _epoch(1))
    events = read_events(tmp_path / "trial")  # on disk at once: no waiting for a flush timer
    assert _has_hparams(events)
    assert [s.step for s in events.Scalars("val/macro_f1")] == [1]
    callback.on_experiment_end(trials=[trial])
    assert not callback._trial_writer


def test_callback_marks_a_diverged_trial_failed(tmp_path: Path) -> None:
    trial = FakeTrial(tmp_path / "trial")
    callback = TrialTensorBoard()
    callback.log_trial_result(1, trial, _epoch(1))
    callback.log_trial_result(2, trial, _epoch(2, status="diverged", train_loss=float("inf")))
    callback.log_trial_end(trial)
    events = read_events(tmp_path / "trial")
    end = hparams_plugin_data(events, "_hparams_/session_end_info").session_end_info
    assert end.status == 2  # STATUS_FAILURE
    assert [s.step for s in events.Scalars("loss/train")] == [1]


def _has_hparams(events: EventAccumulator) -> bool:
    try:
        return "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    except KeyError:
        return False

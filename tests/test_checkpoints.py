"""What a trial's checkpoints hold, and how an ended trial's checkpoint is slimmed on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs
import pytest
import torch
from torch import nn

from cxr_tune.config import TrialConfig
from cxr_tune.search.retention import drop_optimizer_state
from cxr_tune.trainable import CHECKPOINT_FILE, TRIAL_FILE, TrainingState, checkpoint_payload


def _state(epoch: int) -> TrainingState:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()  # Adam now holds exp_avg / exp_avg_sq per parameter
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    return TrainingState(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch)


def test_a_checkpoint_a_trial_may_resume_from_holds_the_optimizer_state():
    saved = checkpoint_payload(_state(epoch=2), TrialConfig(epochs=3, lr_schedule="cosine"))
    assert saved["epoch"] == 2
    assert saved["optimizer"]["state"][0]["exp_avg"].shape == (3, 4)
    assert saved["scheduler"]["T_max"] == 3


def test_the_final_checkpoint_holds_the_model_only():
    state = _state(epoch=3)
    saved = checkpoint_payload(state, TrialConfig(epochs=3, lr_schedule="cosine"))
    assert saved["optimizer"] is None and saved["scheduler"] is None and saved["epoch"] == 3
    assert torch.equal(saved["model"]["weight"], state.model.weight)


def _write_checkpoint(folder, payload, *, optimizer_state: bool | None) -> str:
    folder.mkdir()
    torch.save(payload, folder / CHECKPOINT_FILE)
    described = {"config": {}, "result": {}}
    if optimizer_state is not None:
        described["optimizer_state"] = optimizer_state
    (folder / TRIAL_FILE).write_text(json.dumps(described))
    return str(folder / CHECKPOINT_FILE)


def test_retention_slims_a_checkpoint_written_with_optimizer_state(tmp_path):
    payload = checkpoint_payload(_state(epoch=2), TrialConfig(epochs=3))
    # A checkpoint from before trials wrote a slim final one: trial.json does not say.
    path = _write_checkpoint(tmp_path / "checkpoint_000001", payload, optimizer_state=None)
    before = os.path.getsize(path)
    drop_optimizer_state(pyarrow.fs.LocalFileSystem(), path)
    slim = torch.load(path, weights_only=True)
    assert slim["optimizer"] is None and slim["epoch"] == 2
    assert torch.equal(slim["model"]["weight"], payload["model"]["weight"])
    assert os.path.getsize(path) < before


def test_retention_does_not_read_back_a_checkpoint_that_says_it_is_slim(tmp_path):
    folder = tmp_path / "checkpoint_000002"
    path = _write_checkpoint(folder, {}, optimizer_state=False)
    # Not a torch file at all: reading it back would raise, rewriting it would change it.
    (folder / CHECKPOINT_FILE).write_bytes(b"not read")
    drop_optimizer_state(pyarrow.fs.LocalFileSystem(), path)
    assert (folder / CHECKPOINT_FILE).read_bytes() == b"not read"


@pytest.mark.filterwarnings("ignore:`get_trial_id` is meant")  # called outside Tune here
def test_staging_folders_are_per_worker_and_dead_workers_leftovers_are_removed(
    tmp_path, monkeypatch
):
    import subprocess
    import sys
    import tempfile

    from cxr_tune.trainable import _staging_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trial_folder = tmp_path / "cxr_tune_checkpoints" / "local"  # outside Tune: "local"
        dead_left = trial_folder / exited.stdout.strip()
        live_left = trial_folder / str(alive.pid)
        for folder in (dead_left, live_left):
            folder.mkdir(parents=True)
            (folder / "state.pt").write_bytes(b"partial")
        with _staging_folder() as folder:
            assert folder == trial_folder / str(os.getpid()) and folder.is_dir()
            assert not dead_left.exists()  # a killed worker's leftovers
            assert (live_left / "state.pt").read_bytes() == b"partial"  # never another's
        assert not folder.exists() and live_left.exists()
    finally:
        alive.kill()
        alive.wait()


class _Storage:
    def __init__(self, path) -> None:
        self.storage_filesystem = pyarrow.fs.LocalFileSystem()
        self.trial_fs_path = str(path)


class _Trial:
    """What retention reads of a Tune trial: id, config, last result, storage."""

    def __init__(self, tmp_path, trial_id: str, optimizer: str, value: float, epoch: int):
        self.trial_id = trial_id
        self.config = {"cell": "c", "optimizer": optimizer, "epochs": 3}
        self.last_result = {
            "epoch": epoch,
            "status": "ok",
            "val_macro_f1": value,
            "time_total_s": 10.0 * epoch,
        }
        self.storage = _Storage(tmp_path / trial_id)
        payload = checkpoint_payload(_state(epoch=epoch), TrialConfig(epochs=3))
        (tmp_path / trial_id).mkdir()
        for n in range(epoch):
            _write_checkpoint(tmp_path / trial_id / f"checkpoint_{n:06d}", payload,
                              optimizer_state=True)  # fmt: skip

    def checkpoints(self) -> list[str]:
        return sorted(p.name for p in _dir(self).iterdir())


def _dir(trial: _Trial) -> Path:
    return Path(trial.storage.trial_fs_path)


def test_under_a_time_budget_a_stopped_contender_keeps_its_last_weights_until_replaced(
    tmp_path,
):
    from cxr_tune.search.reserve import ContenderIds
    from cxr_tune.search.retention import CheckpointRetention

    retention = CheckpointRetention(ContenderIds("val_macro_f1"))
    best = _Trial(tmp_path, "a", "adam", 0.9, epoch=3)
    worse_adam = _Trial(tmp_path, "w", "adam", 0.2, epoch=1)
    first_sgd = _Trial(tmp_path, "s1", "sgd", 0.3, epoch=2)
    trials = [best, worse_adam, first_sgd]
    retention.on_trial_complete(0, trials, worse_adam)  # no contender: its checkpoints go
    assert worse_adam.checkpoints() == []
    retention.on_trial_complete(0, trials, first_sgd)  # the best SGD trial: its last kept
    assert first_sgd.checkpoints() == ["checkpoint_000001"]
    assert torch.load(_dir(first_sgd) / "checkpoint_000001" / CHECKPOINT_FILE)["optimizer"] is None
    better_sgd = _Trial(tmp_path, "s2", "sgd", 0.5, epoch=1)
    trials.append(better_sgd)
    retention.on_trial_complete(0, trials, better_sgd)  # takes s1's place: s1's weights go
    assert better_sgd.checkpoints() == ["checkpoint_000000"]
    assert first_sgd.checkpoints() == []


def test_without_a_time_budget_a_stopped_trial_drops_its_checkpoints(tmp_path):
    from cxr_tune.search.retention import CheckpointRetention

    only_sgd = _Trial(tmp_path, "s", "sgd", 0.3, epoch=2)
    CheckpointRetention().on_trial_complete(0, [only_sgd], only_sgd)
    assert only_sgd.checkpoints() == []

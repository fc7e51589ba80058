"""Experiments and trials built in memory, as the results layer reads them (no files)."""

from __future__ import annotations

import math
from pathlib import Path

from cxr_tune.experiment import Experiment, TrialRecord


def trial_record(
    trial_id, cell, values, *, optimizer="adam", lr=1e-3, batch=32, epochs=3, status="ok"
):
    """A trial of ``cell`` whose epochs reported ``values`` of val_macro_f1, then ``status``."""
    results = [
        {"epoch": e, "status": "ok", "val_macro_f1": v} for e, v in enumerate(values, start=1)
    ]
    if status != "ok":
        results.append({"epoch": len(values) + 1, "status": status, "val_macro_f1": math.nan})
    config = {
        "cell": cell,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": batch,
        "epochs": epochs,
        "dataset": "phantom",
    }
    trial = TrialRecord(trial_id, Path(trial_id), config, results)
    trial.state = (
        status if status != "ok" else ("completed" if len(values) == epochs else "stopped_early")
    )
    return trial


def experiment_of(trials):
    """A finished experiment of one cell, phantom/alexnet, ranked by val_macro_f1."""
    record = {
        "metric": {"name": "val_macro_f1", "mode": "max"},
        "plan": [{"cell": "phantom/alexnet"}],
        "finished_at": "x",
    }
    return Experiment(Path("."), record, trials, None)

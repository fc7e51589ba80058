"""Hand-written miniature experiment folders, shaped like the ones a search writes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("val_accuracy", "val_macro_precision", "val_macro_recall", "val_macro_f1")
START = 1_790_000_000  # a fixed epoch second for result timestamps


@dataclass
class TrialSpec:
    """One trial: its config, the per-epoch macro-F1 it reports, and how it ends."""

    trial_id: str
    cell: str = "covid19_radiography/alexnet"
    f1: Sequence[float] = (0.5, 0.6)
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 32
    optimizer: str = "adam"
    end: str = "ok"  # ok | diverged | failed | error
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        dataset, model = self.cell.split("/")[:2]
        return {
            "model": model,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "epochs": self.epochs,
            "image_size": 64,
            "dataset": dataset,
            "cell": self.cell,
            "seed": 0,
            **self.extra,
        }


def result_line(
    spec: TrialSpec, epoch: int, f1: float, elapsed: float, started: float = 0.0
) -> dict[str, Any]:
    """One epoch's result as Ray writes it to result.json."""
    return {
        "epoch": epoch,
        "status": "ok",
        "train_loss": 1.0 / epoch,
        "val_loss": 1.2 / epoch,
        "val_accuracy": f1 + 0.1,
        "val_macro_precision": f1 + 0.05,
        "val_macro_recall": f1 - 0.05,
        "val_macro_f1": f1,
        "lr": spec.lr,
        "epoch_time_s": 10.0,
        "time_this_iter_s": 10.0,
        "time_total_s": elapsed,
        "timestamp": START + int(started + elapsed),
        "training_iteration": epoch,
        "trial_id": spec.trial_id,
        "hostname": "node-a",
        "node_ip": "10.0.0.1",
        "config": spec.config,
    }


def write_trial(root: Path, spec: TrialSpec, offset: float = 0.0) -> Path:
    """A trial folder: params.json, result.json (one line per epoch), error.txt on errors."""
    folder = root / f"{spec.cell.replace('/', '-')}-{spec.trial_id}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(spec.config), encoding="utf-8")
    lines = [
        result_line(spec, epoch, f1, 10.0 * epoch, offset) for epoch, f1 in enumerate(spec.f1, 1)
    ]
    if spec.end in ("diverged", "failed"):
        epoch = len(spec.f1) + 1
        last = result_line(spec, epoch, math.nan, 10.0 * epoch, offset)
        last.update(status=spec.end, train_loss=math.inf if spec.end == "diverged" else math.nan)
        last["failure_reason"] = (
            f"training loss became inf in epoch {epoch} (lr={spec.lr:g})"
            if spec.end == "diverged"
            else "out of memory: CUDA out of memory (batch_size=128)"
        )
        lines.append(last)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (folder / "result.json").write_text(text, encoding="utf-8")
    if spec.end == "error":
        (folder / "error.txt").write_text("Traceback ...\nRuntimeError: worker died\n")
    for epoch in range(1, len(spec.f1) + 1):
        checkpoint = folder / f"checkpoint_{epoch - 1:06d}"
        checkpoint.mkdir()
        (checkpoint / "state.pt").write_bytes(b"x" * 100)
    return folder


def record(
    cells: Sequence[str], *, epochs: int = 2, finished: bool = True, gpu: float = 0.5
) -> dict[str, Any]:
    """A cxr_tune.json for ``cells`` (datasets taken from the cell ids)."""
    datasets = sorted({c.split("/")[0] for c in cells})
    data = {
        "name": "mini",
        "space": {"name": "ablation", "algorithm": "optuna", "description": "test space"},
        "metric": {"name": "val_macro_f1", "mode": "max"},
        "profile": {"name": "gpu", "reason": "chosen with --profile"},
        "seed": 0,
        "num_samples": 3,
        "epochs": epochs,
        "eval_seeds": 2,
        "plan": [
            {
                "cell": cell,
                "dataset": cell.split("/")[0],
                "model": cell.split("/")[1],
                "resources": {"CPU": 2.0, "GPU": gpu},
            }
            for cell in cells
        ],
        "datasets": [
            {
                "name": name,
                "key": name,
                "source": f"/data/{name}",
                "task": "multiclass",
                "classes": ["COVID", "Normal", "Viral Pneumonia"],
                "sizes": {"train": 70, "val": 15, "test": 15},
                "dataset_hash": "d" * 16,
                "split_hash": "s" * 16,
            }
            for name in datasets
        ],
        "started_at": "2026-01-01T10:00:00+0000",
    }
    if finished:
        data.update(finished_at="2026-01-01T11:00:00+0000", search_seconds=3600.0)
    return data


def entry(cell: str, trial_id: str, roles: Sequence[str], f1: float) -> dict[str, Any]:
    """An evaluation.json entry with a 3-class confusion matrix."""
    dataset, model = cell.split("/")[:2]

    def stats(mean: float) -> dict[str, Any]:
        return {"mean": mean, "std": 0.01, "per_seed": [mean - 0.01, mean + 0.01],
                "ci95": [mean - 0.05, mean + 0.05]}  # fmt: skip

    return {
        "cell": cell,
        "role": ", ".join(roles),
        "roles": list(roles),
        "trial_id": trial_id,
        "config": {"dataset": dataset, "model": model, "cell": cell},
        "task": "multiclass",
        "classes": ["COVID", "Normal", "Viral Pneumonia"],
        "runs": [{"seed": 0, "seconds": 12.0}, {"seed": 1, "seconds": 30.0}],
        "summary": {
            "accuracy": stats(0.9),
            "macro_precision": stats(0.88),
            "macro_recall": stats(0.87),
            "macro_f1": stats(f1),
        },
        "confusion": [[9, 1, 0], [1, 8, 1], [0, 2, 8]],
        "per_class": [],
    }


def write_experiment(
    root: Path,
    trials: Sequence[TrialSpec],
    *,
    finished: bool = True,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """An experiment folder with the record, the trials and (optionally) evaluation.json."""
    root.mkdir(parents=True, exist_ok=True)
    cells = list(dict.fromkeys(t.cell for t in trials))
    (root / "cxr_tune.json").write_text(json.dumps(record(cells, finished=finished)))
    for i, spec in enumerate(trials):
        write_trial(root, spec, offset=100.0 * i)
    if evaluation is not None:
        (root / "evaluation.json").write_text(json.dumps(evaluation))
    return root


def ablation_trials() -> list[TrialSpec]:
    """Two cells; Adam and SGD; one early stop, one divergence, one failure."""
    cell = "covid19_radiography/alexnet"
    other = "phantom/resnet50"
    return [
        TrialSpec("a1", cell, (0.60, 0.80), lr=1e-4),
        TrialSpec("a2", cell, (0.50, 0.70), lr=3e-4, optimizer="sgd"),
        TrialSpec("a3", cell, (0.20,), lr=1e-2, optimizer="sgd"),  # stopped early
        TrialSpec("a4", cell, (0.30,), lr=1e-1, end="diverged"),
        TrialSpec("b1", other, (0.40, 0.45), lr=1e-3),
        TrialSpec("b2", other, (0.30,), lr=1e-3, batch_size=64, end="failed"),
    ]


def ablation_evaluation() -> dict[str, Any]:
    """evaluation.json for ``ablation_trials``: best entries, an Adam-SGD comparison, factors."""
    cell = "covid19_radiography/alexnet"

    def bin_row(value: str, mean: float, low: float, high: float, n: int) -> dict[str, Any]:
        stats = {"mean": mean, "ci95": [low, high], "n": n}
        return {"cell": cell, "value": value, "trials": n, "at_epoch": 1, "early": stats,
                "final": stats, "diverged_or_failed": 0}  # fmt: skip

    return {
        "split": "test",
        "entries": [
            entry(cell, "a1", ["best", "best_adam"], 0.81),
            entry(cell, "a2", ["best_sgd"], 0.71),
            entry("phantom/resnet50", "b1", ["best"], 0.44),
        ],
        "comparisons": [
            {
                "cell": cell,
                "factor": "optimizer",
                "a": "sgd",
                "b": "adam",
                "metrics": {
                    "macro_f1": {"difference": -0.21, "ci95": [-0.27, -0.15], "p_a_better": 0.0}
                },
            }
        ],
        "factors": {
            "lr": [
                bin_row("1e-4", 0.55, 0.50, 0.60, 2),
                bin_row("1e-2", 0.20, 0.15, 0.25, 2),
            ]
        },
    }

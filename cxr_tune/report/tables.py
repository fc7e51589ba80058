"""Data frames and figures of an experiment: trials, compute, paper comparison, efficiency.

Everything here is computed from the experiment folder (trial results, the record and
``evaluation.json``); the renderers only format it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from cxr_tune.constants import (
    DIVERGED,
    EPOCH,
    FAILED,
    FAILURE_REASON,
    MULTILABEL_EXTRA,
    STOPPED_EARLY,
    STUDY_FACTORS,
    TRAIN_LOSS,
    UNFINISHED,
    VAL_LOSS,
    VAL_METRICS,
)
from cxr_tune.experiment import Experiment, TrialRecord, is_ok
from cxr_tune.report.paper import dataset_label, model_label, paper_value

# Identity of a trial's cell, already columns of their own in trials.csv.
CELL_KEYS: tuple[str, ...] = ("cell", "dataset", "model", "epochs")
VAL_COLUMNS: tuple[str, ...] = (*VAL_METRICS, *MULTILABEL_EXTRA)


@dataclass(frozen=True)
class ComputeUsed:
    """Compute an experiment took, in seconds (NaN where unknown)."""

    trial_seconds: float
    gpu_seconds: float
    cpu_seconds: float
    wall_seconds: float
    wall_is_final: bool
    evaluation_seconds: float


@dataclass(frozen=True)
class Savings:
    """Epochs trained against the epochs of training every trial to its end."""

    planned: int
    trained: int
    stopped_early: int  # trials ASHA stopped
    saved_by_asha: int
    saved_seconds: float
    ended_on_their_own: int  # epochs not run because a trial diverged or failed


def dataset_key(exp: Experiment, name: str) -> str:
    """The registry key of a dataset by its name in the experiment (the name if unknown)."""
    for info in exp.record.get("datasets", []):
        if info.get("name") == name:
            return str(info.get("key") or name)
    return name


def epochs_trained(trial: TrialRecord) -> int:
    """Epochs the trial ran, counting the one in which it diverged or failed."""
    return max((int(r.get(EPOCH, 0) or 0) for r in trial.results), default=0)


def trials_frame(exp: Experiment) -> pd.DataFrame:
    """One row per trial: identity, state, epochs, config, final and best metrics, time, node."""
    config_keys = _config_keys(exp)
    evaluated = _test_columns(exp)
    rows = []
    for trial in sorted(exp.trials, key=lambda t: (t.cell, t.trial_id)):
        best, best_epoch = trial.best(exp.metric, exp.mode)
        row: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "cell": trial.cell,
            "dataset": trial.config.get("dataset", ""),
            "model": trial.config.get("model", ""),
            "state": trial.state,
            "epochs_done": trial.epochs_done,
            "epochs_planned": trial.planned_epochs or exp.record.get("epochs", 0),
        }
        row.update({key: trial.config.get(key) for key in config_keys})
        row.update({f"final_{m}": trial.value(m) for m in (TRAIN_LOSS, VAL_LOSS)})
        row.update({f"final_{m}": trial.value(m) for m in _reported_metrics(exp)})
        row[f"best_{exp.metric}"] = best
        row["best_epoch"] = best_epoch or None
        row["time_total_s"] = trial.time_total_s()
        row["node"] = trial.node()
        row["node_ip"] = trial.last.get("node_ip", "")
        row[FAILURE_REASON] = trial.failure_reason or ""
        row["folder"] = trial.folder.name
        row["problems"] = "; ".join(trial.problems)
        row.update(evaluated.get((trial.cell, trial.trial_id), {}))
        rows.append(row)
    return pd.DataFrame(rows)


def _test_columns(exp: Experiment) -> dict[tuple[str, str], dict[str, Any]]:
    """Test-split figures of the trials the final evaluation scored (means over its seeds):
    macro-F1, ECE, the COVID class's specificity at 90% and 95% sensitivity, the shortcut
    probe's macro AUROC and flag. Other trials get empty cells."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in (exp.evaluation or {}).get("entries", []):
        summary = entry.get("summary", {})
        clinical = entry.get("clinical") or {}
        positive = clinical.get("positive_class") or {}
        probe = entry.get("probe") or {}
        out[(str(entry.get("cell")), str(entry.get("trial_id")))] = {
            "test_macro_f1": summary.get("macro_f1", {}).get("mean"),
            "test_ece": clinical.get("ece", {}).get("mean"),
            "test_covid_spec_at_sens90": positive.get("specificity_at_sensitivity_90", {}).get(
                "mean"
            ),
            "test_covid_spec_at_sens95": positive.get("specificity_at_sensitivity_95", {}).get(
                "mean"
            ),
            "probe_macro_auroc": probe.get("macro_auroc", {}).get("mean"),
            "probe_flagged": probe.get("flagged"),
        }
    return out


def _config_keys(exp: Experiment) -> list[str]:
    keys = {k for t in exp.trials for k, v in t.config.items() if not isinstance(v, (dict, list))}
    keys -= set(CELL_KEYS)
    return [k for k in STUDY_FACTORS if k in keys] + sorted(keys - set(STUDY_FACTORS))


def _reported_metrics(exp: Experiment) -> list[str]:
    seen = {k for t in exp.trials for r in t.results for k in r}
    return [m for m in VAL_COLUMNS if m in seen]


def compute_used(exp: Experiment) -> ComputeUsed:
    """Trial-, GPU- and CPU-seconds (trial time x the cell's resources), wall time, evaluation."""
    resources = {line.get("cell"): line.get("resources", {}) for line in exp.record.get("plan", [])}
    trial = gpu = cpu = 0.0
    for t in exp.trials:
        seconds = t.time_total_s()
        if not math.isfinite(seconds):
            continue
        trial += seconds
        gpu += seconds * float(resources.get(t.cell, {}).get("GPU", 0.0))
        cpu += seconds * float(resources.get(t.cell, {}).get("CPU", 1.0))
    wall, final = _wall_seconds(exp)
    evaluation = sum(
        float(run.get("seconds", 0.0))
        for entry in (exp.evaluation or {}).get("entries", [])
        for run in entry.get("runs", [])
    )
    return ComputeUsed(trial, gpu, cpu, wall, final, evaluation)


def _wall_seconds(exp: Experiment) -> tuple[float, bool]:
    """The search's wall time: recorded at the end, else from its start to the last result."""
    if exp.finished and "search_seconds" in exp.record:
        return float(exp.record["search_seconds"]), True
    started = _parse_time(exp.record.get("started_at"))
    last = max((float(r.get("timestamp", 0)) for t in exp.trials for r in t.results), default=0)
    if started is None or not last:
        return math.nan, False
    return max(0.0, last - started), False


def _parse_time(text: Any) -> float | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def best_entries(exp: Experiment) -> dict[str, dict[str, Any]]:
    """Cell -> the evaluation entry of the cell's best configuration."""
    entries: dict[str, dict[str, Any]] = {}
    for entry in (exp.evaluation or {}).get("entries", []):
        roles = entry.get("roles") or [r.strip() for r in str(entry.get("role", "")).split(",")]
        if "best" in roles:
            entries.setdefault(str(entry.get("cell")), entry)
    return entries


def best_trials(exp: Experiment) -> dict[str, TrialRecord | None]:
    """Cell -> its best trial: the one the final evaluation scored, else the best by validation."""
    by_id = {t.trial_id: t for t in exp.trials}
    entries = best_entries(exp)
    chosen: dict[str, TrialRecord | None] = {}
    for cell in exp.cells():
        entry = entries.get(cell)
        trial = by_id.get(str(entry.get("trial_id"))) if entry else None
        chosen[cell] = trial or exp.best_trial(cell, completed_only=False)
    return chosen


def paper_frame(exp: Experiment, metric: str, *, percent: bool = False) -> pd.DataFrame:
    """Ours (test mean and 95% CI of the best configuration) beside the paper, per cell."""
    scale = 100.0 if percent else 1.0
    rows = []
    for cell, entry in best_entries(exp).items():
        config = entry.get("config", {})
        stats = entry.get("summary", {}).get(metric)
        if stats is None:
            continue
        key = dataset_key(exp, str(config.get("dataset", "")))
        model = str(config.get("model", ""))
        paper = paper_value(metric, key, model)
        ours = float(stats.get("mean", math.nan)) * scale
        low, high = (float(v) * scale for v in stats.get("ci95", [math.nan, math.nan]))
        rows.append(
            {
                "dataset": dataset_label(key),
                "architecture": model_label(model) + _extra_factors(cell, key, model),
                "cell": cell,
                "ours": ours,
                "ci_low": low,
                "ci_high": high,
                "seeds": len(stats.get("per_seed", [])),
                "paper": paper if paper is not None else math.nan,
                "difference": ours - paper if paper is not None else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _extra_factors(cell: str, dataset: str, model: str) -> str:
    """Cell factors beyond dataset and model (e.g. ``pretrained=True``), for labels."""
    parts = [p for p in cell.split("/")[1:] if p != model and p != dataset]
    return f" ({', '.join(parts)})" if parts else ""


def efficiency_frame(exp: Experiment) -> pd.DataFrame:
    """Per cell, every epoch result in the order it arrived, with cumulative compute and the
    best metric seen so far (what the search knew at that moment)."""
    rows = []
    sign = 1.0 if exp.mode == "max" else -1.0
    for cell in exp.cells():
        events = [
            (float(r.get("timestamp", 0)), t.trial_id, int(r.get(EPOCH, 0)), r)
            for t in exp.trials_of(cell)
            for r in t.results
        ]
        seconds, best = 0.0, math.nan
        ordered = sorted(events, key=lambda e: e[:3])
        for epochs, (stamp, trial_id, epoch, result) in enumerate(ordered, 1):
            seconds += _finite_or(result.get("time_this_iter_s"), 0.0)
            value = _finite_or(result.get(exp.metric), math.nan)
            if is_ok(result) and math.isfinite(value):
                best = value if not math.isfinite(best) else sign * max(sign * best, sign * value)
            rows.append(
                {
                    "cell": cell,
                    "trial_id": trial_id,
                    "epoch": epoch,
                    "timestamp": stamp,
                    "trial_seconds": seconds,
                    "epochs": epochs,
                    "value": value,
                    "best_so_far": best,
                }
            )
    return pd.DataFrame(rows)


def early_stopping_savings(exp: Experiment) -> Savings:
    """How many epochs ASHA's early stops saved against training every trial to the end."""
    default = int(exp.record.get("epochs", 0) or 0)
    planned = trained = stopped = saved = ended = 0
    saved_seconds = 0.0
    for trial in exp.trials:
        if trial.state == UNFINISHED:
            continue  # its remaining epochs are unknown, not saved
        plan = trial.planned_epochs or default
        ran = epochs_trained(trial)
        planned += plan
        trained += ran
        if trial.state == STOPPED_EARLY:
            stopped += 1
            saved += max(0, plan - ran)
            per_epoch = trial.time_total_s() / ran if ran else math.nan
            saved_seconds += max(0, plan - ran) * per_epoch if math.isfinite(per_epoch) else 0.0
        elif trial.state in (DIVERGED, FAILED):
            ended += max(0, plan - ran)
    return Savings(planned, trained, stopped, saved, saved_seconds, ended)


def failures_frame(exp: Experiment) -> pd.DataFrame:
    """Diverged, failed and unfinished trials with the epoch they reached and why they ended."""
    rows = []
    for trial in sorted(exp.trials, key=lambda t: (t.cell, t.trial_id)):
        if trial.state not in (DIVERGED, FAILED, UNFINISHED):
            continue
        reason = trial.failure_reason or _default_reason(trial)
        rows.append(
            {
                "cell": trial.cell,
                "trial_id": trial.trial_id,
                "state": trial.state,
                "epoch": epochs_trained(trial),
                "config": config_text(trial.config),
                "reason": reason,
            }
        )
    return pd.DataFrame(rows)


def _default_reason(trial: TrialRecord) -> str:
    if trial.state == UNFINISHED:
        if not trial.results:
            return "no result yet (had not finished an epoch when the search stopped)"
        return "still running when the search stopped"
    return "no reason recorded"


def config_text(config: Mapping[str, Any]) -> str:
    """``optimizer=adam, lr=1e-04, batch_size=32`` for the searched keys of a config."""
    parts = []
    for key in STUDY_FACTORS:
        if key in config:
            value = config[key]
            text = f"{value:.2g}" if isinstance(value, float) and key == "lr" else str(value)
            parts.append(f"{key}={text}")
    return ", ".join(parts)


def checkpoint_usage(exp: Experiment) -> tuple[int, int]:
    """Number of checkpoint folders kept and their total size in bytes."""
    count = size = 0
    for trial in exp.trials:
        for folder in trial.checkpoints():
            count += 1
            size += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return count, size


def _finite_or(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default

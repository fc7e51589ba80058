"""Read an experiment folder (no Ray needed): the record, every trial's results, the evaluation.

Works on finished, interrupted and copied experiments (``ray rsync-down``). Half-written trial
folders (a truncated last JSON line, no results yet) are read as far as they go and flagged.
Ray's own ``experiment_state-*.json`` is read as plain JSON, only for each trial's status, so a
trial that was still running when the search was interrupted is reported as unfinished.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_tune.errors import DataError

RECORD_FILE = "cxr_tune.json"
EVALUATION_FILE = "evaluation.json"
STUDY_FILE = "optuna.db"
# Trial outcomes, in the order reports list them.
STATES: tuple[str, ...] = ("completed", "stopped_early", "diverged", "failed", "unfinished")
# The cell of a trial whose params.json is missing and whose results are unreadable.
UNKNOWN_CELL = "(unknown cell)"
# Ray trial statuses that mean the trial had not ended when the experiment state was saved.
RAY_OPEN_STATUSES: frozenset[str] = frozenset({"RUNNING", "PENDING", "PAUSED"})


@dataclass
class TrialRecord:
    """One trial as its folder tells it."""

    trial_id: str
    folder: Path
    config: dict[str, Any]
    results: list[dict[str, Any]]
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    state: str = "unfinished"
    ray_status: str | None = None

    @property
    def cell(self) -> str:
        return str(self.config.get("cell") or UNKNOWN_CELL)

    @property
    def ok_results(self) -> list[dict[str, Any]]:
        """The epochs that trained normally (no diverged or failed last result)."""
        return [r for r in self.results if r.get("status", "ok") == "ok"]

    @property
    def planned_epochs(self) -> int:
        return int(self.config.get("epochs", 0))

    @property
    def last(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}

    @property
    def epochs_done(self) -> int:
        return max(
            (int(r.get("epoch", 0)) for r in self.results if r.get("status", "ok") == "ok"),
            default=0,
        )

    @property
    def failure_reason(self) -> str | None:
        if self.last.get("failure_reason"):
            return str(self.last["failure_reason"])
        if self.error:
            lines = [ln for ln in self.error.strip().splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "error"
        return None

    def value(self, metric: str) -> float:
        """The trial's final value of ``metric`` (NaN when it has none)."""
        for result in reversed(self.results):
            if result.get("status", "ok") == "ok" and metric in result:
                return _float(result[metric])
        return math.nan

    def best(self, metric: str, mode: str) -> tuple[float, int]:
        """Best value of ``metric`` over epochs and the epoch it was reached."""
        pairs = [
            (_float(r[metric]), int(r.get("epoch", 0)))
            for r in self.results
            if r.get("status", "ok") == "ok" and metric in r and math.isfinite(_float(r[metric]))
        ]
        if not pairs:
            return math.nan, 0
        return (max if mode == "max" else min)(pairs, key=lambda p: p[0])

    def time_total_s(self) -> float:
        return _float(self.last.get("time_total_s", math.nan))

    def node(self) -> str:
        return str(self.last.get("hostname") or self.last.get("node_ip") or "")

    def checkpoints(self) -> list[Path]:
        return sorted(self.folder.glob("checkpoint_*"))


@dataclass
class Experiment:
    folder: Path
    record: dict[str, Any]
    trials: list[TrialRecord]
    evaluation: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return str(self.record.get("metric", {}).get("name", "val_macro_f1"))

    @property
    def mode(self) -> str:
        return str(self.record.get("metric", {}).get("mode", "max"))

    @property
    def finished(self) -> bool:
        return "finished_at" in self.record

    @property
    def interrupted(self) -> bool:
        """True when the search did not finish or left trials that had not ended."""
        return not self.finished or any(t.state == "unfinished" for t in self.trials)

    def state_counts(self) -> dict[str, int]:
        counts = Counter(t.state for t in self.trials)
        return {s: counts.get(s, 0) for s in STATES}

    def cells(self) -> list[str]:
        planned = [line["cell"] for line in self.record.get("plan", [])]
        seen = [t.cell for t in self.trials if t.cell not in planned]
        return planned + sorted(set(seen))

    def trials_of(self, cell: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.cell == cell]

    def best_trial(self, cell: str, *, completed_only: bool = True) -> TrialRecord | None:
        """The cell's best trial by final metric (completed trials unless none completed)."""
        pool = [t for t in self.trials_of(cell) if t.state == "completed"]
        if not pool and not completed_only:
            pool = [t for t in self.trials_of(cell) if math.isfinite(t.value(self.metric))]
        pool = [t for t in pool if math.isfinite(t.value(self.metric))]
        if not pool:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(pool, key=lambda t: sign * t.value(self.metric))


def load_experiment(folder: str | Path) -> Experiment:
    """Read an experiment folder.

    Raises:
        DataError: the folder does not exist or holds no cxr_tune experiment.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"The folder '{folder}' does not exist.")
    record_path = folder / RECORD_FILE
    problems: list[str] = []
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            record, problems = {}, [f"{RECORD_FILE} is not valid JSON; the summary is partial"]
    else:
        trial_dirs = list(_trial_folders(folder))
        if not trial_dirs:
            raise DataError(
                f"The folder '{folder}' is not a cxr_tune experiment: it has no {RECORD_FILE} "
                "and no trial folders. Give the folder a search wrote, e.g. "
                "~/cxr_tune_results/<experiment>."
            )
        record, problems = {}, [f"{RECORD_FILE} is missing; the summary is partial"]
    trials = [read_trial(path) for path in _trial_folders(folder)]
    epochs_known = record.get("epochs")
    finished = "finished_at" in record
    statuses = read_ray_statuses(folder)
    for trial in trials:
        trial.ray_status = statuses.get(trial.trial_id)
        trial.state = classify(trial, finished=finished, default_epochs=epochs_known)
    evaluation = None
    if (folder / EVALUATION_FILE).is_file():
        try:
            evaluation = json.loads((folder / EVALUATION_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            problems.append(f"{EVALUATION_FILE} is not valid JSON; final evaluation left out")
    return Experiment(folder, record, trials, evaluation, problems)


def _trial_folders(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.is_dir() and ((path / "params.json").exists() or (path / "result.json").exists()):
            yield path


def read_trial(folder: Path) -> TrialRecord:
    """Read one trial folder, tolerating a half-written result file."""
    problems: list[str] = []
    config: dict[str, Any] = {}
    params = folder / "params.json"
    if params.is_file():
        try:
            config = json.loads(params.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            problems.append("params.json is not valid JSON")
    results: list[dict[str, Any]] = []
    result_file = folder / "result.json"
    if result_file.is_file():
        for number, line in enumerate(result_file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                problems.append(f"result.json line {number} is cut short (a half-written trial)")
    results = latest_per_epoch(results)
    if not config and results:
        config = dict(results[-1].get("config", {}))
    if not params.is_file():
        problems.append("params.json is missing" + ("" if config else "; configuration unknown"))
    error_file = folder / "error.txt"
    error = (
        error_file.read_text(encoding="utf-8", errors="replace") if error_file.is_file() else None
    )
    trial_id = str(results[-1].get("trial_id")) if results else folder.name.rsplit("-", 1)[-1]
    return TrialRecord(trial_id, folder, config, results, error, problems)


def latest_per_epoch(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per epoch, in epoch order. A trial restarted from an earlier checkpoint (or
    from scratch) reports some epochs again; the later report is the one its later epochs and
    checkpoints follow from."""
    latest: dict[int, dict[str, Any]] = {}
    for result in results:
        latest[int(result.get("epoch", 0) or 0)] = result
    return [latest[epoch] for epoch in sorted(latest)]


def classify(trial: TrialRecord, *, finished: bool, default_epochs: int | None = None) -> str:
    """completed / stopped_early / diverged / failed / unfinished, from the trial's own results."""
    status = trial.last.get("status", "ok") if trial.results else None
    if status == "diverged":
        return "diverged"
    if status == "failed":
        return "failed"
    planned = trial.planned_epochs or default_epochs or 0
    if trial.results and planned and trial.epochs_done >= planned:
        return "completed"
    if trial.ray_status in RAY_OPEN_STATUSES:
        return "unfinished"  # still running (or queued) when the search stopped
    if trial.error and (finished or not trial.results):
        return "failed"
    if finished and trial.results:
        return "stopped_early"
    return "unfinished"


def read_ray_statuses(folder: Path) -> dict[str, str]:
    """Trial id -> Ray status from the newest ``experiment_state-*.json`` ({} if unreadable).

    The file is Ray's internal format; only ``trial_data[i][0]`` (a JSON string with
    ``trial_id`` and ``status``) is read, and anything unexpected yields no statuses.
    """
    states = sorted(folder.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text(encoding="utf-8"))
        statuses = {}
        for entry in data.get("trial_data", []):
            trial = json.loads(entry[0])
            statuses[str(trial["trial_id"])] = str(trial.get("status", ""))
        return statuses
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

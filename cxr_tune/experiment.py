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

from cxr_tune.constants import (
    CHECKPOINT_PREFIX,
    COMPLETED,
    CONFIG,
    DEFAULT_METRIC,
    DIVERGED,
    EPOCH,
    ERROR_FILE,
    EVALUATION_FILE,
    EXPERIMENT_STATE_GLOB,
    FAILED,
    FAILURE_REASON,
    PARAMS_FILE,
    RECORD_FILE,
    RESULT_FILE,
    STATUS,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_OK,
    STOPPED_EARLY,
    TIME_TOTAL_S,
    TRIAL_ID,
    TRIAL_STATES,
    UNFINISHED,
)
from cxr_tune.errors import DataError

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
    state: str = UNFINISHED
    ray_status: str | None = None

    @property
    def cell(self) -> str:
        return str(self.config.get("cell") or UNKNOWN_CELL)

    @property
    def ok_results(self) -> list[dict[str, Any]]:
        """The epochs that trained normally (no diverged or failed last result)."""
        return [r for r in self.results if is_ok(r)]

    @property
    def planned_epochs(self) -> int:
        return int(self.config.get("epochs", 0))

    @property
    def last(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}

    @property
    def epochs_done(self) -> int:
        return max(
            (int(r.get(EPOCH, 0)) for r in self.results if is_ok(r)),
            default=0,
        )

    @property
    def failure_reason(self) -> str | None:
        if self.last.get(FAILURE_REASON):
            return str(self.last[FAILURE_REASON])
        if self.error:
            lines = [ln for ln in self.error.strip().splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "error"
        return None

    def value(self, metric: str) -> float:
        """The trial's final value of ``metric`` (NaN when it has none)."""
        for result in reversed(self.results):
            if is_ok(result) and metric in result:
                return _float(result[metric])
        return math.nan

    def best(self, metric: str, mode: str) -> tuple[float, int]:
        """Best value of ``metric`` over epochs and the epoch it was reached."""
        pairs = [
            (_float(r[metric]), int(r.get(EPOCH, 0)))
            for r in self.results
            if is_ok(r) and metric in r and math.isfinite(_float(r[metric]))
        ]
        if not pairs:
            return math.nan, 0
        return (max if mode == "max" else min)(pairs, key=lambda p: p[0])

    def time_total_s(self) -> float:
        return _float(self.last.get(TIME_TOTAL_S, math.nan))

    def node(self) -> str:
        return str(self.last.get("hostname") or self.last.get("node_ip") or "")

    def checkpoints(self) -> list[Path]:
        return sorted(self.folder.glob(f"{CHECKPOINT_PREFIX}*"))


@dataclass
class Experiment:
    folder: Path
    record: dict[str, Any]
    trials: list[TrialRecord]
    evaluation: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return str(self.record.get("metric", {}).get("name", DEFAULT_METRIC))

    @property
    def mode(self) -> str:
        return str(self.record.get("metric", {}).get("mode", "max"))

    @property
    def finished(self) -> bool:
        return "finished_at" in self.record

    @property
    def interrupted(self) -> bool:
        """True when the search did not finish or left trials that had not ended."""
        return not self.finished or any(t.state == UNFINISHED for t in self.trials)

    def state_counts(self) -> dict[str, int]:
        counts = Counter(t.state for t in self.trials)
        return {s: counts.get(s, 0) for s in TRIAL_STATES}

    def state_summary(self) -> str:
        """ "3 completed, 2 stopped early": the non-zero trial counts by outcome."""
        counts = self.state_counts()
        return ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n)

    def cells(self) -> list[str]:
        planned = [line["cell"] for line in self.record.get("plan", [])]
        seen = [t.cell for t in self.trials if t.cell not in planned]
        return planned + sorted(set(seen))

    def trials_of(self, cell: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.cell == cell]

    def best_trial(self, cell: str, *, completed_only: bool = True) -> TrialRecord | None:
        """The cell's best trial by final metric (completed trials unless none completed)."""
        pool = [t for t in self.trials_of(cell) if t.state == COMPLETED]
        if not pool and not completed_only:
            pool = [t for t in self.trials_of(cell) if math.isfinite(t.value(self.metric))]
        pool = [t for t in pool if math.isfinite(t.value(self.metric))]
        if not pool:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(pool, key=lambda t: sign * t.value(self.metric))


def cell_slug(cell: str) -> str:
    """A file-name-safe form of a cell id: ``phantom/alexnet`` -> ``phantom-alexnet``."""
    return "".join(c if c.isalnum() or c in "_." else "-" for c in cell).strip("-") or "cell"


def load_experiment(folder: str | Path) -> Experiment:
    """Read an experiment folder.

    Raises:
        DataError: the folder does not exist or holds no cxr_tune experiment.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"'{folder}' is a file, but an experiment is a folder a search wrote.")
    if not folder.is_dir():
        raise DataError(f"The folder '{folder}' does not exist.")
    record_path = folder / RECORD_FILE
    problems: list[str] = []
    if record_path.is_file():
        record = _read_object(record_path, problems, "the summary is partial") or {}
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
        evaluation = _read_object(folder / EVALUATION_FILE, problems, "final evaluation left out")
    return Experiment(folder, record, trials, evaluation, problems)


def _read_object(path: Path, problems: list[str], consequence: str) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None with a line in ``problems`` (a file cut short,
    overwritten with other bytes, or holding something other than an object)."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        problems.append(f"{path.name} is not valid JSON; {consequence}")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path.name} is not a JSON object; {consequence}")
        return None
    return value


def _trial_folders(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.is_dir() and ((path / PARAMS_FILE).exists() or (path / RESULT_FILE).exists()):
            yield path


def read_trial(folder: Path) -> TrialRecord:
    """Read one trial folder, tolerating a half-written result file."""
    problems: list[str] = []
    config: dict[str, Any] = {}
    params = folder / PARAMS_FILE
    if params.is_file():
        config = _read_object(params, problems, "configuration unknown") or {}
    results: list[dict[str, Any]] = []
    result_file = folder / RESULT_FILE
    if result_file.is_file():
        # Bytes that are not UTF-8 (a disk error, another program) spoil their line only.
        text = result_file.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                result = json.loads(line)
            except ValueError:
                problems.append(f"{RESULT_FILE} line {number} is cut short (a half-written trial)")
                continue
            if isinstance(result, dict):
                results.append(result)
            else:
                problems.append(f"{RESULT_FILE} line {number} is not a result")
    results = latest_per_epoch(results)
    if not config and results:
        config = dict(results[-1].get(CONFIG, {}))
    if not params.is_file():
        problems.append(f"{PARAMS_FILE} is missing" + ("" if config else "; configuration unknown"))
    error_file = folder / ERROR_FILE
    error = (
        error_file.read_text(encoding="utf-8", errors="replace") if error_file.is_file() else None
    )
    trial_id = str(results[-1].get(TRIAL_ID)) if results else folder.name.rsplit("-", 1)[-1]
    return TrialRecord(trial_id, folder, config, results, error, problems)


def latest_per_epoch(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per epoch, in epoch order. A trial restarted from an earlier checkpoint (or
    from scratch) reports some epochs again; the later report is the one its later epochs and
    checkpoints follow from."""
    latest: dict[int, dict[str, Any]] = {}
    for result in results:
        epoch = _float(result.get(EPOCH, 0) or 0)
        if math.isfinite(epoch):  # a result without a numeric epoch is not one of ours
            latest[int(epoch)] = result
    return [latest[epoch] for epoch in sorted(latest)]


def classify(trial: TrialRecord, *, finished: bool, default_epochs: int | None = None) -> str:
    """completed / stopped_early / diverged / failed / unfinished, from the trial's own results."""
    status = trial.last.get(STATUS, STATUS_OK) if trial.results else None
    if status == STATUS_DIVERGED:
        return DIVERGED
    if status == STATUS_FAILED:
        return FAILED
    planned = trial.planned_epochs or default_epochs or 0
    if trial.results and planned and trial.epochs_done >= planned:
        return COMPLETED
    if trial.ray_status in RAY_OPEN_STATUSES:
        return UNFINISHED  # still running (or queued) when the search stopped
    if trial.error and (finished or not trial.results):
        return FAILED
    # A finished search's trial that Tune ended before its first epoch (a time budget's stop)
    # was stopped too, not left unfinished.
    if finished and (trial.results or trial.ray_status == "TERMINATED"):
        return STOPPED_EARLY
    return UNFINISHED


def read_ray_statuses(folder: Path) -> dict[str, str]:
    """Trial id -> Ray status from the newest ``experiment_state-*.json`` ({} if unreadable).

    The file is Ray's internal format; only ``trial_data[i][0]`` (a JSON string with
    ``trial_id`` and ``status``) is read, and anything unexpected yields no statuses.
    """
    states = sorted(folder.glob(EXPERIMENT_STATE_GLOB), key=lambda p: p.stat().st_mtime)
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


def is_ok(result: dict[str, Any]) -> bool:
    """Whether a result reports an epoch that trained normally (not diverged or failed)."""
    return result.get(STATUS, STATUS_OK) == STATUS_OK


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

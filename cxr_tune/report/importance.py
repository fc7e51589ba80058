"""Hyperparameter importance per cell: Optuna's fANOVA on the cell's study in ``optuna.db``.

The study file is copied first (SQLite's backup API), so a search still writing it is not
disturbed and a read-only copy from a cluster works too. Only COMPLETE trials count: trials
ASHA stopped are PRUNED in the study and fANOVA leaves them out.
"""

from __future__ import annotations

import sqlite3
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxr_tune.constants import STUDY_FILE
from cxr_tune.files import copy_sqlite

MIN_COMPLETED = 2


@dataclass(frozen=True)
class Importance:
    """fANOVA importances of one cell (sum to 1), or why there are none."""

    cell: str
    values: dict[str, float] = field(default_factory=dict)
    completed: int = 0
    reason: str = ""
    left_out: tuple[str, ...] = ()  # conditional parameters not set in every trial


def cell_importances(folder: Path, cells: Sequence[str]) -> list[Importance]:
    """fANOVA importances for each cell, reading ``<folder>/optuna.db``."""
    db = folder / STUDY_FILE
    if not db.is_file():
        reason = (
            f"{STUDY_FILE} is not in the experiment folder (remote storage uploads it at the end)"
        )
        return [Importance(cell, reason=reason) for cell in cells]
    with tempfile.TemporaryDirectory(prefix="cxr_tune_study_") as scratch:
        copy = Path(scratch) / STUDY_FILE
        try:
            copy_sqlite(db, copy)
        except sqlite3.Error as exc:
            return [Importance(c, reason=f"{STUDY_FILE} cannot be read: {exc}") for c in cells]
        return [_importance_of(copy, cell) for cell in cells]


def _importance_of(db: Path, cell: str) -> Importance:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=cell, storage=f"sqlite:///{db}")
    except KeyError:
        return Importance(cell, reason=f"{STUDY_FILE} holds no study named '{cell}'")
    except Exception as exc:  # an unreadable or foreign database: say so, keep the report
        return Importance(cell, reason=f"the study cannot be opened ({type(exc).__name__}: {exc})")
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    every = set.intersection(*(set(t.params) for t in trials)) if trials else set()
    left_out = tuple(sorted({p for t in trials for p in t.params} - every))
    if len(completed) < MIN_COMPLETED:
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        return Importance(
            cell,
            completed=len(completed),
            left_out=left_out,
            reason=(
                f"fANOVA needs at least {MIN_COMPLETED} completed trials; this cell has "
                f"{len(completed)} ({pruned} stopped early, which fANOVA does not count)"
            ),
        )
    varying = [p for p in sorted(every) if len({repr(t.params.get(p)) for t in completed}) > 1]
    if not varying:
        return Importance(
            cell,
            completed=len(completed),
            left_out=left_out,
            reason="the completed trials all share the same values of the searched parameters",
        )
    if len({t.value for t in completed}) < 2:
        return Importance(
            cell,
            completed=len(completed),
            left_out=left_out,
            reason=(
                f"all {len(completed)} completed trials scored the same, so nothing explains "
                "a difference"
            ),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
    except (RuntimeError, ValueError) as exc:  # e.g. too little variation for the forest
        return Importance(
            cell, completed=len(completed), left_out=left_out, reason=f"fANOVA: {exc}"
        )
    return Importance(
        cell, {k: float(v) for k, v in values.items()}, len(completed), left_out=left_out
    )

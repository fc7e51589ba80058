"""Every use of Optuna's private internals, in one place.

The searcher tells Optuna about trials it did not ``ask`` for in this process (a search resumed
after the driver stopped), reads and writes trials by their storage id, and fails trials that
were lost with a stopped driver. Optuna's public ``Study`` works with live ``Trial`` objects and
trial numbers only, so these go through the study's storage and a trial's storage id.

Two questions are asked of the study file directly, in SQL on Optuna's table layout (the
driver asks them on every step of Tune's loop, where loading every study would cost seconds):
which cells the searcher has ended, and which Ray trials have ended in their study.

They are reached only through the functions below, and ``problems()`` says, naming this module,
which of them the installed Optuna no longer has (for the SQL: on a real study file written by
the installed Optuna): ``tests/search/test_internals.py`` runs it, so an upgrade that moves one
fails loudly there. pyproject.toml bounds optuna to the versions tested.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

MODULE = "cxr_tune/search/_optuna_internals.py"


def storage_of(study: Any) -> Any:
    """The storage behind a study (``BaseStorage``: get_trial, set_trial_user_attr, ...)."""
    return study._storage


def storage_id(trial: Any) -> int:
    """A trial's id in its storage (a live ``Trial`` or a ``FrozenTrial``)."""
    return int(trial._trial_id)


# Optuna's names for a trial's state in its RDB tables (``TrialState`` names).
ENDED_STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAIL")


def study_attribute(study_db: str | Path, key: str) -> dict[str, Any]:
    """The user attribute ``key`` of every study in the SQLite file that has it, by study name
    (``study.user_attrs[key]``, without loading the studies)."""
    query = (
        "SELECT s.study_name, a.value_json FROM study_user_attributes a JOIN studies s "
        "ON s.study_id = a.study_id WHERE a.key = ?"
    )
    with closing(sqlite3.connect(str(study_db), timeout=60)) as db:
        rows = db.execute(query, (key,)).fetchall()
    return {str(name): json.loads(value) for name, value in rows}


def ended_trial_attribute(study_db: str | Path, key: str) -> list[Any]:
    """The user attribute ``key`` of every trial, in any study of the SQLite file, that has
    ended (complete, pruned or failed) and has it."""
    query = (
        "SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
        "ON t.trial_id = a.trial_id WHERE a.key = ? "
        f"AND t.state IN ({', '.join('?' for _ in ENDED_STATES)})"
    )
    with closing(sqlite3.connect(str(study_db), timeout=60)) as db:
        rows = db.execute(query, (key, *ENDED_STATES)).fetchall()
    return [json.loads(value) for (value,) in rows]


def problems() -> list[str]:
    """What the installed Optuna lacks of the internals above, one line each, naming this
    module; empty when all are there."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found: list[str] = []

    def need(condition: bool, what: str) -> None:
        if not condition:
            found.append(
                f"{MODULE}: {what} is gone in optuna {optuna.__version__}; update this module "
                "and the bound in pyproject.toml."
            )

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    need(hasattr(study, "_storage"), "Study._storage")
    need(hasattr(trial, "_trial_id"), "Trial._trial_id")
    if hasattr(study, "_storage") and hasattr(trial, "_trial_id"):
        storage = study._storage
        for method in ("get_trial", "set_trial_user_attr", "set_trial_state_values"):
            need(callable(getattr(storage, method, None)), f"BaseStorage.{method}")
        frozen = storage.get_trial(trial._trial_id)
        need(hasattr(frozen, "_trial_id"), "FrozenTrial._trial_id")
    _check_sql(need)
    return found


def _check_sql(need: Callable[[bool, str], None]) -> None:
    """Run the two SQL questions on a study file the installed Optuna writes, and check the
    answers against what was written through its public API."""
    import optuna

    with tempfile.TemporaryDirectory(prefix="cxr_tune_optuna_") as folder:
        path = Path(folder) / "check.db"
        study = optuna.create_study(storage=f"sqlite:///{path}", study_name="cell")
        study.set_user_attr("ended", "budget spent")
        for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, None):
            trial = study.ask()
            trial.set_user_attr("ray_trial_id", f"id-{trial.number}")
            if state is optuna.trial.TrialState.COMPLETE:
                study.tell(trial, 1.0)
            elif state is not None:
                study.tell(trial, state=state)
        # Let go of the file before reading it (and before the folder goes).
        storage = study._storage
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()
        try:
            attributes = study_attribute(path, "ended")
            ended = sorted(ended_trial_attribute(path, "ray_trial_id"))
        except sqlite3.Error as exc:
            need(False, f"the study file's table layout ({exc})")
            return
    need(attributes == {"cell": "budget spent"}, "the study_user_attributes/studies tables")
    need(ended == ["id-0", "id-1"], "the trial_user_attributes/trials tables or trial states")

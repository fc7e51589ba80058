"""A fidelity-aware Optuna searcher with one study per cell.

Ray's stock ``OptunaSearch`` has one study for everything and tells Optuna COMPLETE with a
half-trained score when ASHA stops a trial early, so TPE learns from truncated results. This
searcher instead:

- keeps one Optuna study per cell (dataset x architecture x other cell factors) and deals new
  trials round-robin over the cells, so every cell is searched at the same time;
- searches numeric choices (three or more: learning rates, batch sizes) as ordered values, so
  TPE learns that neighbouring values behave alike;
- reports each epoch's metric to Optuna as an intermediate value;
- tells Optuna PRUNED (with those intermediate values) for trials that stopped before their last
  epoch, COMPLETE only for trials that trained all epochs, PRUNED at the worst value for trials
  whose loss diverged (so TPE learns to avoid them; a FAIL would be ignored), and FAIL with the
  reason for trials that ran out of memory or crashed;
- never trains a configuration twice in a cell: on a space of choices TPE (and random search)
  soon proposes points already tried, which would only repeat a run with the same seed; such a
  proposal is recorded as a FAIL marked ``repeat_of`` (FAIL, so TPE's model is unchanged) and a
  configuration not tried yet is drawn at random instead; a cell whose space is used up ends;
- keeps the search's epoch budget per cell (``search/budget.py``): a cell starts a trial only
  while an epoch of its budget is left besides those its live trials are training;
- stores the studies in one SQLite file that ``optuna-dashboard`` opens, and carries that file
  in its checkpoint so ``--resume`` restores the whole history, on this or another machine.
"""

from __future__ import annotations

import itertools
import math
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from cxr_tune.constants import RAY_TRIAL_ID_ATTR
from cxr_tune.files import copy_sqlite
from cxr_tune.search import _optuna_internals as optuna_private
from cxr_tune.search.budget import EPOCH_KEY, TimeBudget, has_room
from cxr_tune.search.plan import Cell, Plan
from cxr_tune.spaces import Param

STATUS_OK = "ok"
# Study attribute set when the searcher deals no more trials in the cell (value: why).
SEARCH_ENDED = "search_ended"


def suggest_params(trial: optuna.Trial, params: Mapping[str, Param]) -> dict[str, Any]:
    """Sample ``params`` define-by-run; a ``when`` parameter is sampled only if its condition holds."""
    values: dict[str, Any] = {}
    ordered = [p for p in params.values() if not p.when] + [p for p in params.values() if p.when]
    for param in ordered:
        if param.when and not all(values.get(k) in allowed for k, allowed in param.when.items()):
            continue
        values[param.name] = _suggest_one(trial, param)
    return values


def _suggest_one(trial: optuna.Trial, param: Param) -> Any:
    if is_ordinal(param):
        values = sorted(param.choices)
        return values[trial.suggest_int(param.name, 0, len(values) - 1)]
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.choices))
    low, high = param.low, param.high
    assert low is not None and high is not None
    if param.kind in ("int", "logint"):
        return trial.suggest_int(param.name, int(low), int(high), log=param.kind == "logint")
    return trial.suggest_float(param.name, low, high, log=param.kind == "loguniform")


def is_ordinal(param: Param) -> bool:
    """Whether a ``choice`` is searched as ordered values: three or more numbers.

    Optuna sees such a parameter as the position of its value in sorted order (an integer), so
    TPE's kernel treats neighbouring learning rates or batch sizes as alike; as a categorical,
    1e-4 would be as unrelated to 3e-4 as to 1e-1. The study's ``ordinal_choices`` attribute
    maps the positions back to the values.
    """
    return (
        param.kind == "choice"
        and len(param.choices) >= 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in param.choices)
    )


def to_optuna(point: Mapping[str, Any], params: Mapping[str, Param]) -> dict[str, Any]:
    """A configuration's values as Optuna stores them (positions for ordinal choices)."""
    return {
        name: sorted(params[name].choices).index(value) if is_ordinal(params[name]) else value
        for name, value in point.items()
    }


def from_optuna(stored: Mapping[str, Any], params: Mapping[str, Param]) -> dict[str, Any]:
    """The values of a configuration Optuna stored (the inverse of ``to_optuna``)."""
    return {
        name: sorted(params[name].choices)[int(value)] if is_ordinal(params[name]) else value
        for name, value in stored.items()
    }


def grid_points(params: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every combination of the ``choice`` params, honouring ``when`` conditions (deduplicated)."""
    names = list(params)
    points: list[dict[str, Any]] = []
    for combo in itertools.product(*(params[n].grid_values() for n in names)):
        point = dict(zip(names, combo))
        kept = {
            n: v
            for n, v in point.items()
            if not params[n].when
            or all(point.get(k) in allowed for k, allowed in params[n].when.items())
        }
        if kept not in points:
            points.append(kept)
    return points or [{}]


class CellSearcher(Searcher):
    """Optuna TPE (or Optuna's Gaussian process, random, or grid) search within each cell.

    Args:
        plan: the search plan (cells, params, samples per cell, seed).
        study_db: path of the SQLite study file (the local experiment folder's, or a local
            scratch copy when the storage is remote). A searcher restored on another machine
            is pointed at that run's file with ``use_study_db``. None keeps the studies in
            memory, for replays (``search/simulate.py``): nothing is saved.
    """

    def __init__(self, plan: Plan, study_db: str | None) -> None:
        super().__init__(metric=plan.space.metric, mode=plan.space.mode)
        self._plan = plan
        self.study_db = study_db
        self._memory: optuna.storages.BaseStorage | None = None
        self._time_budget: TimeBudget | None = None
        self._cells: dict[str, Cell] = {c.id: c for c in plan.cells}
        self._grid = grid_points(plan.params) if plan.space.algorithm == "grid" else []
        self._queue_size = len(self._grid) * plan.num_samples if self._grid else plan.num_samples
        self._dealt: dict[str, int] = dict.fromkeys(self._cells, 0)
        # Ray trial id -> (cell id, Optuna trial number, Optuna storage trial id)
        self._trials: dict[str, tuple[str, int, int]] = {}
        self._told: set[str] = set()
        # Ray trial id -> epochs it reported (what each cell spent of its budget)
        self._epochs: dict[str, int] = {}
        self._studies: dict[str, optuna.Study] = {}

    # ---- Ray's Searcher interface -------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        open_cells = self._open_cells()
        if not open_cells:
            return Searcher.FINISHED  # type: ignore[return-value]  # Ray's sentinel string
        ready = [c for c in open_cells if self._has_room(c) and self._has_time(c)]
        if not ready:
            if not any(self._live(c) for c in self._plan.cells):
                # No trial left to report: what is left of the time budget fits no epoch.
                for cell in open_cells:
                    self._end_cell(cell, "time budget spent")
                return Searcher.FINISHED  # type: ignore[return-value]
            # Every open cell's budget is held by its live trials, or no first epoch fits what
            # is left of the search's time: ask again when one reports.
            return None
        cell = min(ready, key=lambda c: self._dealt[c.id])
        study = self._study(cell)
        dealt = self._dealt[cell.id]
        self._dealt[cell.id] += 1
        if self._dealt[cell.id] >= self._queue_size:
            self._end_cell(cell, "all trials dealt")
        point = self._fixed_point(dealt)
        if point is not None:
            # Queued one at a time, just before it is asked for: Optuna does not promise the
            # order in which it hands out several waiting trials.
            study.enqueue_trial(to_optuna(point, self._plan.params))
        trial = study.ask()
        params = suggest_params(trial, self._plan.params)
        if point is None:
            fresh = self._instead_of_repeat(study, trial, params, f"{cell.id}|{dealt}")
            if fresh is None:
                self._end_cell(cell, "every configuration tried")
                return self.suggest(trial_id)
            trial, params = fresh
        self._trials[trial_id] = (cell.id, trial.number, optuna_private.storage_id(trial))
        config = {**self._plan.base_config(cell), **params}
        if self._grid:
            # Repeats of one grid point differ by seed, not by accident.
            config["seed"] = self._plan.seed + dealt // len(self._grid)
        trial.set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        trial.set_user_attr("config", {k: _plain(v) for k, v in config.items()})
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._trials:
            return
        epoch = int(result.get(EPOCH_KEY, 0) or 0)
        self._epochs[trial_id] = max(self._epochs.get(trial_id, 0), epoch)
        if result.get("status", STATUS_OK) != STATUS_OK:
            return
        value, step = result.get(self.metric), result.get("epoch")
        if value is None or step is None or not math.isfinite(float(value)):
            return
        cell_id, _number, storage_id = self._trials[trial_id]
        study = self._study(self._cells[cell_id])
        frozen = optuna_private.storage_of(study).get_trial(storage_id)
        if frozen.state == TrialState.RUNNING and int(step) not in frozen.intermediate_values:
            optuna.Trial(study, storage_id).report(float(value), int(step))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._trials or trial_id in self._told:
            return
        cell_id, number, storage_id = self._trials[trial_id]
        study = self._study(self._cells[cell_id])
        if optuna_private.storage_of(study).get_trial(storage_id).state.is_finished():
            # Told before the driver stopped, after the experiment state it resumed from was
            # saved: the study keeps the first outcome (Optuna cannot change it anyway).
            self._told.add(trial_id)
            return
        if result:
            # When ASHA stops a trial, Tune hands its last result to on_trial_complete only.
            self.on_trial_result(trial_id, result)
        outcome, value, reason = self._outcome(result, error, study, storage_id)
        if outcome == "diverged":
            # Optuna's TPE ignores FAIL trials and would keep proposing diverging learning
            # rates; a PRUNED trial at the worst value teaches it to stay away.
            self._report_worst(study, storage_id, int((result or {}).get("epoch", 1)))
        if reason:
            optuna_private.storage_of(study).set_trial_user_attr(
                storage_id, "failure_reason", reason
            )
        optuna_private.storage_of(study).set_trial_user_attr(storage_id, "outcome", outcome)
        study.tell(number, value, state=_OUTCOME_STATES[outcome], skip_if_finished=True)
        self._told.add(trial_id)

    def _report_worst(self, study: optuna.Study, storage_id: int, epoch: int) -> None:
        frozen = optuna_private.storage_of(study).get_trial(storage_id)
        if frozen.state == TrialState.RUNNING and epoch not in frozen.intermediate_values:
            optuna.Trial(study, storage_id).report(worst_value(self.mode), epoch)

    def save(self, checkpoint_path: str) -> None:
        state = {
            "dealt": self._dealt,
            "trials": self._trials,
            "told": self._told,
            "epochs": self._epochs,
            "db": _read_db(str(self.study_db)) if self._db_exists() else None,
        }
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self._dealt.update(state["dealt"])
        self._trials.update(state["trials"])
        self._told |= set(state["told"])
        self._epochs.update(state.get("epochs", {}))
        # The live file is at least as new as the checkpoint; a missing one (another machine,
        # or a lost scratch folder) is put back from the checkpoint.
        if state.get("db") and self.study_db and not Path(self.study_db).exists():
            Path(self.study_db).parent.mkdir(parents=True, exist_ok=True)
            Path(self.study_db).write_bytes(state["db"])
        self._studies.clear()
        self._fail_orphans()

    def use_study_db(self, study_db: str | None) -> None:
        """Keep the studies in ``study_db`` from now on: a searcher unpickled from an
        experiment's state holds the path of the run that started it, which need not exist
        where the experiment resumes (remote storage resumed on another machine)."""
        self.study_db = study_db
        self._studies.clear()

    # ---- internals -----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"] = {}  # Optuna studies hold database connections
        return state

    def _db_exists(self) -> bool:
        return bool(self.study_db) and Path(str(self.study_db)).exists()

    def _open_storage(self) -> optuna.storages.BaseStorage:
        if self.study_db is None:
            if self._memory is None:
                self._memory = optuna.storages.InMemoryStorage()
            return self._memory
        Path(self.study_db).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(
            f"sqlite:///{self.study_db}", engine_kwargs={"connect_args": {"timeout": 60}}
        )

    def _open_cells(self) -> list[Cell]:
        """Cells that may still start trials, in plan order (new trials go to the one with
        the most suggestions left). A cell whose budget is spent and that has no live trial
        left to free some ends here."""
        # getattr: a searcher saved before time budgets existed has none.
        budget = getattr(self, "_time_budget", None)
        time_spent = budget is not None and budget.spent()
        for cell in self._plan.cells:
            if time_spent and self._dealt[cell.id] < self._queue_size:
                self._end_cell(cell, "time budget spent")
            spent = not self._has_room(cell) and not self._live(cell)
            if spent and self._dealt[cell.id] < self._queue_size:
                self._end_cell(cell, "epoch budget spent")
        return [c for c in self._plan.cells if self._dealt[c.id] < self._queue_size]

    def use_time_budget(self, budget: TimeBudget | None) -> None:
        """Start no trial once ``budget`` is spent (a restored searcher holds the previous
        run's budget; the run that resumes it hands over its own)."""
        self._time_budget = budget

    def _end_cell(self, cell: Cell, reason: str) -> None:
        """Deal no more trials in ``cell``; its study says why (``search_ended``), which also
        tells an interrupted search from a finished one."""
        self._dealt[cell.id] = self._queue_size
        study = self._study(cell)
        if SEARCH_ENDED not in study.user_attrs:
            study.set_user_attr(SEARCH_ENDED, reason)

    def _live(self, cell: Cell) -> int:
        """Trials of ``cell`` started and not ended (each has one epoch under way)."""
        return sum(c == cell.id and t not in self._told for t, (c, _, _) in self._trials.items())

    def _has_time(self, cell: Cell) -> bool:
        """Whether a new trial's first epoch in ``cell`` ends within the search's time."""
        budget = getattr(self, "_time_budget", None)
        return budget is None or budget.has_time_for(cell.id)

    def _has_room(self, cell: Cell) -> bool:
        spent = sum(self._epochs.get(t, 0) for t, (c, _, _) in self._trials.items() if c == cell.id)
        return has_room(self._plan.budget_epochs, spent, self._live(cell))

    def _study(self, cell: Cell) -> optuna.Study:
        if cell.id not in self._studies:
            self._studies[cell.id] = self._open_study(cell)
        return self._studies[cell.id]

    def _open_study(self, cell: Cell) -> optuna.Study:
        storage = self._open_storage()
        index = list(self._cells).index(cell.id)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            storage=storage,
            study_name=cell.id,
            direction="maximize" if self.mode == "max" else "minimize",
            sampler=self._sampler(self._plan.seed + index),
            load_if_exists=True,
        )
        if not study.trials:
            study.set_user_attr("cell", dict(cell.factors) | {"dataset": cell.dataset})
            study.set_user_attr("metric", self.metric)
            ordinal = {n: sorted(p.choices) for n, p in self._plan.params.items() if is_ordinal(p)}
            if ordinal:
                study.set_user_attr("ordinal_choices", ordinal)
        return study

    def _fixed_point(self, index: int) -> dict[str, Any] | None:
        """The point the ``index``-th trial of a cell must try, if any (grid, or ``initial``)."""
        if self._grid:
            return dict(self._grid[index % len(self._grid)])
        initial = self._plan.space.initial
        return dict(initial[index]) if index < len(initial) else None

    def _instead_of_repeat(
        self, study: optuna.Study, trial: optuna.Trial, params: dict[str, Any], salt: str
    ) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """``(trial, params)`` if that configuration is new to the cell; otherwise the proposal
        is recorded as a repeat and a new trial at an untried configuration drawn at random is
        returned, or None when every configuration of the space has been tried."""
        tried = _tried_configurations(study, self._plan.params, exclude=trial.number)
        if _key(params) not in tried:
            return trial, params
        optuna_private.storage_of(study).set_trial_user_attr(
            optuna_private.storage_id(trial), "repeat_of", tried[_key(params)]
        )
        optuna_private.storage_of(study).set_trial_user_attr(
            optuna_private.storage_id(trial), "outcome", "repeat"
        )
        study.tell(trial.number, state=TrialState.FAIL)
        point = _untried_point(self._plan.params, set(tried), f"{self._plan.seed}|{salt}")
        if point is None:
            return None
        study.enqueue_trial(to_optuna(point, self._plan.params))
        trial = study.ask()
        return trial, suggest_params(trial, self._plan.params)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        algorithm = self._plan.space.algorithm
        if algorithm not in ("optuna", "gp"):
            return optuna.samplers.RandomSampler(seed=seed)
        # A quarter of the trials the cell will run (fewer than num_samples under a budget)
        # are random draws before TPE (or the Gaussian process) models the results.
        startup = max(2, min(10, self._plan.expected_trials_per_cell() // 4))
        if algorithm == "gp":
            # Optuna's Gaussian-process sampler: it models trials that trained every epoch
            # (COMPLETE) and sees running ones; trials stopped early (PRUNED) are not in its
            # model, and conditional (``when``) parameters are drawn at random.
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=startup, warn_independent_sampling=False
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # constant_liar keeps concurrent trials from all proposing the same point;
            # group handles the conditional (``when``) parameters.
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup,
                multivariate=True,
                group=True,
                constant_liar=True,
            )

    def _outcome(
        self,
        result: dict[str, Any] | None,
        error: bool,
        study: optuna.Study,
        storage_id: int,
    ) -> tuple[str, float | None, str | None]:
        """How a finished trial ended: (outcome, value for Optuna, reason)."""
        if error:
            return "failed", None, "the trial raised an error (see its error.txt)"
        result = result or {}
        status = result.get("status", STATUS_OK)
        if status == "diverged":
            return "diverged", None, str(result.get("failure_reason", status))
        if status != STATUS_OK:
            return "failed", None, str(result.get("failure_reason", status))
        value = result.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return "failed", None, f"no finite {self.metric} reported"
        epochs = int(
            optuna_private.storage_of(study).get_trial(storage_id).user_attrs["config"]["epochs"]
        )
        if int(result.get("epoch", 0)) < epochs:
            return "stopped_early", None, None
        return "completed", float(value), None

    def _fail_orphans(self) -> None:
        """Mark trials lost with a killed driver FAIL: asked but never reached Ray, or queued
        but never asked (left waiting, a stale point would be handed to the next trial)."""
        if not self._db_exists():
            return
        known = {(cell, number) for cell, number, _ in self._trials.values()}
        lost_states = (TrialState.RUNNING, TrialState.WAITING)
        for cell in self._plan.cells:
            study = self._study(cell)
            for frozen in study.get_trials(deepcopy=False, states=lost_states):
                if (cell.id, frozen.number) not in known:
                    optuna_private.storage_of(study).set_trial_user_attr(
                        optuna_private.storage_id(frozen),
                        "failure_reason",
                        "lost when the search driver stopped",
                    )
                    # Optuna's tell refuses a WAITING trial; the storage call takes both.
                    optuna_private.storage_of(study).set_trial_state_values(
                        optuna_private.storage_id(frozen), TrialState.FAIL
                    )


def ended_cells(study_db: str) -> dict[str, str]:
    """Cells (study names) in which the searcher dealt its last trial -> why."""
    if not study_db or not Path(study_db).is_file():
        return {}
    ended = optuna_private.study_attribute(study_db, SEARCH_ENDED)
    return {name: str(reason) for name, reason in ended.items()}


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(value)) for name, value in params.items()))


def _tried_configurations(
    study: optuna.Study, params: Mapping[str, Param], exclude: int
) -> dict[tuple, int]:
    """Configurations in training or trained in ``study`` -> the number of the first trial.
    Failed trials do not count: a configuration that crashed may be tried again."""
    states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    # ``from_optuna``, with the ordinal choices sorted once instead of once per trial: this
    # runs at every proposal, over every trial of the cell (replays make thousands).
    ordinal = {name: sorted(p.choices) for name, p in params.items() if is_ordinal(p)}
    tried: dict[tuple, int] = {}
    for frozen in study.get_trials(deepcopy=False, states=states):
        if frozen.number != exclude:
            point = {
                name: ordinal[name][int(value)] if name in ordinal else value
                for name, value in frozen.params.items()
            }
            tried.setdefault(_key(point), frozen.number)
    return tried


# Random draws made to find an untried point of a space that is not a finite set of choices.
_DRAWS = 100


def _untried_point(
    params: Mapping[str, Param], tried: set[tuple], salt: str
) -> dict[str, Any] | None:
    """A configuration not in ``tried``, drawn at random (reproducibly, from ``salt``), or None
    when there is none: all of a space of choices, or nothing new in many draws otherwise."""
    import random

    rng = random.Random(salt)
    if all(p.kind == "choice" for p in params.values()):
        left = [point for point in grid_points(params) if _key(point) not in tried]
        return rng.choice(left) if left else None
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=rng.randrange(2**31)))
    for _ in range(_DRAWS):
        point = suggest_params(scratch.ask(), params)
        if _key(point) not in tried:
            return point
    return None


_OUTCOME_STATES = {
    "completed": TrialState.COMPLETE,
    "stopped_early": TrialState.PRUNED,
    "diverged": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


def worst_value(mode: str) -> float:
    """The value a diverged trial is scored with: the floor of the [0, 1] metrics when
    maximising; for a minimised loss, a value far above any real loss."""
    return 0.0 if mode == "max" else 1.0e6


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _read_db(path: str) -> bytes:
    """A consistent copy of a SQLite file, even while it is open (SQLite's backup API)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "copy.db"
        copy_sqlite(Path(path), copy)
        return copy.read_bytes()

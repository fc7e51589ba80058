"""One line per event instead of Ray's tables: epochs, early stops, failures, a final tally."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback

from cxr_tune.constants import EPOCH, STATUS, STATUS_OK, STUDY_FACTORS
from cxr_tune.metrics import NO_SKILL_KEY, TRAIN_NO_SKILL_KEY, learned_nothing
from cxr_tune.search.budget import may_go_on


class ProgressLines(Callback):
    """Prints ``HH:MM:SS cell trial epoch e/E metric=... (config)`` and trial outcomes."""

    def __init__(
        self,
        metric: str,
        budget_epochs: int | None = None,
        no_skill_epoch: int = 0,
        time_budget: Any = None,
    ) -> None:
        self._metric = metric
        self._budget = budget_epochs
        self._no_skill_epoch = no_skill_epoch
        self._time_budget = time_budget
        self._last_epoch: dict[str, int] = {}

    def use_time_budget(self, budget: Any) -> None:
        """Say stops for ``budget`` from now on (a restored callback holds the previous run's)."""
        self._time_budget = budget

    def _say(self, text: str) -> None:
        # sys.stdout is looked up on each call: the callback is pickled with the Tuner.
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stdout, flush=True)

    @staticmethod
    def _label(trial: Any) -> str:
        config = trial.config
        parts = [f"{k}={_short(config[k])}" for k in STUDY_FACTORS if k in config]
        return f"{config.get('cell', '')} {trial.trial_id} ({' '.join(parts)})"

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        epoch = int(result.get(EPOCH, 0))
        self._last_epoch[trial.trial_id] = epoch
        status = result.get(STATUS, STATUS_OK)
        if status != STATUS_OK:
            self._say(f"{self._label(trial)}: {status}: {result.get('failure_reason', '')}")
            return
        value = result.get(self._metric, math.nan)
        self._say(
            f"{self._label(trial)} epoch {epoch}/{trial.config.get('epochs')} "
            f"{self._metric}={value:.4f} train_loss={result.get('train_loss', math.nan):.4f} "
            f"[{result.get('epoch_time_s', 0):.0f} s]"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = self._last_epoch.get(trial.trial_id, 0)
        planned = int(trial.config.get("epochs", 0))
        last = trial.last_result or {}
        status = last.get(STATUS, STATUS_OK)
        if status == STATUS_OK and epoch < planned:
            if epoch == self._no_skill_epoch and learned_nothing(last):
                self._say(
                    f"{self._label(trial)}: stopped after epoch {epoch}: it has learned "
                    f"nothing (validation loss {float(last['val_loss']):.4f}, training loss "
                    f"{float(last.get('train_loss', math.nan)):.4f}; predicting the class "
                    f"frequencies: {float(last[NO_SKILL_KEY]):.4f}, "
                    f"{float(last.get(TRAIN_NO_SKILL_KEY, math.nan)):.4f})"
                )
            elif (budget := getattr(self, "_time_budget", None)) is not None and (
                trial.trial_id in budget.stopped_trials or budget.spent()
            ):
                self._say(
                    f"{self._label(trial)}: stopped after epoch {epoch}: another epoch would "
                    "end past the search's share of the time budget"
                )
            elif may_go_on(self._budget, trial, last, trials):
                self._say(f"{self._label(trial)}: stopped early by ASHA after epoch {epoch}")
            else:
                self._say(
                    f"{self._label(trial)}: stopped after epoch {epoch}: the cell's budget "
                    f"of {self._budget} epochs is spent"
                )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{self._label(trial)}: error (see {trial.path}/error.txt); the search goes on")


def _short(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)

"""Replays of searches on a grid's stored curves, through cxr_tune's own decision code.

A replay builds the plan a real search would run (the grid's space, the method's algorithm and
scheduler, an epoch budget, two trials at once as on the grids' machine) and hands it to
``cxr_tune.search.simulate``, which drives the real ``CellSearcher`` and ``scheduler_for`` on a
simulated clock: a trial's epoch is its configuration's stored result under the grid's replay
seed, and takes the configuration's stored seconds per epoch. The same plan and seed give the
same replay, every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METHODS = ("tpe_asha", "random_asha", "gp_asha", "tpe_full", "random_full", "gp_full")
# A method's searcher -> the space's ``search.algorithm``.
ALGORITHM = {"tpe": "optuna", "random": "random", "gp": "gp"}
NO_SKILL_KEYS = ("val_loss_no_skill", "train_loss_no_skill")
CONCURRENT = 2


@dataclass(frozen=True)
class AshaSetting:
    """What ASHA does at its rungs: the ``scheduler`` block of a search space."""

    grace_period: int = 2
    reduction_factor: float = 3.0
    brackets: int = 1
    metric: str = "val_loss"
    no_skill_epoch: int = 2

    def label(self) -> str:
        parts = [f"rung {self.grace_period}", f"eta {self.reduction_factor:g}"]
        if self.brackets != 1:
            parts.append(f"{self.brackets} brackets")
        parts.append(self.metric.replace("val_macro_f1", "val F1"))
        parts.append(f"check @{self.no_skill_epoch}" if self.no_skill_epoch else "no check")
        return ", ".join(parts)

    def as_space(self) -> dict[str, Any]:
        return {
            "name": "asha",
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "brackets": self.brackets,
            "metric": self.metric,
            "no_skill_epoch": self.no_skill_epoch,
        }


def key_of(config: Mapping[str, Any]) -> str:
    return f"{float(config['lr']):g}|{int(config['batch_size'])}|{config['optimizer']}"


def grid_results(grid: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per configuration, what its trial reports at each epoch under the replay seed."""
    seed = str(grid["grid"]["replay_seed"])
    no_skill = {key: float(grid["grid"][key]) for key in NO_SKILL_KEYS}
    out = {}
    for key, entry in grid["configurations"].items():
        run = entry["runs"][seed]
        signals = {name: values for name, values in run.items() if isinstance(values, list)}
        epochs = len(signals["val_macro_f1"])
        out[key] = [
            {"status": "ok", **no_skill, **{name: v[i] for name, v in signals.items()}}
            for i in range(epochs)
        ]
    return out


def replay_plan(
    grid: Mapping[str, Any], method: str, asha: AshaSetting, seed: int, budget_epochs: int
) -> Any:
    """The plan a real search of ``method`` over the grid's space would run."""
    from small_cnn import register

    from cxr_tune.config import PROFILES
    from cxr_tune.search.plan import Overrides, build_plan
    from cxr_tune.spaces import parse_space

    register()  # the plan checks its model names against the registry
    meta = grid["grid"]
    space = parse_space(
        {
            "cells": {"model": [meta["model"]]},
            "params": meta["space"],
            "fixed": {"epochs": int(meta["epochs"])},
            # As many trials as the grid has configurations: the budget, or trying every
            # configuration, ends the search.
            "search": {
                "algorithm": ALGORITHM[method.split("_")[0]],
                "num_samples": len(grid["configurations"]),
                "seed": seed,
                "budget_epochs": budget_epochs,
            },
            "scheduler": asha.as_space() if method.endswith("asha") else {"name": "none"},
        },
        source="replay.yaml",
    )
    overrides = Overrides(seed=seed, max_concurrent=CONCURRENT)
    return build_plan(space, PROFILES["gpu"], ("phantom",), overrides)


def replay(
    grid: Mapping[str, Any],
    results: Mapping[str, list[dict[str, Any]]],
    method: str,
    asha: AshaSetting,
    seed: int,
    budget_epochs: int,
) -> dict[str, Any]:
    """One replay: every trial (configuration, epochs trained, in start order), the epochs
    consumed in all, and each trial that trained every epoch with the epochs the whole search
    had consumed when it did (``completions``, in that order)."""
    from cxr_tune.search.simulate import simulate

    seconds = {k: float(c["epoch_seconds"]) for k, c in grid["configurations"].items()}
    plan = replay_plan(grid, method, asha, seed, budget_epochs)
    run = simulate(
        plan,
        None,
        lambda config: results[key_of(config)],
        lambda config: seconds[key_of(config)],
        max_concurrent=CONCURRENT,
    )
    by_id = {t.trial_id: t for t in run.trials}
    completions = []
    for spent, decision in enumerate(run.decisions, start=1):
        trial = by_id[decision.trial_id]
        if trial.completed and decision.epoch == trial.epochs:
            completions.append([spent, key_of(trial.config)])
    return {
        "trials": [[key_of(t.config), t.epochs] for t in run.trials],
        "epochs": len(run.decisions),
        "completions": completions,
    }

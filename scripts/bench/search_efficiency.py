"""Benchmark: how efficiently does a search find a grid's near-optimal configurations?

Measured as HPO benchmark suites measure it, on grids whose every configuration was trained to
its last epoch under three initialisation seeds (``search_efficiency_grids.py``: a small CNN on
phantoms of several seeds, sites and difficulties and on real radiographs, 60 configurations of
10 epochs each; and the first five AlexNet grids, kept as legacy). Three steps:

``train``: train a grid's configurations under its seeds with the real trial code
(``search_efficiency_train.py``); every run goes to ``scripts/bench/runs/`` (ignored by git).

``pack``: fold a grid's runs into ``results/search_efficiency_grids.json``.

``replay``: replay searches on the grids' curves with cxr_tune's own searcher and scheduler on a
simulated clock (``cxr_tune.search.simulate``: no Ray trial runs; the same seed gives the same
replay on the same machine), two trials at a time under an epoch budget, and measure them
(``search_efficiency_measures.py``): normalised regret R at 30% of a grid's epochs against random
search under the same budget rule, hit rate (incumbent within delta of the best reference
value), speed-up in expected epochs to a hit, each with intervals over replays; paired
differences between methods (they share replay seeds); ranks with intervals; all at 0.5x, 1x
and 2x delta. TPE, random search and Optuna's Gaussian process, each with ASHA (as the
``ablation`` space sets it, ``--space``) and without early stopping; with ``--screen``, other
ASHA settings on the development grids. Settings are chosen on the development grids only;
figures are quoted from the held-out grids. Writes the summary JSON and a Markdown table to
``results/``, and every replay to ``runs/``.

    python scripts/bench/search_efficiency.py train --grid held-a --jobs 2
    python scripts/bench/search_efficiency.py pack --grid held-a
    python scripts/bench/search_efficiency.py replay --grids development --screen --jobs 2
    python scripts/bench/search_efficiency.py replay --jobs 2         # every grid, every method
    python scripts/bench/search_efficiency.py replay --quick --grids tests/bench/data/search_efficiency_tiny_grid.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
import search_efficiency_measures as measures  # noqa: E402
import search_efficiency_report as report  # noqa: E402
import search_efficiency_train as training  # noqa: E402
from common import RESULTS, machine_description, write_result  # noqa: E402
from search_efficiency_grids import GRIDS  # noqa: E402
from search_efficiency_replay import (  # noqa: E402
    ALGORITHM,
    METHODS,
    AshaSetting,
    grid_results,
    replay,
)

RUNS = training.RUNS
BUDGET = 0.30
MULTIPLIERS = (0.5, 1.0, 2.0)
ROLES = ("held-out", "development", "legacy")
# Differences the summary gives a paired interval (first minus second).
PAIRS = (
    ("tpe_asha", "random_asha"),
    ("gp_asha", "random_asha"),
    ("tpe_asha", "gp_asha"),
    ("random_asha", "random_full"),
    ("tpe_full", "random_full"),
    ("gp_full", "random_full"),
)
# Random search's reference runs use seeds from here on, apart from the methods' replays.
REFERENCE_SEED = 1_000_000
RESAMPLES = 2000
CHUNK = 25  # replays per task handed to a worker
# Bumped whenever a replay's output could change (cached replays of another version are redone).
REPLAY_VERSION = 2
# The ASHA settings ``--screen`` compares on the development grids (TPE + ASHA).
SCREEN = (
    AshaSetting(grace_period=1, no_skill_epoch=2),
    AshaSetting(grace_period=1, no_skill_epoch=1),
    AshaSetting(grace_period=1, no_skill_epoch=0),
    AshaSetting(grace_period=2, no_skill_epoch=2),
    AshaSetting(grace_period=1, reduction_factor=2, no_skill_epoch=2),
    AshaSetting(grace_period=1, metric="val_macro_f1", no_skill_epoch=2),
)


# ---- grids ------------------------------------------------------------------------------------
def load_grids(selection: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """Grids by name: from the packed file (by name, or every grid of a role), or from grid
    files given by path (a single grid, or a packed file)."""
    packed = training.read_packed()["grids"]
    chosen: dict[str, dict[str, Any]] = {}
    for item in selection or ["held-out", "development", "legacy"]:
        if item in ROLES:
            chosen |= {k: g for k, g in packed.items() if g["grid"].get("role") == item}
        elif item in packed:
            chosen[item] = packed[item]
        elif Path(item).is_file():
            data = json.loads(Path(item).read_text())
            for grid in data.get("grids", {"": data}).values():
                meta = grid["grid"]
                chosen[meta.get("name", f"grid{meta['seed']}")] = grid
        else:
            raise FileNotFoundError(f"--grids: no grid, role or file named {item!r}")
    if not chosen:
        raise FileNotFoundError("no grid to replay (results/search_efficiency_grids.json)")
    return chosen


def role_of(grid: Mapping[str, Any]) -> str:
    return str(grid["grid"].get("role", "held-out"))


def grid_facts(grid: Mapping[str, Any], budget: float) -> dict[str, Any]:
    """Reference values, delta and its parts, G at each multiple of delta, and the textbook
    random search's exact figures (trained one after another, to the end)."""
    refs = measures.reference_values(grid)
    observed = measures.observed_values(grid)
    epochs = int(grid["grid"]["epochs"])
    total = len(refs) * epochs
    budget_epochs = max(1, math.floor(budget * total + 1e-9))
    strict = role_of(grid) != "legacy"
    sets = {m: measures.near_optimal(grid, multiplier=m, strict=strict) for m in MULTIPLIERS}
    near = sets[1.0]
    textbook_value, textbook_hit = measures.random_value_and_hit(
        observed, refs, near.members, budget_epochs // epochs
    )
    seeds = {k: len(measures.final_values(grid, k)) for k in refs}
    return {
        "name": grid["grid"].get("name"),
        "role": role_of(grid),
        "data": data_label(grid["grid"]),
        "configurations": len(refs),
        "epochs_per_trial": epochs,
        "epochs": total,
        "budget_epochs": budget_epochs,
        "best": near.best,
        "y_star": near.y_star,
        "delta": near.delta,
        "delta_image_se": near.image_se,
        "delta_seed_se": near.seed_se,
        "near_optimal": {str(m): list(s.members) for m, s in sets.items()},
        "undetermined": {str(m): s.bound["undetermined"] for m, s in sets.items()},
        "bound": near.bound,
        "worst_reference": min(refs.values()),
        "observed_best": max(observed, key=lambda k: observed[k]),
        "observed_best_value": max(observed.values()),
        "seeds_per_configuration": [min(seeds.values()), max(seeds.values())],
        "seeds": seeds,
        "reference_values": dict(sorted(refs.items(), key=lambda kv: -kv[1])),
        "reproduced": grid.get("reproduced", []),
        "textbook_random": {
            "value": textbook_value,
            "hit_rate": textbook_hit,
            "configurations": budget_epochs // epochs,
        },
        "spearman": measures.spearman_by_epoch(grid),
    }


def data_label(meta: Mapping[str, Any]) -> str:
    """What a grid was trained on, in a few words (``phantom A, seed 50, 32 px, smallcnn``)."""
    if meta.get("data") == "real":
        parts = ["real radiographs"]
    else:
        parts = [f"phantom {'B' if meta.get('data') == 'phantom_b' else 'A'}, seed {meta['seed']}"]
        if float(meta.get("strength", 1.0)) != 1.0:
            parts.append(f"opacity x{float(meta['strength']):g}")
        if meta.get("imbalance"):
            parts.append(f"classes as {meta['imbalance']}")
    parts += [f"{meta.get('image_size', '?')} px", str(meta.get("model", "?"))]
    return ", ".join(parts)


# ---- replays, in worker processes, cached under runs/ -------------------------------------------
@dataclass(frozen=True)
class Task:
    """Replays of one method (and ASHA setting) on one grid at one budget, one per seed."""

    grid: str
    digest: str  # of the grid's curves: replays of a grid packed again are redone
    method: str
    setting: AshaSetting
    budget: int
    seeds: tuple[int, ...]

    def path(self, runs: Path) -> Path:
        import hashlib

        asha = _slug(self.setting) if self.method.endswith("asha") else "none"
        which = hashlib.sha256(repr(self.seeds).encode()).hexdigest()[:8]
        name = f"{self.method}_{asha}_b{self.budget}_{self.seeds[0]}_{len(self.seeds)}_{which}.json"
        return runs / "replays" / f"{self.grid}-{self.digest}" / name


def _slug(asha: AshaSetting) -> str:
    return (
        f"g{asha.grace_period}_rf{asha.reduction_factor:g}_b{asha.brackets}_"
        f"{asha.metric}_ns{asha.no_skill_epoch}"
    )


def tasks_for(
    grid: str, digest: str, method: str, setting: AshaSetting, budget: int, seeds: Sequence[int]
) -> list[Task]:
    seeds = list(seeds)
    return [
        Task(grid, digest, method, setting, budget, tuple(seeds[i : i + CHUNK]))
        for i in range(0, len(seeds), CHUNK)
    ]


def digest_of(grid: Mapping[str, Any]) -> str:
    """A short hash of what a replay reads of a grid (not the record of reproduced runs)."""
    import hashlib

    text = json.dumps({**grid, "reproduced": []}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


_WORKER_GRIDS: dict[str, Any] = {}


def _init_worker(grids: Mapping[str, Any]) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_GRIDS.clear()
    _WORKER_GRIDS.update(grids)


def _run_task(item: tuple[Task, str]) -> tuple[Task, list[dict[str, Any]]]:
    task, runs = item
    path = task.path(Path(runs))
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("version") == REPLAY_VERSION:
            return task, cached["replays"]
    import torch

    torch.set_num_threads(1)
    grid = _WORKER_GRIDS[task.grid]
    results = grid_results(grid)
    replays = [
        replay(grid, results, task.method, task.setting, seed, task.budget) for seed in task.seeds
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": REPLAY_VERSION, "replays": replays}) + "\n")
    return task, replays


Replays = dict[tuple, dict[int, dict[str, Any]]]


def run_tasks(tasks: Sequence[Task], grids: Mapping[str, Any], jobs: int, runs: Path) -> Replays:
    """Every task's replays, keyed by (grid, method, setting, budget), then by seed."""
    out: Replays = {}
    started = time.time()
    items = [(t, str(runs)) for t in tasks]
    if jobs <= 1:
        _init_worker(grids)
        finished = map(_run_task, items)
    else:
        pool = multiprocessing.get_context("spawn").Pool(
            jobs, initializer=_init_worker, initargs=(dict(grids),)
        )
        finished = pool.imap_unordered(_run_task, items)
    for done, (task, replays) in enumerate(finished, start=1):
        key = (task.grid, task.method, task.setting, task.budget)
        out.setdefault(key, {}).update(zip(task.seeds, replays))
        if done % 20 == 0 or done == len(items):
            print(
                f"{done}/{len(items)} replay tasks [{time.time() - started:.0f} s]", file=sys.stderr
            )
    if jobs > 1:
        pool.close()
        pool.join()
    return out


def horizon_is_budget(
    grid: Mapping[str, Any], method: str, setting: AshaSetting, budget: int, horizon: int
) -> bool:
    """Whether a replay that spent fewer than ``budget`` epochs is also the replay to
    ``horizon``: the budget never held it back (every check was spent + under way + 1 <=
    spent at the end + 1 <= budget) and the searcher's random start-up is the same size."""
    from search_efficiency_replay import replay_plan

    expected = [
        replay_plan(grid, method, setting, 0, b).expected_trials_per_cell()
        for b in (budget, horizon)
    ]
    return expected[0] == expected[1]


# ---- measures ---------------------------------------------------------------------------------
@dataclass
class Outcomes:
    """A set of replays reduced to what the measures need, one entry per replay."""

    value: np.ndarray  # reference value of the incumbent at the budget
    early: np.ndarray  # ... after ``early_epochs`` of the whole-grid replay (an anytime view)
    incumbent: list[str | None]
    hit_epoch: dict[float, np.ndarray]  # epochs to an incumbent in G (NaN: never), per multiple
    spent: np.ndarray  # epochs the whole-horizon replay spent
    curve: np.ndarray  # y* - incumbent value after each epoch of the whole horizon
    trials: float
    epochs_at_budget: float


def outcomes(
    facts: Mapping[str, Any],
    refs: Mapping[str, float],
    observed: Mapping[str, float],
    at_budget: Sequence[Mapping[str, Any]],
    whole: Sequence[Mapping[str, Any]],
) -> Outcomes:
    worst, y_star = facts["worst_reference"], facts["y_star"]

    def value(key: str | None) -> float:
        return refs[key] if key is not None else worst

    finals = [
        measures.incumbent_at(measures.incumbent_trace(r, observed), 10**9) for r in at_budget
    ]
    traces = [measures.incumbent_trace(r, observed) for r in whole]
    hit_epoch = {}
    for m in MULTIPLIERS:
        members = facts["near_optimal"][str(m)]
        hits = [measures.first_hit(t, members) for t in traces]
        hit_epoch[m] = np.array([np.nan if h is None else float(h) for h in hits])
    horizon = facts["horizon_epochs"]
    curve = np.array(
        [
            y_star - np.mean([value(measures.incumbent_at(t, b)) for t in traces])
            for b in range(horizon + 1)
        ]
    )
    return Outcomes(
        value=np.array([value(k) for k in finals]),
        early=np.array([value(measures.incumbent_at(t, facts["early_epochs"])) for t in traces]),
        incumbent=finals,
        hit_epoch=hit_epoch,
        spent=np.array([float(r["epochs"]) for r in whole]),
        curve=curve,
        trials=float(np.mean([len(r["trials"]) for r in at_budget])),
        epochs_at_budget=float(np.mean([r["epochs"] for r in at_budget])),
    )


@dataclass
class GridSamples:
    """Bootstrap samples of one grid's measures, every method resampled with the same draws
    (paired), random search's reference runs with their own."""

    R: dict[str, np.ndarray]
    R_early: dict[str, np.ndarray]
    hit: dict[float, dict[str, np.ndarray]]
    speedup: dict[float, dict[str, np.ndarray]]
    ert: dict[float, dict[str, np.ndarray]]


def grid_samples(
    facts: Mapping[str, Any],
    methods: Mapping[str, Outcomes],
    reference: Outcomes,
    seed: int,
    resamples: int = RESAMPLES,
) -> GridSamples:
    names = list(methods)
    n = len(next(iter(methods.values())).value)
    draws = measures.bootstrap_draws(n, resamples, seed)
    ref_draws = measures.bootstrap_draws(len(reference.value), resamples, seed + 1)
    y_star = facts["y_star"]
    ref_value = reference.value[ref_draws].mean(axis=-1)
    values = np.vstack([methods[m].value for m in names])
    regret = (y_star - measures.resampled_means(values, draws)) / (y_star - ref_value)
    ref_early = reference.early[ref_draws].mean(axis=-1)
    early = np.vstack([methods[m].early for m in names])
    regret_early = (y_star - measures.resampled_means(early, draws)) / (y_star - ref_early)
    hit, speedup, ert = {}, {}, {}
    for m in MULTIPLIERS:
        members = set(facts["near_optimal"][str(m)])
        hits = np.vstack([[k in members for k in methods[x].incumbent] for x in names]).astype(
            float
        )
        hit[m] = dict(zip(names, measures.resampled_means(hits, draws)))
        epochs = np.vstack([methods[x].hit_epoch[m] for x in names])
        spent = np.vstack([methods[x].spent for x in names])
        method_ert = measures.resampled_ert(epochs, spent, draws)
        ref_ert = measures.resampled_ert(
            reference.hit_epoch[m][None, :], reference.spent[None, :], ref_draws
        )[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            speedup[m] = dict(zip(names, ref_ert / method_ert))
        ert[m] = dict(zip(names, method_ert))
    return GridSamples(
        R=dict(zip(names, regret)),
        R_early=dict(zip(names, regret_early)),
        hit=hit,
        speedup=speedup,
        ert=ert,
    )


def _interval(samples: np.ndarray) -> list[float]:
    low, high = measures.percentile_interval(np.asarray(samples, dtype=float))
    return [float(low), float(high)]


def _ert(o: Outcomes, m: float) -> float:
    hits = ~np.isnan(o.hit_epoch[m])
    total = float(np.where(hits, o.hit_epoch[m], o.spent).sum())
    return total / hits.sum() if hits.sum() else math.inf


def grid_measures(
    facts: Mapping[str, Any],
    methods: Mapping[str, Outcomes],
    reference: Outcomes,
    samples: GridSamples,
) -> dict[str, Any]:
    """Point figures and intervals of every method on one grid, and the paired differences."""
    y_star = facts["y_star"]
    denominator = y_star - float(reference.value.mean())
    early_denominator = y_star - float(reference.early.mean())
    ref_curve = reference.curve
    point_r = {x: (y_star - float(o.value.mean())) / denominator for x, o in methods.items()}
    rank_point = dict(zip(methods, measures.ranks_of(np.array(list(point_r.values()))).tolist()))
    rank_samples = measures.ranks_of(np.vstack(list(samples.R.values())))
    out: dict[str, Any] = {"methods": {}, "pairs": {}}
    for i, (x, o) in enumerate(methods.items()):
        row: dict[str, Any] = {
            "replays": len(o.value),
            "R": point_r[x],
            "R_interval": _interval(samples.R[x]),
            "R_early": (y_star - float(o.early.mean())) / early_denominator,
            "R_early_interval": _interval(samples.R_early[x]),
            "rank_R": rank_point[x],
            "rank_R_interval": _interval(rank_samples[i]),
            "trials_at_budget": o.trials,
            "epochs_at_budget": o.epochs_at_budget,
            "area_ratio": float(o.curve.sum() / ref_curve.sum())
            if ref_curve.sum() > 0
            else math.nan,
            "regret_curve": [round(float(v), 5) for v in o.curve],
            "incumbents": _counts(o.incumbent),
            "by_delta": {},
        }
        for m in MULTIPLIERS:
            members = facts["near_optimal"][str(m)]
            hits = sum(k in members for k in o.incumbent)
            method_ert, ref_ert = _ert(o, m), _ert(reference, m)
            row["by_delta"][str(m)] = {
                "hit_rate": hits / len(o.incumbent),
                "hit_interval": list(measures.wilson_interval(hits, len(o.incumbent))),
                "ert": method_ert,
                "speedup": ref_ert / method_ert if method_ert > 0 else math.inf,
                "speedup_interval": _interval(samples.speedup[m][x]),
            }
        out["methods"][x] = row
    for a, b in PAIRS:
        if a not in methods or b not in methods:
            continue
        pair: dict[str, Any] = {
            "R_difference": point_r[a] - point_r[b],
            "R_difference_interval": _interval(samples.R[a] - samples.R[b]),
            "R_early_difference": out["methods"][a]["R_early"] - out["methods"][b]["R_early"],
            "R_early_difference_interval": _interval(samples.R_early[a] - samples.R_early[b]),
            "by_delta": {},
        }
        for m in MULTIPLIERS:
            ha = out["methods"][a]["by_delta"][str(m)]
            hb = out["methods"][b]["by_delta"][str(m)]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = samples.ert[m][b] / samples.ert[m][a]
            pair["by_delta"][str(m)] = {
                "hit_difference": ha["hit_rate"] - hb["hit_rate"],
                "hit_difference_interval": _interval(samples.hit[m][a] - samples.hit[m][b]),
                "speedup_ratio": hb["ert"] / ha["ert"] if ha["ert"] > 0 else math.inf,
                "speedup_ratio_interval": _interval(ratio),
            }
        out["pairs"][f"{a} - {b}"] = pair
    return out


def _counts(keys: Sequence[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        out[str(k)] = out.get(str(k), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def pooled(
    names: Sequence[str], samples: Mapping[str, GridSamples], per_grid: Mapping[str, Any]
) -> dict[str, Any]:
    """Figures over a set of grids (each grid weighs the same): mean R, mean hit rate and the
    geometric-mean speed-up, mean rank, and the paired differences, each with its interval from
    the grids' bootstrap samples (resampled independently per grid)."""
    methods = list(samples[names[0]].R)
    out: dict[str, Any] = {"grids": list(names), "methods": {}, "pairs": {}}
    r_stack = {x: np.vstack([samples[g].R[x] for g in names]) for x in methods}
    early_stack = {x: np.vstack([samples[g].R_early[x] for g in names]) for x in methods}
    ranks = np.stack(
        [measures.ranks_of(np.vstack([samples[g].R[x] for x in methods])) for g in names]
    )
    for i, x in enumerate(methods):
        rows = [per_grid[g]["methods"][x] for g in names]
        entry: dict[str, Any] = {
            "mean_R": float(np.mean([r["R"] for r in rows])),
            "mean_R_interval": _interval(r_stack[x].mean(axis=0)),
            "mean_R_early": float(np.mean([r["R_early"] for r in rows])),
            "mean_R_early_interval": _interval(early_stack[x].mean(axis=0)),
            "grids_R_below_half": sum(r["R"] <= 0.5 and r["R_interval"][1] < 1 for r in rows),
            "mean_rank_R": float(np.mean([r["rank_R"] for r in rows])),
            "mean_rank_R_interval": _interval(ranks[:, i, :].mean(axis=0)),
            "mean_trials_at_budget": float(np.mean([r["trials_at_budget"] for r in rows])),
            "mean_area_ratio": float(np.mean([r["area_ratio"] for r in rows])),
            "by_delta": {},
        }
        for m in MULTIPLIERS:
            d = [r["by_delta"][str(m)] for r in rows]
            hit_stack = np.vstack([samples[g].hit[m][x] for g in names])
            speed_stack = np.vstack([samples[g].speedup[m][x] for g in names])
            entry["by_delta"][str(m)] = {
                "mean_hit_rate": float(np.mean([v["hit_rate"] for v in d])),
                "mean_hit_interval": _interval(hit_stack.mean(axis=0)),
                "geomean_speedup": float(
                    measures.geometric_mean(np.array([v["speedup"] for v in d]))
                ),
                "geomean_speedup_interval": _interval(measures.geometric_mean(speed_stack)),
            }
        out["methods"][x] = entry
    for a, b in PAIRS:
        if a not in methods or b not in methods:
            continue
        key = f"{a} - {b}"
        rows = [per_grid[g]["pairs"][key] for g in names]
        pair: dict[str, Any] = {
            "R_difference": float(np.mean([r["R_difference"] for r in rows])),
            "R_difference_interval": _interval((r_stack[a] - r_stack[b]).mean(axis=0)),
            "R_early_difference": float(np.mean([r["R_early_difference"] for r in rows])),
            "R_early_difference_interval": _interval(
                (early_stack[a] - early_stack[b]).mean(axis=0)
            ),
            "grids_R_difference_below_0": sum(r["R_difference_interval"][1] < 0 for r in rows),
            "grids_R_difference_above_0": sum(r["R_difference_interval"][0] > 0 for r in rows),
            "by_delta": {},
        }
        for m in MULTIPLIERS:
            d = [r["by_delta"][str(m)] for r in rows]
            hits = np.vstack([samples[g].hit[m][a] - samples[g].hit[m][b] for g in names])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.vstack([samples[g].ert[m][b] / samples[g].ert[m][a] for g in names])
            pair["by_delta"][str(m)] = {
                "hit_difference": float(np.mean([v["hit_difference"] for v in d])),
                "hit_difference_interval": _interval(hits.mean(axis=0)),
                "geomean_speedup_ratio": float(
                    measures.geometric_mean(np.array([v["speedup_ratio"] for v in d]))
                ),
                "geomean_speedup_ratio_interval": _interval(measures.geometric_mean(ratios)),
            }
        out["pairs"][key] = pair
    return out


# ---- the replay command -------------------------------------------------------------------------
def add_replay_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grids", nargs="*", help="grid names, roles (held-out, development, legacy) or files"
    )
    parser.add_argument("--replays", type=int, default=200, help="per method and grid")
    parser.add_argument(
        "--reference", type=int, default=500, help="random search's reference runs per grid"
    )
    parser.add_argument("--budget", type=float, default=BUDGET, help="share of the grid's epochs")
    parser.add_argument(
        "--horizon", type=float, default=1.0, help="share of the grid's epochs for the speed-up"
    )
    parser.add_argument(
        "--early", type=float, default=0.1, help="share of the grid's epochs for R_early"
    )
    parser.add_argument("--space", default="ablation", help="whose scheduler is the default")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--screen", action="store_true", help="other ASHA settings (development)")
    parser.add_argument("--screen-replays", type=int, default=100, help="per screened setting")
    parser.add_argument(
        "--gp-full-replays", type=int, default=30, help="GP without early stopping, at the budget"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--output", type=Path, default=RESULTS / "search_efficiency_summary.json")
    parser.add_argument("--table", type=Path, default=RESULTS / "search_efficiency.md")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where every replay is kept")
    parser.add_argument("--quick", action="store_true", help="a few replays, two methods")


def space_setting(space: str) -> AshaSetting:
    """The ASHA setting of a search space (the study's default)."""
    from cxr_tune.spaces import load_space

    spec = load_space(space).scheduler
    return AshaSetting(
        grace_period=spec.grace_period,
        reduction_factor=spec.reduction_factor,
        brackets=spec.brackets,
        metric=spec.metric or "val_macro_f1",
        no_skill_epoch=spec.no_skill_epoch,
    )


def space_method(space: str) -> str:
    """The method that replays a search space's default: its searcher, with ASHA."""
    from cxr_tune.spaces import load_space

    algorithm = load_space(space).algorithm
    searcher = {v: k for k, v in ALGORITHM.items()}.get(algorithm, "tpe")
    return f"{searcher}_asha"


def replay_all(args: argparse.Namespace) -> int:
    """Replay every method (and with ``--screen`` other ASHA settings on the development
    grids) on every grid, with random search's reference runs, and measure them.

    First every replay at the budget; then, for the speed-up, the replays to the whole grid
    (``--horizon``) that differ from them: a replay that ended below the budget (an ASHA search
    that tried every configuration) is its own replay to the whole grid."""
    methods = [m for m in args.methods.split(",") if m]
    if args.quick:
        args.replays, args.reference, args.gp_full_replays = 4, 8, 2
        methods = ["tpe_asha", "random_asha", "random_full"]
    default = space_setting(args.space)
    grids = load_grids(args.grids)
    started = time.time()
    facts = {}
    seeds = {m: range(args.gp_full_replays if m == "gp_full" else args.replays) for m in methods}
    reference = range(REFERENCE_SEED, REFERENCE_SEED + args.reference)
    first: list[Task] = []
    for name, grid in grids.items():
        f = grid_facts(grid, args.budget)
        f["horizon_epochs"] = max(f["budget_epochs"], math.floor(args.horizon * f["epochs"] + 1e-9))
        f["early_epochs"] = max(1, math.floor(args.early * f["epochs"] + 1e-9))
        facts[name] = f
        digest = digest_of(grid)
        b = f["budget_epochs"]
        for method in methods:
            first += tasks_for(name, digest, method, default, b, seeds[method])
        first += tasks_for(name, digest, "random_full", default, b, reference)
        first += tasks_for(name, digest, "random_full", default, f["horizon_epochs"], reference)
        if args.screen and f["role"] == "development":
            for setting in SCREEN:
                if setting != default:
                    first += tasks_for(
                        name, digest, "tpe_asha", setting, b, range(args.screen_replays)
                    )
    done = run_tasks(_longest_first(first), grids, args.jobs, args.runs)
    second: list[Task] = []
    for name, grid in grids.items():
        f, digest = facts[name], digest_of(grid)
        b, h = f["budget_epochs"], f["horizon_epochs"]
        for method in methods:
            if method == "gp_full":
                continue  # its replays to the whole grid cost a minute each here (see README)
            at_budget = done[(name, method, default, b)]
            same = horizon_is_budget(grid, method, default, b, h)
            needed = [s for s in seeds[method] if not (same and at_budget[s]["epochs"] + 1 <= b)]
            second += tasks_for(name, digest, method, default, h, needed)
    for key, found in run_tasks(_longest_first(second), grids, args.jobs, args.runs).items():
        done.setdefault(key, {}).update(found)
    summary = summarise(args, grids, facts, done, methods, default, seeds, reference)
    summary["machine"] = machine_description()
    summary["replay_seconds"] = time.time() - started
    text = report.render(summary)
    print(text)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(report.markdown(summary))
    write_result(args.output, summary)
    return 0


def _longest_first(tasks: list[Task]) -> list[Task]:
    """GP and large budgets first, so that the workers end together."""
    return sorted(tasks, key=lambda t: (not t.method.startswith("gp"), -t.budget))


def summarise(
    args: argparse.Namespace,
    grids: Mapping[str, Any],
    facts: Mapping[str, dict[str, Any]],
    done: Replays,
    methods: Sequence[str],
    default: AshaSetting,
    seeds: Mapping[str, range],
    reference: range,
) -> dict[str, Any]:
    per_grid: dict[str, Any] = {}
    samples: dict[str, GridSamples] = {}
    screen: dict[str, Any] = {}
    side: dict[str, Any] = {}
    paired = [m for m in methods if m != "gp_full"]
    for index, (name, grid) in enumerate(grids.items()):
        f = facts[name]
        refs, observed = measures.reference_values(grid), measures.observed_values(grid)
        b, h = f["budget_epochs"], f["horizon_epochs"]

        def at(method: str, budget: int, which: Sequence[int], setting: AshaSetting = default,
               name: str = name) -> list[dict[str, Any]]:  # fmt: skip
            return [done[(name, method, setting, budget)][s] for s in which]

        def whole(
            method: str, which: Sequence[int], name: str = name, b: int = b, h: int = h
        ) -> list[dict[str, Any]]:
            found = done.get((name, method, default, h), {})
            budget = done[(name, method, default, b)]
            return [found[s] if s in found else budget[s] for s in which]

        ref = outcomes(
            f, refs, observed, at("random_full", b, reference), at("random_full", h, reference)
        )
        f["random"] = {
            "value": float(ref.value.mean()),
            "value_se": float(ref.value.std(ddof=1) / math.sqrt(len(ref.value))),
            "runs": len(ref.value),
            "configurations_completed": float(
                np.mean([len(r["completions"]) for r in at("random_full", b, reference)])
            ),
            "by_delta": {
                str(m): {
                    "hit_rate": float(
                        np.mean([k in f["near_optimal"][str(m)] for k in ref.incumbent])
                    ),
                    "ert": _ert(ref, m),
                }
                for m in MULTIPLIERS
            },
        }
        outs = {
            x: outcomes(f, refs, observed, at(x, b, seeds[x]), whole(x, seeds[x])) for x in paired
        }
        f["horizon_replayed"] = {x: len(done.get((name, x, default, h), {})) for x in paired}
        samples[name] = grid_samples(f, outs, ref, seed=7919 * (index + 1))
        per_grid[name] = grid_measures(f, outs, ref, samples[name])
        if "gp_full" in methods:
            side[name] = gp_full_measures(f, refs, observed, at, seeds["gp_full"], ref)
        if args.screen and f["role"] == "development":
            for setting in SCREEN:
                if setting == default:
                    found = outs["tpe_asha"]
                else:
                    replays = at("tpe_asha", b, range(args.screen_replays), setting)
                    found = outcomes(f, refs, observed, replays, replays[:1])
                r = (f["y_star"] - float(found.value.mean())) / (f["y_star"] - f["random"]["value"])
                entry = screen.setdefault(
                    setting.label(), {"setting": asdict(setting), "grids": {}}
                )
                entry["grids"][name] = {
                    "R": r,
                    "trials_at_budget": found.trials,
                    "replays": len(found.value),
                }
    groups = {}
    for role in ROLES:
        names = [n for n in grids if facts[n]["role"] == role]
        if names:
            groups[role] = pooled(names, samples, per_grid)
    for entry in screen.values():
        entry["mean_R"] = float(np.mean([g["R"] for g in entry["grids"].values()]))
    return {
        "benchmark": "search_efficiency",
        "budget": args.budget,
        "horizon": args.horizon,
        "early": args.early,
        "replays": args.replays,
        "gp_full_replays": args.gp_full_replays if "gp_full" in methods else 0,
        "screen_replays": args.screen_replays if screen else 0,
        "reference_runs": len(reference),
        "concurrency": 2,
        "multipliers": list(MULTIPLIERS),
        "default_setting": {"label": default.label(), **default.as_space()},
        "default_method": space_method(args.space),
        "grids": facts,
        "per_grid": per_grid,
        "groups": groups,
        "gp_full": side,
        "screen": dict(sorted(screen.items(), key=lambda kv: kv[1]["mean_R"])),
    }


def gp_full_measures(
    facts: Mapping[str, Any],
    refs: Mapping[str, float],
    observed: Mapping[str, float],
    at: Any,
    which: range,
    reference: Outcomes,
) -> dict[str, Any]:
    """GP without early stopping, on fewer replays (its proposals cost ~0.7 s each here): R and
    the hit rate at the budget, paired with TPE and random search without early stopping on
    the same seeds."""
    b = facts["budget_epochs"]
    names = ("gp_full", "tpe_full", "random_full")
    outs = {}
    for x in names:
        replays = at(x, b, which)
        outs[x] = outcomes(facts, refs, observed, replays, replays[:1])
    y_star = facts["y_star"]
    draws = measures.bootstrap_draws(len(which), RESAMPLES, 4241)
    ref_draws = measures.bootstrap_draws(len(reference.value), RESAMPLES, 4242)
    ref_value = reference.value[ref_draws].mean(axis=-1)
    values = np.vstack([outs[x].value for x in names])
    regret = (y_star - measures.resampled_means(values, draws)) / (y_star - ref_value)
    denominator = y_star - float(reference.value.mean())
    members = set(facts["near_optimal"]["1.0"])
    out: dict[str, Any] = {"replays": len(which)}
    for i, x in enumerate(names):
        hits = sum(k in members for k in outs[x].incumbent)
        out[x] = {
            "R": (y_star - float(outs[x].value.mean())) / denominator,
            "R_interval": _interval(regret[i]),
            "hit_rate": hits / len(which),
            "hit_interval": list(measures.wilson_interval(hits, len(which))),
        }
    for i, x in ((1, "tpe_full"), (2, "random_full")):
        out[f"gp_full - {x}"] = {
            "R_difference": out["gp_full"]["R"] - out[x]["R"],
            "R_difference_interval": _interval(regret[0] - regret[i]),
        }
    return out


# ---- command line -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a grid's configurations under its seeds")
    train.add_argument("--grid", required=True, help=f"one of {', '.join(GRIDS)}")
    train.add_argument("--seeds", default="", help="comma-separated (default: the grid's)")
    train.add_argument(
        "--configs", default="", help="lr|batch|optimizer, comma-separated (default: the grid)"
    )
    train.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    train.add_argument("--runs", type=Path, default=RUNS, help="where each run's JSON goes")
    pack = commands.add_parser("pack", help="fold a grid's runs into the packed grid file")
    pack.add_argument("--grid", required=True)
    pack.add_argument("--runs", type=Path, default=RUNS)
    pack.add_argument("--output", type=Path, default=training.PACKED)
    pack.add_argument(
        "--retrained", action="store_true", help="runs trained again: check and record them"
    )
    add_replay_args(commands.add_parser("replay", help="replay searches and measure them"))
    args = parser.parse_args(argv)
    if args.command in ("train", "pack") and args.grid not in GRIDS:
        parser.error(f"--grid: {args.grid}; allowed: {', '.join(GRIDS)}")
    if args.command == "train":
        keys = [k for k in args.configs.split(",") if k]
        unknown = sorted(set(keys) - set(GRIDS[args.grid].configurations()))
        if unknown:
            parser.error(
                f"--configs: {', '.join(unknown)}; allowed: {', '.join(GRIDS[args.grid].configurations())}"
            )
    if args.command == "replay":
        unknown = [m for m in args.methods.split(",") if m and m not in METHODS]
        if unknown:
            parser.error(f"--methods: {', '.join(unknown)}; allowed: {', '.join(METHODS)}")
        if args.replays < 2:
            parser.error(f"--replays: {args.replays}; must be 2 or more")
        if not 0 < args.budget <= 1:
            parser.error(f"--budget: {args.budget}; must be in (0, 1]")
        if not args.budget <= args.horizon <= 1:
            parser.error(f"--horizon: {args.horizon}; must be in [--budget, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "train":
        spec = GRIDS[args.grid]
        seeds = [int(s) for s in args.seeds.split(",") if s] or list(spec.seeds)
        keys = [k for k in args.configs.split(",") if k] or spec.configurations()
        return training.train(spec, seeds, keys, args.jobs, args.runs)
    if args.command == "pack":
        return training.pack(GRIDS[args.grid], args.runs, args.output, retrained=args.retrained)
    return replay_all(args)


if __name__ == "__main__":
    raise SystemExit(main())

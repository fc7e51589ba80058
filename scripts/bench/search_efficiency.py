"""Benchmark: how efficiently does a search find a grid's near-optimal configurations?

Measured as HPO benchmark suites measure it, on phantom grids whose every configuration was
trained to its last epoch (AlexNet, 5 learning rates x 2 batch sizes x Adam/SGD, 6 epochs,
cosine schedule, 1800-image phantom at 64 px, 271 validation images). Three steps:

``train``: train configurations of a grid under initialisation seeds, with the real trial code
(``cxr_tune.trainable``'s model, optimiser, schedule, batches and evaluation) in this process,
one torch thread each as the grid's one-CPU trials had; every run writes its per-epoch signals
and its final per-image validation predictions to ``scripts/bench/runs/`` (ignored by git).

``pack``: fold a grid's runs into its compact committed file,
``results/search_efficiency_grid<SEED>.json``: every configuration's curves under every seed,
the predictions, the labels, seconds per epoch. A run of a seed the file already holds must
reproduce its curves exactly (training is deterministic), and is recorded as reproduced.

``replay``: replay searches on every grid's curves with cxr_tune's own searcher and scheduler on
a simulated clock (``cxr_tune.search.simulate``: no Ray trial runs, the same seed gives the same
result) and compute the measures (``search_efficiency_measures.py``) against random search's
exact expectations: normalised regret R at 30% of the grid's epochs, hit rate (incumbent within
delta of the best reference value), speed-up in expected epochs to a hit, the regret curve over
the grid's epochs and its area, the methods' ranks, and each epoch's rank correlation with the
last. TPE + ASHA, random + ASHA, and both without early stopping; ASHA as the ``ablation``
space sets it (``--space``), and with ``--screen`` a list of other ASHA settings. Writes the
summary JSON and a Markdown table to ``results/``, and every replay's trials to ``runs/``.

    python scripts/bench/search_efficiency.py train --grid-seed 5 --seeds 5,6,7 --jobs 2
    python scripts/bench/search_efficiency.py pack --grid-seed 5
    python scripts/bench/search_efficiency.py replay                  # ~10 min on 2 cores
    python scripts/bench/search_efficiency.py replay --screen         # and other ASHA settings
    python scripts/bench/search_efficiency.py replay --quick --grids results/search_efficiency_grid0.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
import search_efficiency_measures as measures  # noqa: E402
from common import REPO, RESULTS, format_table, machine_description, write_result  # noqa: E402
from search_efficiency_replay import METHODS, AshaSetting, grid_results, replay  # noqa: E402

RUNS = REPO / "scripts" / "bench" / "runs" / "search_efficiency"
SIGNALS = ("val_macro_f1", "val_loss", "val_accuracy", "train_loss")
SPACE = {"lrs": "1e-4,3e-4,1e-3,3e-3,1e-2", "batch_sizes": "16,64", "optimizers": "adam,sgd"}
BUDGET = 0.30
# The ASHA settings ``--screen`` compares (TPE + ASHA), besides the space's own.
SCREEN = (
    AshaSetting(grace_period=1, no_skill_epoch=2),
    AshaSetting(grace_period=1, no_skill_epoch=0),
    AshaSetting(grace_period=2, no_skill_epoch=2),
    AshaSetting(grace_period=2, no_skill_epoch=0),
    AshaSetting(grace_period=1, metric="val_macro_f1", no_skill_epoch=2),
    AshaSetting(grace_period=2, metric="val_macro_f1", no_skill_epoch=2),
    AshaSetting(grace_period=1, metric="val_accuracy", no_skill_epoch=2),
    AshaSetting(grace_period=1, brackets=2, no_skill_epoch=2),
    AshaSetting(grace_period=1, brackets=3, no_skill_epoch=2),
    AshaSetting(grace_period=1, reduction_factor=2, no_skill_epoch=2),
    AshaSetting(grace_period=3, reduction_factor=2, no_skill_epoch=2),
    AshaSetting(grace_period=6, no_skill_epoch=2),
    AshaSetting(grace_period=1, no_skill_epoch=1),
)


# ---- train ------------------------------------------------------------------------------------
def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid-seed", type=int, required=True, help="the phantom's seed")
    parser.add_argument("--seeds", required=True, help="initialisation seeds, comma-separated")
    parser.add_argument(
        "--configs", default="", help="lr|batch|optimizer, comma-separated (default: the grid)"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--phantom-images", type=int, default=1800)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where each run's JSON goes")


def grid_space() -> dict[str, Any]:
    return {
        "lr": {"choice": [float(v) for v in SPACE["lrs"].split(",")]},
        "batch_size": {"choice": [int(v) for v in SPACE["batch_sizes"].split(",")]},
        "optimizer": {"choice": SPACE["optimizers"].split(",")},
    }


def grid_keys() -> list[str]:
    space = grid_space()
    return [
        f"{lr:g}|{batch}|{optimizer}"
        for lr in space["lr"]["choice"]
        for batch in space["batch_size"]["choice"]
        for optimizer in space["optimizer"]["choice"]
    ]


def run_path(folder: Path, grid_seed: int, key: str, seed: int) -> Path:
    return folder / f"grid{grid_seed}" / f"{key.replace('|', '_')}_seed{seed}.json"


def trial_config(args: argparse.Namespace, key: str, seed: int) -> dict[str, Any]:
    """The trial config a grid search over the space gives this configuration, with ``seed``."""
    from cxr_tune.config import TrialConfig

    lr, batch, optimizer = key.split("|")
    return {
        **TrialConfig().to_dict(),
        "epochs": args.epochs,
        "image_size": args.image_size,
        "momentum": 0.9,
        "lr_schedule": "cosine",
        "model": "alexnet",
        "dataset": "phantom",
        "cell": "phantom/alexnet",
        "lr": float(lr),
        "batch_size": int(batch),
        "optimizer": optimizer,
        "seed": seed,
    }


def load_phantom(args: argparse.Namespace) -> Any:
    """The grid's phantom, split as a search splits it (train and val only)."""
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, default_cache_dir, load_dataset

    options = DataOptions(
        image_size=args.image_size,
        seed=args.grid_seed,
        cache_dir=default_cache_dir(),
        phantom_images=args.phantom_images,
    )
    return load_dataset(DataSource("phantom", None), options).for_search()


def train_one(args: argparse.Namespace, key: str, seed: int) -> dict[str, Any]:
    """Train one configuration under one seed as a grid trial does (the trial's own epoch
    loop, ``engine.train_epochs``); curves and final predictions."""
    import torch

    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import (
        build_state,
        eval_batch_size,
        loop_settings,
        predict_logits,
        to_device,
        train_epochs,
    )
    from cxr_tune.metrics import no_skill_losses

    torch.set_num_threads(1)
    dataset = load_phantom(args)
    cfg = TrialConfig.from_dict(trial_config(args, key, seed))
    device = torch.device("cpu")
    settings = loop_settings(device, cfg.precision)
    state = build_state(cfg, dataset, device)
    train = to_device(dataset.split("train"), device, dataset.task)
    val = to_device(dataset.split("val"), device, dataset.task)
    rows = list(train_epochs(state, cfg, dataset, train, val, settings))
    size = eval_batch_size(device, cfg.image_size)
    logits = predict_logits(state.model, val.images, batch_size=size, settings=settings)
    return {
        "grid_seed": args.grid_seed,
        "configuration": key,
        "seed": seed,
        "status": rows[-1]["status"],
        "signals": {name: [float(r[name]) for r in rows if name in r] for name in SIGNALS},
        "epoch_seconds": [float(r.get("epoch_time_s", 0.0)) for r in rows],
        "predictions": "".join(str(int(p)) for p in logits.argmax(dim=1).tolist()),
        "labels": "".join(str(int(y)) for y in val.labels.tolist()),
        **no_skill_losses(dataset),
    }


def _train_and_write(item: tuple[argparse.Namespace, str, int]) -> str:
    args, key, seed = item
    started = time.time()
    result = train_one(args, key, seed)
    result["machine"] = machine_description()
    path = run_path(args.runs, args.grid_seed, key, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    final = result["signals"]["val_macro_f1"][-1]
    return (
        f"grid {args.grid_seed} {key} seed {seed}: F1 {final:.4f} [{time.time() - started:.0f} s]"
    )


def train(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    keys = [k for k in args.configs.split(",") if k] or grid_keys()
    unknown = sorted(set(keys) - set(grid_keys()))
    if unknown:
        print(
            f"error: --configs: {', '.join(unknown)}; allowed: {', '.join(grid_keys())}",
            file=sys.stderr,
        )
        return 2
    todo = [
        (args, key, seed)
        for key in keys
        for seed in seeds
        if not run_path(args.runs, args.grid_seed, key, seed).exists()
    ]
    print(f"{len(todo)} runs to train ({len(keys) * len(seeds) - len(todo)} already there)")
    load_phantom(args)  # decoded into the cache once, before the workers read it
    if args.jobs <= 1:
        for item in todo:
            print(_train_and_write(item), flush=True)
        return 0
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for line in pool.imap_unordered(_train_and_write, todo):
            print(line, flush=True)
    return 0


# ---- pack -------------------------------------------------------------------------------------
def grid_path(seed: int) -> Path:
    return RESULTS / f"search_efficiency_grid{seed}.json"


def new_grid(seed: int, run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": "search_efficiency_grid",
        "grid": {
            "seed": seed,
            "replay_seed": seed,
            "model": "alexnet",
            "epochs": len(run["signals"]["val_macro_f1"]),
            "phantom_images": 1800,
            "image_size": 64,
            "lr_schedule": "cosine",
            "space": grid_space(),
            "val_loss_no_skill": run["val_loss_no_skill"],
            "train_loss_no_skill": run["train_loss_no_skill"],
            "labels": run["labels"],
        },
        "configurations": {},
        "reproduced": [],
    }


def pack_run(grid: dict[str, Any], run: Mapping[str, Any]) -> None:
    """Add one run to a grid. A seed the grid holds must come out the same; where the grid
    had it from elsewhere (the grid search's curves, without predictions), the run is
    recorded in ``reproduced``; packing a run again changes nothing."""
    key, seed = run["configuration"], str(run["seed"])
    if run["labels"] != grid["grid"]["labels"]:
        raise ValueError(f"{key} seed {seed}: validation labels differ from the grid's")
    entry = grid["configurations"].setdefault(key, {"runs": {}})
    stored = entry["runs"].get(seed)
    curves = {name: values for name, values in run["signals"].items() if values}
    if stored is not None:
        if stored["val_macro_f1"] != curves["val_macro_f1"]:
            raise ValueError(f"{key} seed {seed}: the run does not reproduce the stored curve")
        if not stored.get("predictions") and [key, int(seed)] not in grid["reproduced"]:
            grid["reproduced"].append([key, int(seed)])
        # The stored curves stay as they were (the grid search's, to the digits it kept).
        curves = {**curves, **{k: v for k, v in stored.items() if k != "predictions"}}
    entry["runs"][seed] = {**curves, "predictions": run["predictions"]}


def epoch_seconds(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per epoch by batch size and optimiser (``16|adam``) and by batch size alone
    (``16``): medians over ``runs``.

    Replays only need the order in which trials' epochs end; medians over every run on every
    grid keep that order free of what else the machine ran while one run trained."""
    pooled: dict[str, list[float]] = {}
    for run in runs:
        kind = run["configuration"].split("|", 1)[1]
        seconds = [s for s in run.get("epoch_seconds", []) if s > 0]
        pooled.setdefault(kind, []).extend(seconds)
        pooled.setdefault(kind.split("|")[0], []).extend(seconds)
    return {kind: round(float(np.median(v)), 3) for kind, v in sorted(pooled.items()) if v}


def fill_epoch_seconds(grid: dict[str, Any], seconds: Mapping[str, float]) -> None:
    """Each configuration's seconds per epoch, from ``epoch_seconds`` (by batch size alone
    where no run had its optimiser). A configuration that has them keeps them: replays of a
    grid must not change because more runs were packed."""
    for key, entry in grid["configurations"].items():
        if "epoch_seconds" in entry:
            continue
        kind = key.split("|", 1)[1]
        value = seconds.get(kind, seconds.get(kind.split("|")[0]))
        if value is not None:
            entry["epoch_seconds"] = value


def pack(args: argparse.Namespace) -> int:
    folder = args.runs / f"grid{args.grid_seed}"
    paths = sorted(folder.glob("*.json"))
    if not paths:
        print(f"error: no runs of grid {args.grid_seed} in {folder}", file=sys.stderr)
        return 2
    output = args.output or grid_path(args.grid_seed)
    grid = json.loads(output.read_text()) if output.exists() else None
    for path in paths:
        run = json.loads(path.read_text())
        grid = grid or new_grid(args.grid_seed, run)
        pack_run(grid, run)
    assert grid is not None
    every_run = [json.loads(p.read_text()) for p in sorted(args.runs.glob("grid*/*.json"))]
    fill_epoch_seconds(grid, epoch_seconds(every_run))
    grid["configurations"] = dict(sorted(grid["configurations"].items()))
    write_grid(output, grid)
    print(f"wrote {output}: {len(paths)} runs", file=sys.stderr)
    return 0


def write_grid(path: Path, grid: Mapping[str, Any]) -> None:
    """A grid file with one line per run (curves and predictions), so diffs stay readable."""
    text = json.dumps(grid, indent=1)
    # Lists of numbers on one line each.
    text = re.sub(r"\[\n\s+([-0-9.e,\s]+?)\n\s+\]", _one_line, text)
    path.write_text(text + "\n")


def _one_line(match: re.Match[str]) -> str:
    return "[" + ", ".join(v.strip() for v in match.group(1).split(",")) + "]"


# ---- replay -----------------------------------------------------------------------------------
def add_replay_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grids", type=Path, nargs="*", help="grid files (default: results/)")
    parser.add_argument("--replays", type=int, default=30, help="per method, setting and grid")
    parser.add_argument("--budget", type=float, default=BUDGET, help="share of the grid's epochs")
    parser.add_argument("--space", default="ablation", help="whose scheduler is the default")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--screen", action="store_true", help="also other ASHA settings")
    parser.add_argument("--output", type=Path, default=RESULTS / "search_efficiency_summary.json")
    parser.add_argument("--table", type=Path, default=RESULTS / "search_efficiency.md")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where every replay is kept")
    parser.add_argument("--quick", action="store_true", help="3 replays, TPE + ASHA and random")


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


def grid_facts(grid: Mapping[str, Any], budget: float) -> dict[str, Any]:
    """Reference values, G, and random search's exact figures on one grid."""
    near = measures.near_optimal(grid)
    refs = measures.reference_values(grid)
    observed = measures.observed_values(grid)
    epochs = int(grid["grid"]["epochs"])
    total = len(refs) * epochs
    budget_epochs = max(1, math.floor(budget * total + 1e-9))
    value, hit = measures.random_value_and_hit(
        observed, refs, near.members, budget_epochs // epochs
    )
    curve = [
        measures.random_value_and_hit(observed, refs, near.members, b // epochs)[0]
        for b in range(total + 1)
    ]
    return {
        "seed": grid["grid"]["seed"],
        "configurations": len(refs),
        "epochs": total,
        "budget_epochs": budget_epochs,
        "best": near.best,
        "y_star": near.y_star,
        "delta": near.delta,
        "near_optimal": list(near.members),
        "bound": near.bound,
        "worst_reference": min(refs.values()),
        "observed_best": max(observed, key=lambda k: observed[k]),
        "observed_best_value": max(observed.values()),
        "seeds": {k: len(measures.final_values(grid, k)) for k in refs},
        "reference_values": dict(sorted(refs.items(), key=lambda kv: -kv[1])),
        "reproduced": grid.get("reproduced", []),
        "random": {
            "value": value,
            "hit_rate": hit,
            "ert": measures.random_ert(observed, near.members, epochs),
            "success": measures.random_first_hit(observed, near.members)[1],
            "curve": [None if v is None else round(v, 5) for v in curve],
        },
        "spearman": measures.spearman_by_epoch(grid),
    }


def run_method(
    grid: Mapping[str, Any],
    results: Mapping[str, Any],
    method: str,
    asha: AshaSetting,
    replays: int,
    budget_epochs: int,
) -> list[dict[str, Any]]:
    return [replay(grid, results, method, asha, seed, budget_epochs) for seed in range(replays)]


def method_measures(
    facts: Mapping[str, Any],
    observed: Mapping[str, float],
    refs: Mapping[str, float],
    at_budget: Sequence[Mapping[str, Any]],
    whole: Sequence[Mapping[str, Any]],
    salt: int,
) -> dict[str, Any]:
    """The measures of one method (or setting) on one grid, from its two sets of replays."""
    y_star, members = facts["y_star"], facts["near_optimal"]
    worst = facts["worst_reference"]
    denominator = y_star - facts["random"]["value"]

    def value(key: str | None) -> float:
        return refs[key] if key is not None else worst

    finals = [
        measures.incumbent_at(measures.incumbent_trace(r, observed), 10**9) for r in at_budget
    ]
    regrets = [(y_star - value(k)) / denominator for k in finals]
    hits = sum(k in members for k in finals)
    traces = [measures.incumbent_trace(r, observed) for r in whole]
    hit_epochs = [measures.first_hit(t, members) for t in traces]
    spent = [int(r["epochs"]) for r in whole]
    ert = measures.ert(hit_epochs, spent)
    random_ert = facts["random"]["ert"]
    curve = [
        y_star - sum(value(measures.incumbent_at(t, b)) for t in traces) / len(traces)
        for b in range(facts["epochs"] + 1)
    ]
    random_curve = [y_star - (v if v is not None else worst) for v in facts["random"]["curve"]]
    top = facts["observed_best_value"]

    def speedup_of(sample: Any) -> float:
        index = sample.astype(int)
        e = measures.ert([hit_epochs[i] for i in index], [spent[i] for i in index])
        return random_ert / e if e > 0 else math.inf

    return {
        "replays": len(finals),
        "R": sum(regrets) / len(regrets),
        "R_interval": measures.bootstrap_interval(regrets, np.mean, salt),
        "hit_rate": hits / len(finals),
        "hit_interval": measures.wilson_interval(hits, len(finals)),
        "ert": ert,
        "speedup": random_ert / ert if ert > 0 else math.inf,
        "speedup_interval": measures.bootstrap_interval(
            list(range(len(whole))), speedup_of, salt + 1
        ),
        "hits_whole_grid": sum(h is not None for h in hit_epochs),
        "mean_epochs_at_budget": sum(int(r["epochs"]) for r in at_budget) / len(at_budget),
        "mean_epochs_whole": sum(spent) / len(spent),
        "trials_at_budget": sum(len(r["trials"]) for r in at_budget) / len(at_budget),
        "within_1_point": sum(k is not None and observed[k] >= top - 0.01 for k in finals)
        / len(finals),
        "no_incumbent": sum(k is None for k in finals),
        "regret_curve": [round(v, 5) for v in curve],
        "area": sum(curve) / len(curve),
        "area_ratio": sum(curve) / sum(random_curve) if sum(random_curve) > 0 else math.nan,
        "incumbents": {k: finals.count(k) for k in sorted({str(k) for k in finals})},
        "near_optimal_fate": fates(at_budget, members),
    }


def fates(replays: Sequence[Mapping[str, Any]], members: Sequence[str]) -> dict:
    """Where each member of G ended in the replays, counted over them: never tried, or the
    epochs it trained (the grid's epochs: to the end)."""
    out: dict[str, dict[str, int]] = {}
    for key in members:
        counts: dict[str, int] = {}
        for run in replays:
            trained = [e for k, e in run["trials"] if k == key]
            label = "untried" if not trained else str(max(trained))
            counts[label] = counts.get(label, 0) + 1
        out[key] = dict(sorted(counts.items()))
    return out


def aggregate(per_grid: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One method's (or setting's) measures over the grids, and the goal's three tests."""
    rows = list(per_grid.values())
    speedups = [r["speedup"] for r in rows]
    geomean = (
        math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        if all(0 < s < math.inf for s in speedups)
        else (0.0 if any(s == 0 for s in speedups) else math.inf)
    )
    r_goal = sum(r["R"] <= 0.5 and r["R_interval"][1] < 1 for r in rows)
    hit = sum(r["hit_rate"] for r in rows) / len(rows)
    return {
        "mean_R": sum(r["R"] for r in rows) / len(rows),
        "grids_R_goal": r_goal,
        "mean_hit_rate": hit,
        "geomean_speedup": geomean,
        "mean_area_ratio": sum(r["area_ratio"] for r in rows) / len(rows),
        "mean_within_1_point": sum(r["within_1_point"] for r in rows) / len(rows),
        "goal": {
            "R": r_goal >= math.ceil(0.8 * len(rows)),
            "hit_rate": hit >= 0.75,
            "speedup": geomean >= 2.0,
        },
    }


def ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Rank 1 for the lowest value; ties share the mean of their ranks."""
    order = sorted(values, key=lambda k: values[k])
    out: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            out[k] = (i + j) / 2 + 1
        i = j + 1
    return out


def measure_setting(
    grid: Mapping[str, Any],
    facts: Mapping[str, Any],
    method: str,
    asha: AshaSetting,
    args: argparse.Namespace,
    salt: int,
) -> dict[str, Any]:
    """Replay one method with one ASHA setting on one grid (at the budget and to the whole
    grid's epochs), keep the replays under ``--runs``, and measure them."""
    results = grid_results(grid)
    at_budget = run_method(grid, results, method, asha, args.replays, facts["budget_epochs"])
    whole = run_method(grid, results, method, asha, args.replays, facts["epochs"])
    name = f"grid{facts['seed']}_{method}_{_slug(asha) if method.endswith('asha') else 'none'}"
    kept = {"method": method, "setting": asha.label(), "at_budget": at_budget, "whole": whole}
    path = args.runs / "replays" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept) + "\n")
    observed = measures.observed_values(grid)
    refs = measures.reference_values(grid)
    return method_measures(facts, observed, refs, at_budget, whole, salt)


def _slug(asha: AshaSetting) -> str:
    return (
        f"g{asha.grace_period}_rf{asha.reduction_factor:g}_b{asha.brackets}_"
        f"{asha.metric}_ns{asha.no_skill_epoch}"
    )


def load_grids(paths: Sequence[Path] | None) -> list[dict[str, Any]]:
    files = list(paths or sorted(RESULTS.glob("search_efficiency_grid*.json")))
    if not files:
        raise FileNotFoundError("no grid file (results/search_efficiency_grid*.json)")
    grids = [json.loads(p.read_text()) for p in files]
    return sorted(grids, key=lambda g: int(g["grid"]["seed"]))


def replay_all(args: argparse.Namespace) -> int:
    """Replay every method (and with ``--screen`` every ASHA setting) on every grid."""
    methods = [m for m in args.methods.split(",") if m]
    if args.quick:
        args.replays, methods = 3, ["tpe_asha", "random_full"]
    default = space_setting(args.space)
    screen = [s for s in SCREEN if s != default] if args.screen else []
    grids = load_grids(args.grids)
    started = time.time()
    summary: dict[str, Any] = {
        "benchmark": "search_efficiency",
        "budget": args.budget,
        "replays": args.replays,
        "default_setting": {"label": default.label(), **default.as_space()},
        "grids": {},
        "methods": {m: {"grids": {}} for m in methods},
        "screen": {s.label(): {"setting": s.as_space(), "grids": {}} for s in [default, *screen]},
    }
    for grid in grids:
        facts = grid_facts(grid, args.budget)
        label = str(facts["seed"])
        summary["grids"][label] = facts
        for index, method in enumerate(methods):
            row = measure_setting(grid, facts, method, default, args, salt=100 * index)
            summary["methods"][method]["grids"][label] = row
            print(f"grid {label}: {method} done [{time.time() - started:.0f} s]", file=sys.stderr)
        if "tpe_asha" in methods and args.screen:
            summary["screen"][default.label()]["grids"][label] = summary["methods"]["tpe_asha"][
                "grids"
            ][label]
        for index, setting in enumerate(screen):
            row = measure_setting(grid, facts, "tpe_asha", setting, args, salt=1000 + index)
            row.pop("regret_curve")  # in the replays under --runs; the area is kept
            summary["screen"][setting.label()]["grids"][label] = row
            print(
                f"grid {label}: {setting.label()} [{time.time() - started:.0f} s]", file=sys.stderr
            )
    finish_summary(summary)
    text = render(summary)
    print(text)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(markdown(summary))
    summary["machine"] = machine_description()
    summary["replay_seconds"] = time.time() - started
    write_result(args.output, summary)
    return 0


def finish_summary(summary: dict[str, Any]) -> None:
    """Aggregates over grids, the methods' ranks per grid, and the best screened setting."""
    methods = summary["methods"]
    for entry in methods.values():
        entry["overall"] = aggregate(entry["grids"])
    for grid in summary["grids"]:
        by_r = ranks({m: e["grids"][grid]["R"] for m, e in methods.items()})
        by_area = ranks({m: e["grids"][grid]["area"] for m, e in methods.items()})
        for method, entry in methods.items():
            entry["grids"][grid]["rank_R"] = by_r[method]
            entry["grids"][grid]["rank_area"] = by_area[method]
    for entry in methods.values():
        rows = entry["grids"].values()
        entry["overall"]["mean_rank_R"] = sum(r["rank_R"] for r in rows) / len(rows)
        entry["overall"]["mean_rank_area"] = sum(r["rank_area"] for r in rows) / len(rows)
    screened = {k: v for k, v in summary["screen"].items() if v["grids"]}
    for entry in screened.values():
        entry["overall"] = aggregate(entry["grids"])
    summary["screen"] = screened
    if len(screened) > 1:
        summary["best_setting"] = min(screened, key=lambda k: screened[k]["overall"]["mean_R"])


# ---- tables -----------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == math.inf:
        return "inf"
    return f"{value:.{digits}f}"


def _ci(low: float, high: float, digits: int = 2) -> str:
    return f"[{_f(low, digits)}, {_f(high, digits)}]"


def tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of every table the benchmark prints."""
    grids = summary["grids"]
    budget = f"{summary['budget']:.0%}"
    out = []
    out.append(
        (
            "Grids: reference values (mean final val F1 over seeds), tolerance and near-optimal set",
            [
                "grid",
                "y* (config)",
                "delta",
                "G",
                "seed-0 best (value)",
                "random: E[v]",
                "hit",
                "ERT",
            ],
            [
                [
                    g,
                    f"{_f(f['y_star'], 3)} ({f['best']}, {f['seeds'][f['best']]} seeds)",
                    _f(f["delta"], 3),
                    ", ".join(f["near_optimal"]),
                    f"{f['observed_best']} ({_f(f['observed_best_value'], 3)})",
                    _f(f["random"]["value"], 3),
                    _f(f["random"]["hit_rate"]),
                    _f(f["random"]["ert"], 1),
                ]
                for g, f in grids.items()
            ],
        )
    )
    rows = []
    for method, entry in summary["methods"].items():
        for g, m in entry["grids"].items():
            rows.append(
                [
                    method,
                    g,
                    f"{_f(m['R'])} {_ci(*m['R_interval'])}",
                    f"{_f(m['hit_rate'])} {_ci(*m['hit_interval'])}",
                    _f(grids[g]["random"]["hit_rate"]),
                    f"{_f(m['speedup'])} {_ci(*m['speedup_interval'])}",
                    _f(m["area_ratio"]),
                    _f(m["rank_R"], 1),
                    _f(m["within_1_point"]),
                    _f(m["trials_at_budget"], 1),
                ]
            )
    out.append(
        (
            f"Per grid ({summary['replays']} replays each; R, hit rate at {budget} of the grid's "
            "epochs; speed-up and regret-curve area over all of them, against random search)",
            ["method", "grid", "R [95%]", "hit [95%]", "random hit", "speed-up [95%]",
             "area/random", "rank", "<=1pt", "trials"],
            rows,
        )
    )  # fmt: skip
    out.append(
        (
            "Over the grids (goal for TPE + ASHA: R <= 0.5 with its interval below 1 on 4 of 5 "
            "grids, hit rate >= 0.75, geometric-mean speed-up >= 2)",
            ["method", "mean R", "grids R goal", "mean hit", "speed-up (geo)", "area/random",
             "rank (R)", "rank (area)", "<=1pt"],
            [
                [
                    method,
                    _f(o["mean_R"]),
                    f"{o['grids_R_goal']}/{len(entry['grids'])}",
                    _f(o["mean_hit_rate"]),
                    _f(o["geomean_speedup"]),
                    _f(o["mean_area_ratio"]),
                    _f(o["mean_rank_R"], 1),
                    _f(o["mean_rank_area"], 1),
                    _f(o["mean_within_1_point"]),
                ]
                for method, entry in summary["methods"].items()
                for o in [entry["overall"]]
            ],
        )
    )  # fmt: skip
    if len(summary["screen"]) > 1:
        names = list(grids)
        out.append(
            (
                f"TPE + ASHA settings (R per grid at {budget}; best by mean R: "
                f"{summary.get('best_setting')})",
                ["setting", *[f"R grid {g}" for g in names], "mean R", "R goal", "mean hit",
                 "speed-up", "area/random"],
                [
                    [
                        label,
                        *[_f(e["grids"][g]["R"]) for g in names],
                        _f(e["overall"]["mean_R"]),
                        f"{e['overall']['grids_R_goal']}/{len(names)}",
                        _f(e["overall"]["mean_hit_rate"]),
                        _f(e["overall"]["geomean_speedup"]),
                        _f(e["overall"]["mean_area_ratio"]),
                    ]
                    for label, e in sorted(
                        summary["screen"].items(), key=lambda kv: kv[1]["overall"]["mean_R"]
                    )
                ],
            )
        )  # fmt: skip
    epochs = len(next(iter(grids.values()))["spearman"])
    out.append(
        (
            "Spearman's rho over the configurations: val F1 (val loss) at each epoch vs the last "
            "epoch's val F1, under the replayed seed",
            ["grid", *[f"epoch {e}" for e in range(1, epochs)]],
            [
                [
                    g,
                    *[
                        f"{_f(f['spearman'][str(e)]['f1_vs_last'])} "
                        f"({_f(f['spearman'][str(e)]['loss_vs_last'])})"
                        for e in range(1, epochs)
                    ],
                ]
                for g, f in grids.items()
            ],
        )
    )
    return out


def render(summary: Mapping[str, Any]) -> str:
    parts = [f"{title}\n{format_table(headers, rows)}" for title, headers, rows in tables(summary)]
    return "\n\n".join(parts) + "\n" + verdict(summary)


def verdict(summary: Mapping[str, Any]) -> str:
    entry = summary["methods"].get("tpe_asha")
    if entry is None:
        return ""
    goal = entry["overall"]["goal"]
    met = ", ".join(f"{k} {'met' if v else 'missed'}" for k, v in goal.items())
    return f"goal, TPE + ASHA ({summary['default_setting']['label']}): {met}"


def markdown(summary: Mapping[str, Any]) -> str:
    """The tables as Markdown (``results/search_efficiency.md``, linked from the README)."""
    lines = [
        "# Search efficiency on the phantom grids",
        "",
        "Written by `python scripts/bench/search_efficiency.py replay`; how to read it: "
        "`scripts/bench/README.md`. TPE + ASHA and random + ASHA with "
        f"{summary['default_setting']['label']}.",
    ]
    for title, headers, rows in tables(summary):
        lines += ["", f"**{title}**", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join(" --- " for _ in headers) + "|")
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", verdict(summary), ""]
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_args(commands.add_parser("train", help="train configurations under seeds"))
    pack_parser = commands.add_parser("pack", help="fold a grid's runs into its file")
    pack_parser.add_argument("--grid-seed", type=int, required=True)
    pack_parser.add_argument("--runs", type=Path, default=RUNS)
    pack_parser.add_argument(
        "--output", type=Path, help="default: results/search_efficiency_grid<SEED>.json"
    )
    add_replay_args(commands.add_parser("replay", help="replay searches and measure them"))
    args = parser.parse_args(argv)
    if args.command == "replay":
        unknown = [m for m in args.methods.split(",") if m and m not in METHODS]
        if unknown:
            parser.error(f"--methods: {', '.join(unknown)}; allowed: {', '.join(METHODS)}")
        if args.replays < 1:
            parser.error(f"--replays: {args.replays}; must be 1 or more")
        if not 0 < args.budget <= 1:
            parser.error(f"--budget: {args.budget}; must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "train":
        return train(args)
    if args.command == "pack":
        return pack(args)
    return replay_all(args)


if __name__ == "__main__":
    raise SystemExit(main())

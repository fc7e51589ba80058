"""Benchmark: how close does a search get to the full grid's best, for how many epochs?

Two phases, so that every method is compared on exactly the same learning curves:

1. The grid: every configuration of a learning rate x batch size x optimizer space is trained
   to the last epoch with the real trainable on the phantom (a real ``cxr_tune.search`` run,
   ``grid`` algorithm, no early stopping). Its per-epoch validation curves form a table.
2. The searches, replayed on that table in real Tune runs with cxr_tune's own searcher and
   scheduler (a trial "trains" by reading its configuration's curve, epoch by epoch, so ASHA's
   stops and the Optuna study behave exactly as in a search, at no training cost):
   TPE + ASHA, random + ASHA, random and TPE without early stopping, over several seeds
   (``--methods`` picks some).

Reported per method: the best validation metric among trials that trained to the end (within
the epoch budget below), the epochs consumed, both against the grid's best and its epoch count,
and the best-so-far metric as a function of epochs consumed. The target is within 1 point (0.01) of the grid's best with
at most 30% of its epochs. Also reported: how well each early epoch's validation signals (F1,
loss, accuracy) rank the configurations by their final F1, which bounds what any early stopping
can do on this grid; ``--asha-metric`` replays ASHA comparing another signal at its rungs, and
``--no-skill-epoch N`` adds ASHA's no-skill check (``scheduler.no_skill_epoch``): a trial whose
validation and training losses are not below those of predicting the class frequencies is
stopped at epoch N. Grids record both losses; tables written before they recorded the training
loss are judged on the validation loss alone (the report's ``train_loss_recorded``).

The default grid (AlexNet, 5 lr x 2 batch sizes x Adam/SGD, 6 epochs, cosine learning-rate
schedule, 1800-image phantom at 64 px, so 271 validation images) takes ~27 min on 2 cores.

    python scripts/bench/search_efficiency.py                    # grid + replays
    python scripts/bench/search_efficiency.py --grid-seed 1 --output /tmp/seed1.json  # another grid
    python scripts/bench/search_efficiency.py --table results/search_efficiency_table.json
    python scripts/bench/search_efficiency.py --quick --output /tmp/s.json   # tiny, ~2 minutes

``--budget`` (share of the grid's epochs, default 0.30) is every replayed search's epoch budget
(``search.budget_epochs``): a search starts trials while epochs are left and stops the last ones
where they are when it is spent, so no run trains more than the budget, and what is compared is
the best each method finds within it. Random search without early stopping therefore trains
whole trials only while they fit.

A replay is not exactly repeatable: two trials run at once, and the order in which Tune hands
their results to ASHA follows their timing, so the same seed can stop different trials in two
runs. Compare methods over many seeds (``--seeds``), not run against run.

The grid's best is one training run per configuration, and the validation split is small, so
which configuration is "the best" can owe something to the initialisation seed. ``--repeats N``
trains every configuration N times with the seeds grid-seed, grid-seed + 1, ... on the same
phantom and split (the replays read the first) and reports each configuration's final metric
under every seed and the grid's best under each (``seed_spread``); ``--seeds 0`` trains the grid
and replays nothing:

    python scripts/bench/search_efficiency.py --grid-seed 1 --optimizers adam --repeats 2 \
        --seeds 0 --output /tmp/seed1_adam_repeats2.json

The grid's curves are also written beside the JSON (``<name>_table.json``), so the replays can be
run again (``--table``) without training the grid again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import RESULTS, machine_description, write_result  # noqa: E402

METRIC = "val_macro_f1"
# cxr_tune.metrics' NO_SKILL_KEY and TRAIN_NO_SKILL_KEY, kept import-free here
NO_SKILL_KEYS = ("val_loss_no_skill", "train_loss_no_skill")
SIGNALS = ("val_macro_f1", "val_loss", "val_accuracy")
TARGET_GAP, TARGET_SHARE = 0.01, 0.30
TARGET = "mean best within 0.01 of the grid's best with at most 30% of its epochs"
METHODS = ("tpe_asha", "random_asha", "random_full", "tpe_full")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--phantom-images", type=int, default=1800)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--lr-schedule", default="cosine", choices=("constant", "cosine"), help="of every trial"
    )
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--optimizers", default="adam,sgd")
    parser.add_argument(
        "--grid-seed",
        type=int,
        default=0,
        help="seeds the phantom, its split and the grid's trials",
    )
    parser.add_argument(
        "--seeds", type=int, default=10, help="replays per method (0: train the grid only)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="train every configuration this many times, with initialisation seeds grid-seed, "
        "grid-seed+1, ... on the same phantom and split (replays read the first)",
    )
    parser.add_argument("--budget", type=float, default=0.30, help="share of the grid's epochs")
    parser.add_argument(
        "--grace-period", type=int, default=1, help="ASHA's first rung (ablation.yaml: 2)"
    )
    parser.add_argument(
        "--reduction-factor", type=int, default=3, help="ASHA keeps 1/N of the trials at a rung"
    )
    parser.add_argument(
        "--brackets",
        type=int,
        default=1,
        help="ASHA's brackets (2+: some trials get a later first rung, a hedge for slow starters)",
    )
    parser.add_argument(
        "--asha-metric",
        default=METRIC,
        choices=SIGNALS,
        help=f"what ASHA compares at its rungs (scheduler.metric; the search optimises {METRIC})",
    )
    parser.add_argument(
        "--no-skill-epoch",
        type=int,
        default=0,
        help="ASHA also stops, at this epoch, a trial that has learned nothing: validation and "
        "training losses not 1%% below their no-skill losses (scheduler.no_skill_epoch; 0: off)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of: {', '.join(METHODS)}",
    )
    parser.add_argument("--table", type=Path, help="reuse a grid table written earlier")
    parser.add_argument("--output", type=Path, default=RESULTS / "search_efficiency.json")
    parser.add_argument("--quick", action="store_true", help="tiny grid and replays (smoke test)")
    args = parser.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    if not methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods: {args.methods!r}; allowed: {', '.join(METHODS)}")
    args.methods = methods
    if args.reduction_factor < 2:
        parser.error(f"--reduction-factor: {args.reduction_factor}; must be 2 or more")
    if args.seeds < 0:
        parser.error(f"--seeds: {args.seeds}; must be 0 (train the grid only) or more")
    if args.repeats < 1:
        parser.error(f"--repeats: {args.repeats}; must be 1 or more")
    if args.no_skill_epoch < 0:
        parser.error(f"--no-skill-epoch: {args.no_skill_epoch}; must be 0 (off) or more")
    if args.quick:
        args.epochs, args.phantom_images, args.lrs = 2, 96, "1e-3,1e-2"
        args.batch_sizes, args.optimizers, args.seeds = "16", "adam,sgd", 2
    return args


def grid_space(args: argparse.Namespace, folder: Path) -> Path:
    """The benchmark's space as a YAML file (grid over choices, every trial to the end)."""
    import yaml

    space = {
        "name": "efficiency-grid",
        "cells": {"model": [args.model]},
        "params": _params(args),
        "fixed": {
            "epochs": args.epochs,
            "image_size": args.image_size,
            "momentum": 0.9,
            "lr_schedule": args.lr_schedule,
        },
        "search": {
            "algorithm": "grid",
            # Repeats of a grid point differ by their trial seed only: seed, seed + 1, ...
            "num_samples": args.repeats,
            "max_concurrent": 2,
            "seed": args.grid_seed,
        },
        "scheduler": {"name": "none"},
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "lr": {"choice": [float(v) for v in args.lrs.split(",")]},
        "batch_size": {"choice": [int(v) for v in args.batch_sizes.split(",")]},
        "optimizer": {"choice": args.optimizers.split(",")},
    }


def key_of(config: dict[str, Any]) -> str:
    return f"{float(config['lr']):g}|{int(config['batch_size'])}|{config['optimizer']}"


def run_grid(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Phase 1: train the full grid for real; return the table of curves."""
    import dataclasses

    from cxr_tune.config import PROFILES, DataSource
    from cxr_tune.search.plan import build_plan
    from cxr_tune.search.runner import SearchRequest, run_search
    from cxr_tune.spaces import load_space
    from cxr_tune.storage import Storage

    folder = work / "grid"
    folder.mkdir()
    profile = dataclasses.replace(
        PROFILES["gpu"],
        gpus_per_trial={},
        cpus_per_trial=1.0,
        phantom_images=args.phantom_images,
        eval_seeds=1,
    )
    plan = build_plan(load_space(str(grid_space(args, folder))), profile, ("phantom",))
    request = SearchRequest(
        plan=plan,
        sources=(DataSource("phantom", None),),
        dataset_names=("phantom",),
        dataset_keys=("phantom",),
        storage=Storage.parse(str(folder)),
        name="grid",
        evaluate=False,
    )
    started = time.time()
    run_search(request, echo=lambda line: print(line, flush=True))
    wall = time.time() - started
    from cxr_tune.experiment import load_experiment

    experiment = load_experiment(folder / "grid")
    curves, signals, seconds = {}, {}, []
    repeats: dict[str, dict[str, list[float]]] = {}
    for trial in experiment.trials:
        rows = [r for r in trial.results if r.get("status") == "ok"]
        key, seed = key_of(trial.config), int(trial.config.get("seed", args.grid_seed))
        curve = [float(r[METRIC]) for r in rows]
        repeats.setdefault(key, {})[str(seed)] = curve
        seconds += [float(r.get("epoch_time_s", 0.0)) for r in rows]
        if seed != args.grid_seed:
            continue
        # The first repeat is the grid the replays read.
        curves[key] = curve
        # Every per-epoch validation signal, so replays can also early-stop on another one,
        # and the training loss, which the no-skill check reads too.
        signals[key] = {
            name: [float(r[name]) for r in rows]
            for name in (*SIGNALS, "train_loss")
            if all(name in r for r in rows)
        }
    first = experiment.trials[0].results[0] if experiment.trials else {}
    return {
        "space": _params(args),
        "model": args.model,
        "epochs": args.epochs,
        "phantom_images": args.phantom_images,
        "image_size": args.image_size,
        "lr_schedule": args.lr_schedule,
        "grid_seed": args.grid_seed,
        "curves": curves,
        "signals": signals,
        # Per configuration, the metric's curve of every initialisation seed.
        **({"repeats": repeats} if args.repeats > 1 else {}),
        # Every trial of the grid reads the same split, so one value of each.
        **{key: first.get(key) for key in NO_SKILL_KEYS},
        "mean_epoch_seconds": sum(seconds) / max(len(seconds), 1),
        "grid_wall_seconds": wall,
    }


def no_skill_of_phantom(table: dict[str, Any], work: Path) -> dict[str, float]:
    """The no-skill losses of a table's phantom splits, for tables written before grids
    recorded them: the phantom and its split are a function of the grid's seed."""
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.metrics import no_skill_losses

    options = DataOptions(
        image_size=int(table["image_size"]),
        seed=int(table.get("grid_seed", 0)),
        cache_dir=work / "cache",
        phantom_images=int(table["phantom_images"]),
    )
    return no_skill_losses(load_dataset(DataSource("phantom", None), options))


def signals_of(table: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per configuration, each validation signal's curve (tables written before signals were
    kept hold the metric only)."""
    return table.get("signals") or {key: {METRIC: c} for key, c in table["curves"].items()}


def replay(
    table: dict[str, Any],
    method: str,
    seed: int,
    budget_epochs: int,
    work: Path,
    asha: dict[str, Any],
) -> dict[str, Any]:
    """Phase 2: one real Tune run of a method whose trials read their curve from the table.

    ``asha`` is the space's ``scheduler`` mapping (grace period, reduction factor, brackets,
    the metric its rungs compare)."""
    from ray import tune

    from cxr_tune.config import PROFILES
    from cxr_tune.search.plan import Overrides, build_plan
    from cxr_tune.search.scheduler import scheduler_for
    from cxr_tune.search.searcher import CellSearcher
    from cxr_tune.spaces import parse_space

    epochs = int(table["epochs"])
    signals = signals_of(table)
    no_skill = {key: float(table[key]) for key in NO_SKILL_KEYS}

    def lookup_trial(config: dict[str, Any]) -> None:
        trial = signals[key_of(config)]
        for index in range(len(trial[METRIC][:epochs])):
            values = {name: curve[index] for name, curve in trial.items()}
            # wall: when the epoch ended, to order trials by their end (Tune's timestamp is
            # in whole seconds, and replayed epochs take milliseconds).
            tune.report(
                {
                    "epoch": index + 1,
                    "status": "ok",
                    "wall": time.time(),
                    **no_skill,
                    **values,
                }
            )

    algorithm = "optuna" if method.startswith("tpe") else "random"
    space = parse_space(
        {
            "cells": {"model": [table["model"]]},
            "params": table["space"],
            "fixed": {"epochs": epochs},
            # As many trials as the space has configurations: the budget ends the search.
            "search": {
                "algorithm": algorithm,
                "num_samples": len(table["curves"]),
                "seed": seed,
                "budget_epochs": budget_epochs,
            },
            # The plan states the scheduler that runs: TPE sizes its start-up to the trials
            # the budget buys at that scheduler's cost per trial.
            "scheduler": asha if method.endswith("asha") else {"name": "none"},
        },
        source="replay.yaml",
    )
    plan = build_plan(space, PROFILES["gpu"], ("phantom",), Overrides(seed=seed, max_concurrent=2))
    folder = Path(tempfile.mkdtemp(prefix="replay_", dir=work))
    results = tune.Tuner(
        tune.with_resources(lookup_trial, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=CellSearcher(plan, str(folder / "optuna.db")),
            scheduler=scheduler_for(plan),
            num_samples=plan.total_trials,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=method, storage_path=str(folder), verbose=0),
    ).fit()
    trials = []
    for result in results:
        history = result.metrics_dataframe.sort_values("epoch")
        trials.append(
            {
                "config": key_of(result.config),
                "epochs": int(history["epoch"].max()),
                "final": float(history[METRIC].iloc[-1]),
                "end": float(history["wall"].iloc[-1]),
            }
        )
    return summarise_run(trials, epochs)


def summarise_run(trials: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Best fully trained value, epochs consumed, and the best-so-far curve (in finish order)."""
    used, best, curve, order = 0, -math.inf, [], []
    for trial in sorted(trials, key=lambda t: t["end"]):
        used += trial["epochs"]
        if trial["epochs"] == epochs:
            best = max(best, trial["final"])
        curve.append([used, best if math.isfinite(best) else None])
        order.append([trial["config"], trial["epochs"]])
    return {
        "best": best if math.isfinite(best) else None,
        "epochs": used,
        "curve": curve,
        "trials": len(trials),
        "order": order,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import logging

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each replayed trial ends in milliseconds, so Tune snapshots often; that is expected here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    work = Path(tempfile.mkdtemp(prefix="cxr_tune_efficiency_"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    finished = False
    try:
        table = json.loads(args.table.read_text()) if args.table else run_grid(args, work)
        if not args.table:
            write_result(args.output.with_name(f"{args.output.stem}_table.json"), table)
        if any(table.get(key) is None for key in NO_SKILL_KEYS):
            table.update(no_skill_of_phantom(table, work))
        grid_epochs = len(table["curves"]) * int(table["epochs"])
        grid_best = max(c[-1] for c in table["curves"].values() if len(c) == table["epochs"])
        budget_epochs = max(1, math.floor(args.budget * grid_epochs + 1e-9))
        asha = {
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
            "brackets": args.brackets,
            "metric": args.asha_metric,
            "no_skill_epoch": args.no_skill_epoch,
        }
        # --seeds 0: the grid alone, no replays.
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods if args.seeds}
        for seed in range(args.seeds):
            for method in args.methods:
                runs[method].append(replay(table, method, seed, budget_epochs, work, asha))
        finished = True
    finally:
        ray.shutdown()
        if finished:
            # The table and the report are all that is kept; the grid's checkpoints are
            # gigabytes.
            shutil.rmtree(work, ignore_errors=True)
        else:
            # A run that stopped part-way keeps what it computed (the grid's trial results
            # and checkpoints): an hour of training is not thrown away with a traceback.
            print(f"stopped before the end: its work is kept in {work}", file=sys.stderr)
    report = build_report(table, runs, grid_best, grid_epochs, budget_epochs, args)
    print_table(report)
    write_result(args.output, report)
    return 0


def build_report(table, runs, grid_best, grid_epochs, budget_epochs, args) -> dict[str, Any]:
    methods = {}
    for method, method_runs in runs.items():
        bests = [r["best"] for r in method_runs if r["best"] is not None]
        epochs = [r["epochs"] for r in method_runs]
        within = [
            r["best"] is not None and r["best"] >= grid_best - TARGET_GAP for r in method_runs
        ]
        mean_best = sum(bests) / len(bests) if bests else None
        share = sum(epochs) / len(epochs) / grid_epochs
        methods[method] = {
            "trials_per_run": sum(r["trials"] for r in method_runs) / len(method_runs),
            "mean_best": mean_best,
            "min_best": min(bests) if bests else None,
            "mean_epochs": sum(epochs) / len(epochs),
            "epoch_share": share,
            # On average over the seeds: within a point of the grid's best, within the budget.
            "target_met": mean_best is not None
            and mean_best >= grid_best - TARGET_GAP
            and share <= TARGET_SHARE,
            "runs_within_1_point": sum(within),
            # Per seed: within a point and within the budget in the same run.
            "runs_meeting_target": sum(
                ok and r["epochs"] <= TARGET_SHARE * grid_epochs
                for ok, r in zip(within, method_runs)
            ),
            "runs": len(method_runs),
            "curves": [r["curve"] for r in method_runs],
            # Per run, in the order they ended: [configuration, epochs trained].
            "trials": [r["order"] for r in method_runs],
        }
    return {
        "benchmark": "search_efficiency",
        "grid": {
            "configurations": len(table["curves"]),
            "epochs": grid_epochs,
            "best": grid_best,
            "wall_seconds": table.get("grid_wall_seconds"),
            "model": table["model"],
            "phantom_images": table["phantom_images"],
            "image_size": table["image_size"],
            "lr_schedule": table.get("lr_schedule", "constant"),
            "seed": table.get("grid_seed", 0),
            **{key: table.get(key) for key in NO_SKILL_KEYS},
            # Tables written before grids kept the training loss: their replays judge the
            # no-skill check on the validation loss alone.
            "train_loss_recorded": all("train_loss" in s for s in signals_of(table).values()),
        },
        "early_signal": early_signal(table),
        "seed_spread": seed_spread(table),
        "target": TARGET,
        "target_met": methods["tpe_asha"]["target_met"] if "tpe_asha" in methods else None,
        "methods": methods,
        "params": {
            "seeds": args.seeds,
            "budget": args.budget,
            "budget_epochs": budget_epochs,
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
            "brackets": args.brackets,
            "asha_metric": args.asha_metric,
            "no_skill_epoch": args.no_skill_epoch,
            "quick": args.quick,
        },
        "machine": machine_description(),
    }


def early_signal(table: dict[str, Any]) -> dict[str, Any]:
    """How well each epoch's signals predict the final metric on the grid: Spearman's rho over
    the configurations, and the rank (1 = first) of the grid's best configuration."""
    from scipy.stats import spearmanr

    from cxr_tune.constants import METRIC_MODES

    signals = signals_of(table)
    keys = [k for k, c in table["curves"].items() if len(c) == table["epochs"]]
    final = [table["curves"][k][-1] for k in keys]
    best = keys[final.index(max(final))]
    out: dict[str, Any] = {"best_configuration": best, "epochs": {}}
    for epoch in range(1, int(table["epochs"])):
        row = {}
        for name in (n for n in SIGNALS if n in signals[best]):
            sign = -1.0 if METRIC_MODES[name] == "min" else 1.0
            values = [sign * signals[k][name][epoch - 1] for k in keys]
            rho = float(spearmanr(values, final)[0])
            rank = 1 + sum(v > values[keys.index(best)] for v in values)
            row[name] = {"spearman_rho": rho, "rank_of_best": rank}
        out["epochs"][str(epoch)] = row
    return out


def seed_spread(table: dict[str, Any]) -> dict[str, Any] | None:
    """How much a configuration's final metric owes to its initialisation seed (grids trained
    with ``--repeats``): each configuration's final value under every seed, its mean and
    spread (largest - smallest), and the grid's best configuration under each seed and by the
    mean. ``None`` for a grid trained once."""
    repeats = table.get("repeats")
    if not repeats:
        return None
    epochs = int(table["epochs"])
    finals = {
        key: {seed: curve[-1] for seed, curve in by_seed.items() if len(curve) == epochs}
        for key, by_seed in repeats.items()
    }
    seeds = sorted({seed for by_seed in finals.values() for seed in by_seed}, key=int)
    # Only configurations trained to the end under every seed are compared.
    finals = {key: by_seed for key, by_seed in finals.items() if len(by_seed) == len(seeds)}
    if not finals:
        return None
    rows = {
        key: {
            "finals": {seed: by_seed[seed] for seed in seeds},
            "mean": sum(by_seed.values()) / len(seeds),
            "spread": max(by_seed.values()) - min(by_seed.values()),
        }
        for key, by_seed in finals.items()
    }
    order = sorted(rows, key=lambda key: rows[key]["mean"], reverse=True)
    best_by_seed = {}
    for seed in seeds:
        key = max(rows, key=lambda k: rows[k]["finals"][seed])
        best_by_seed[seed] = {"configuration": key, "value": rows[key]["finals"][seed]}
    return {
        "seeds": seeds,
        "configurations": {key: rows[key] for key in order},
        "best_by_seed": best_by_seed,
        "best_by_mean": {"configuration": order[0], "value": rows[order[0]]["mean"]},
        "best_depends_on_seed": len({b["configuration"] for b in best_by_seed.values()}) > 1,
    }


def print_seed_spread(spread: dict[str, Any], top: int = 8) -> None:
    seeds = spread["seeds"]
    print(f"\ninitialisation seeds {', '.join(seeds)} on one phantom and split: final {METRIC}")
    header = "".join(f"{'seed ' + s:>9}" for s in seeds)
    print(f"{'configuration':<16}{header}{'mean':>8}{'spread':>8}")
    for key, row in list(spread["configurations"].items())[:top]:
        values = "".join(f"{row['finals'][s]:>9.4f}" for s in seeds)
        print(f"{key:<16}{values}{row['mean']:>8.4f}{row['spread']:>8.4f}")
    bests = "; ".join(
        f"seed {s}: {b['configuration']} ({b['value']:.4f})"
        for s, b in spread["best_by_seed"].items()
    )
    mean = spread["best_by_mean"]
    print(
        f"grid's best by seed: {bests}; by the mean: {mean['configuration']} ({mean['value']:.4f})"
    )


def print_table(report: dict[str, Any]) -> None:
    grid = report["grid"]
    print(
        f"\ngrid: {grid['configurations']} configurations x {grid['epochs'] // grid['configurations']} "
        f"epochs = {grid['epochs']} epochs, best {METRIC} {grid['best']:.4f}"
    )
    print(
        f"every search: at most {report['params']['budget_epochs']} epochs "
        f"({report['params']['budget']:.0%} of the grid's)"
    )
    if report["methods"]:
        print_methods(report)
    signal = report["early_signal"]
    print(f"\nearly epochs vs the final {METRIC} (rho; rank of the grid's best configuration)")
    for epoch, row in signal["epochs"].items():
        cells = "  ".join(
            f"{n} {v['spearman_rho']:+.2f} (#{v['rank_of_best']})" for n, v in row.items()
        )
        print(f"  epoch {epoch}: {cells}")
    if report.get("seed_spread"):
        print_seed_spread(report["seed_spread"])
    if report["target_met"] is None:
        return
    verdict = "met" if report["target_met"] else "not met"
    print(f"target (TPE + ASHA): {report['target']}: {verdict}")


def print_methods(report: dict[str, Any]) -> None:
    grid = report["grid"]
    print(
        f"{'method':<14}{'trials':>7}{'mean best':>10}{'worst best':>11}{'gap':>8}{'epochs':>8}"
        f"{'share':>7}{'<=1pt':>8}{'both':>8}"
    )
    for name, m in report["methods"].items():
        gap = grid["best"] - m["mean_best"] if m["mean_best"] is not None else math.nan
        print(
            f"{name:<14}{m['trials_per_run']:>7.1f}{_f(m['mean_best']):>10}{_f(m['min_best']):>11}"
            f"{gap:>8.4f}{m['mean_epochs']:>8.1f}{m['epoch_share']:>7.0%}"
            f"{m['runs_within_1_point']:>5}/{m['runs']}{m['runs_meeting_target']:>5}/{m['runs']}"
        )
    print("both: runs within 1 point of the grid's best with at most 30% of its epochs")


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: what Ray Tune adds to short real trials, with and without actor reuse.

N trials of the real ``cxr_tune.trainable.train_trial`` (the built-in phantom at the ``cpu``
profile's size, AlexNet, one epoch each by default) run in a Tune experiment built the way
``cxr_tune.search`` builds it: ``tune.with_resources`` with a per-config placement-group
callable around ``tune.with_parameters(train_trial, data=...)`` (the dataset goes into the
object store once), a checkpoint every epoch, checkpoint retention and TensorBoard callbacks.
The search algorithm is Tune's basic generator (a learning-rate grid), so the figures are the
cost of running trials, not of choosing them.

Measured per mode, in the same run:

- wall: seconds of ``Tuner.fit()``;
- work: the sum of the trials' ``epoch_time_s`` (training and validation, as each trial
  reports it);
- ratio: wall / (work / concurrency), 1.0 if Ray added nothing (target <= 1.5 here);
- where the rest went: inside the trial actors (model set-up, checkpoints) against outside
  them (actor start-up, scheduling, result handling, idle slots);
- how many worker processes ran the trials (reuse: one per concurrent slot), and whether
  every trial read its arrays as read-only views of the object store (zero-copy);
- the size and save time of a checkpoint: model + Adam state after every epoch but the last,
  the model alone after the last (nothing resumes a finished trial).

Modes: ``reuse`` (``reuse_actors=True``, what the search uses) and ``fresh``
(``reuse_actors=False``: a new worker, and a fresh import of PyTorch, per trial).

    python scripts/bench/ray_overhead.py                  # 16 trials per mode, ~3 minutes here
    python scripts/bench/ray_overhead.py --quick --output /tmp/r.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import RESULTS, format_table, load_average, machine_description, write_result  # noqa: E402

MODES = ("reuse", "fresh")
RATIO_TARGET = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=16, help="trials per mode")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--images", type=int, default=640, help="phantom images (cpu profile)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray CPUs")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--quick", action="store_true", help="tiny run in seconds (smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS / "ray_overhead.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.images, args.batch_size = 3, 64, 16
    return args


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    """The phantom, split, without its test split (as a search hands it to trials)."""
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset

    options = DataOptions(image_size=args.image_size, phantom_images=args.images, seed=0)
    arrays = load_dataset(DataSource("phantom", None), options)
    return {"phantom": arrays.for_search()}


def probed_trial(config: dict[str, Any], data: Mapping[str, Any]) -> None:
    """``train_trial``, after noting which process runs it and whether its arrays are the
    object store's read-only buffers (zero-copy) rather than a private copy."""
    from cxr_tune.trainable import train_trial

    arrays = [s.images for d in data.values() for s in d.splits.values()]
    probe = {"pid": os.getpid(), "zero_copy": not any(a.flags.writeable for a in arrays)}
    folder = Path(config["probe_dir"])
    (folder / f"{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(probe))
    train_trial(config, data)


def build_tuner(args: argparse.Namespace, data: dict[str, Any], reuse: bool, folder: Path):
    """A Tuner shaped like ``cxr_tune.search.runner.build_tuner``, on a learning-rate grid."""
    from ray import tune

    from cxr_tune.search.retention import CheckpointRetention
    from cxr_tune.search.tensorboard import TrialTensorBoard

    resources = {"CPU": args.cpus_per_trial, "GPU": 0.0}
    trainable = tune.with_resources(
        tune.with_parameters(probed_trial, data=data),
        resources=lambda config: tune.PlacementGroupFactory([resources]),
    )
    lrs = [float(v) for v in np.geomspace(1e-4, 1e-3, args.trials)]
    probe_dir = folder / "probes"
    probe_dir.mkdir(parents=True, exist_ok=True)
    param_space = {
        "dataset": "phantom",
        "model": args.model,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "optimizer": "adam",
        "lr": tune.grid_search(lrs),
        "probe_dir": str(probe_dir),
    }
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency(args), reuse_actors=reuse),
        run_config=tune.RunConfig(
            name="reuse" if reuse else "fresh",
            storage_path=str(folder),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # as the search keeps
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[TrialTensorBoard(), CheckpointRetention()],
            verbose=0,
        ),
    )


def concurrency(args: argparse.Namespace) -> int:
    return max(1, min(args.trials, int(args.cpus // args.cpus_per_trial)))


def run_mode(
    args: argparse.Namespace, data: dict[str, Any], mode: str, root: Path
) -> dict[str, Any]:
    """Run one experiment and measure where its wall time went."""
    folder = root / mode
    tuner = build_tuner(args, data, reuse=mode == "reuse", folder=folder)
    load = load_average()
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    histories = [r.metrics_dataframe for r in grid]
    errors = sum(1 for r in grid if r.error is not None)
    probes = [json.loads(p.read_text()) for p in (folder / "probes").glob("*.json")]
    return summarise(args, mode, wall, histories, errors, probes, load)


def summarise(
    args: argparse.Namespace,
    mode: str,
    wall: float,
    histories: list[Any],
    errors: int,
    probes: list[dict[str, Any]],
    load: list[float] | None,
) -> dict[str, Any]:
    """Wall against work, and the overhead split into inside and outside the trial actors."""
    slots = concurrency(args)
    work = float(sum(h["epoch_time_s"].sum() for h in histories if h is not None))
    in_actor = float(sum(h["time_total_s"].iloc[-1] for h in histories if h is not None))
    trials = len(histories)
    return {
        "mode": mode,
        "reuse_actors": mode == "reuse",
        "trials": trials,
        "errored_trials": errors,
        "concurrency": slots,
        "wall_s": wall,
        "work_s": work,
        "ratio": wall / (work / slots) if work > 0 else float("nan"),
        "overhead_per_trial_s": (wall * slots - work) / max(trials, 1),
        "in_actor_overhead_per_trial_s": (in_actor - work) / max(trials, 1),
        "outside_actor_overhead_per_trial_s": (wall * slots - in_actor) / max(trials, 1),
        "work_per_trial_s": work / max(trials, 1),
        "worker_processes": len({p["pid"] for p in probes}),
        "zero_copy_data": bool(probes) and all(p["zero_copy"] for p in probes),
        "load_average_before": load,
        "load_average_after": load_average(),
    }


def checkpoint_cost(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Size and save time of a trial's checkpoints, measured here once, as the trainable writes
    them: model + Adam state after every epoch but the last, the model alone after the last.
    Ray then copies each to the experiment's storage."""
    import torch

    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import TrainingState
    from cxr_tune.models import create_model
    from cxr_tune.optim import create_optimizer
    from cxr_tune.trainable import checkpoint_payload

    model = create_model(args.model, num_classes=4)
    optimizer = create_optimizer("adam", model.parameters(), lr=1e-4)
    x = torch.zeros(2, 1, args.image_size, args.image_size)
    torch.nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    optimizer.step()  # Adam's state exists from the first step on
    cfg = TrialConfig(model=args.model, epochs=2)
    cost: dict[str, float] = {}
    for epoch, prefix in ((1, ""), (2, "final_")):
        state = TrainingState(model=model, optimizer=optimizer, scheduler=None, epoch=epoch)
        path = folder / f"{prefix}state.pt"
        started = time.perf_counter()
        torch.save(checkpoint_payload(state, cfg), path)
        cost[f"{prefix}save_s"] = time.perf_counter() - started
        cost[f"{prefix}megabytes"] = path.stat().st_size / 1e6
    return cost


def start_ray(args: argparse.Namespace) -> None:
    import ray

    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    os.environ.update(env)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )


def print_report(result: dict[str, Any]) -> None:
    p = result["params"]
    print(
        f"{p['trials']} trials x {p['epochs']} epoch(s) of {p['model']} on the phantom "
        f"({p['images']} images, {p['image_size']} px), {p['cpus_per_trial']:g} CPU per trial, "
        f"{result['modes'][0]['concurrency'] if result['modes'] else '?'} at a time"
    )
    headers = [
        "mode",
        "wall s",
        "work s",
        "ratio",
        "overhead/trial s",
        "in actor",
        "outside",
        "workers",
        "zero-copy",
    ]
    rows = [
        [
            m["mode"],
            m["wall_s"],
            m["work_s"],
            m["ratio"],
            m["overhead_per_trial_s"],
            m["in_actor_overhead_per_trial_s"],
            m["outside_actor_overhead_per_trial_s"],
            m["worker_processes"],
            "yes" if m["zero_copy_data"] else "no",
        ]
        for m in result["modes"]
    ]
    print(format_table(headers, rows))
    checkpoint = result["checkpoint"]
    print(
        f"checkpoints (Ray copies each to storage): {checkpoint['megabytes']:,.0f} MB after "
        f"every epoch but the last ({checkpoint['save_s']:.2f} s to save here), "
        f"{checkpoint['final_megabytes']:,.0f} MB after the last, model only "
        f"({checkpoint['final_save_s']:.2f} s)"
    )
    if "reuse_saves_s" in result:
        print(
            f"actor reuse saves {result['reuse_saves_s']:.1f} s of wall time "
            f"({result['reuse_saves_per_trial_s']:.2f} s per trial); target ratio <= "
            f"{RATIO_TARGET} (reuse): {'met' if result['target_met'] else 'not met'}"
        )


def compare(modes: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode = {m["mode"]: m for m in modes}
    out: dict[str, Any] = {}
    if "reuse" in by_mode:
        out["target_ratio"] = RATIO_TARGET
        out["target_met"] = by_mode["reuse"]["ratio"] <= RATIO_TARGET
    if {"reuse", "fresh"} <= set(by_mode):
        saved = by_mode["fresh"]["wall_s"] - by_mode["reuse"]["wall_s"]
        out["reuse_saves_s"] = saved
        out["reuse_saves_per_trial_s"] = (
            by_mode["fresh"]["overhead_per_trial_s"] - by_mode["reuse"]["overhead_per_trial_s"]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    data = load_data(args)
    start_ray(args)
    try:
        with tempfile.TemporaryDirectory(prefix="cxr_overhead_") as tmp:
            modes = []
            for mode in args.modes:
                print(f"{mode}: {args.trials} trials ...", file=sys.stderr, flush=True)
                modes.append(run_mode(args, data, mode, Path(tmp)))
            checkpoint = checkpoint_cost(args, Path(tmp))
        machine = machine_description()
    finally:
        ray.shutdown()
    result = {
        "benchmark": "ray_overhead",
        "machine": machine,
        "params": {k: v for k, v in vars(args).items() if k != "output"},
        "modes": modes,
        "checkpoint": checkpoint,
        **compare(modes),
        "load_average_at_end": load_average(),
    }
    print_report(result)
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

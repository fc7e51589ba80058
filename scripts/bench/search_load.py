"""Benchmark: a search of many trivial trials accounts for every trial, and its driver's memory
stays bounded.

The real search (``cxr_tune.search`` run in this process, which is therefore the driver: Ray
Tune, the per-cell Optuna searcher, ASHA, checkpoints and their retention, TensorBoard files,
progress lines, the report) runs N trials of one optimiser step each: one epoch whose batch is
the whole training split of the built-in phantom, on a tiny net (``tiny_model.py``), so that
the figures are the search's, not training's.

Measured in one run:

- the driver's resident memory (VmRSS of this process), sampled every half second with the
  number of trials ended so far (from the Optuna study), at 100 and at N trials, and the
  growth per trial between them;
- that every trial is accounted for: planned = Ray's trial folders = rows of ``trials.csv`` =
  ended trials of the Optuna study (none left RUNNING) = the trials the report counts.

    python scripts/bench/search_load.py                     # 300 trials
    python scripts/bench/search_load.py --quick --output /tmp/l.json   # 12 trials, a minute
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import REPO, RESULTS, format_table, machine_description, write_result  # noqa: E402

RUNS = REPO / "scripts" / "bench" / "runs"
CHECKPOINTS = (100, 300)  # trials ended at which memory is quoted
SPACE = """\
name: load
description: trivial trials for the load benchmark (one optimiser step each)
cells: {{model: [tiny]}}
params:
  lr: {{loguniform: [1.0e-4, 1.0e-1]}}
  optimizer: {{choice: [adam, sgd]}}
fixed: {{epochs: 1, batch_size: {batch}, image_size: 32, augment: none}}
search: {{algorithm: optuna, num_samples: {trials}, max_concurrent: 2, seed: 0}}
scheduler: {{name: asha, grace_period: 1, reduction_factor: 3}}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--phantom-images", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="12 trials (a smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS / "search_load.json")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the experiment is kept")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also trace the driver's Python allocations (tracemalloc, slower) and list where "
        "memory grew between 100 trials and the end",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials = 12
    return args


def rss_mib() -> float:
    """Resident memory of this process (the driver), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def study_states(db: Path) -> dict[str, int]:
    """Optuna trials per state, over every cell's study ({} until the file exists)."""
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute("SELECT state, count(*) FROM trials GROUP BY state")
            return {str(state): int(n) for state, n in rows}
    except sqlite3.Error:  # the driver is writing it: ask again at the next sample
        return {}


class MemorySampler(threading.Thread):
    """Every ``every`` seconds: (seconds, trials ended, RSS MiB) of this process."""

    def __init__(self, db: Path, total: int, every: float = 0.5, trace: bool = False) -> None:
        super().__init__(daemon=True)
        self.db, self.total, self.every, self.trace = db, total, every, trace
        self.samples: list[tuple[float, int, float]] = []
        self.snapshots: dict[int, Any] = {}
        self.started = time.monotonic()
        self.done = threading.Event()

    def run(self) -> None:
        ended = 0
        while not self.done.is_set():
            states = study_states(self.db)
            if states:
                ended = sum(n for s, n in states.items() if s != "RUNNING")
            self.samples.append((time.monotonic() - self.started, ended, rss_mib()))
            self._snapshot(ended)
            self.done.wait(self.every)

    def _snapshot(self, ended: int) -> None:
        """With tracing: Python allocations at 100 trials and when the last trial ended (before
        the report, whose allocations are not the search's)."""
        if not self.trace:
            return
        import tracemalloc

        for mark in (CHECKPOINTS[0], self.total):
            if ended >= mark and mark not in self.snapshots:
                self.snapshots[mark] = tracemalloc.take_snapshot()

    def at(self, trials: int) -> dict[str, float] | None:
        """The first sample with at least ``trials`` ended."""
        for seconds, ended, rss in self.samples:
            if ended >= trials:
                return {"seconds": round(seconds, 1), "ended": ended, "rss_mib": round(rss, 1)}
        return None


def train_split_size(images: int) -> int:
    from cxr_tune.data import DataOptions
    from cxr_tune.data.load import load_phantom

    return load_phantom(DataOptions(image_size=32, phantom_images=images, seed=0)).sizes()["train"]


def start_ray(tmp: Path) -> None:
    import ray

    os.environ["RAY_TMPDIR"] = str(tmp)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": str(REPO), "RAY_CHDIR_TO_TRIAL_DIR": "0"},
            "worker_process_setup_hook": "scripts.bench.tiny_model.register",
        },
    )


def run_search(args: argparse.Namespace, storage: Path, name: str) -> tuple[int, float, str]:
    """The real search command, in this process; returns (exit code, seconds, its output)."""
    import contextlib
    import io

    from cxr_tune.search.__main__ import main

    space = storage / "load.yaml"
    space.write_text(SPACE.format(batch=train_split_size(args.phantom_images), trials=args.trials))
    argv = [
        "--space", str(space), "--profile", "smoke", "--num-samples", str(args.trials),
        "--image-size", "32", "--storage", str(storage), "--name", name, "--no-eval",
    ]  # fmt: skip
    output = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(output):
        code = main(argv)
    return code, time.monotonic() - started, output.getvalue()


def accounting(experiment: Path, output: str) -> dict[str, Any]:
    """Every place a trial is recorded, counted."""
    from cxr_tune.experiment import load_experiment

    folders = [p for p in experiment.iterdir() if (p / "params.json").is_file()]
    with open(experiment / "trials.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    states = study_states(experiment / "optuna.db")
    loaded = load_experiment(experiment)
    report_line = re.search(r"^- trials: (\d+)", (experiment / "report.md").read_text(), re.M)
    summary_line = re.search(r"^trials: (\d+) \((.*)\)$", output, re.M)
    return {
        "ray_trial_folders": len(folders),
        "trials_csv_rows": len(rows),
        "trials_csv_states": dict(sorted(_count(r.get("state", "") for r in rows).items())),
        "optuna_states": states,
        "optuna_ended": sum(n for s, n in states.items() if s != "RUNNING"),
        "report_trials": len(loaded.trials),
        "report_md_trials": int(report_line.group(1)) if report_line else None,
        "search_summary": summary_line.group(0) if summary_line else None,
    }


def print_growth(before: Any, after: Any, trials: int, top: int = 15) -> dict[str, Any] | None:
    """Where the driver's Python allocations grew between two tracemalloc snapshots (printed,
    and returned for the JSON)."""
    if before is None or after is None:
        print("trace: a snapshot is missing")
        return None
    grown = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in grown)
    per_trial = total / 1024 / (trials - CHECKPOINTS[0])
    print(
        f"Python allocations from {CHECKPOINTS[0]} to {trials} trials (tracemalloc): "
        f"{total / 1024:+.0f} KiB, {per_trial:+.1f} KiB per trial"
    )
    files = []
    for stat in grown[:top]:
        where = "/".join(Path(stat.traceback[0].filename).parts[-3:])
        print(f"  {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d} blocks  {where}")
        files.append(
            {"file": where, "kib": round(stat.size_diff / 1024), "blocks": stat.count_diff}
        )
    return {"kib_per_trial": round(per_trial, 1), "by_file": files}


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    from tiny_model import register

    register()
    name = f"load-{args.trials}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.runs.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="cxrld", dir="/tmp"))
    start_ray(ray_tmp)
    baseline = rss_mib()
    if args.trace:
        import tracemalloc

        tracemalloc.start(12)
    sampler = MemorySampler(args.runs / name / "optuna.db", args.trials, trace=args.trace)
    sampler.start()
    try:
        code, seconds, output = run_search(args, args.runs, name)
        traced = None
        if args.trace:
            snapshots = sampler.snapshots
            traced = print_growth(
                snapshots.get(CHECKPOINTS[0]), snapshots.get(args.trials), args.trials
            )
    finally:
        sampler.done.set()
        sampler.join()
        import shutil

        import ray

        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if code != 0:
        print(output[-4000:], file=sys.stderr)
        return code
    counted = accounting(args.runs / name, output)
    marks = {str(n): sampler.at(n) for n in (*CHECKPOINTS, args.trials) if n <= args.trials}
    first, last = marks.get("100") or marks[str(args.trials)], marks[str(args.trials)]
    span = (last["ended"] - first["ended"]) if first and last else 0
    growth_kib = (last["rss_mib"] - first["rss_mib"]) * 1024 / span if span else None
    peak = max(rss for _, _, rss in sampler.samples)
    every_place = [
        counted["ray_trial_folders"],
        counted["trials_csv_rows"],
        counted["optuna_ended"],
        counted["report_trials"],
        counted["report_md_trials"],
    ]
    result = {
        "benchmark": "search_load",
        "machine": machine_description(),
        "trials": args.trials,
        "model": "tiny (scripts/bench/tiny_model.py), one optimiser step per trial",
        "search_seconds": round(seconds, 1),
        "seconds_per_trial": round(seconds / args.trials, 2),
        "driver_rss_mib": {"before_search": round(baseline, 1), "peak": round(peak, 1), **marks},
        "growth_kib_per_trial": round(growth_kib, 1) if growth_kib is not None else None,
        "growth_between": [first["ended"], last["ended"]] if first and last else None,
        "accounting": counted,
        "python_allocations": traced if args.trace else "not traced (run with --trace)",
        "all_accounted_for": all(n == args.trials for n in every_place)
        and not counted["optuna_states"].get("RUNNING"),
        "samples": [[round(t, 1), n, round(r, 1)] for t, n, r in sampler.samples[::4]],
        "experiment": str(args.runs / name),
    }
    rows = [
        [f"after {mark['ended']} trials", mark["seconds"], mark["rss_mib"]]
        for mark in marks.values()
        if mark
    ]
    print(format_table(["driver", "seconds", "RSS MiB"], [["before", 0.0, baseline], *rows]))
    print(
        f"growth: {result['growth_kib_per_trial']} KiB per trial; accounted for: "
        f"{result['all_accounted_for']} ({counted})"
    )
    write_result(args.output, result)
    return 0 if result["all_accounted_for"] else 1


if __name__ == "__main__":
    sys.exit(main())

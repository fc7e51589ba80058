"""Benchmark: where the main job's time goes, and how well a time budget's reserve foresaw the
evaluation and report.

Runs ``python -m cxr_tune.search --space ablation`` (the README's main job; extra arguments go
to it, e.g. ``--time-budget 3m``) as a user would, stamps every line it prints as it arrives,
and splits the wall-clock time into:

- start: Python, imports, Ray's start and the data, up to the line ``search: N trials``;
- search: trials, up to the first ``evaluate:`` line;
- evaluation: the final models (retraining, scoring, evidence), up to ``evaluate: N models
  scored``;
- assembly: test metrics, intervals, transfer, artefacts, up to ``evaluate: wrote``;
- report: the report and its figures, to the end of the command.

From the experiment folder it then reads the trials' epochs per architecture, each evaluation
task's own seconds (retraining or loading, scoring), and the finishing's estimate that a time
budget reserves (``cxr_tune/search/reserve.py``) computed from the finished trials, set beside
what the evaluation and report took.

    python scripts/bench/main_job.py                          # the main job, ~9 minutes here
    python scripts/bench/main_job.py --output results/main_job_budget.json -- --time-budget 3m
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import RESULTS, format_table, load_average, machine_description, write_result  # noqa: E402

# The lines that end one phase and begin the next (the runner's own messages).
MARKERS = (
    ("search", re.compile(r"^search: \d+ trials")),
    ("evaluation", re.compile(r"^evaluate: ")),
    ("assembly", re.compile(r"^evaluate: \d+ models scored")),
    ("report", re.compile(r"^evaluate: wrote ")),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="ablation")
    parser.add_argument("--storage", help="experiments root (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=RESULTS / "main_job.json")
    parser.add_argument("search_args", nargs="*", help="more arguments for cxr_tune.search")
    return parser.parse_args(argv)


def run_stamped(command: list[str]) -> tuple[int, list[tuple[float, str]], float]:
    """Run ``command``; every output line with its seconds since the start, and the total."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))
            print(f"[{lines[-1][0]:6.1f}] {lines[-1][1]}", flush=True)
        code = process.wait()
    return code, lines, time.monotonic() - started


def phases(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds of each phase, from the first line of each marker."""
    starts = {"start": 0.0}
    for name, pattern in MARKERS:
        found = next((t for t, line in lines if pattern.search(line)), None)
        if found is not None:
            starts[name] = found
    names = list(starts)
    bounds = [*starts.values(), total]
    return {name: round(bounds[i + 1] - bounds[i], 1) for i, name in enumerate(names)}


def experiment_folder(lines: list[tuple[float, str]]) -> Path | None:
    for _, line in lines:
        found = re.match(r"^search: \d+ trials -> (.+)$", line)
        if found:
            return Path(found.group(1))
    return None


def epochs_by_model(folder: Path) -> dict[str, dict[str, float]]:
    """Per architecture: trials, trial-epochs and the median seconds of one epoch."""
    from cxr_tune.experiment import load_experiment

    seconds: dict[str, list[float]] = defaultdict(list)
    trials: dict[str, int] = defaultdict(int)
    for trial in load_experiment(folder).trials:
        model = str(trial.config.get("model"))
        trials[model] += 1
        seconds[model] += [float(r["time_this_iter_s"]) for r in trial.ok_results]
    return {
        model: {
            "trials": trials[model],
            "epochs": len(values),
            "median_epoch_s": round(sorted(values)[len(values) // 2], 1) if values else math.nan,
            "epoch_s_total": round(sum(values), 1),
        }
        for model, values in seconds.items()
    }


def evaluation_tasks(folder: Path) -> list[dict[str, Any]]:
    """Each evaluation task: its cell, role, where its model came from and its own seconds."""
    path = folder / "evaluation.json"
    if not path.is_file():
        return []
    tasks = []
    for entry in json.loads(path.read_text()).get("entries", []):
        for run in entry.get("runs", []):
            tasks.append(
                {
                    "cell": entry["cell"],
                    "role": entry["role"],
                    "source": run.get("source"),
                    "seconds": round(float(run.get("seconds", math.nan)), 1),
                }
            )
    return tasks


def reserve_estimate(folder: Path) -> float:
    """What ``reserve.py`` foresees for the finishing after the experiment's trials."""
    from cxr_tune.experiment import load_experiment
    from cxr_tune.search.reserve import FinishingCosts, TrialCost, finishing_seconds

    exp = load_experiment(folder)
    costs = []
    for trial in exp.trials:
        epochs = trial.epochs_done
        costs.append(
            TrialCost(
                cell=trial.cell,
                optimizer=str(trial.config.get("optimizer", "")),
                value=trial.value(exp.metric),
                epochs=epochs,
                planned=trial.planned_epochs,
                seconds_per_epoch=trial.time_total_s() / epochs if epochs else math.nan,
            )
        )
    first_cell = (exp.record.get("plan") or [{}])[0]
    seeds = int(exp.record.get("eval_seeds", first_cell.get("eval_seeds", 1)))
    slots = int(first_cell.get("max_concurrent", 0) or os.cpu_count() or 1)
    return finishing_seconds(costs, FinishingCosts(seeds=seeds, slots=slots, mode=exp.mode))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    storage = args.storage or tempfile.mkdtemp(prefix="cxr_main_job_")
    command = [sys.executable, "-m", "cxr_tune.search", "--space", args.space]
    command += ["--storage", storage, *args.search_args]
    load_before = load_average()
    code, lines, total = run_stamped(command)
    result: dict[str, Any] = {
        "command": " ".join(command[1:]),
        "exit_code": code,
        "wall_s": round(total, 1),
        "phases_s": phases(lines, total),
        "load_before": load_before,
        "load_after": load_average(),
        "machine": machine_description(),
    }
    folder = experiment_folder(lines)
    if folder is not None and folder.is_dir():
        finishing = result["phases_s"].get("evaluation", 0.0) + result["phases_s"].get(
            "report", 0.0
        )
        result["epochs_by_model"] = epochs_by_model(folder)
        result["evaluation_tasks"] = evaluation_tasks(folder)
        result["finishing_s"] = round(finishing, 1)
        result["reserve_estimate_s"] = round(reserve_estimate(folder), 1)
        record = json.loads((folder / "cxr_tune.json").read_text())
        result["budget"] = record.get("budget")
    print()
    print(format_table(["phase", "seconds"], list(result["phases_s"].items())))
    print(f"whole command: {total:.1f} s (exit {code})")
    if "epochs_by_model" in result:
        rows = [[m, *v.values()] for m, v in result["epochs_by_model"].items()]
        print(format_table(["model", "trials", "epochs", "median epoch s", "epoch s"], rows))
        rows = [list(t.values()) for t in result["evaluation_tasks"]]
        print(format_table(["cell", "role", "source", "task s"], rows))
        print(
            f"evaluation and report {result['finishing_s']} s; the reserve's estimate from "
            f"these trials {result['reserve_estimate_s']} s"
        )
    write_result(args.output, result)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

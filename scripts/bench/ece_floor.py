"""Benchmark: how low a test split's ECE can go, beside what temperature scaling reached.

The expected calibration error measured on n test images is biased upwards: with 10 bins and
~100 images, even a perfectly calibrated model scores well above 0. For each cell's best model
of a finished experiment this draws labels from the model's own calibrated test probabilities
(so that those probabilities are exactly calibrated by construction), measures the ECE of the
same probabilities against the drawn labels, and repeats: the mean and the 5-95% range are the
floor that no calibration can get under at that n. Beside it: the ECE before and after
temperature scaling from ``evaluation.json``, and whether "after at most half of before" is
reachable at all (half of before above the floor).

    python scripts/bench/ece_floor.py ~/cxr_tune_results/ablation-cpu-...   # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import RESULTS, format_table, machine_description, write_result  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "ece_floor.json")
    return parser.parse_args(argv)


def ece_floor(probabilities: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """ECE of ``probabilities`` against labels drawn from themselves, ``draws`` times."""
    from cxr_tune.calibration import calibration_error

    rng = np.random.default_rng(seed)
    p = probabilities / probabilities.sum(axis=1, keepdims=True)
    cumulative = p.cumsum(axis=1)
    values = []
    for _ in range(draws):
        u = rng.random((len(p), 1))
        labels = np.minimum((u > cumulative).sum(axis=1), p.shape[1] - 1)
        values.append(calibration_error(p, labels, "multiclass"))
    return np.asarray(values)


def measure(entry: dict[str, Any], draws: int, seed: int) -> dict[str, Any] | None:
    calibration = (entry.get("clinical") or {}).get("calibration") or {}
    run = (entry.get("runs") or [{}])[0]
    calibrated = run.get("calibrated_probabilities")
    if entry.get("task") != "multiclass" or not calibration.get("before") or not calibrated:
        return None
    floor = ece_floor(np.asarray(calibrated, float), draws, seed)
    before, after = calibration["before"]["mean"], calibration["after"]["mean"]
    return {
        "cell": entry["cell"],
        "images": len(calibrated),
        "ece_before": round(before, 4),
        "ece_after": round(after, 4),
        "after_minus_before_ci95": [round(v, 4) for v in calibration["difference"]["ci95"]],
        "floor_mean": round(float(floor.mean()), 4),
        "floor_5_95": [round(float(v), 4) for v in np.percentile(floor, [5, 95])],
        "half_of_before_above_floor": bool(before / 2 > floor.mean()),
        "goal_met": bool(after <= before / 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    evaluation = json.loads((args.experiment / "evaluation.json").read_text())
    rows = [
        found
        for entry in evaluation["entries"]
        if "best" in entry.get("roles", [])
        and (found := measure(entry, args.draws, args.seed)) is not None
    ]
    print(
        format_table(
            ["cell", "n", "ECE before", "after", "floor (calibrated)", "5-95%", "half > floor"],
            [
                [
                    r["cell"],
                    r["images"],
                    r["ece_before"],
                    r["ece_after"],
                    r["floor_mean"],
                    f"{r['floor_5_95'][0]:.3f}-{r['floor_5_95'][1]:.3f}",
                    r["half_of_before_above_floor"],
                ]
                for r in rows
            ],
        )
    )
    result = {
        "experiment": str(args.experiment),
        "draws": args.draws,
        "cells": rows,
        "machine": machine_description(),
    }
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

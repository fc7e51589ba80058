"""Summary of the search-efficiency results: every replayed setting on every grid, side by side.

``search_efficiency.py`` writes one JSON per grid and setting. This reads them all (no Ray, no
training) and prints, for each setting (method, what ASHA compares, first rung, reduction factor,
brackets, no-skill check, budget, replays), on each grid: how many runs ended within a point of
the grid's best, and the gap between the grid's best and the runs' mean best; then on how many
grids the target (mean best within 0.01 with at most 30% of the epochs) is met, and the gap
averaged over the grids. A header describes each grid: its best configuration and value, how
far below it the runner-up is, and where the best ranks by validation loss after epochs 1 and 2
(a slow starter ranks low, which is what successive halving cannot see).

    python scripts/bench/search_efficiency_summary.py
    python scripts/bench/search_efficiency_summary.py --results /tmp/more --output /tmp/s.json

Quick (smoke-test) runs are left out. Where several files hold the same setting on the same grid
(the methods without early stopping are replayed beside every ASHA setting), their runs are
pooled: the runs within a point add up, and the mean best is over all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, format_table, write_result  # noqa: E402
from search_efficiency import TARGET, TARGET_GAP, TARGET_SHARE  # noqa: E402

# What defines a setting, in the order the table shows it.
SETTING_KEYS = (
    "asha_metric",
    "grace_period",
    "reduction_factor",
    "brackets",
    "no_skill_epoch",
    "budget",
    "seeds",
)
EARLY_STOPPING = ("tpe_asha", "random_asha")
# Reports written before an option existed ran with its fixed value then: ASHA kept a third
# of the trials at each rung in one bracket, and there was no no-skill check.
FIXED_BEFORE_OPTION = {"reduction_factor": 3, "brackets": 1, "no_skill_epoch": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of result JSONs")
    parser.add_argument("--output", type=Path, default=RESULTS / "search_efficiency_summary.json")
    return parser.parse_args(argv)


def load_reports(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, report) for every full search-efficiency report in ``folder``."""
    reports = []
    for path in sorted(folder.glob("search_efficiency*.json")):
        if path.name.endswith("_table.json"):  # a grid's curves, read only for its header
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if report.get("benchmark") != "search_efficiency" or report["params"].get("quick"):
            continue
        if not report.get("methods"):  # a grid trained without replays (``--seeds 0``)
            continue
        reports.append((path.name, report))
    return reports


def setting_of(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that define what a method's replays measured. Without early stopping,
    ASHA's parameters do not apply."""
    setting: dict[str, Any] = {"method": method}
    for key in SETTING_KEYS:
        if method in EARLY_STOPPING or key in ("budget", "seeds"):
            setting[key] = params.get(key, FIXED_BEFORE_OPTION.get(key))
    return setting


def setting_label(setting: dict[str, Any]) -> str:
    if setting["method"] not in EARLY_STOPPING:
        return f"{setting['method']}, budget {setting['budget']:.0%}, {setting['seeds']} runs"
    check = (
        f"check at epoch {setting['no_skill_epoch']}" if setting["no_skill_epoch"] else "no check"
    )
    parts = [
        setting["method"],
        str(setting["asha_metric"]),
        f"rung {setting['grace_period']}",
        f"eta {setting['reduction_factor']}",
    ]
    if setting["brackets"] != 1:
        parts.append(f"{setting['brackets']} brackets")
    parts += [check, f"budget {setting['budget']:.0%}", f"{setting['seeds']} runs"]
    return ", ".join(parts)


def grid_header(report: dict[str, Any], table: dict[str, Any] | None) -> dict[str, Any]:
    """What makes a grid easy or hard for early stopping."""
    signal = report["early_signal"]
    ranks = {
        epoch: row.get("val_loss", {}).get("rank_of_best")
        for epoch, row in signal["epochs"].items()
        if epoch in ("1", "2")
    }
    header = {
        "best": report["grid"]["best"],
        "best_configuration": signal["best_configuration"],
        "runner_up_gap": None,
        "val_loss_rank_of_best": ranks,
    }
    if table is not None:
        epochs = int(table["epochs"])
        finals = sorted((c[-1] for c in table["curves"].values() if len(c) == epochs), reverse=True)
        if len(finals) > 1:
            header["runner_up_gap"] = finals[0] - finals[1]
    return header


def summarise(reports: list[tuple[str, dict[str, Any]]], folder: Path) -> dict[str, Any]:
    grids: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    settings: dict[str, dict[str, Any]] = {}
    labels = grid_labels(reports)
    for name, report in reports:
        grid = labels[_grid_id(report)]
        if grid not in grids:
            grids[grid] = grid_header(report, _table_beside(folder, report["grid"]))
        for method, m in report["methods"].items():
            setting = setting_of(method, report["params"])
            label = setting_label(setting)
            settings[label] = setting
            cells[label][grid].append(
                {
                    "file": name,
                    "runs": m["runs"],
                    "within_1_point": m["runs_within_1_point"],
                    "mean_best": m["mean_best"],
                    "epoch_share": m["epoch_share"],
                }
            )
    grids = {label: grids[label] for label in labels.values()}  # by seed
    rows = {}
    for label, by_grid in cells.items():
        pooled = {
            grid: pool(entries, grids[grid]["best"]) for grid, entries in sorted(by_grid.items())
        }
        gaps = [p["gap"] for p in pooled.values() if p["gap"] is not None]
        rows[label] = {
            "setting": settings[label],
            "grids": pooled,
            "met_on": sum(p["target_met"] for p in pooled.values()),
            "grids_measured": len(pooled),
            "mean_gap": sum(gaps) / len(gaps) if gaps else None,
        }
    return {
        "benchmark": "search_efficiency_summary",
        "target": TARGET,
        "grids": grids,
        "settings": rows,
    }


def pool(entries: list[dict[str, Any]], grid_best: float) -> dict[str, Any]:
    """One setting's runs on one grid, from every file that replayed it."""
    runs = sum(e["runs"] for e in entries)
    scored = [e for e in entries if e["mean_best"] is not None]
    mean_best = (
        sum(e["mean_best"] * e["runs"] for e in scored) / sum(e["runs"] for e in scored)
        if scored
        else None
    )
    share = sum(e["epoch_share"] * e["runs"] for e in entries) / runs
    gap = None if mean_best is None else grid_best - mean_best
    return {
        "files": [e["file"] for e in entries],
        "runs": runs,
        "within_1_point": sum(e["within_1_point"] for e in entries),
        "mean_best": mean_best,
        "gap": gap,
        "epoch_share": share,
        "target_met": gap is not None and gap <= TARGET_GAP and share <= TARGET_SHARE,
    }


def _grid_id(report: dict[str, Any]) -> tuple[int, int]:
    return int(report["grid"].get("seed", 0)), int(report["grid"]["configurations"])


def grid_labels(reports: list[tuple[str, dict[str, Any]]]) -> dict[tuple[int, int], str]:
    """A grid is its phantom seed and its configurations (``--optimizers adam`` trains half of
    one): named by the seed, with the configurations where one seed has grids of two sizes."""
    ids = sorted({_grid_id(report) for _, report in reports})
    seeds = [seed for seed, _ in ids]
    return {
        (seed, size): str(seed) if seeds.count(seed) == 1 else f"{seed} ({size} configurations)"
        for seed, size in ids
    }


def _table_beside(folder: Path, grid: dict[str, Any]) -> dict[str, Any] | None:
    """The grid's curves, as ``search_efficiency.py`` names them for the default grid of a seed
    (grid 0 has no suffix); None where there is none of the grid's size."""
    suffix = "" if grid.get("seed", 0) == 0 else f"_seed{grid['seed']}"
    path = folder / f"search_efficiency{suffix}_table.json"
    if not path.exists():
        return None
    table = json.loads(path.read_text())
    return table if len(table["curves"]) == grid["configurations"] else None


def print_summary(summary: dict[str, Any]) -> None:
    grids = list(summary["grids"])
    print("grids (val loss rank of the best after epochs 1 and 2; runner-up's distance below it)")
    print(
        format_table(
            ["grid", "best", "configuration", "runner-up", "rank@1", "rank@2"],
            [
                [
                    grid,
                    f"{g['best']:.3f}",
                    g["best_configuration"],
                    "—" if g["runner_up_gap"] is None else f"-{g['runner_up_gap']:.3f}",
                    g["val_loss_rank_of_best"].get("1", "—"),
                    g["val_loss_rank_of_best"].get("2", "—"),
                ]
                for grid, g in summary["grids"].items()
            ],
        )
    )
    print("\nper grid: runs within a point of the grid's best / runs, gap (grid best - mean best)")
    rows = []
    for label, row in sorted(
        summary["settings"].items(),
        key=lambda item: (-item[1]["grids_measured"], -item[1]["met_on"], _gap_key(item[1])),
    ):
        cells = [_cell(row["grids"][g]) if g in row["grids"] else "—" for g in grids]
        mean_gap = "—" if row["mean_gap"] is None else f"{row['mean_gap']:.4f}"
        rows.append([label, *cells, f"{row['met_on']}/{row['grids_measured']}", mean_gap])
    print(format_table(["setting", *[f"grid {g}" for g in grids], "met", "mean gap"], rows))
    print(f"target: {summary['target']}")


def _cell(entry: dict[str, Any]) -> str:
    gap = "—" if entry["gap"] is None else f"{entry['gap']:.3f}"
    mark = "*" if entry["target_met"] else ""
    return f"{entry['within_1_point']}/{entry['runs']} {gap}{mark}"


def _gap_key(row: dict[str, Any]) -> float:
    return row["mean_gap"] if row["mean_gap"] is not None else float("inf")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.results.is_dir():
        print(f"error: --results {args.results}: no such folder", file=sys.stderr)
        return 2
    reports = load_reports(args.results)
    if not reports:
        print(
            f"error: --results {args.results}: no search_efficiency*.json report in it "
            "(run scripts/bench/search_efficiency.py first)",
            file=sys.stderr,
        )
        return 2
    summary = summarise(reports, args.results)
    print_summary(summary)
    write_result(args.output, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

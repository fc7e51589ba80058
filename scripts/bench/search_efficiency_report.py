"""The search-efficiency benchmark's tables: printed, and as ``results/search_efficiency.md``.

Held-out grids come first and are the ones quoted; development grids (where settings were
chosen) and the legacy AlexNet grids follow, labelled as in-sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from common import format_table

LABELS = {
    "tpe_asha": "TPE + ASHA",
    "random_asha": "random + ASHA",
    "gp_asha": "GP + ASHA",
    "tpe_full": "TPE, no early stopping",
    "random_full": "random, no early stopping",
    "gp_full": "GP, no early stopping",
}
ROLE_TITLES = {
    "held-out": "held-out grids (never used to choose a setting; the quoted figures)",
    "development": "development grids (settings chosen here: in-sample)",
    "legacy": "legacy AlexNet grids (in-sample: the earlier ASHA setting was chosen on them; "
    "not held-out; 1 to 3 seeds per configuration)",
}
MAIN_PAIRS = ("tpe_asha - random_asha", "gp_asha - random_asha", "random_asha - random_full")

Table = tuple[str, list[str], list[list[str]]]


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == math.inf:
        return "inf"
    return f"{value:.{digits}f}"


def _ci(interval: Sequence[float], digits: int = 2) -> str:
    return f"[{_f(interval[0], digits)}, {_f(interval[1], digits)}]"


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _pair_label(pair: str) -> str:
    a, b = pair.split(" - ")
    return f"{_label(a)} - {_label(b)}"


def grid_table(summary: Mapping[str, Any], role: str) -> Table:
    rows = []
    for name, f in summary["grids"].items():
        if f["role"] != role:
            continue
        seeds = f["seeds_per_configuration"]
        sizes = "/".join(str(len(f["near_optimal"][str(m)])) for m in summary["multipliers"])
        rows.append(
            [
                name,
                f.get("data", "-"),
                f"{f['configurations']} x {f['epochs_per_trial']}",
                f"{seeds[0]}" if seeds[0] == seeds[1] else f"{seeds[0]}-{seeds[1]}",
                f"{_f(f['y_star'], 3)} ({f['best']})",
                f"{_f(f['delta'], 3)} = ({_f(f['delta_image_se'], 3)}^2 + {_f(f['delta_seed_se'], 3)}^2)^0.5",
                sizes,
                f"{_f(f['random']['value'], 3)} ({_f(f['random']['configurations_completed'], 1)})",
                f"{_f(f['textbook_random']['value'], 3)} ({f['textbook_random']['configurations']})",
                _f(f["random"]["by_delta"]["1.0"]["ert"], 0),
            ]
        )
    headers = ["grid", "data", "configs x epochs", "seeds", "y* (best)", "delta = (images^2 + seeds^2)^0.5",
               "|G| at 0.5/1/2 delta", "random, same rule: E[v] (completed)",
               "textbook random: E[v] (configs)", "random ERT"]  # fmt: skip
    return (f"Grids: {ROLE_TITLES[role]}", headers, rows)


def per_grid_table(summary: Mapping[str, Any], role: str) -> Table:
    rows = []
    for name, g in summary["per_grid"].items():
        if summary["grids"][name]["role"] != role:
            continue
        for method, m in g["methods"].items():
            d = m["by_delta"]["1.0"]
            rows.append(
                [
                    name,
                    _label(method),
                    f"{_f(m['R'])} {_ci(m['R_interval'])}",
                    f"{_f(m['R_early'])} {_ci(m['R_early_interval'])}",
                    f"{_f(m['rank_R'], 1)} {_ci(m['rank_R_interval'], 0)}",
                    f"{_f(d['hit_rate'])} {_ci(d['hit_interval'])}",
                    f"{_f(d['speedup'])} {_ci(d['speedup_interval'])}",
                    _f(m["area_ratio"]),
                    _f(m["trials_at_budget"], 1),
                ]
            )
    headers = ["grid", "method", "R [95%]", "R early [95%]", "rank by R [95%]", "hit [95%]",
               "speed-up [95%]", "area/random", "trials"]  # fmt: skip
    return (f"Per grid, {ROLE_TITLES[role]}", headers, rows)


def pooled_table(summary: Mapping[str, Any], role: str) -> Table:
    group = summary["groups"][role]
    rows = []
    for method, m in group["methods"].items():
        d = m["by_delta"]["1.0"]
        rows.append(
            [
                _label(method),
                f"{_f(m['mean_R'])} {_ci(m['mean_R_interval'])}",
                f"{m['grids_R_below_half']}/{len(group['grids'])}",
                f"{_f(m['mean_R_early'])} {_ci(m['mean_R_early_interval'])}",
                f"{_f(d['mean_hit_rate'])} {_ci(d['mean_hit_interval'])}",
                f"{_f(d['geomean_speedup'])} {_ci(d['geomean_speedup_interval'])}",
                f"{_f(m['mean_rank_R'], 2)} {_ci(m['mean_rank_R_interval'])}",
                _f(m["mean_area_ratio"]),
                _f(m["mean_trials_at_budget"], 1),
            ]
        )
    headers = ["method", "mean R [95%]", "grids R <= 0.5, interval < 1",
               "mean R early [95%]", "mean hit [95%]",
               "speed-up, geometric mean [95%]", "mean rank by R [95%]", "area/random",
               "trials"]  # fmt: skip
    return (f"Over the {ROLE_TITLES[role]}: {', '.join(group['grids'])}", headers, rows)


def pairs_table(summary: Mapping[str, Any], role: str) -> Table:
    group = summary["groups"][role]
    rows = []
    for pair, p in group["pairs"].items():
        d = p["by_delta"]["1.0"]
        rows.append(
            [
                _pair_label(pair),
                f"{_f(p['R_difference'])} {_ci(p['R_difference_interval'])}",
                f"{p['grids_R_difference_below_0']} / {p['grids_R_difference_above_0']}",
                f"{_f(p['R_early_difference'])} {_ci(p['R_early_difference_interval'])}",
                f"{_f(d['hit_difference'])} {_ci(d['hit_difference_interval'])}",
                f"{_f(d['geomean_speedup_ratio'])} {_ci(d['geomean_speedup_ratio_interval'])}",
            ]
        )
    headers = ["first - second", "R difference [95%]", "grids below 0 / above 0",
               "R early: difference [95%]", "hit difference [95%]",
               "speed-up of first over second [95%]"]  # fmt: skip
    return (
        f"Paired differences over the {role} grids (same replay seeds; mean over grids)",
        headers,
        rows,
    )


def per_grid_pairs_table(summary: Mapping[str, Any], role: str) -> Table:
    rows = []
    for name, g in summary["per_grid"].items():
        if summary["grids"][name]["role"] != role:
            continue
        row = [name]
        for pair in MAIN_PAIRS:
            p = g["pairs"].get(pair)
            row.append(
                "-"
                if p is None
                else f"{_f(p['R_difference'])} {_ci(p['R_difference_interval'])}; "
                f"{_f(p['R_early_difference'])} {_ci(p['R_early_difference_interval'])}"
            )
        rows.append(row)
    headers = ["grid", *[f"R; R early: {_pair_label(p)}" for p in MAIN_PAIRS]]
    return (f"Paired R differences per grid, {role} grids", headers, rows)


def sensitivity_table(summary: Mapping[str, Any], role: str) -> Table:
    group = summary["groups"][role]
    rows = []
    for m in summary["multipliers"]:
        key = str(float(m))
        sizes = ", ".join(
            str(len(summary["grids"][g]["near_optimal"][key])) for g in group["grids"]
        )
        for method, entry in group["methods"].items():
            d = entry["by_delta"][key]
            rows.append(
                [
                    f"{m:g} x delta",
                    _label(method),
                    f"{_f(d['mean_hit_rate'])} {_ci(d['mean_hit_interval'])}",
                    f"{_f(d['geomean_speedup'])} {_ci(d['geomean_speedup_interval'])}",
                    sizes,
                ]
            )
        for pair in MAIN_PAIRS:
            p = group["pairs"].get(pair)
            if p is None:
                continue
            d = p["by_delta"][key]
            rows.append(
                [
                    f"{m:g} x delta",
                    _pair_label(pair),
                    f"{_f(d['hit_difference'])} {_ci(d['hit_difference_interval'])}",
                    f"{_f(d['geomean_speedup_ratio'])} {_ci(d['geomean_speedup_ratio_interval'])}",
                    sizes,
                ]
            )
    headers = ["tolerance", "method or difference", "hit rate (difference) [95%]",
               "speed-up (ratio), geometric mean [95%]", "|G| per grid"]  # fmt: skip
    return (
        f"Sensitivity to delta, {role} grids (R does not depend on delta)",
        headers,
        rows,
    )


def gp_full_table(summary: Mapping[str, Any]) -> Table:
    rows = []
    for name, g in summary["gp_full"].items():
        rows.append(
            [
                f"{name} ({summary['grids'][name]['role']})",
                *[
                    f"{_f(g[x]['R'])} {_ci(g[x]['R_interval'])}"
                    for x in ("gp_full", "tpe_full", "random_full")
                ],
                f"{_f(g['gp_full - random_full']['R_difference'])} "
                f"{_ci(g['gp_full - random_full']['R_difference_interval'])}",
                *[_f(g[x]["hit_rate"]) for x in ("gp_full", "tpe_full", "random_full")],
            ]
        )
    headers = ["grid", "R: GP [95%]", "R: TPE", "R: random", "R: GP - random [95%]",
               "hit: GP", "hit: TPE", "hit: random"]  # fmt: skip
    replays = summary.get("gp_full_replays", 0)
    return (
        f"Without early stopping, GP against TPE and random search on the same {replays} seeds "
        "(at the budget only: a GP proposal costs ~0.7 s here)",
        headers,
        rows,
    )


def screen_table(summary: Mapping[str, Any]) -> Table:
    screen = summary["screen"]
    names = list(next(iter(screen.values()))["grids"]) if screen else []
    rows = [
        [label, *[_f(e["grids"][g]["R"]) for g in names], _f(e["mean_R"]),
         _f(sum(e["grids"][g]["trials_at_budget"] for g in names) / len(names), 1)]
        for label, e in screen.items()
    ]  # fmt: skip
    headers = ["ASHA setting (TPE + ASHA)", *[f"R {g}" for g in names], "mean R", "trials"]
    replays = summary.get("screen_replays")
    return (
        f"ASHA settings on the development grids (in-sample; {replays} replays each, the "
        "default's own: all of them)",
        headers,
        rows,
    )


def spearman_table(summary: Mapping[str, Any]) -> Table:
    shown = min(4, *(len(f["spearman"]) - 1 for f in summary["grids"].values()))
    rows = []
    for name, f in summary["grids"].items():
        rho = f["spearman"]
        rows.append(
            [name, *[f"{_f(rho[str(e)]['f1_vs_last'])} ({_f(rho[str(e)]['loss_vs_last'])})"
                     for e in range(1, shown + 1)]]
        )  # fmt: skip
    headers = ["grid", *[f"epoch {e}" for e in range(1, shown + 1)]]
    return (
        "Spearman's rho over the configurations: val F1 (val loss) at an epoch vs the last "
        "epoch's val F1, under the replayed seed",
        headers,
        rows,
    )


def tables(summary: Mapping[str, Any]) -> list[Table]:
    out = []
    for role in ("held-out", "development", "legacy"):
        if role not in summary["groups"]:
            continue
        out += [
            grid_table(summary, role),
            pooled_table(summary, role),
            pairs_table(summary, role),
            sensitivity_table(summary, role),
            per_grid_table(summary, role),
            per_grid_pairs_table(summary, role),
        ]
    if summary.get("gp_full"):
        out.append(gp_full_table(summary))
    if summary["screen"]:
        out.append(screen_table(summary))
    out.append(spearman_table(summary))
    return out


def verdict(summary: Mapping[str, Any]) -> str:
    """The goals, on the held-out grids, for the default method (TPE + ASHA unless the
    summary names another)."""
    group = summary["groups"].get("held-out")
    method = summary.get("default_method", "tpe_asha")
    if group is None or method not in group["methods"]:
        return ""
    m = group["methods"][method]
    d = m["by_delta"]["1.0"]
    r_goal = m["mean_R"] <= 0.5 and m["mean_R_interval"][1] < 1
    s_goal = d["geomean_speedup"] >= 2 and d["geomean_speedup_interval"][0] > 1
    return (
        f"goals, {_label(method)} on the held-out grids: mean R <= 0.5 with its interval below 1: "
        f"{'met' if r_goal else 'missed'} ({_f(m['mean_R'])} {_ci(m['mean_R_interval'])}); "
        f"geometric-mean speed-up >= 2 with its interval above 1: "
        f"{'met' if s_goal else 'missed'} ({_f(d['geomean_speedup'])} "
        f"{_ci(d['geomean_speedup_interval'])})"
    )


def render(summary: Mapping[str, Any]) -> str:
    parts = [f"{title}\n{format_table(headers, rows)}" for title, headers, rows in tables(summary)]
    return "\n\n".join(parts) + "\n" + verdict(summary)


def markdown(summary: Mapping[str, Any]) -> str:
    """The tables as Markdown (``results/search_efficiency.md``, linked from the README)."""
    lines = [
        "# Search efficiency: held-out and development grids",
        "",
        "Written by `python scripts/bench/search_efficiency.py replay`; how to read it: "
        "`scripts/bench/README.md`. "
        f"{summary['replays']} replays per method and grid (seeds shared by the methods), "
        f"two trials at a time, budget {summary['budget']:.0%} of a grid's epochs (R early: "
        f"the incumbent after {summary.get('early', 0.1):.0%} of them, read off the whole-grid "
        "replays); "
        f"random search's reference from {summary['reference_runs']} runs under the same "
        "budget rule (two trials at once; a trial still running when the budget is spent stops "
        "there, so the last one is cut). The default (the study's spaces): "
        f"{_label(summary.get('default_method', 'tpe_asha'))}, ASHA "
        f"{summary['default_setting']['label']}.",
    ]
    if "legacy" not in summary["groups"]:
        lines += [
            "",
            "The legacy AlexNet grids (in-sample: the earlier ASHA setting was chosen on them; "
            "not held-out) were not replayed for this table.",
        ]
    for title, headers, rows in tables(summary):
        lines += ["", f"**{title}**", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join(" --- " for _ in headers) + "|")
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", verdict(summary), ""]
    return "\n".join(lines)

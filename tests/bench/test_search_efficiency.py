"""The search-efficiency benchmark: its measures against enumeration, its files, and replays
that come out the same every time."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.metrics import confusion_matrix, multiclass_metrics

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
TINY_GRID = Path(__file__).resolve().parent / "data" / "search_efficiency_tiny_grid.json"
sys.path.insert(0, str(BENCH))
import search_efficiency as se  # noqa: E402
import search_efficiency_measures as measures  # noqa: E402

sys.path.remove(str(BENCH))


def _incumbents_by_enumeration(observed: dict[str, float], k: int) -> dict[str, float]:
    """Over every order of drawing: the first drawn among the best observed of the first k."""
    counts = dict.fromkeys(observed, 0)
    orders = list(itertools.permutations(observed))
    for order in orders:
        best = None
        for key in order[:k]:
            if best is None or observed[key] > observed[best]:
                best = key
        counts[best] += 1
    return {key: c / len(orders) for key, c in counts.items()}


OBSERVED = {"a": 0.5, "b": 0.4, "c": 0.4, "d": 0.1, "e": 0.3, "f": 0.1}


@pytest.mark.parametrize("k", range(1, 7))
def test_random_incumbent_probabilities_match_enumeration_with_ties(k):
    exact = measures.random_incumbent_probabilities(OBSERVED, k)
    enumerated = _incumbents_by_enumeration(OBSERVED, k)
    assert exact == pytest.approx(enumerated, abs=1e-12)


@pytest.mark.parametrize("members", [("a",), ("b", "e"), ("e",), ("d", "f")])
def test_random_first_hit_and_ert_match_enumeration(members):
    observed = {"a": 0.6, "b": 0.5, "c": 0.45, "d": 0.2, "e": 0.3, "f": 0.1}
    orders = list(itertools.permutations(observed))
    first_hits = []
    for order in orders:
        best, hit = None, None
        for j, key in enumerate(order, start=1):
            if best is None or observed[key] > observed[best]:
                best = key
            if best in members and hit is None:
                hit = j
        first_hits.append(hit)
    no_hit, success = measures.random_first_hit(observed, members)
    for j in range(len(observed) + 1):
        share = sum(h is None or h > j for h in first_hits) / len(orders)
        assert no_hit[j] == pytest.approx(share, abs=1e-12)
    assert success == pytest.approx(sum(h is not None for h in first_hits) / len(orders))
    epochs = 4
    spent = sum(epochs * (h if h is not None else len(observed)) for h in first_hits)
    hits = sum(h is not None for h in first_hits)
    expected = spent / hits if hits else math.inf
    assert measures.random_ert(observed, members, epochs) == pytest.approx(expected)


def test_random_value_and_hit_weigh_reference_values_by_the_incumbent_odds():
    reference = {key: 1.0 - value for key, value in OBSERVED.items()}
    value, hit = measures.random_value_and_hit(OBSERVED, reference, ["b", "c"], 2)
    odds = _incumbents_by_enumeration(OBSERVED, 2)
    assert value == pytest.approx(sum(p * reference[k] for k, p in odds.items()))
    assert hit == pytest.approx(odds["b"] + odds["c"])
    assert measures.random_value_and_hit(OBSERVED, reference, ["a"], 0) == (None, 0.0)


def test_macro_f1_of_counts_is_the_metrics_modules_macro_f1():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 4, 200))
    weights = np.vstack([np.ones(200), rng.integers(0, 3, 200)])
    scores = measures.macro_f1_of_counts(labels, predictions, weights)
    expanded = np.repeat(np.arange(200), weights[1].astype(int))
    for score, index in zip(scores, (np.arange(200), expanded)):
        confusion = confusion_matrix(labels[index], predictions[index], 4)
        assert score == pytest.approx(multiclass_metrics(confusion)["macro_f1"])


def _grid(finals: dict[str, list[float]], labels: str = "0123" * 10) -> dict:
    """A one-epoch grid; every seed predicts the labels, with some errors."""
    runs = {}
    for key, values in finals.items():
        runs[key] = {
            "runs": {
                str(seed): {
                    "val_macro_f1": [value],
                    "predictions": labels[: 4 * (seed + 1)] + "0" * (len(labels) - 4 * (seed + 1)),
                }
                for seed, value in enumerate(values)
            }
        }
    return {
        "grid": {"seed": 0, "replay_seed": 0, "epochs": 1, "labels": labels},
        "configurations": runs,
    }


def test_near_optimal_keeps_configurations_within_delta_of_the_best():
    grid = _grid(
        {"a": [0.60, 0.62, 0.58], "b": [0.59, 0.61, 0.57], "c": [0.2], "d": [0.50, 0.40, 0.45]}
    )
    near = measures.near_optimal(grid, resamples=200)
    assert near.best == "a" and near.y_star == pytest.approx(0.60)
    assert near.delta > 0.0
    assert near.members[0] == "a" and "d" not in near.members
    assert ("b" in near.members) == (0.60 - near.delta <= 0.59)
    # c, with one seed, cannot reach y* - delta even if its other two seeds scored 0.62.
    assert near.bound["configurations"]["c"]["upper_bound"] == pytest.approx((0.2 + 2 * 0.62) / 3)


def test_near_optimal_refuses_a_configuration_the_bound_cannot_exclude():
    grid = _grid({"a": [0.60, 0.62, 0.58], "c": [0.55]})
    with pytest.raises(ValueError, match="does not exclude c"):
        measures.near_optimal(grid, resamples=200)


def test_incumbent_first_hit_and_ert_of_replays():
    observed = {"a": 0.9, "b": 0.5, "c": 0.7}
    replay = {"completions": [[6, "b"], [12, "c"], [20, "a"]]}
    trace = measures.incumbent_trace(replay, observed)
    assert trace == [(6, "b"), (12, "c"), (20, "a")]
    assert measures.incumbent_at(trace, 5) is None and measures.incumbent_at(trace, 15) == "c"
    assert measures.first_hit(trace, ["a"]) == 20 and measures.first_hit(trace, ["x"]) is None
    # Two runs, one hit after 20 epochs, one none in 30: (20 + 30) / 1.
    assert measures.ert([20, None], [25, 30]) == 50.0
    assert measures.ert([None], [30]) == math.inf


def test_wilson_interval_of_a_proportion():
    low, high = measures.wilson_interval(15, 30)
    assert low == pytest.approx(0.3315, abs=1e-3) and high == pytest.approx(0.6685, abs=1e-3)
    assert measures.wilson_interval(30, 30)[1] == 1.0


def _run(key: str, seed: int, curve: list[float]) -> dict:
    return {
        "configuration": key,
        "seed": seed,
        "signals": {"val_macro_f1": curve, "val_loss": [1.0] * len(curve)},
        "epoch_seconds": [2.0] * len(curve),
        "predictions": "0123",
        "labels": "0123",
        "val_loss_no_skill": 1.38,
        "train_loss_no_skill": 1.38,
    }


def test_pack_records_a_reproduced_seed_and_refuses_a_changed_curve():
    grid = se.new_grid(0, _run("0.001|16|adam", 0, [0.2, 0.4]))
    grid["configurations"]["0.001|16|adam"] = {"runs": {"0": {"val_macro_f1": [0.2, 0.4]}}}
    se.pack_run(grid, _run("0.001|16|adam", 0, [0.2, 0.4]))
    se.pack_run(grid, _run("0.001|16|adam", 1, [0.3, 0.5]))
    runs = grid["configurations"]["0.001|16|adam"]["runs"]
    assert grid["reproduced"] == [["0.001|16|adam", 0]]
    assert runs["0"]["predictions"] == "0123" and runs["1"]["val_macro_f1"] == [0.3, 0.5]
    se.pack_run(grid, _run("0.001|16|adam", 1, [0.3, 0.5]))  # packed again: nothing new
    assert grid["reproduced"] == [["0.001|16|adam", 0]]
    with pytest.raises(ValueError, match="does not reproduce"):
        se.pack_run(grid, _run("0.001|16|adam", 1, [0.3, 0.6]))


def test_epoch_seconds_are_medians_by_batch_size_and_optimizer():
    runs = [_run("0.001|16|adam", 0, [0.1]), _run("0.01|16|adam", 0, [0.1])]
    runs[1]["epoch_seconds"] = [4.0]
    seconds = se.epoch_seconds(runs)
    assert seconds == {"16": 3.0, "16|adam": 3.0}
    grid = {"configurations": {"0.1|16|sgd": {}, "0.1|64|sgd": {}}}
    se.fill_epoch_seconds(grid, seconds)
    assert grid["configurations"] == {"0.1|16|sgd": {"epoch_seconds": 3.0}, "0.1|64|sgd": {}}
    se.fill_epoch_seconds(grid, {"16": 9.0})
    assert grid["configurations"]["0.1|16|sgd"] == {"epoch_seconds": 3.0}


def _replay_outputs(tmp_path: Path, name: str, capsys) -> tuple[str, str, dict]:
    folder = tmp_path / name
    code = se.main(
        ["replay", "--quick", "--grids", str(TINY_GRID), "--output", str(folder / "s.json")]
        + ["--table", str(folder / "s.md"), "--runs", str(folder / "runs")]
    )
    assert code == 0
    summary = json.loads((folder / "s.json").read_text())
    for key in ("machine", "replay_seconds"):
        summary.pop(key)
    return capsys.readouterr().out, (folder / "s.md").read_text(), summary


def test_replay_with_the_same_seeds_prints_identical_tables(tmp_path, capsys):
    first = _replay_outputs(tmp_path, "first", capsys)
    second = _replay_outputs(tmp_path, "second", capsys)
    assert first == second
    out, table, summary = first
    assert "tpe_asha" in out and "| tpe_asha |" in table
    grid = summary["grids"]["0"]
    assert grid["best"] == "0.0001|16|adam" and grid["seeds"]["0.0001|16|adam"] == 3
    assert summary["methods"]["tpe_asha"]["grids"]["0"]["replays"] == 3


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["replay", "--methods", "tpe_asha,grid"], "--methods: grid; allowed"),
        (["replay", "--replays", "0"], "--replays: 0"),
        (["replay", "--budget", "1.5"], "--budget: 1.5"),
        (["train", "--grid-seed", "0", "--seeds", "0", "--configs", "1|2|adam"], "--configs"),
    ],
)
def test_bad_options_exit_2_with_one_message(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = se.main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert says in captured.err + captured.out

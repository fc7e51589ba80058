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
import search_efficiency_train as training  # noqa: E402
from search_efficiency_grids import GRIDS  # noqa: E402

sys.path.remove(str(BENCH))


@pytest.fixture(autouse=True)
def _package_model_registry(monkeypatch):
    """A replay registers the benchmark's ``smallcnn`` in this process; the registry is put back
    afterwards, so tests that run later in the same process see the package's models only."""
    from cxr_tune.models import MODELS

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))


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
        "classes": ["a", "b", "c", "d"],
        "val_loss_no_skill": 1.38,
        "train_loss_no_skill": 1.38,
    }


def test_pack_records_a_retrained_seed_and_refuses_a_changed_curve():
    spec = GRIDS["dev-a"]
    grid = training.new_grid(spec, _run("0.001|16|adam", 0, [0.2, 0.4]))
    training.pack_run(grid, _run("0.001|16|adam", 0, [0.2, 0.4]))
    training.pack_run(grid, _run("0.001|16|adam", 1, [0.3, 0.5]))
    runs = grid["configurations"]["0.001|16|adam"]["runs"]
    assert runs["0"]["predictions"] == "0123" and runs["1"]["val_macro_f1"] == [0.3, 0.5]
    training.pack_run(grid, _run("0.001|16|adam", 1, [0.3, 0.5]))  # packed again: nothing new
    assert grid["reproduced"] == []
    training.pack_run(grid, _run("0.001|16|adam", 0, [0.2, 0.4]), retrained=True)
    assert grid["reproduced"] == [["0.001|16|adam", 0]]
    with pytest.raises(ValueError, match="does not reproduce"):
        training.pack_run(grid, _run("0.001|16|adam", 1, [0.3, 0.6]))
    with pytest.raises(ValueError, match="holds no such run"):
        training.pack_run(grid, _run("0.001|16|adam", 2, [0.3, 0.6]), retrained=True)


def test_pack_rounds_curves_to_the_stored_digits_and_compares_at_them():
    spec = GRIDS["dev-a"]
    grid = training.new_grid(spec, _run("0.001|16|adam", 0, [0.2, 0.4]))
    training.pack_run(grid, _run("0.001|16|adam", 0, [0.123456789, 0.4]))
    assert grid["configurations"]["0.001|16|adam"]["runs"]["0"]["val_macro_f1"][0] == 0.1235
    # The same run again (its unrounded curve) reproduces the rounded one.
    training.pack_run(grid, _run("0.001|16|adam", 0, [0.123456789, 0.4]))


def test_epoch_seconds_are_medians_by_batch_size_and_optimizer():
    runs = [_run("0.001|16|adam", 0, [0.1]), _run("0.01|16|adam", 0, [0.1])]
    runs[1]["epoch_seconds"] = [4.0]
    seconds = training.epoch_seconds(runs)
    assert seconds == {"16": 3.0, "16|adam": 3.0}
    grid = {"configurations": {"0.1|16|sgd": {}, "0.1|64|sgd": {}}}
    training.fill_epoch_seconds(grid, seconds)
    assert grid["configurations"] == {"0.1|16|sgd": {"epoch_seconds": 3.0}, "0.1|64|sgd": {}}
    training.fill_epoch_seconds(grid, {"16": 9.0})
    assert grid["configurations"]["0.1|16|sgd"] == {"epoch_seconds": 3.0}


def test_every_grid_spec_has_three_seeds_and_the_held_out_grids_are_five_or_more():
    held_out = [g for g in GRIDS.values() if g.role == "held-out"]
    assert len(held_out) >= 5 and any(g.data == "real" for g in held_out)
    for spec in GRIDS.values():
        assert len(spec.seeds) >= 3
        if spec.role != "legacy":
            assert len(spec.configurations()) >= 60 and spec.epochs >= 10


# ---- delta with the seeds' noise; paired intervals ------------------------------------------------
def test_delta_combines_the_image_and_seed_standard_errors():
    finals = {"a": [0.60, 0.66, 0.54], "c": [0.2, 0.21, 0.19]}
    near = measures.near_optimal(_grid(finals), resamples=200)
    assert near.seed_se == pytest.approx(np.std([0.60, 0.66, 0.54], ddof=1) / math.sqrt(3))
    assert near.delta == pytest.approx(math.hypot(near.image_se, near.seed_se))
    assert near.delta > max(near.image_se, near.seed_se) > 0.0
    # b sits between the images' SE and the combined delta below the best: in G only with
    # the seeds' noise counted.
    b = 0.60 - (near.image_se + near.delta) / 2
    grid = _grid({**finals, "b": [b - 0.01, b, b + 0.01]})
    images_only = measures.near_optimal(grid, resamples=200, seed_noise=False)
    both = measures.near_optimal(grid, resamples=200)
    assert images_only.delta == pytest.approx(near.image_se)
    assert "b" not in images_only.members and "b" in both.members
    double = measures.near_optimal(grid, resamples=200, multiplier=2.0)
    assert double.delta == pytest.approx(2 * both.delta)
    assert set(both.members) <= set(double.members)


def test_seed_se_is_zero_with_one_seed():
    grid = _grid({"a": [0.6]})
    assert measures.seed_se(grid, "a") == 0.0


def test_paired_differences_of_equal_methods_are_exactly_zero_and_shifts_exact():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    values = np.vstack([a, a, a + 0.1])
    draws = measures.bootstrap_draws(50, 300, seed=1)
    means = measures.resampled_means(values, draws)
    low, high = measures.percentile_interval(means[0] - means[1])
    assert low == high == 0.0
    shift = means[2] - means[0]
    assert np.allclose(shift, 0.1)
    # Unpaired, the same shift would carry the replays' spread.
    other = measures.bootstrap_draws(50, 300, seed=2)
    unpaired = values[2][other].mean(axis=-1) - means[0]
    assert np.ptp(unpaired) > 10 * np.ptp(shift)


def test_resampled_ert_is_cocos_ert_on_each_resample():
    hit_epochs = np.array([[20.0, np.nan, 10.0], [np.nan, np.nan, np.nan]])
    spent = np.array([[25.0, 30.0, 40.0], [30.0, 30.0, 30.0]])
    identity = np.arange(3)[None, :]
    ert = measures.resampled_ert(hit_epochs, spent, identity)
    assert ert[0, 0] == pytest.approx(measures.ert([20, None, 10], [25, 30, 40]))
    assert ert[1, 0] == math.inf


def test_ranks_of_share_ties_and_rank_the_lowest_first():
    ranks = measures.ranks_of(np.array([[0.3, 0.1], [0.1, 0.1], [0.2, 0.5]]))
    assert ranks[:, 0].tolist() == [3.0, 1.0, 2.0]
    assert ranks[:, 1].tolist() == [1.5, 1.5, 3.0]


def _outcomes(values, hits_at, spent, incumbents):
    return se.Outcomes(
        value=np.array(values, dtype=float),
        early=np.array(values, dtype=float),
        incumbent=list(incumbents),
        hit_epoch={m: np.array(hits_at, dtype=float) for m in se.MULTIPLIERS},
        spent=np.array(spent, dtype=float),
        curve=np.array([0.2, 0.1]),
        trials=5.0,
        epochs_at_budget=10.0,
    )


def _facts():
    members = {str(m): ["best"] for m in se.MULTIPLIERS}
    return {"y_star": 0.8, "near_optimal": members, "worst_reference": 0.1}


def test_grid_samples_pair_the_methods_and_give_random_search_r_of_one():
    n = 40
    rng = np.random.default_rng(3)
    values = rng.choice([0.5, 0.8], size=n)
    incumbents = ["best" if v == 0.8 else "other" for v in values]
    hits = [5.0 if v == 0.8 else np.nan for v in values]
    reference = _outcomes(values, hits, [30.0] * n, incumbents)
    methods = {
        "random_full": _outcomes(values, hits, [30.0] * n, incumbents),
        "tpe_asha": _outcomes([0.8] * n, [3.0] * n, [30.0] * n, ["best"] * n),
    }
    samples = se.grid_samples(_facts(), methods, reference, seed=5, resamples=400)
    measured = se.grid_measures(_facts(), methods, reference, samples)
    random_row = measured["methods"]["random_full"]
    assert random_row["R"] == pytest.approx(1.0)
    assert random_row["R_interval"][0] < 1.0 < random_row["R_interval"][1]
    tpe_row = measured["methods"]["tpe_asha"]
    assert tpe_row["R"] == 0.0 and tpe_row["rank_R"] == 1.0
    assert tpe_row["by_delta"]["1.0"]["hit_rate"] == 1.0
    # Over grids: a method at the best every time has R 0 in every resample.
    over = se.pooled(["g"], {"g": samples}, {"g": measured})["methods"]
    assert over["tpe_asha"]["mean_R_interval"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert measured["methods"]["tpe_asha"]["by_delta"]["1.0"]["speedup"] > 1.0


def _synthetic_grid(path: Path, role: str = "held-out") -> Path:
    """A grid of 8 configurations x 4 epochs x 3 seeds with made-up curves: Adam at 1e-3 and
    batch 16 learns best, SGD at 1e-4 learns nothing (losses at chance)."""
    rng = np.random.default_rng(11)
    labels = "".join(str(v) for v in rng.integers(0, 4, 80))
    chance = math.log(4)
    configurations = {}
    for lr in (1e-4, 1e-3):
        for batch in (16, 64):
            for optimizer in ("adam", "sgd"):
                key = f"{lr:g}|{batch}|{optimizer}"
                skill = 0.0 if (optimizer == "sgd" and lr < 1e-3) else (0.9 if lr == 1e-3 else 0.5)
                skill *= (1.0 if batch == 16 else 0.8) * (1.0 if optimizer == "adam" else 0.8)
                runs = {}
                for seed in range(3):
                    curve = [
                        round(0.25 + 0.5 * skill * e / 4 + 0.02 * rng.standard_normal(), 4)
                        for e in range(1, 5)
                    ]
                    loss = [round(chance * (1 - 0.4 * skill * e / 4), 4) for e in range(1, 5)]
                    right = rng.random(80) < 0.25 + 0.6 * skill
                    guesses = rng.integers(0, 4, 80)
                    predictions = "".join(
                        lab if ok else str(g) for lab, ok, g in zip(labels, right, guesses)
                    )
                    runs[str(seed)] = {
                        "val_macro_f1": curve,
                        "val_loss": loss,
                        "val_accuracy": curve,
                        "train_loss": loss,
                        "predictions": predictions,
                    }
                configurations[key] = {
                    "runs": runs,
                    "epoch_seconds": 1.0 if batch == 64 else 1.5,
                }
    grid = {
        "grid": {
            "name": f"synthetic-{role}",
            "role": role,
            "seed": 0,
            "replay_seed": 0,
            "model": "alexnet",
            "epochs": 4,
            "space": {
                "lr": {"choice": [1e-4, 1e-3]},
                "batch_size": {"choice": [16, 64]},
                "optimizer": {"choice": ["adam", "sgd"]},
            },
            "val_loss_no_skill": chance,
            "train_loss_no_skill": chance,
            "labels": labels,
        },
        "configurations": configurations,
    }
    path.write_text(json.dumps(grid))
    return path


def _replay_outputs(tmp_path: Path, name: str, capsys, grids: list[str]) -> tuple[str, str, dict]:
    folder = tmp_path / name
    code = se.main(
        ["replay", "--quick", "--grids", *grids, "--output", str(folder / "s.json")]
        + ["--table", str(folder / "s.md"), "--runs", str(folder / "runs")]
    )
    assert code == 0
    summary = json.loads((folder / "s.json").read_text())
    for key in ("machine", "replay_seconds"):
        summary.pop(key)
    return capsys.readouterr().out, (folder / "s.md").read_text(), summary


@pytest.mark.slow
def test_replay_with_the_same_seeds_prints_identical_tables(tmp_path, capsys):
    grids = [
        str(_synthetic_grid(tmp_path / "held.json")),
        str(_synthetic_grid(tmp_path / "dev.json", role="development")),
    ]
    first = _replay_outputs(tmp_path, "first", capsys, grids)
    second = _replay_outputs(tmp_path, "second", capsys, grids)
    assert first == second
    out, table, summary = first
    assert "TPE + ASHA" in out and "| TPE + ASHA |" in table
    # Held-out grids come first and apart from the development grids.
    assert table.index("**Grids: held-out grids") < table.index("**Grids: development grids")
    assert set(summary["groups"]) == {"held-out", "development"}
    grid = summary["grids"]["synthetic-held-out"]
    assert grid["best"] == "0.001|16|adam" and grid["seeds_per_configuration"] == [3, 3]
    assert grid["delta"] == pytest.approx(math.hypot(grid["delta_image_se"], grid["delta_seed_se"]))
    assert set(grid["near_optimal"]) == {"0.5", "1.0", "2.0"}
    row = summary["per_grid"]["synthetic-held-out"]["methods"]["tpe_asha"]
    assert row["replays"] == 4 and "2.0" in row["by_delta"]
    assert "tpe_asha - random_asha" in summary["groups"]["held-out"]["pairs"]
    # Random search's reference runs keep the replays' budget rule: two at a time, the last
    # trial cut; the textbook count assumes configurations trained one after another.
    assert grid["random"]["configurations_completed"] <= grid["textbook_random"]["configurations"]


@pytest.mark.slow
def test_replay_reads_a_legacy_grid_with_fewer_seeds(tmp_path, capsys):
    out, _, summary = _replay_outputs(tmp_path, "legacy", capsys, [str(TINY_GRID)])
    assert set(summary["groups"]) == {"legacy"}
    assert summary["grids"]["tiny"]["seeds_per_configuration"] == [1, 3]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["replay", "--methods", "tpe_asha,grid"], "--methods: grid; allowed"),
        (["replay", "--replays", "0"], "--replays: 0"),
        (["replay", "--budget", "1.5"], "--budget: 1.5"),
        (["replay", "--budget", "0.5", "--horizon", "0.4"], "--horizon: 0.4"),
        (["train", "--grid", "dev-a", "--configs", "1|2|adam"], "--configs"),
        (["train", "--grid", "dev-x"], "--grid: dev-x; allowed"),
    ],
)
def test_bad_options_exit_2_with_one_message(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = se.main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert says in captured.err + captured.out

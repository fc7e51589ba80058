"""The measures of the search-efficiency benchmark, as HPO benchmark suites define them.

Pure functions on a grid's stored curves and on replays' results (numpy and scipy only; no
Ray, no Optuna), so that every figure can be checked by hand on a small example:

- a configuration's *reference value*: its final-epoch validation metric averaged over its
  initialisation seeds (never the maximum over epochs);
- the tolerance *delta*: the bootstrap standard error, over validation images, of the best
  configuration's reference value; the *near-optimal set* G: every configuration within delta
  of the best reference value y*;
- random search over the grid, exactly: configurations drawn uniformly without replacement and
  trained to the end one after another, the incumbent being the best *observed* one (its final
  value under the seed the searches see) and scored by its reference value. Its expected
  incumbent value and hit rate at a budget, and its expected epochs to put an incumbent in G,
  have closed forms (below);
- per method, from replays: normalised regret R = (y* - v) / (y* - E[v_random]) at a budget,
  with a bootstrap interval over replays; the hit rate (incumbent in G) with a Wilson interval;
  the expected running time to a hit (COCO's ERT: all epochs of all runs, successful runs counted
  up to their hit, divided by the number of successes) and the speed-up against random search;
  the regret curve over the grid's epochs and its area.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

METRIC = "val_macro_f1"
MIN_SEEDS = 3  # initialisation seeds behind a reference value that can enter G
BOOTSTRAP = 2000


# ---- a grid's reference values and its near-optimal set ----------------------------------------
def final_values(grid: Mapping[str, Any], key: str) -> dict[str, float]:
    """A configuration's final metric under each initialisation seed it was trained with."""
    epochs = int(grid["grid"]["epochs"])
    runs = grid["configurations"][key]["runs"]
    return {
        seed: float(run[METRIC][-1]) for seed, run in runs.items() if len(run[METRIC]) == epochs
    }


def reference_values(grid: Mapping[str, Any]) -> dict[str, float]:
    """Each configuration's final metric averaged over its seeds."""
    out = {}
    for key in grid["configurations"]:
        finals = final_values(grid, key)
        out[key] = sum(finals.values()) / len(finals) if finals else 0.0
    return out


def observed_values(grid: Mapping[str, Any]) -> dict[str, float]:
    """Each configuration's final metric under the seed the replays read (what a search sees)."""
    seed = str(grid["grid"]["replay_seed"])
    return {key: final_values(grid, key).get(seed, 0.0) for key in grid["configurations"]}


def macro_f1_of_counts(labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> Any:
    """Macro-F1 of weighted images (``weights``: (B, n) counts, one row per resample), as
    ``cxr_tune.metrics`` computes it: per class 2 tp / (predicted + actual), 0 where both are 0."""
    classes = int(max(labels.max(), predictions.max())) + 1
    scores = []
    for c in range(classes):
        tp = weights @ ((labels == c) & (predictions == c)).astype(float)
        predicted = weights @ (predictions == c).astype(float)
        actual = weights @ (labels == c).astype(float)
        den = predicted + actual
        scores.append(np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0))
    return np.mean(scores, axis=0)


def _digits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")


def bootstrap_se(grid: Mapping[str, Any], key: str, *, resamples: int = BOOTSTRAP) -> dict:
    """Bootstrap standard errors, over validation images, of ``key``'s metric: of its reference
    value (every seed's predictions scored on the same resampled images, then averaged) and of
    each seed's single value. Seeded by the grid's seed: the same every time."""
    labels = _digits(grid["grid"]["labels"])
    runs = grid["configurations"][key]["runs"]
    predictions = {s: _digits(r["predictions"]) for s, r in runs.items() if r.get("predictions")}
    rng = np.random.default_rng(1000 + int(grid["grid"]["seed"]))
    n = len(labels)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    per_seed = {s: macro_f1_of_counts(labels, p, weights) for s, p in predictions.items()}
    mean = np.mean(list(per_seed.values()), axis=0)
    return {
        "seeds": sorted(per_seed, key=int),
        "reference_value": float(np.std(mean, ddof=1)),
        "single_seed": {s: float(np.std(v, ddof=1)) for s, v in per_seed.items()},
    }


def seed_se(grid: Mapping[str, Any], key: str) -> float:
    """The between-seed standard error of ``key``'s reference value: the standard deviation
    of its final values over its seeds divided by the square root of their number (0 with one
    seed: nothing to measure)."""
    finals = list(final_values(grid, key).values())
    if len(finals) < 2:
        return 0.0
    return float(np.std(finals, ddof=1) / math.sqrt(len(finals)))


def combine_se(image_se: float, between_seed_se: float) -> float:
    """delta from its two parts: the square root of the sum of their squares.

    The two are standard errors of one mean from independent sources of noise (which
    validation images were drawn; which initialisation and batch order a run had), so their
    variances add. Taking the larger alone would understate delta wherever both matter."""
    return math.sqrt(image_se**2 + between_seed_se**2)


@dataclass(frozen=True)
class NearOptimal:
    """y*, delta (and its two parts) and G of a grid, and, where some configuration has fewer
    seeds than ``MIN_SEEDS`` (the legacy grids), the check that none of those can be in G."""

    best: str
    y_star: float
    delta: float
    members: tuple[str, ...]
    bound: dict[str, Any]
    image_se: float = 0.0
    seed_se: float = 0.0
    multiplier: float = 1.0


def near_optimal(
    grid: Mapping[str, Any],
    *,
    resamples: int = BOOTSTRAP,
    multiplier: float = 1.0,
    seed_noise: bool = True,
    strict: bool = True,
) -> NearOptimal:
    """The near-optimal set of a grid: every configuration whose reference value is within
    ``multiplier`` x delta of the best, y*.

    delta = ``combine_se`` of the bootstrap standard error over validation images of y* (every
    seed's predictions scored on the same resampled images, then averaged) and the between-seed
    standard error of y* (``seed_se``); ``seed_noise=False`` leaves the second out, as the
    first version of this benchmark did.

    Only configurations trained under ``MIN_SEEDS`` seeds or more compete for y*. Where some
    have fewer (legacy grids), they are shown to be out of G by a bound: with the seeds they
    lack scoring ``top``, the best final value any run on this grid reached, their mean would
    still be below y* - delta.

    With ``strict=False`` a failing bound is recorded (``bound["undetermined"]``: those
    configurations might be in G) instead of raised; G then holds only configurations with
    enough seeds.

    Raises:
        ValueError: no configuration has ``MIN_SEEDS`` seeds, the best has no predictions, or
            (``strict``) the bound fails for some configuration (it needs more seeds: the
            message names it).
    """
    refs = reference_values(grid)
    finals = {key: final_values(grid, key) for key in grid["configurations"]}
    seeded = [k for k in refs if len(finals[k]) >= MIN_SEEDS]
    if not seeded:
        raise ValueError(f"no configuration has {MIN_SEEDS} seeds")
    best = max(seeded, key=lambda k: refs[k])
    se = bootstrap_se(grid, best, resamples=resamples)
    if len(se["seeds"]) < len(finals[best]):
        raise ValueError(f"{best}: predictions of every seed are needed for the tolerance")
    image_se = se["reference_value"]
    between = seed_se(grid, best) if seed_noise else 0.0
    y_star = refs[best]
    delta = multiplier * combine_se(image_se, between)
    top = max(v for by_seed in finals.values() for v in by_seed.values())
    bounds = {}
    for key in refs:
        if len(finals[key]) >= MIN_SEEDS:
            continue
        have = list(finals[key].values())
        upper = (sum(have) + (MIN_SEEDS - len(have)) * top) / MIN_SEEDS
        bounds[key] = {"seeds": len(have), "upper_bound": upper}
    failing = [k for k, b in bounds.items() if b["upper_bound"] >= y_star - delta]
    if failing and strict:
        raise ValueError(
            f"the bound does not exclude {', '.join(sorted(failing))} from G: train more seeds"
        )
    members = tuple(
        sorted((k for k in seeded if refs[k] >= y_star - delta), key=lambda k: -refs[k])
    )
    bound = {
        "top_value": top,
        "threshold": y_star - delta,
        "largest_upper_bound": max((b["upper_bound"] for b in bounds.values()), default=None),
        "configurations": bounds,
        "single_seed_se": se["single_seed"],
        "undetermined": sorted(failing),
    }
    return NearOptimal(best, y_star, delta, members, bound, image_se, between, multiplier)


# ---- random search over the grid, exactly ------------------------------------------------------
def _comb(n: int, k: int) -> float:
    return float(math.comb(n, k)) if 0 <= k <= n else 0.0


def random_incumbent_probabilities(observed: Mapping[str, float], k: int) -> dict[str, float]:
    """P(configuration is the incumbent) after ``k`` configurations drawn without replacement.

    The incumbent is the best observed value (the first drawn among equal ones, so by symmetry
    each of a tie is equally likely): P(best observed value in the draw is v) =
    [C(n - h, k) - C(n - h - t, k)] / C(n, k), with h configurations above v and t at v.
    """
    n = len(observed)
    if k <= 0:
        return dict.fromkeys(observed, 0.0)
    k = min(k, n)
    total = _comb(n, k)
    values = sorted(set(observed.values()), reverse=True)
    out = {}
    higher = 0
    for v in values:
        tied = [key for key, o in observed.items() if o == v]
        p_max = (_comb(n - higher, k) - _comb(n - higher - len(tied), k)) / total
        for key in tied:
            out[key] = p_max / len(tied)
        higher += len(tied)
    return out


def random_value_and_hit(
    observed: Mapping[str, float], reference: Mapping[str, float], members: Sequence[str], k: int
) -> tuple[float | None, float]:
    """Random search's expected incumbent reference value (None without an incumbent) and its
    hit rate (incumbent in G) after ``k`` configurations."""
    if k <= 0:
        return None, 0.0
    probs = random_incumbent_probabilities(observed, k)
    value = sum(p * reference[key] for key, p in probs.items())
    return value, sum(probs[key] for key in members)


def random_first_hit(
    observed: Mapping[str, float], members: Sequence[str]
) -> tuple[list[float], float]:
    """P(no incumbent in G after j draws), j = 0..n, and P(an incumbent in G by the end).

    The incumbent after j draws is the best observed of them; it was in G at some point iff
    some member of G was a record (best observed so far) when drawn. For the j drawn
    configurations ranked by observed value, s_1 > s_2 > ..., the events "s_i came before
    s_1..s_{i-1}" are independent with probability 1/i, so given the drawn set
    P(no G record) = prod over members s_i of (1 - 1/i); a dynamic programme over the
    configurations in observed order sums this over all sets of size j. Ties in observed value
    are ordered by name, as a search keeps the first found (a tie across G's boundary is
    counted by that order).
    """
    order = sorted(observed, key=lambda key: (-observed[key], key))
    in_g = set(members)
    n = len(order)
    # weight[c] = sum over subsets of the configurations seen so far with c chosen of the
    # product of (1 - 1/i) over their members.
    weight = [1.0] + [0.0] * n
    for key in order:
        new = weight[:]
        for c in range(n):
            if weight[c] == 0.0:
                continue
            factor = (1.0 - 1.0 / (c + 1)) if key in in_g else 1.0
            new[c + 1] += weight[c] * factor
        weight = new
    no_hit = [weight[j] / _comb(n, j) for j in range(n + 1)]
    return no_hit, 1.0 - no_hit[n]


def random_ert(observed: Mapping[str, float], members: Sequence[str], epochs: int) -> float:
    """Random search's expected epochs to put an incumbent in G, COCO style: expected epochs
    spent (each configuration trained to its last epoch, until a hit or the grid is used up)
    divided by the probability of a hit."""
    no_hit, success = random_first_hit(observed, members)
    n = len(observed)
    spent = epochs * sum(no_hit[j] for j in range(n))
    return spent / success if success > 0 else math.inf


# ---- a replay's incumbent and the per-method measures -------------------------------------------
def incumbent_trace(
    replay: Mapping[str, Any], observed: Mapping[str, float]
) -> list[tuple[int, str]]:
    """(epochs consumed, configuration) each time a replay's incumbent changes. ``replay`` has
    ``epochs_at_end``: per trial that trained every epoch, the epochs the whole search had
    consumed when it did, and its configuration, in that order."""
    trace: list[tuple[int, str]] = []
    best = -math.inf
    for spent, key in replay["completions"]:
        if observed[key] > best:
            best = observed[key]
            trace.append((int(spent), key))
    return trace


def incumbent_at(trace: Sequence[tuple[int, str]], budget: int) -> str | None:
    """The incumbent once ``budget`` epochs were consumed (None before the first completion)."""
    found = None
    for spent, key in trace:
        if spent > budget:
            break
        found = key
    return found


def first_hit(trace: Sequence[tuple[int, str]], members: Sequence[str]) -> int | None:
    """Epochs consumed when the incumbent first entered G (None: never)."""
    for spent, key in trace:
        if key in members:
            return spent
    return None


def bootstrap_interval(
    values: Sequence[float], statistic: Any, seed: int, *, resamples: int = BOOTSTRAP
) -> tuple[float, float]:
    """A 95% percentile interval of ``statistic`` over resamples of ``values`` (seeded)."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    stats = [statistic(data[rng.integers(0, len(data), len(data))]) for _ in range(resamples)]
    low, high = np.nanpercentile(stats, [2.5, 97.5])
    return float(low), float(high)


def wilson_interval(hits: int, runs: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95%)."""
    if runs == 0:
        return 0.0, 1.0
    p = hits / runs
    centre = (p + z * z / (2 * runs)) / (1 + z * z / runs)
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / (1 + z * z / runs)
    return max(0.0, centre - half), min(1.0, centre + half)


def ert(hit_epochs: Sequence[int | None], spent: Sequence[int]) -> float:
    """COCO's expected running time: epochs of every run (up to its hit where it hit, all of
    them where it did not) over the number of runs that hit."""
    successes = sum(h is not None for h in hit_epochs)
    total = sum(h if h is not None else s for h, s in zip(hit_epochs, spent))
    return total / successes if successes else math.inf


def spearman_by_epoch(grid: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Spearman's rho, over the configurations, between each epoch's value and the last epoch's
    (and the reference value), for the metric and the validation loss of the replayed seed."""
    from scipy.stats import spearmanr

    seed = str(grid["grid"]["replay_seed"])
    epochs = int(grid["grid"]["epochs"])
    refs = reference_values(grid)
    runs = {key: c["runs"][seed] for key, c in grid["configurations"].items()}
    keys = [k for k, r in runs.items() if len(r[METRIC]) == epochs]
    last = [runs[k][METRIC][-1] for k in keys]
    reference = [refs[k] for k in keys]
    out = {}
    for epoch in range(1, epochs + 1):
        f1 = [runs[k][METRIC][epoch - 1] for k in keys]
        loss = [-runs[k]["val_loss"][epoch - 1] for k in keys]
        out[str(epoch)] = {
            "f1_vs_last": float(spearmanr(f1, last)[0]),
            "loss_vs_last": float(spearmanr(loss, last)[0]),
            "f1_vs_reference": float(spearmanr(f1, reference)[0]),
            "loss_vs_reference": float(spearmanr(loss, reference)[0]),
        }
    return out


# ---- paired comparisons over shared replay seeds, pooled over grids ----------------------------
def bootstrap_draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """Indices of ``resamples`` bootstrap resamples of ``n`` replays, shape (resamples, n).

    Every method of a grid is resampled with the same indices: its replays share their seeds
    with the other methods', so a difference between two methods is taken seed by seed
    (paired), and its interval is the paired one."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples: np.ndarray, axis: int = -1) -> tuple[Any, Any]:
    """The 95% percentile interval of bootstrap ``samples`` along ``axis``."""
    low, high = np.nanpercentile(samples, [2.5, 97.5], axis=axis)
    return low, high


def resampled_means(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Means of ``values`` (methods x replays) over each resample: (methods, resamples)."""
    return values[:, draws].mean(axis=-1)


def resampled_ert(hit_epochs: np.ndarray, spent: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """COCO's ERT of each method over each resample: (methods, resamples); ``hit_epochs`` is
    NaN where a replay never hit. Infinite where a resample has no hit."""
    hit = ~np.isnan(hit_epochs)
    cost = np.where(hit, hit_epochs, spent)
    total = cost[:, draws].sum(axis=-1)
    hits = hit[:, draws].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hits > 0, total / np.maximum(hits, 1), np.inf)


def ranks_of(values: np.ndarray) -> np.ndarray:
    """Ranks (1 = lowest) along axis 0, ties sharing the mean of their ranks: values is
    (methods, ...)."""
    values = np.asarray(values, dtype=float)
    below = (values[None, :, ...] < values[:, None, ...]).sum(axis=1)
    tied = (values[None, :, ...] == values[:, None, ...]).sum(axis=1)
    return 1.0 + below + (tied - 1) / 2.0


def geometric_mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """The geometric mean along ``axis`` (0 where a value is 0, inf where one is inf)."""
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(values), axis=axis))

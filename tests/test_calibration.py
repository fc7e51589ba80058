"""Temperature scaling: an over-confident model gets T > 1 and a lower ECE, a calibrated one
keeps T near 1, degenerate inputs give T = 1 with a reason, multi-label fits per label."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxr_tune.calibration import (
    REASON_EMPTY,
    REASON_NOT_FINITE,
    REASON_ONE_OUTCOME,
    REASON_SEPARABLE,
    Calibration,
    calibrated_probabilities,
    calibration_error,
    ece_before_after,
    fit_calibration,
    fit_label_temperatures,
    fit_temperature,
    probabilities,
)
from cxr_tune.data.types import MASKED_LABEL
from cxr_tune.stats import bootstrap_indices


def calibrated_logits(n: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution the targets are drawn from."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, classes))
    p = probabilities(logits, "multiclass")
    targets = np.array([rng.choice(classes, p=row) for row in p])
    return logits, targets


def test_fit_temperature_softens_an_over_confident_model_and_lowers_its_ece():
    logits, targets = calibrated_logits(3000, seed=1)
    over = 3.0 * logits  # the same ranking, three times too sure
    fit = fit_temperature(over[:1500], targets[:1500])
    assert fit.reason is None
    assert 2.5 < fit.temperature < 3.5
    assert fit.nll_after < fit.nll_before
    calibration = Calibration("multiclass", (fit,))
    before = calibration_error(
        probabilities(over[1500:], "multiclass"), targets[1500:], "multiclass"
    )
    after = calibration_error(
        calibrated_probabilities(over[1500:], calibration), targets[1500:], "multiclass"
    )
    assert after < before / 2


def test_fit_temperature_leaves_a_calibrated_model_near_one():
    logits, targets = calibrated_logits(4000, seed=2)
    fit = fit_temperature(logits, targets)
    assert fit.reason is None
    assert 0.9 < fit.temperature < 1.1


def test_fit_temperature_sharpens_an_under_confident_model():
    logits, targets = calibrated_logits(3000, seed=3)
    assert fit_temperature(logits / 2.0, targets).temperature < 0.65


@pytest.mark.parametrize(
    ("logits", "targets", "reason"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int), REASON_EMPTY),
        (np.array([[2.0, 0.0], [0.5, 0.1]]), np.array([0, 0]), REASON_ONE_OUTCOME),
        (np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.5]]), np.array([0, 1, 0]), REASON_SEPARABLE),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), np.array([0, 1]), REASON_NOT_FINITE),
    ],
)
def test_fit_temperature_degenerate_inputs_give_one_with_a_reason(logits, targets, reason):
    fit = fit_temperature(logits, targets)
    assert fit.temperature == 1.0 and fit.reason == reason
    assert not math.isnan(fit.temperature)


def test_fit_temperature_all_wrong_stays_finite():
    # Every image confidently wrong: the NLL falls towards T -> inf; no NaN, T = 1 with a reason.
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 20)
    targets = np.array([1, 0] * 20)
    fit = fit_temperature(logits, targets)
    assert fit.temperature == 1.0 and fit.reason is not None


def test_fit_temperature_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))


def test_label_temperatures_fit_each_label_and_skip_masked_entries():
    rng = np.random.default_rng(4)
    n, labels = 4000, 3
    true = rng.normal(0.0, 2.0, size=(n, labels))
    targets = (rng.random((n, labels)) < 1.0 / (1.0 + np.exp(-true))).astype(np.uint8)
    logits = true * np.array([1.0, 2.5, 0.5])  # calibrated, over-confident, under-confident
    fits = fit_label_temperatures(logits, targets)
    assert [f.reason for f in fits] == [None, None, None]
    assert 0.85 < fits[0].temperature < 1.15
    assert 2.0 < fits[1].temperature < 3.0
    assert 0.4 < fits[2].temperature < 0.6
    # Masked entries carry no information: masking a third of label 1 with values that would
    # mislead the fit (every masked entry 255) changes nothing but the count.
    masked = targets.copy()
    hidden = rng.random(n) < 0.3
    masked[hidden, 1] = MASKED_LABEL
    again = fit_label_temperatures(logits, masked)
    alone = fit_label_temperatures(logits[~hidden][:, [1]], targets[~hidden][:, [1]])
    assert again[1].temperature == pytest.approx(alone[0].temperature, rel=1e-6)
    assert again[1].images == int((~hidden).sum())


def test_label_temperatures_one_outcome_label_stays_at_one():
    logits = np.array([[1.0, -1.0], [0.3, 1.0], [-2.0, 0.2]])
    targets = np.array([[1, 0], [0, 0], [1, 0]], dtype=np.uint8)
    fits = fit_label_temperatures(logits, targets)
    assert fits[1].temperature == 1.0 and fits[1].reason == REASON_ONE_OUTCOME


def test_calibration_round_trips_through_a_dict():
    logits, targets = calibrated_logits(500, seed=5)
    calibration = fit_calibration(2.0 * logits, targets, "multiclass")
    again = Calibration.from_dict(calibration.to_dict())
    assert again.temperatures == calibration.temperatures
    assert again.task == "multiclass"
    identity = Calibration.identity("multilabel", 3)
    assert identity.temperatures == (1.0, 1.0, 1.0)
    assert Calibration.from_dict(identity.to_dict()).temperatures == (1.0, 1.0, 1.0)


def test_ece_before_after_has_paired_intervals():
    logits, targets = calibrated_logits(2000, seed=6)
    over = 3.0 * logits
    calibration = fit_calibration(over[:1000], targets[:1000], "multiclass")
    test, test_targets = over[1000:], targets[1000:]
    result = ece_before_after(
        test, test_targets, calibration, bootstrap_indices(len(test_targets), 200, 0)
    )
    for key in ("before", "after", "difference"):
        low, high = result[key]["ci95"]
        assert low <= result[key]["mean"] <= high or key == "difference"
    assert result["after"]["mean"] < result["before"]["mean"]
    assert result["difference"]["ci95"][1] < 0  # clearly lower after scaling
    plain = ece_before_after(test, test_targets, calibration)
    assert plain["before"]["mean"] == result["before"]["mean"]
    assert all(math.isnan(v) for v in plain["before"]["ci95"])


def test_multilabel_ece_leaves_masked_entries_out():
    probs = np.array([[0.9, 0.2], [0.8, 0.1]])
    targets = np.array([[1, MASKED_LABEL], [1, 0]], dtype=np.uint8)
    # Known entries: 0.9->1, 0.8->1, 0.1->0; the masked 0.2 would count as a wrong negative.
    known_only = calibration_error(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0]), "multilabel")
    assert calibration_error(probs, targets, "multilabel") == pytest.approx(known_only)


def test_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="must be one of multiclass, multilabel"):
        fit_calibration(np.zeros((2, 2)), np.zeros(2), "regression")

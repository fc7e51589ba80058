"""Clinical metrics: calibration, operating points and curves, on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_tune.metrics import (
    expected_calibration_error,
    pr_points,
    reliability_bins,
    roc_points,
    sensitivity_specificity,
    sensitivity_specificity_at,
    specificity_at_sensitivity,
    threshold_at_sensitivity,
    top_label_calibration,
)


def test_expected_calibration_error_perfect_is_zero() -> None:
    confidence = np.full(10, 0.9)
    correct = np.array([1] * 9 + [0])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)


def test_expected_calibration_error_by_hand() -> None:
    # 4 answers at 0.95 with 2 right (bin 0.9-1.0: |0.5 - 0.95| = 0.45, weight 0.4);
    # 6 at 0.15 with none right (bin 0.1-0.2: |0 - 0.15| = 0.15, weight 0.6).
    confidence = np.array([0.95] * 4 + [0.15] * 6)
    correct = np.array([1, 1, 0, 0] + [0] * 6)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.4 * 0.45 + 0.6 * 0.15)
    bins = reliability_bins(confidence, correct)
    assert [b["count"] for b in bins] == [0, 6, 0, 0, 0, 0, 0, 0, 0, 4]
    assert bins[9]["accuracy"] == pytest.approx(0.5) and math.isnan(bins[0]["accuracy"])


def test_expected_calibration_error_top_label_of_probabilities() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [1.0, 0.0]])
    targets = np.array([0, 0, 1, 0])
    confidence, correct = top_label_calibration(probabilities, targets)
    assert confidence.tolist() == [0.8, 0.7, 0.6, 1.0]
    assert correct.tolist() == [1.0, 0.0, 0.0, 1.0]
    # Bins: 0.6 (wrong), 0.7 (wrong), 0.8 (right), 1.0 (right): |0-.6|+|0-.7|+|1-.8|+|1-1| over 4.
    assert expected_calibration_error(confidence, correct) == pytest.approx((0.6 + 0.7 + 0.2) / 4)


def test_specificity_at_sensitivity_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.3, 0.1])
    positives = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # Sensitivity 0.75 needs 3 of 4 positives: threshold 0.7, no negative above it.
    assert specificity_at_sensitivity(scores, positives, 0.75) == pytest.approx(1.0)
    # 0.90 and 0.95 need all 4: threshold 0.2 lets three negatives through.
    assert specificity_at_sensitivity(scores, positives, 0.90) == pytest.approx(0.25)
    assert specificity_at_sensitivity(scores, positives, 0.95) == pytest.approx(0.25)
    assert math.isnan(specificity_at_sensitivity(scores, np.zeros(8), 0.9))


def test_operating_threshold_chosen_on_one_split_and_applied_to_another() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.3, 0.1])
    positives = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # The highest threshold finding 3 of 4 positives (75%) is 0.7; all 4 (90%, 95%) needs 0.2.
    assert threshold_at_sensitivity(scores, positives, 0.75) == 0.7
    assert threshold_at_sensitivity(scores, positives, 0.90) == 0.2
    assert threshold_at_sensitivity(scores, positives, 0.95) == 0.2
    assert math.isnan(threshold_at_sensitivity(scores, np.zeros(8), 0.9))
    with pytest.raises(ValueError, match="must be in \\(0, 1\\]"):
        threshold_at_sensitivity(scores, positives, 0.0)
    # On other images the threshold gives whatever it gives: here 2 of 3 positives, and one
    # of two negatives called positive (at or above the threshold).
    other = np.array([0.75, 0.7, 0.1, 0.7, 0.3])
    sensitivity, specificity = sensitivity_specificity_at(other, np.array([1, 1, 1, 0, 0]), 0.7)
    assert (sensitivity, specificity) == (pytest.approx(2 / 3), 0.5)
    assert all(math.isnan(v) for v in sensitivity_specificity_at(other, np.ones(5), math.nan))


def test_sensitivity_specificity_from_a_confusion_matrix() -> None:
    confusion = np.array([[8, 2, 0], [1, 8, 1], [0, 0, 10]])
    sensitivity, specificity = sensitivity_specificity(confusion)
    assert sensitivity.tolist() == pytest.approx([0.8, 0.8, 1.0])
    # Class 0: TN = 30 - 10 - 1 (FP from row 1) = 19 of 20 negatives.
    assert specificity.tolist() == pytest.approx([19 / 20, 18 / 20, 19 / 20])


def test_roc_and_pr_points_match_sklearn_and_are_thinned() -> None:
    rng = np.random.default_rng(0)
    positives = rng.random(500) < 0.3
    scores = rng.random(500) + 0.5 * positives
    roc = roc_points(scores, positives, points=21)
    assert len(roc["fpr"]) <= 21 and roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    assert roc["auc"] == pytest.approx(roc_auc_score(positives, scores))
    pr = pr_points(scores, positives, points=21)
    assert len(pr["recall"]) <= 21 and pr["prevalence"] == pytest.approx(positives.mean())
    assert 0 < pr["average_precision"] <= 1
    assert math.isnan(roc_points(scores, np.zeros(500))["auc"])


def test_auroc_equals_sklearn_with_ties() -> None:
    from cxr_tune.metrics import auroc

    rng = np.random.default_rng(3)
    positives = rng.random(300) < 0.4
    scores = np.round(rng.random(300) + 0.3 * positives, 1)  # many ties
    assert auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores))
    assert math.isnan(auroc(scores, np.ones(300)))


def test_specificity_at_sensitivity_equals_the_roc_curve() -> None:
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(4)
    positives = rng.random(400) < 0.25
    scores = np.round(rng.random(400) + 0.4 * positives, 2)
    fpr, tpr, _ = roc_curve(positives, scores, drop_intermediate=False)
    for target in (0.5, 0.9, 0.95, 1.0):
        expected = (1 - fpr[tpr >= target - 1e-12]).max()
        assert specificity_at_sensitivity(scores, positives, target) == pytest.approx(expected)

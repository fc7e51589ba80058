from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cxr_tune.metrics import confusion_matrix, multiclass_metrics, multilabel_metrics


def test_multiclass_known_values():
    targets = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 0])
    # class 0: P=1/3 R=1/2; class 1: P=2/3 R=1; class 2: P=0 R=0 (never predicted right)
    m = multiclass_metrics(confusion_matrix(targets, predictions, 3))
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["macro_precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0) / 3)


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 4, 200)
    predictions = np.where(
        rng.random(200) < 0.6, targets, rng.integers(0, 3, 200)
    )  # class 3 never predicted
    m = multiclass_metrics(confusion_matrix(targets, predictions, 4))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(targets, predictions))
    for ours, average_fn in (
        ("macro_precision", skm.precision_score),
        ("macro_recall", skm.recall_score),
        ("macro_f1", skm.f1_score),
    ):
        expected = average_fn(
            targets, predictions, average="macro", labels=range(4), zero_division=0
        )
        assert m[ours] == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((120, 5)) < [0.5, 0.3, 0.1, 0.05, 0.4]).astype(np.uint8)
    probabilities = np.clip(targets * 0.5 + rng.random((120, 5)) * 0.6, 0, 1)
    predicted = probabilities >= 0.5
    m = multilabel_metrics(probabilities, targets)
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(targets, predicted))
    assert m["accuracy"] == pytest.approx(1 - skm.hamming_loss(targets, predicted))
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(targets, predicted, average="macro", zero_division=0)
    )
    assert m["micro_f1"] == pytest.approx(
        skm.f1_score(targets, predicted, average="micro", zero_division=0)
    )
    assert m["macro_precision"] == pytest.approx(
        skm.precision_score(targets, predicted, average="macro", zero_division=0)
    )
    assert m["macro_recall"] == pytest.approx(
        skm.recall_score(targets, predicted, average="macro", zero_division=0)
    )
    assert m["macro_auroc"] == pytest.approx(
        skm.roc_auc_score(targets, probabilities, average="macro")
    )


def test_multilabel_auroc_skips_labels_without_both_classes():
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2], [0.1, 0.4]])
    assert multilabel_metrics(probabilities, targets)["macro_auroc"] == pytest.approx(1.0)


def test_multilabel_masked_entries_are_left_out_of_every_metric():
    rng = np.random.default_rng(5)
    probabilities = rng.random((60, 3))
    targets = (rng.random((60, 3)) < 0.4).astype(np.uint8)
    masked = targets.copy()
    masked[:20, 1] = 255  # MASKED_LABEL: value unknown
    got = multilabel_metrics(probabilities, masked)
    known = np.ones_like(targets, dtype=bool)
    known[:20, 1] = False
    predicted = probabilities >= 0.5
    assert got["accuracy"] == pytest.approx((predicted == targets)[known].mean())
    expected_auroc = np.mean(
        [
            skm.roc_auc_score(targets[:, 0], probabilities[:, 0]),
            skm.roc_auc_score(targets[20:, 1], probabilities[20:, 1]),
            skm.roc_auc_score(targets[:, 2], probabilities[:, 2]),
        ]
    )
    assert got["macro_auroc"] == pytest.approx(expected_auroc)
    f1_label1 = skm.f1_score(targets[20:, 1], predicted[20:, 1], zero_division=0)
    f1_others = skm.f1_score(targets[:, [0, 2]], predicted[:, [0, 2]], average=None)
    assert got["macro_f1"] == pytest.approx(np.mean([f1_others[0], f1_label1, f1_others[1]]))


def test_no_skill_loss_skips_masked_entries():
    from cxr_tune.metrics import no_skill_loss

    train = np.array([[1, 0], [0, 255], [1, 1], [0, 0]], dtype=np.uint8)
    val = np.array([[1, 255], [0, 1]], dtype=np.uint8)
    # Positive rates over known entries, smoothed: (2+1)/(4+2) and (1+1)/(3+2).
    p = np.array([3 / 6, 2 / 5])
    expected = -np.mean([np.log(p[0]), np.log(1 - p[0]), np.log(p[1])])
    assert no_skill_loss(train, val, "multilabel", 2) == pytest.approx(expected)

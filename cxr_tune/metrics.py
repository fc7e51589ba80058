"""Classification metrics for multi-class and multi-label runs, from compact sufficient statistics.

Multi-class metrics come from a confusion matrix, which the training loop accumulates on the
device (one ``bincount`` per batch, no host synchronisation). Multi-label metrics come from the
predicted probabilities of the whole split. Conventions follow scikit-learn: macro averages over
all classes, and a precision or recall with an empty denominator counts as 0.

Multi-label targets are 0 or 1; any other value (the data layer's ``MASKED_LABEL``, 255: an
uncertain CheXpert label under the ``ignore`` policy) is an entry of unknown value, left out of
every count, score and loss here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cxr_tune.constants import TRAIN_LOSS_NO_SKILL, VAL_LOSS_NO_SKILL

if TYPE_CHECKING:
    from cxr_tune.data.types import DatasetArrays

# The result keys of ``no_skill_loss`` on the validation and the training split (every epoch's
# result of a trial carries both).
NO_SKILL_KEY = VAL_LOSS_NO_SKILL
TRAIN_NO_SKILL_KEY = TRAIN_LOSS_NO_SKILL


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (true class, predicted class) as an int64 (C, C) matrix."""
    index = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, actual)
    f1 = _safe_divide(2 * tp, predicted + actual)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def multiclass_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 from a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    total = confusion.sum()
    per_class = per_class_from_confusion(confusion)
    return {
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "macro_precision": float(per_class["precision"].mean()),
        "macro_recall": float(per_class["recall"].mean()),
        "macro_f1": float(per_class["f1"].mean()),
    }


def known_entries(targets: np.ndarray) -> np.ndarray:
    """Boolean mask of the multi-label entries whose value is known (0 or 1, not masked)."""
    return np.asarray(targets) <= 1


def multilabel_counts(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5):
    """Per-label true positives, false positives and false negatives at ``threshold``
    (masked entries count in none of them)."""
    predicted = np.asarray(probabilities) >= threshold
    known = known_entries(targets)
    actual = np.asarray(targets) == 1
    tp = (predicted & actual & known).sum(axis=0)
    fp = (predicted & ~actual & known).sum(axis=0)
    fn = (~predicted & actual & known).sum(axis=0)
    return predicted, actual, tp, fp, fn


def label_positives(targets: np.ndarray) -> np.ndarray:
    """Positives per label (masked entries are not positives)."""
    return (np.asarray(targets) == 1).sum(axis=0)


def per_label_auroc(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUROC per label over its known entries; NaN where they lack positives or negatives."""
    targets = np.asarray(targets)
    probabilities = np.asarray(probabilities, dtype=float)
    scores = []
    for j in range(targets.shape[1]):
        known = targets[:, j] <= 1
        scores.append(auroc(probabilities[known, j], targets[known, j] == 1))
    return np.array(scores)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve, as the Mann-Whitney statistic on average ranks (ties count a
    half, as scikit-learn's ``roc_auc_score``); NaN without positives or negatives.

    Rank-based rather than a curve per call: bootstrap intervals call it thousands of times.
    """
    from scipy.stats import rankdata

    positives = np.asarray(positives).astype(bool)
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multilabel_metrics(
    probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Multi-label metrics at ``threshold``.

    Returns:
        ``accuracy`` (per-label, i.e. Hamming accuracy), ``subset_accuracy`` (all labels
        right), macro precision / recall / F1 over labels, ``micro_f1``, and ``macro_auroc``
        over the labels where AUROC is defined (NaN if none is). Masked entries are left out:
        of the accuracies, the counts and each label's AUROC.
    """
    predicted, actual, tp, fp, fn = multilabel_counts(probabilities, targets, threshold)
    known = known_entries(targets)
    right = predicted == actual
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    auroc = per_label_auroc(probabilities, targets)
    defined = auroc[~np.isnan(auroc)]
    return {
        "accuracy": float(right[known].mean()) if known.any() else 0.0,
        "subset_accuracy": float((right | ~known).all(axis=1).mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "micro_f1": float(2 * tp.sum() / micro_den) if micro_den else 0.0,
        "macro_auroc": float(defined.mean()) if defined.size else float("nan"),
    }


def no_skill_loss(
    train_labels: np.ndarray, labels: np.ndarray, task: str, num_classes: int
) -> float:
    """The loss on ``labels`` of a model that ignores the image: it predicts, for every image,
    the class frequencies of the training split (cross-entropy for multi-class, mean binary
    cross-entropy per label for multi-label, as the training loop computes them).

    A trial whose loss is not below this has learned nothing from the images. Frequencies are
    smoothed by one count per outcome, so a class absent from training costs a finite loss.
    """
    train = np.asarray(train_labels)
    val = np.asarray(labels)
    if task == "multilabel":
        # Frequencies and the mean over known entries only, as the masked loss computes it.
        known_train = train <= 1
        positive = ((train == 1).sum(axis=0) + 1.0) / (known_train.sum(axis=0) + 2.0)
        known = val <= 1
        targets = (val == 1).astype(float)
        losses = -(targets * np.log(positive) + (1.0 - targets) * np.log1p(-positive))
        return float(losses[known].mean()) if known.any() else float("nan")
    counts = np.bincount(train.astype(np.int64), minlength=num_classes) + 1.0
    frequencies = counts / counts.sum()
    return float(-np.log(frequencies[val.astype(np.int64)]).mean())


def no_skill_losses(dataset: DatasetArrays) -> dict[str, float]:
    """The no-skill loss on the validation and on the training split."""
    train = dataset.split("train").labels
    return {
        NO_SKILL_KEY: no_skill_loss(
            train, dataset.split("val").labels, dataset.task, dataset.num_classes
        ),
        TRAIN_NO_SKILL_KEY: no_skill_loss(train, train, dataset.task, dataset.num_classes),
    }


# A trial must be this much (relatively) below its no-skill loss to count as having learned:
# trials that learn nothing hover within a fraction of a percent of it, on both sides.
NO_SKILL_MARGIN = 0.01


def learned_nothing(result: Mapping[str, Any]) -> bool:
    """Whether a result shows a trial that has learned nothing from the images: its validation
    loss is not clearly below the no-skill loss (that of predicting the training split's class
    frequencies for every image), and neither is its training loss.

    The training loss keeps a trial that fits its training data while its validation loss
    lags (batch-norm statistics of a young network can put it above the no-skill loss for a few
    epochs). A result without a training loss is judged on validation alone; one without a
    validation loss, or its no-skill value, is never judged to have learned nothing.
    """
    on_val = _not_below(result.get("val_loss"), result.get(NO_SKILL_KEY))
    on_train = _not_below(result.get("train_loss"), result.get(TRAIN_NO_SKILL_KEY))
    return on_val is True and on_train is not False


def _not_below(loss: Any, no_skill: Any) -> bool | None:
    """Whether ``loss`` is not ``NO_SKILL_MARGIN`` below ``no_skill``; None if either is unknown."""
    if loss is None or no_skill is None:
        return None
    loss, no_skill = float(loss), float(no_skill)
    if not (math.isfinite(loss) and math.isfinite(no_skill)):
        return None
    return loss > (1.0 - NO_SKILL_MARGIN) * no_skill


# --- clinical metrics: calibration, curves, operating points --------------------------------

CALIBRATION_BINS = 10
CURVE_POINTS = 101


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over equal-
    width confidence bins (Guo et al., 2017).

    Args:
        confidence: the probability a model gave to its answer (multi-class: the top class's
            probability; binary: the positive probability), in [0, 1].
        correct: 1 where the answer was right (binary: where the outcome was positive).
        bins: number of equal-width bins over [0, 1].
    """
    table = reliability_bins(confidence, correct, bins)
    total = sum(row["count"] for row in table)
    if not total:
        return math.nan
    return float(
        sum(
            row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"]
        )
        / total
    )


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """The reliability diagram's bins: range, count, mean confidence and accuracy in each.

    A confidence of exactly 1 falls in the last bin; empty bins have NaN means.
    """
    confidence = np.asarray(confidence, dtype=float).ravel()
    correct = np.asarray(correct, dtype=float).ravel()
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    rows = []
    for k in range(bins):
        inside = which == k
        count = int(inside.sum())
        rows.append(
            {
                "lower": k / bins,
                "upper": (k + 1) / bins,
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else math.nan,
                "accuracy": float(correct[inside].mean()) if count else math.nan,
            }
        )
    return rows


def top_label_calibration(
    probabilities: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class: (confidence of the predicted class, whether it was right) per image."""
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = probabilities.argmax(axis=1)
    return probabilities.max(axis=1), (predicted == np.asarray(targets)).astype(float)


def sensitivity_specificity(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sensitivity (recall) and specificity (TN / (TN + FP)), one-vs-rest, from a
    confusion matrix; 0 where a denominator is empty."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion)
    fn = confusion.sum(axis=1) - tp
    fp = confusion.sum(axis=0) - tp
    tn = confusion.sum() - tp - fn - fp
    return _safe_divide(tp, tp + fn), _safe_divide(tn, tn + fp)


def specificity_at_sensitivity(scores: np.ndarray, positives: np.ndarray, target: float) -> float:
    """The best specificity at any threshold whose sensitivity is at least ``target``.

    NaN when the images have no positive or no negative.
    """
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives).astype(bool)
    n_pos = int(positives.sum())
    if not 0 < n_pos < len(positives):
        return math.nan
    # The highest threshold that still calls ceil(target * P) positives positive (images at or
    # above it are called positive); the negatives below it are the true negatives.
    needed = max(1, math.ceil(target * n_pos - 1e-9))
    threshold = np.sort(scores[positives])[::-1][needed - 1]
    return float((scores[~positives] < threshold).mean())


def threshold_at_sensitivity(scores: np.ndarray, positives: np.ndarray, target: float) -> float:
    """The operating threshold for a target sensitivity: the highest score threshold whose
    sensitivity on these images is at least ``target`` (an image is called positive when its
    score is at or above it), so the specificity there is the best any such threshold has.

    Chosen on one split (the validation split) and applied to another (the test split): see
    :func:`sensitivity_specificity_at`. NaN when the images hold no positive.

    Raises:
        ValueError: ``target`` is not in (0, 1].
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"The value of `target` is {target}, but must be in (0, 1].")
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives).astype(bool)
    n_pos = int(positives.sum())
    if n_pos == 0:
        return math.nan
    needed = max(1, math.ceil(target * n_pos - 1e-9))
    return float(np.sort(scores[positives])[::-1][needed - 1])


def sensitivity_specificity_at(
    scores: np.ndarray, positives: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity when an image is called positive at ``score >= threshold``;
    NaN for a side with no image (and both NaN for a NaN threshold)."""
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives).astype(bool)
    if not math.isfinite(threshold):
        return math.nan, math.nan
    called = scores >= threshold
    sensitivity = float(called[positives].mean()) if positives.any() else math.nan
    specificity = float((~called[~positives]).mean()) if (~positives).any() else math.nan
    return sensitivity, specificity


def roc_points(
    scores: np.ndarray, positives: np.ndarray, points: int = CURVE_POINTS
) -> dict[str, Any]:
    """A one-vs-rest ROC curve (at most ``points`` points, ends kept) and its area."""
    from sklearn.metrics import auc, roc_curve

    positives = np.asarray(positives).astype(int)
    if not 0 < positives.sum() < len(positives):
        return {"fpr": [], "tpr": [], "auc": math.nan}
    fpr, tpr, _ = roc_curve(positives, np.asarray(scores, dtype=float))
    keep = _thin(len(fpr), points)
    return {
        "fpr": [round(float(v), 4) for v in fpr[keep]],
        "tpr": [round(float(v), 4) for v in tpr[keep]],
        "auc": float(auc(fpr, tpr)),
    }


def pr_points(
    scores: np.ndarray, positives: np.ndarray, points: int = CURVE_POINTS
) -> dict[str, Any]:
    """A one-vs-rest precision-recall curve (at most ``points`` points) and the average
    precision; ``prevalence`` is the precision of a model without skill."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    positives = np.asarray(positives).astype(int)
    if not 0 < positives.sum() < len(positives):
        return {
            "recall": [],
            "precision": [],
            "average_precision": math.nan,
            "prevalence": math.nan,
        }
    precision, recall, _ = precision_recall_curve(positives, np.asarray(scores, dtype=float))
    keep = _thin(len(recall), points)
    return {
        "recall": [round(float(v), 4) for v in recall[keep]],
        "precision": [round(float(v), 4) for v in precision[keep]],
        "average_precision": float(average_precision_score(positives, scores)),
        "prevalence": float(positives.mean()),
    }


def _thin(n: int, points: int) -> np.ndarray:
    """Indices of at most ``points`` evenly spread elements of ``n``, first and last kept."""
    if n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(np.int64))

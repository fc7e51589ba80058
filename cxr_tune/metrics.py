"""Classification metrics for multi-class and multi-label runs, from compact sufficient statistics.

Multi-class metrics come from a confusion matrix, which the training loop accumulates on the
device (one ``bincount`` per batch, no host synchronisation). Multi-label metrics come from the
predicted probabilities of the whole split. Conventions follow scikit-learn: macro averages over
all classes, and a precision or recall with an empty denominator counts as 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

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


def multilabel_counts(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5):
    """Per-label true positives, false positives and false negatives at ``threshold``."""
    predicted = np.asarray(probabilities) >= threshold
    actual = np.asarray(targets).astype(bool)
    tp = (predicted & actual).sum(axis=0)
    fp = (predicted & ~actual).sum(axis=0)
    fn = (~predicted & actual).sum(axis=0)
    return predicted, actual, tp, fp, fn


def per_label_auroc(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUROC per label; NaN for a label whose split lacks positives or negatives."""
    targets = np.asarray(targets).astype(int)
    scores = np.full(targets.shape[1], np.nan)
    for j in range(targets.shape[1]):
        column = targets[:, j]
        if 0 < column.sum() < len(column):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores[j] = roc_auc_score(column, probabilities[:, j])
    return scores


def multilabel_metrics(
    probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Multi-label metrics at ``threshold``.

    Returns:
        ``accuracy`` (per-label, i.e. Hamming accuracy), ``subset_accuracy`` (all labels
        right), macro precision / recall / F1 over labels, ``micro_f1``, and ``macro_auroc``
        over the labels where AUROC is defined (NaN if none is).
    """
    predicted, actual, tp, fp, fn = multilabel_counts(probabilities, targets, threshold)
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    auroc = per_label_auroc(probabilities, targets)
    defined = auroc[~np.isnan(auroc)]
    return {
        "accuracy": float((predicted == actual).mean()),
        "subset_accuracy": float((predicted == actual).all(axis=1).mean()),
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
        positive = (train.sum(axis=0) + 1.0) / (train.shape[0] + 2.0)
        targets = val.astype(float)
        losses = -(targets * np.log(positive) + (1.0 - targets) * np.log1p(-positive))
        return float(losses.mean())
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

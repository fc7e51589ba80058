"""What a package needs besides the weights, from one pass over the training and validation
splits: the calibration temperature(s) (validation logits) and the out-of-distribution
statistics (training features; threshold from the validation features)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from cxr_tune.calibration import Calibration, fit_calibration
from cxr_tune.data.types import DatasetArrays
from cxr_tune.engine import LoopSettings
from cxr_tune.features import penultimate_features
from cxr_tune.ood import DEFAULT_PERCENTILE, OodStats, fit_ood


@dataclass(frozen=True)
class ModelStatistics:
    """A trained model's calibration and out-of-distribution statistics."""

    calibration: Calibration
    ood: OodStats


def fit_statistics(
    model: nn.Module,
    name: str,
    dataset: DatasetArrays,
    *,
    settings: LoopSettings,
    batch_size: int = 32,
    percentile: float = DEFAULT_PERCENTILE,
) -> ModelStatistics:
    """Temperature scaling fitted on the validation split; Mahalanobis statistics on the
    training split's penultimate features, thresholded at the validation split's percentile.

    Args:
        model: trained, built by ``create_model(name, ...)``, on ``settings.device``.
        dataset: its dataset with the train and val splits (the test split is not read).
    """
    train = dataset.split("train")
    val = dataset.split("val")
    train_features, _ = penultimate_features(
        model, name, train.images, settings=settings, batch_size=batch_size
    )
    val_features, val_logits = penultimate_features(
        model, name, val.images, settings=settings, batch_size=batch_size
    )
    calibration = fit_calibration(val_logits, np.asarray(val.labels), dataset.task)
    ood = fit_ood(train_features, val_features, percentile=percentile)
    return ModelStatistics(calibration=calibration, ood=ood)

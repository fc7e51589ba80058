"""fit_statistics: one pass over the train and val splits gives the calibration (validation
logits) and the out-of-distribution statistics (training features, validation threshold)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxr_tune.bundle.statistics import fit_statistics
from cxr_tune.engine import LoopSettings
from cxr_tune.features import penultimate_features
from cxr_tune.models import create_model
from tests.trained import phantom

CPU = LoopSettings(device=torch.device("cpu"))


@pytest.mark.slow  # about 7 s of CPU: AlexNet's 4096 features of 80 images, the eigenvectors
def test_fit_statistics_on_a_small_phantom() -> None:
    arrays = phantom(images=96)
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=arrays.num_classes).eval()
    stats = fit_statistics(model, "alexnet", arrays, settings=CPU)
    assert stats.calibration.task == "multiclass" and len(stats.calibration.temperatures) == 1
    assert math.isfinite(stats.calibration.temperatures[0])
    assert stats.ood.dimensions == 4096
    assert stats.ood.train_images == len(arrays.split("train"))
    assert stats.ood.val_images == len(arrays.split("val"))
    val_features, _ = penultimate_features(
        model, "alexnet", arrays.split("val").images, settings=CPU
    )
    # The threshold is the validation split's 99th percentile: at most 1% of it (rounded up)
    # lies above.
    flagged = stats.ood.flags(val_features).sum()
    assert flagged <= math.ceil(0.01 * len(val_features))
    assert np.isfinite(stats.ood.threshold)

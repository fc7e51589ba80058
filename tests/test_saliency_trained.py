"""Saliency on a model trained for a few steps on the phantom with its corner marker: Grad-CAM
maps of the image's size, shares of saliency in the lung masks in [0, 1], a summary with its
interval, overlays written (trains: integration).

That the flag fires on ``phantom_marker`` and not on the plain phantom is asserted at 128 px by
``tests/evaluation/test_probe_phantom.py`` (on the models the shortcut probe's test trains); at
64 px no block of AlexNet separates them (scripts/bench/README.md, "Saliency in the lungs on the
phantom").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_tune.engine import LoopSettings
from cxr_tune.saliency import lung_saliency, lung_shares, saliency_maps, write_overlay
from tests.trained import phantom, train_briefly

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CPU = LoopSettings(device=torch.device("cpu"))


def test_saliency_of_a_briefly_trained_model_end_to_end(tmp_path: Path) -> None:
    arrays = phantom("phantom_marker", images=320)
    model = train_briefly(arrays, epochs=1)
    test = arrays.split("test")
    images, masks = test.images[:24], np.asarray(test.masks)[:24]
    maps, classes = saliency_maps(model, "alexnet", images, settings=CPU, batch_size=8)
    assert maps.shape == images.shape and classes.shape == (24,)
    share, field = lung_shares(maps, masks)
    finite = share[np.isfinite(share)]
    assert finite.size and ((finite >= 0) & (finite <= 1)).all()
    assert ((field > 0) & (field < 1)).all()
    summary = lung_saliency(maps, masks, rounds=200)
    low, high = summary.difference["ci95"]
    assert -1 <= low <= summary.difference["mean"] <= high <= 1
    assert summary.images + summary.empty_maps == 24
    for k in range(2):
        path = write_overlay(tmp_path / f"{k}.png", images[k], maps[k])
        with Image.open(path) as picture:
            assert picture.size == images.shape[1:][::-1]

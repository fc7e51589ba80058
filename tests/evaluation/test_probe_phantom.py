"""The shortcut probe on real trained models: it fires on the phantom with a class-correlated
marker outside the lungs and stays quiet on the default phantom (trains; minutes)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.evaluation.generalisation import probe_summary
from cxr_tune.evaluation.runs import evaluate_run
from cxr_tune.stats import bootstrap_indices

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {
    "model": "alexnet",
    "optimizer": "adam",
    "lr": 3e-4,
    "batch_size": 32,
    "epochs": 3,
    "image_size": 64,
    "augment": "none",
}


@pytest.mark.parametrize(("dataset", "flagged"), [("phantom_marker", True), ("phantom", False)])
def test_probe_fires_on_the_marker_and_not_on_the_default(dataset: str, flagged: bool) -> None:
    arrays = load_dataset(DataSource(dataset, None), DataOptions(image_size=64, phantom_images=640))
    run = evaluate_run({**CONFIG, "dataset": dataset}, 0, arrays, None, probe=True)
    assert run["probe"]["region"] == "lung masks"
    targets = np.asarray(arrays.split("test").labels)
    probe = probe_summary(
        "multiclass", [run], targets, 4, bootstrap_indices(len(targets), 500, 0), "lung masks"
    )
    assert probe["flagged"] is flagged, probe

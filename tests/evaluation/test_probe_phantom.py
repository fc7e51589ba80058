"""The evaluation's checks of how far a model can be trusted, on real trained models (trains;
minutes). On the phantom with a class-correlated marker outside the lungs, the shortcut probe
and the saliency check both fire; on the default phantom neither does. The default phantom's
model flags a noise image, a flat image and a colour photograph out of distribution, and its
distance tells its site B (``phantom_b``) from its own test split (though it flags no more of
it: see ``_check_ood``).

One model per dataset serves every check: the evaluation task trains it once
(``evaluate_run`` with the probe and the evidence a best model gets).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.data.images import decode_file
from cxr_tune.engine import LoopSettings
from cxr_tune.evaluation.evidence import OOD_FILE, EvidenceRequest
from cxr_tune.evaluation.generalisation import probe_summary
from cxr_tune.evaluation.runs import evaluate_run
from cxr_tune.features import penultimate_features
from cxr_tune.models import create_model
from cxr_tune.ood import OodStats
from cxr_tune.stats import bootstrap_indices

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {
    "model": "alexnet",
    "optimizer": "adam",
    "lr": 3e-4,
    "batch_size": 32,
    "epochs": 3,
    "image_size": 128,
    "augment": "none",
}
# 128 px: at 64 px no Grad-CAM block of AlexNet tells the marker's models from the plain
# phantom's (scripts/bench/README.md, "Saliency in the lungs on the phantom").
OPTIONS = DataOptions(image_size=128, phantom_images=640)
CPU = LoopSettings(device=torch.device("cpu"))


def trained_run(dataset: str) -> tuple[dict, object]:
    """The evaluation task of a best model, scored on its own test split and on phantom_b's."""
    arrays = load_dataset(DataSource(dataset, None), OPTIONS)
    site_b = load_dataset(DataSource("phantom_b", None), OPTIONS)
    evidence = EvidenceRequest(explain=True, keep_weights=True, rounds=500)
    run = evaluate_run(
        {**CONFIG, "dataset": dataset}, 0, arrays, None,
        {"phantom_b": site_b.for_test()}, ("phantom_b",), probe=True, evidence=evidence,
    )  # fmt: skip
    return run, arrays


@pytest.mark.parametrize(("dataset", "flagged"), [("phantom_marker", True), ("phantom", False)])
def test_probe_and_saliency_fire_on_the_marker_and_not_on_the_default(
    dataset: str, flagged: bool
) -> None:
    run, arrays = trained_run(dataset)
    assert run["probe"]["region"] == "lung masks"
    targets = np.asarray(arrays.split("test").labels)
    probe = probe_summary(
        "multiclass", [run], targets, 4, bootstrap_indices(len(targets), 500, 0), "lung masks"
    )
    assert probe["flagged"] is flagged, probe
    saliency = run["saliency"]
    assert saliency["available"] and saliency["grid"] >= 7, saliency
    assert saliency["flagged"] is flagged, saliency
    assert run["artefacts"]["overlays"]  # right and wrong, per class
    if dataset == "phantom":
        _check_ood(run, arrays)


def _check_ood(run: dict, arrays: object) -> None:
    ood = run["ood"]
    own, site_b = ood["own"], ood["external"]["phantom_b"]
    # Site B lies further from the training images than the own test split does; measured at
    # 128 px: median distance 5.50 against 3.91. Its flag rate is not higher, though (0% against
    # 1%): no site-B image passes the validation split's 99th percentile (10.0, about the
    # largest of 98 validation distances). Over five AlexNet models the rate went from 0% to
    # 11% with the seed and learning rate, while the distance told site B from the own split
    # every time; so the test asserts that separation (AUROC of the distance).
    assert site_b["median_distance"] > own["median_distance"], ood
    assert site_b["separation_auroc"] > 0.7, ood
    stats = OodStats.from_bytes(run["artefacts"][OOD_FILE])
    model = create_model("alexnet", num_classes=4)
    model.load_state_dict(torch.load(io.BytesIO(run["artefacts"]["weights"]), weights_only=True))
    features, _ = penultimate_features(model.eval(), "alexnet", _strange_images(), settings=CPU)
    # Measured: distances 111, 14.6 and 21.4 against a threshold of 10.0.
    assert stats.flags(features).tolist() == [True, True, True], stats.distances(features)


def _strange_images() -> np.ndarray:
    """A noise image, a flat gray image and a colour photograph (matplotlib's sample of Grace
    Hopper), decoded as training decodes files."""
    from matplotlib import cbook

    size = OPTIONS.image_size
    noise = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    flat = np.full((size, size), 128, dtype=np.uint8)
    photo = decode_file(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), size).pixels
    assert photo is not None
    return np.stack([noise, flat, photo])

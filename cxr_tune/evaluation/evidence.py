"""How far a final model can be trusted, measured once by the evaluation, beside its scores:

- calibration (every seed of a cell's best configuration): a temperature fitted on the
  validation split's logits (``cxr_tune.calibration``), the test split's calibrated
  probabilities, and the screened class's operating thresholds at 90% and 95% sensitivity,
  chosen on the validation split's calibrated probabilities (never on the test split);
- out-of-distribution statistics (the first seed): penultimate features of the training split
  give the Mahalanobis statistics, the validation split the threshold (``cxr_tune.ood``); the
  flag rate and distances on the own test split and on every external set's;
- saliency (the first seed, where the dataset has lung masks): Grad-CAM on the test split
  (``cxr_tune.saliency``), the share of saliency in the lungs with its interval and flag, and a
  few overlays per class, right and wrong, handed back as PNG bytes for the driver to write into
  the experiment folder (never into the report);
- what ``cxr-tune export`` needs besides the evaluation's numbers: the OOD statistics as
  ``.npz`` bytes, and the weights when the first seed was retrained rather than read from the
  search's checkpoint.

Runs inside an evaluation task (``runs.evaluate_run``), wherever Ray puts it; no Ray here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxr_tune.data.types import DatasetArrays, SplitArrays

# The sensitivities at which the screened class's operating thresholds are chosen.
OPERATING_SENSITIVITIES: tuple[float, ...] = (0.90, 0.95)
# Files the driver writes, named relative to the experiment folder.
OOD_FILE = "ood.npz"
WEIGHTS_FILE = "model.pt"
# Probabilities and distances are stored to these many decimals (evaluation.json stays small).
DIGITS = 4
THRESHOLD_DIGITS = 6


@dataclass(frozen=True)
class EvidenceRequest:
    """What an evaluation task measures beyond the test scores.

    Attributes:
        calibrate: fit the temperature on the validation split; calibrated test probabilities
            and the operating thresholds.
        positive: index of the screened (COVID) class or label, for the operating thresholds.
        explain: also the OOD statistics, the saliency and the overlays (the first seed).
        keep_weights: hand back the weights (the first seed, when it was retrained).
        overlays_per_class: overlays per class and outcome (right, wrong).
        saliency_images: at most this many test images get a Grad-CAM map.
        ood_train_images: at most this many training images fit the OOD statistics (a seeded
            sample beyond it: features of 100,000 images would not fit in memory).
        rounds: bootstrap rounds of the saliency interval.
        seed: the sampling and bootstrap seed.
    """

    calibrate: bool = True
    positive: int | None = None
    explain: bool = False
    keep_weights: bool = False
    overlays_per_class: int = 2
    saliency_images: int = 256
    ood_train_images: int = 4096
    rounds: int = 1000
    seed: int = 0


def rounded(values: np.ndarray, digits: int = DIGITS) -> list[Any]:
    return np.asarray(values, dtype=np.float64).round(digits).tolist()


def calibration_evidence(
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    test_logits: np.ndarray,
    task: str,
    positive: int | None,
) -> dict[str, Any]:
    """The temperature(s) from the validation logits, the calibrated test probabilities and the
    operating thresholds (chosen on the validation split's calibrated probabilities)."""
    from cxr_tune.calibration import calibrated_probabilities, fit_calibration

    calibration = fit_calibration(val_logits, val_targets, task)
    out: dict[str, Any] = {
        "calibration": calibration.to_dict(),
        "calibrated_probabilities": rounded(calibrated_probabilities(test_logits, calibration)),
    }
    if positive is not None:
        scores = calibrated_probabilities(val_logits, calibration)[:, positive]
        out["operating_thresholds"] = operating_thresholds(
            scores, _positives(val_targets, positive, task)
        )
    return out


def operating_thresholds(scores: np.ndarray, positives: np.ndarray) -> dict[str, float | None]:
    """``{"0.9": t, "0.95": t}``: the highest threshold reaching each sensitivity on these
    images (None where they hold no positive)."""
    from cxr_tune.metrics import threshold_at_sensitivity

    out: dict[str, float | None] = {}
    for target in OPERATING_SENSITIVITIES:
        t = threshold_at_sensitivity(scores, positives, target)
        out[f"{target:g}"] = round(t, THRESHOLD_DIGITS) if math.isfinite(t) else None
    return out


def _positives(targets: np.ndarray, positive: int, task: str) -> np.ndarray:
    targets = np.asarray(targets)
    if task == "multilabel":
        return targets[:, positive] == 1
    return targets == positive


def sample_indices(n: int, cap: int, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a seeded sample of ``cap`` of them, in order."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


@dataclass(frozen=True)
class SplitFeatures:
    """Penultimate features of a model on its splits (a training sample, validation, test)
    and on each external set's test split, by name."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    external: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class SplitLogits:
    """The logits of the same passes as ``SplitFeatures`` (the test split's and the external
    sets' are scored from these: one pass over each image, not two)."""

    val: np.ndarray
    test: np.ndarray
    external: Mapping[str, np.ndarray]


def ood_evidence(features: SplitFeatures) -> tuple[dict[str, Any], bytes]:
    """Fit the OOD statistics (training features, threshold from the validation features) and
    score the own test split and each external set.

    Returns:
        (the summary for evaluation.json: the statistics' facts, and per set the images, the
        flag rate and the mean and median distance; the statistics as ``.npz`` bytes, as the
        package stores them). Rates are computed with the statistics read back from those
        bytes, so the package's flags are the evaluation's.
    """
    from cxr_tune.ood import OodStats, fit_ood

    payload = fit_ood(features.train, features.val).to_bytes()
    stats = OodStats.from_bytes(payload)
    summary: dict[str, Any] = _rounded_summary(stats.summary())
    own = stats.distances(features.test)
    summary["own"] = _flag_rates(stats, features.test)
    summary["external"] = {}
    for name, values in features.external.items():
        rates = _flag_rates(stats, values)
        rates["separation_auroc"] = _separation(own, stats.distances(values))
        summary["external"][name] = rates
    return summary, payload


def _separation(own: np.ndarray, other: np.ndarray) -> float | None:
    """How well the distance tells a set's images from the own test split's: the AUROC of
    the distance as a score of 'from the other set' (0.5: not at all). Unlike the flag rate it
    does not hang on one threshold, which ~100 validation images set at their largest
    distance or so; OOD detectors are compared by this figure (Lee et al. 2018)."""
    if not len(own) or not len(other):
        return None
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(own)), np.ones(len(other))]
    return round(float(roc_auc_score(labels, np.r_[own, other])), DIGITS)


def _rounded_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: round(v, DIGITS) if isinstance(v, float) and math.isfinite(v) else v
        for k, v in summary.items()
    }


def _flag_rates(stats: Any, features: np.ndarray) -> dict[str, Any]:
    distances = stats.distances(features)
    if not len(distances):
        return {"images": 0, "flag_rate": None, "mean_distance": None, "median_distance": None}
    return {
        "images": int(len(distances)),
        "flag_rate": round(float((distances > stats.threshold).mean()), DIGITS),
        "mean_distance": round(float(distances.mean()), DIGITS),
        "median_distance": round(float(np.median(distances)), DIGITS),
    }


def saliency_evidence(
    model: Any,
    name: str,
    test: SplitArrays,
    classes: Sequence[str],
    settings: Any,
    request: EvidenceRequest,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Grad-CAM of the predicted class on (at most ``saliency_images``) test images with lung
    masks: the lung-share summary and flag, and overlays per class, right and wrong.

    Returns:
        (the summary for evaluation.json, or one saying why there is none; overlay PNG bytes by
        file name: ``<class>-<right|wrong>-<k>.png``).
    """
    from cxr_tune.saliency import SaliencyMapper, lung_saliency, overlay_png

    if test.masks is None:
        return {"available": False, "reason": "the dataset has no lung masks"}, {}
    keep = sample_indices(len(test), request.saliency_images, request.seed)
    images = np.asarray(test.images)[keep]
    masks = np.asarray(test.masks)[keep]
    labels = np.asarray(test.labels)[keep]
    if not len(images):
        return {"available": False, "reason": "the test split is empty"}, {}
    mapper = SaliencyMapper(model, name, settings, image_size=int(images.shape[-1]))
    maps_parts, predicted_parts = [], []
    for start in range(0, len(images), 16):
        maps, predicted = mapper.maps(images[start : start + 16])
        maps_parts.append(maps)
        predicted_parts.append(predicted)
    maps = np.concatenate(maps_parts)
    predicted = np.concatenate(predicted_parts)
    found = lung_saliency(maps, masks, rounds=request.rounds, seed=request.seed)
    summary = {
        "available": True,
        "method": "Grad-CAM (MONAI GradCAM) of the predicted class",
        "layer": mapper.layer.name,
        "grid": mapper.layer.grid,
        **_round_tree(found.to_dict()),
    }
    overlays: dict[str, bytes] = {}
    if labels.ndim == 1:  # multi-class: right and wrong per true class
        for k, label in enumerate(classes):
            for outcome, chosen in (
                ("right", (labels == k) & (predicted == k)),
                ("wrong", (labels == k) & (predicted != k)),
            ):
                for i, row in enumerate(np.flatnonzero(chosen)[: request.overlays_per_class]):
                    file = f"{file_name(label)}-{outcome}-{i}.png"
                    overlays[file] = overlay_png(images[row], maps[row])
    return summary, overlays


def file_name(text: str) -> str:
    """A file-name-safe form of a class name (``Viral Pneumonia`` -> ``viral_pneumonia``)."""
    kept = "".join(c if c.isalnum() else "_" for c in str(text).lower()).strip("_")
    return kept or "class"


def _round_tree(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, DIGITS) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _round_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_tree(v) for v in value]
    return value


def weights_bytes(model: Any) -> bytes:
    """The model's state dict as ``torch.save`` bytes (loaded back with ``weights_only``)."""
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def features_of(
    model: Any,
    name: str,
    images: np.ndarray,
    settings: Any,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and logits of uint8 images (``cxr_tune.features``)."""
    from cxr_tune.features import penultimate_features

    return penultimate_features(model, name, images, settings=settings, batch_size=batch_size)


def split_features(
    model: Any,
    name: str,
    dataset: DatasetArrays,
    others: Mapping[str, DatasetArrays],
    external: Sequence[str],
    settings: Any,
    batch_size: int,
    request: EvidenceRequest,
) -> tuple[SplitFeatures, SplitLogits]:
    """Penultimate features of the training sample, the validation, the test split and each
    external test split; and the logits of the validation, test and external passes."""
    train = dataset.split("train")
    rows = sample_indices(len(train), request.ood_train_images, request.seed)

    def of(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return features_of(model, name, np.asarray(images), settings, batch_size)

    val, val_logits = of(dataset.split("val").images)
    test, test_logits = of(dataset.split("test").images)
    passes = {other: of(others[other].split("test").images) for other in external}
    found = SplitFeatures(
        train=of(np.asarray(train.images)[rows])[0],
        val=val,
        test=test,
        external={other: features for other, (features, _) in passes.items()},
    )
    logits = SplitLogits(
        val=val_logits,
        test=test_logits,
        external={other: values for other, (_, values) in passes.items()},
    )
    return found, logits

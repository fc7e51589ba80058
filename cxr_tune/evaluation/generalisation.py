"""Does the best model generalise? External validation, the shortcut probe and clinical metrics,
assembled from the final evaluation's stored test predictions.

- External validation: each cell's final models (every seed) are scored on the test split of
  every other dataset of the experiment and of every ``--external`` dataset, on the classes the
  two share (``cxr_tune.data.labelmap``). A transfer row gives macro-F1, macro AUROC and
  per-class sensitivity on the model's own test split and on the other, on those classes, with
  bootstrap 95% intervals, and the drop from one to the other with its interval.
- The shortcut probe: the same models on their own test split with the lung field removed
  (the dataset's lung masks where it has them, else a fixed central region). A model that
  still tells the classes apart is flagged (``probe_summary``).
- Clinical metrics of every evaluated configuration: per-class sensitivity and specificity,
  one-vs-rest ROC and precision-recall curves, expected calibration error with a reliability
  diagram, and the COVID class's specificity at 90% and 95% sensitivity.

Pure numpy (no Ray, no torch): ``cxr_tune.evaluation.runs`` runs the models, this module reads
what they predicted: first what to score where (the label mapping, the probe's images), then the
statistics (points over seeds, bootstrap intervals over test images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.data.labelmap import (
    DatasetClasses,
    LabelMaps,
    SharedClasses,
    map_dataset,
    shared_classes,
    side_labels,
)
from cxr_tune.data.types import DatasetArrays, SplitArrays
from cxr_tune.evaluation.sources import ExternalSet
from cxr_tune.experiment import Experiment
from cxr_tune.metrics import confusion_matrix, multiclass_metrics, multilabel_metrics
from cxr_tune.stats import interval, mean_of_finite

# The shared class whose specificity at high sensitivity a screening reader asks for.
SCREENED_CLASS = "covid"
# Where no lung masks exist: this share of each side, centred, is removed (the lung fields of
# a frontal radiograph lie inside it; corners and borders, where markers sit, stay).
CENTRAL_REGION: tuple[float, float] = (0.12, 0.88)
REGION_MASKS = "lung masks"
REGION_CENTRAL = (
    f"a fixed central region ({CENTRAL_REGION[0]:.0%}-{CENTRAL_REGION[1]:.0%} of each side)"
)
# A transfer needs at least this many shared classes to mean anything (AUROC, macro-F1).
MIN_SHARED = 2


def probe_images(split: SplitArrays) -> tuple[np.ndarray, str]:
    """The split's images with the lung field set to black, and which region was removed."""
    images = np.array(split.images, copy=True)
    if split.masks is not None:
        images[np.asarray(split.masks).astype(bool)] = 0
        return images, REGION_MASKS
    side = images.shape[1]
    low, high = (int(round(f * side)) for f in CENTRAL_REGION)
    images[:, low:high, low:high] = 0
    return images, REGION_CENTRAL


def transfer_pairs(
    datasets: Mapping[str, DatasetClasses],
    trained_on: Sequence[str],
    maps: LabelMaps,
) -> dict[str, dict[str, SharedClasses]]:
    """For each dataset models were trained on, the other datasets they can be scored on
    (at least ``MIN_SHARED`` shared classes), with the mapping.

    Raises:
        ConfigError: a class of an imagefolder dataset is close to a shared class but not
            one (a typo).
    """
    pairs: dict[str, dict[str, SharedClasses]] = {}
    for train in trained_on:
        for test, classes in datasets.items():
            if test == train:
                continue
            shared = shared_classes(datasets[train], classes, maps)
            if len(shared.classes) >= MIN_SHARED:
                pairs.setdefault(train, {})[test] = shared
    return pairs


@dataclass(frozen=True)
class GeneralisationPlan:
    """What the evaluation scores beyond each model's own test split: its dataset's classes,
    and per training dataset the other datasets it shares classes with (and how)."""

    maps: LabelMaps
    classes: Mapping[str, DatasetClasses]
    pairs: Mapping[str, Mapping[str, SharedClasses]]


def generalisation_plan(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays],
    externals: Mapping[str, ExternalSet],
    label_map: str | Path | None = None,
) -> GeneralisationPlan:
    """The label mapping of every dataset and the transfers it allows; checked before any
    model runs, so an unmatched class name stops the evaluation at once (exit 2). Without
    ``label_map``, the file the search was given (recorded) is used, if any.

    Raises:
        ConfigError: as ``cxr_tune.data.labelmap`` (unmatched class, bad label-map file).
    """
    from cxr_tune.data.labelmap import load_label_maps, map_dataset

    maps = load_label_maps(label_map or exp.record.get("label_map"))
    keys = {str(d["name"]): str(d.get("key") or d["name"]) for d in exp.record.get("datasets", [])}
    classes: dict[str, DatasetClasses] = {
        name: DatasetClasses(name, keys.get(name, name), arrays.task, tuple(arrays.classes))
        for name, arrays in datasets.items()
    }
    for name, ext in externals.items():
        key = str(ext.source.key or name)
        classes[name] = DatasetClasses(name, key, ext.arrays.task, tuple(ext.arrays.classes))
        map_dataset(classes[name], maps)  # an external set's classes must all map (or error)
    pairs = transfer_pairs(classes, list(datasets), maps)
    return GeneralisationPlan(maps, classes, pairs)


def positive_class(dataset: DatasetClasses, maps: LabelMaps) -> int | None:
    """Index of the dataset's class (or label) that maps to the screened class, if any."""
    # One dataset's own metrics: its class names need not match (only transfers check them).
    side = map_dataset(dataset, maps, strict=False)
    for own, target in side.shared.items():
        if target == SCREENED_CLASS and own in dataset.classes:
            return dataset.classes.index(own)
    return None


def clinical_of(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    dataset: DatasetClasses,
    indices: np.ndarray,
    maps: LabelMaps,
) -> dict[str, Any]:
    """Clinical metrics of one configuration's runs on its own test split."""
    return clinical_summary(
        task, runs, targets, dataset.classes, indices, positive_class(dataset, maps)
    )


def probe_of(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    num_classes: int,
    indices: np.ndarray,
) -> dict[str, Any] | None:
    """The shortcut probe of one configuration's runs, if they were probed."""
    probed = [r for r in runs if "probe" in r]
    if not probed:
        return None
    region = str(probed[0]["probe"].get("region", ""))
    return probe_summary(task, probed, targets, num_classes, indices, region)


def transfer_of(
    runs: Sequence[Mapping[str, Any]],
    own: DatasetArrays,
    test_name: str,
    test: DatasetArrays,
    shared: SharedClasses,
    rounds: int,
    seed: int,
) -> dict[str, Any] | None:
    """One transfer row: a configuration's runs on its own test split and on ``test``'s, on
    the classes the two share; None when no run scored ``test``."""
    scored = [r for r in runs if test_name in r.get("external", {})]
    if not scored:
        return None
    own_labels = side_labels(shared.train, np.asarray(own.split("test").labels))
    ext_labels = shared.test_labels(np.asarray(test.split("test").labels))
    keep_own, keep_ext = own_labels >= 0, ext_labels >= 0
    if not keep_own.any() or not keep_ext.any():
        return None
    own_probs = [
        shared.train_scores(run_probabilities(r, own.num_classes))[keep_own] for r in scored
    ]
    ext_probs = [
        shared.train_scores(np.asarray(r["external"][test_name]["probabilities"]))[keep_ext]
        for r in scored
    ]
    summary = transfer_summary(
        own_probs,
        own_labels[keep_own],
        ext_probs,
        ext_labels[keep_ext],
        shared.classes,
        rounds,
        seed,
    )
    summary["mapping"] = shared.to_dict()
    summary["mapping_lines"] = shared.describe()
    summary["left_out_images"] = {
        "own": int((~keep_own).sum()),
        "external": int((~keep_ext).sum()),
    }
    return summary


# --- clinical metrics, transfer and the shortcut probe ---------------------------------------

# A probe flags a model when the lower end of its macro AUROC's 95% interval, on images with the
# lungs removed, is this far above chance (0.5).
PROBE_MARGIN = 0.1
SENSITIVITY_TARGETS: tuple[float, ...] = (0.90, 0.95)


def run_probabilities(run: Mapping[str, Any], num_classes: int) -> np.ndarray:
    """A run's test probabilities; runs stored before probabilities were kept give one-hot
    rows of their predictions (every metric from them is then a thresholded one)."""
    if "probabilities" in run:
        return np.asarray(run["probabilities"], dtype=float)
    predictions = np.asarray(run["predictions"], dtype=np.int64)
    return np.eye(num_classes)[predictions]


def macro_auroc(probabilities: np.ndarray, targets: np.ndarray, task: str) -> float:
    """One-vs-rest AUROC averaged over the classes (labels) where it is defined."""
    from cxr_tune.metrics import per_label_auroc

    probabilities = np.asarray(probabilities, dtype=float)
    if task == "multilabel":
        hot = np.asarray(targets)
    else:
        hot = np.eye(probabilities.shape[1], dtype=int)[np.asarray(targets, dtype=np.int64)]
    values = per_label_auroc(probabilities, hot)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _seed_mean(values: Sequence[float]) -> float:
    return mean_of_finite(list(values))


def _clinical_point(
    task: str, probabilities: np.ndarray, targets: np.ndarray, positive: int | None
) -> dict[str, Any]:
    """Per-class sensitivity and specificity, ECE and the positive class's specificity at the
    target sensitivities, for one model's probabilities on one sample of images."""
    from cxr_tune.metrics import (
        expected_calibration_error,
        sensitivity_specificity,
        specificity_at_sensitivity,
        top_label_calibration,
    )

    if task == "multilabel":
        predicted = probabilities >= 0.5
        actual = targets.astype(bool)
        tp = (predicted & actual).sum(axis=0)
        fn = (~predicted & actual).sum(axis=0)
        fp = (predicted & ~actual).sum(axis=0)
        tn = (~predicted & ~actual).sum(axis=0)
        sens = np.divide(tp, tp + fn, out=np.full(len(tp), np.nan), where=(tp + fn) > 0)
        spec = np.divide(tn, tn + fp, out=np.full(len(tn), np.nan), where=(tn + fp) > 0)
        ece = expected_calibration_error(probabilities.ravel(), targets.ravel())
        positives = targets[:, positive] if positive is not None else None
    else:
        confusion = confusion_matrix(targets, probabilities.argmax(axis=1), probabilities.shape[1])
        sens, spec = sensitivity_specificity(confusion)
        present = confusion.sum(axis=1) > 0
        sens = np.where(present, sens, np.nan)
        ece = expected_calibration_error(*top_label_calibration(probabilities, targets))
        positives = (targets == positive).astype(int) if positive is not None else None
    at = {}
    if positives is not None:
        for target in SENSITIVITY_TARGETS:
            at[target] = specificity_at_sensitivity(probabilities[:, positive], positives, target)
    return {"sensitivity": sens, "specificity": spec, "ece": ece, "spec_at": at}


def _entry(key: str, index: Any) -> Callable[[dict[str, Any]], float]:
    """Reads ``point[key][index]`` of a clinical point (one class's, or one target's, value)."""
    return lambda point: float(point[key][index])


def clinical_summary(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    classes: Sequence[str],
    indices: np.ndarray,
    positive: int | None,
) -> dict[str, Any]:
    """Clinical metrics of a configuration's final models (its seeds) on the test split.

    Point values are means over the seeds; intervals are bootstrap 95% intervals over the test
    images (each round: the same resample for every seed, then the mean over seeds). Curves and
    the reliability diagram are drawn from the mean of the seeds' probabilities.

    Args:
        positive: index of the class whose specificity at 90% and 95% sensitivity is reported
            (the COVID class), or None.
    """
    from cxr_tune.metrics import pr_points, reliability_bins, roc_points, top_label_calibration

    targets = np.asarray(targets)
    probs = [run_probabilities(r, len(classes)) for r in runs]
    points = [_clinical_point(task, p, targets, positive) for p in probs]
    rounds = [[_clinical_point(task, p[s], targets[s], positive) for p in probs] for s in indices]

    def summary(get: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
        return interval(
            _seed_mean([get(p) for p in points]),
            [_seed_mean([get(p) for p in per_round]) for per_round in rounds],
        )

    mean = np.mean(probs, axis=0)
    hot = targets if task == "multilabel" else np.eye(len(classes), dtype=int)[targets.astype(int)]
    if task == "multilabel":
        confidence, correct = mean.ravel(), targets.ravel()
    else:
        confidence, correct = top_label_calibration(mean, targets)
    out: dict[str, Any] = {
        "per_class": [
            {
                "class": name,
                "sensitivity": summary(_entry("sensitivity", k)),
                "specificity": summary(_entry("specificity", k)),
            }
            for k, name in enumerate(classes)
        ],
        "ece": summary(lambda p: float(p["ece"])),
        "reliability": reliability_bins(confidence, correct),
        "roc": {name: roc_points(mean[:, k], hot[:, k]) for k, name in enumerate(classes)},
        "pr": {name: pr_points(mean[:, k], hot[:, k]) for k, name in enumerate(classes)},
        "curves_from": f"mean of {len(probs)} seed(s)' probabilities",
        "positive_class": None,
    }
    if positive is not None:
        out["positive_class"] = {
            "class": classes[positive],
            **{
                f"specificity_at_sensitivity_{round(t * 100)}": summary(_entry("spec_at", t))
                for t in SENSITIVITY_TARGETS
            },
        }
    return out


def _transfer_point(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    k = probabilities.shape[1]
    confusion = confusion_matrix(labels, probabilities.argmax(axis=1), k)
    recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    present = confusion.sum(axis=1) > 0
    return {
        "macro_f1": multiclass_metrics(confusion)["macro_f1"],
        "macro_auroc": macro_auroc(probabilities, labels, "multiclass"),
        "sensitivity": np.where(present, recall, np.nan),
    }


def transfer_summary(
    own: Sequence[np.ndarray],
    own_labels: np.ndarray,
    external: Sequence[np.ndarray],
    external_labels: np.ndarray,
    classes: Sequence[str],
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    """A model's scores on its own test split and on another dataset's, on shared classes.

    Args:
        own, external: per seed, probabilities over the shared classes (rows of images that
            belong to a shared class only).
        own_labels, external_labels: the shared class index of those images.
        classes: the shared classes.
        rounds: bootstrap rounds; the two test sets are resampled independently.

    Returns:
        In-distribution and external macro-F1, macro AUROC and per-class sensitivity with 95%
        intervals, and the drop (in-distribution minus external) with its interval.
    """
    own_labels = np.asarray(own_labels, dtype=np.int64)
    external_labels = np.asarray(external_labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    own_idx = rng.integers(0, len(own_labels), size=(rounds, len(own_labels)))
    ext_idx = rng.integers(0, len(external_labels), size=(rounds, len(external_labels)))

    def per(probs: Sequence[np.ndarray], labels: np.ndarray, idx: np.ndarray | None):
        sample = (lambda a: a) if idx is None else (lambda a: a[idx])
        points = [_transfer_point(sample(p), sample(labels)) for p in probs]
        return {
            "macro_f1": _seed_mean([p["macro_f1"] for p in points]),
            "macro_auroc": _seed_mean([p["macro_auroc"] for p in points]),
            "sensitivity": [
                _seed_mean([float(p["sensitivity"][k]) for p in points])
                for k in range(len(classes))
            ],
        }

    own_point, ext_point = per(own, own_labels, None), per(external, external_labels, None)
    own_boot = [per(own, own_labels, i) for i in own_idx]
    ext_boot = [per(external, external_labels, i) for i in ext_idx]
    out: dict[str, Any] = {"classes": list(classes)}
    for name, point, boot in (("own", own_point, own_boot), ("external", ext_point, ext_boot)):
        out[name] = {
            "images": int(len(own_labels if name == "own" else external_labels)),
            "macro_f1": interval(point["macro_f1"], [b["macro_f1"] for b in boot]),
            "macro_auroc": interval(point["macro_auroc"], [b["macro_auroc"] for b in boot]),
            "sensitivity": {
                c: interval(point["sensitivity"][k], [b["sensitivity"][k] for b in boot])
                for k, c in enumerate(classes)
            },
        }
    out["drop"] = {
        metric: interval(
            own_point[metric] - ext_point[metric],
            [a[metric] - b[metric] for a, b in zip(own_boot, ext_boot, strict=True)],
        )
        for metric in ("macro_f1", "macro_auroc")
    }
    return out


def probe_summary(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    num_classes: int,
    indices: np.ndarray,
    region: str,
) -> dict[str, Any]:
    """The shortcut probe: scores on the test split with the lungs removed.

    ``flagged`` when the lower end of the macro AUROC's 95% interval is more than
    ``PROBE_MARGIN`` above chance (0.5): the model still tells the classes apart without the
    lungs, so it likely uses something else (markers, borders, the collection itself).
    """
    targets = np.asarray(targets)
    probs = [np.asarray(r["probe"]["probabilities"], dtype=float) for r in runs]

    def scores(sample: np.ndarray | None) -> tuple[float, float]:
        aurocs, f1s = [], []
        for p in probs:
            q, t = (p, targets) if sample is None else (p[sample], targets[sample])
            aurocs.append(macro_auroc(q, t, task))
            if task == "multilabel":
                f1s.append(multilabel_metrics(q, t)["macro_f1"])
            else:
                f1s.append(
                    multiclass_metrics(confusion_matrix(t, q.argmax(axis=1), num_classes))[
                        "macro_f1"
                    ]
                )
        return _seed_mean(aurocs), _seed_mean(f1s)

    point = scores(None)
    boot = [scores(s) for s in indices]
    auroc = interval(point[0], [b[0] for b in boot])
    return {
        "region": region,
        "macro_auroc": auroc,
        "macro_f1": interval(point[1], [b[1] for b in boot]),
        "chance_auroc": 0.5,
        "margin": PROBE_MARGIN,
        "flagged": bool(math.isfinite(auroc["ci95"][0]) and auroc["ci95"][0] > 0.5 + PROBE_MARGIN),
    }


# --- calibration and operating points ----------------------------------------------------------


def calibration_summary(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    indices: np.ndarray,
) -> dict[str, Any] | None:
    """ECE on the test split before and after temperature scaling, for the runs that were
    calibrated (None when none was): point values are means over the seeds, intervals
    bootstrap 95% intervals over the test images with the same resample for before and after
    (so the difference, after minus before, is paired)."""
    from cxr_tune.calibration import calibration_error

    calibrated = [r for r in runs if "calibrated_probabilities" in r]
    if not calibrated:
        return None
    targets = np.asarray(targets)
    raw = [np.asarray(r["probabilities"], dtype=float) for r in calibrated]
    scaled = [np.asarray(r["calibrated_probabilities"], dtype=float) for r in calibrated]

    def both(sample: np.ndarray | None) -> tuple[float, float]:
        pick = (lambda a: a) if sample is None else (lambda a: a[sample])
        before = [calibration_error(pick(p), pick(targets), task) for p in raw]
        after = [calibration_error(pick(p), pick(targets), task) for p in scaled]
        return _seed_mean(before), _seed_mean(after)

    point = both(None)
    boot = [both(s) for s in indices]
    return {
        "method": "temperature scaling (Guo et al. 2017), fitted on the validation split",
        "seeds": len(calibrated),
        "temperatures": [list(r["calibration"]["temperatures"]) for r in calibrated],
        "before": interval(point[0], [b[0] for b in boot]),
        "after": interval(point[1], [b[1] for b in boot]),
        "difference": interval(point[1] - point[0], [b[1] - b[0] for b in boot]),
        "reasons": sorted(
            {
                str(f["reason"])
                for r in calibrated
                for f in r["calibration"].get("fits", [])
                if f.get("reason")
            }
        ),
    }


def operating_points_summary(
    task: str,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    classes: Sequence[str],
    positive: int | None,
    indices: np.ndarray,
) -> dict[str, Any] | None:
    """The screened class's operating points: per target sensitivity, the threshold each seed
    chose on its validation split's calibrated probabilities, and the test split's sensitivity
    and specificity at it (means over seeds, bootstrap 95% intervals over test images). None
    without a screened class or calibrated runs."""
    from cxr_tune.metrics import sensitivity_specificity_at

    chosen = [r for r in runs if r.get("operating_thresholds") and "calibrated_probabilities" in r]
    if positive is None or not chosen:
        return None
    targets = np.asarray(targets)
    positives = targets[:, positive] == 1 if task == "multilabel" else targets == positive
    scores = [np.asarray(r["calibrated_probabilities"], dtype=float)[:, positive] for r in chosen]
    out: dict[str, Any] = {
        "class": classes[positive],
        "chosen_on": "validation split, calibrated probabilities",
        "rule": "called positive when the calibrated probability is at or above the threshold",
        "targets": {},
    }
    for target in (0.90, 0.95):
        key = f"{target:g}"
        thresholds = [r["operating_thresholds"].get(key) for r in chosen]
        values = [math.nan if t is None else float(t) for t in thresholds]

        def at(sample: np.ndarray | None, values: list[float] = values) -> tuple[float, float]:
            pairs = [
                sensitivity_specificity_at(
                    s if sample is None else s[sample],
                    positives if sample is None else positives[sample],
                    t,
                )
                for s, t in zip(scores, values, strict=True)
            ]
            return _seed_mean([p[0] for p in pairs]), _seed_mean([p[1] for p in pairs])

        point = at(None)
        boot = [at(s) for s in indices]
        out["targets"][key] = {
            "threshold": thresholds[0],
            "thresholds": thresholds,
            "sensitivity": interval(point[0], [b[0] for b in boot]),
            "specificity": interval(point[1], [b[1] for b in boot]),
        }
    return out

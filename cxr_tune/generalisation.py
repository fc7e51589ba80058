"""Does the best model generalise? External validation, the shortcut probe and clinical metrics,
assembled from the final evaluation's stored test predictions.

- External validation: each cell's final models (every seed) are scored on the test split of
  every other dataset of the experiment and of every ``--external`` dataset, on the classes the
  two share (``cxr_tune.data.labelmap``). A transfer row gives macro-F1, macro AUROC and
  per-class sensitivity on the model's own test split and on the other, on those classes, with
  bootstrap 95% intervals, and the drop from one to the other with its interval.
- The shortcut probe: the same models on their own test split with the lung field removed
  (the dataset's lung masks where it has them, else a fixed central region). A model that
  still tells the classes apart is flagged (``cxr_tune.stats.probe_summary``).
- Clinical metrics of every evaluated configuration: per-class sensitivity and specificity,
  one-vs-rest ROC and precision-recall curves, expected calibration error with a reliability
  diagram, and the COVID class's specificity at 90% and 95% sensitivity.

Pure numpy (no Ray, no torch): ``cxr_tune.evaluate`` runs the models, this module reads what
they predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from cxr_tune.stats import clinical_summary, probe_summary, run_probabilities, transfer_summary

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


def positive_class(dataset: DatasetClasses, maps: LabelMaps) -> int | None:
    """Index of the dataset's class (or label) that maps to the screened class, if any."""
    side = map_dataset(dataset, maps)
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

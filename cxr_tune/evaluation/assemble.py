"""From the runs' stored test predictions to ``evaluation.json``'s content: per configuration
the summary over seeds with bootstrap intervals, the confusion matrix or per-label scores, the
clinical metrics and the shortcut probe; per cell's best configuration its transfers to the
other datasets, its calibration (ECE before and after) and operating points, and its first
seed's out-of-distribution rates, saliency summary and files; paired comparisons of the best
configuration of each optimizer; the factor effects of the search. Pure numpy: no model runs
here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cxr_tune.data.types import DatasetArrays
from cxr_tune.evaluation.contenders import Contender
from cxr_tune.evaluation.generalisation import (
    GeneralisationPlan,
    calibration_summary,
    clinical_of,
    generalisation_plan,
    operating_points_summary,
    positive_class,
    probe_of,
    transfer_of,
)
from cxr_tune.experiment import Experiment
from cxr_tune.metrics import confusion_matrix
from cxr_tune.stats import (
    MULTILABEL_SUMMARY,
    SUMMARY_METRICS,
    bootstrap_indices,
    bootstrap_scores,
    compare,
    factor_effects,
    summarise,
)


def assemble(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays],
    contenders: Sequence[Contender],
    runs: Mapping[str, list[dict[str, Any]]],
    rounds: int,
    *,
    plan: GeneralisationPlan | None = None,
    others: Mapping[str, DatasetArrays] | None = None,
) -> dict[str, Any]:
    """Summaries, bootstrap intervals and paired comparisons from the runs' test predictions;
    clinical metrics of every contender; for each cell's best configuration, the shortcut probe
    and the transfer to every other dataset in ``plan`` (whose test splits are in ``others``)."""
    plan = plan or generalisation_plan(exp, datasets, {})
    others = others or datasets
    seed = int(exp.record.get("seed", 0))
    entries, boots = [], {}
    indices = {
        name: bootstrap_indices(len(arrays.split("test")), rounds, seed)
        for name, arrays in datasets.items()
    }
    transfers: list[dict[str, Any]] = []
    for contender in contenders:
        dataset = datasets[str(contender.trial.config["dataset"])]
        targets = np.asarray(dataset.split("test").labels)
        usable = [r for r in runs[contender.key] if not r.get("diverged")]
        entry: dict[str, Any] = {
            "cell": contender.cell,
            "role": ", ".join(contender.roles),
            "roles": list(contender.roles),
            "trial_id": contender.trial.trial_id,
            "config": contender.trial.config,
            "val_metric": contender.trial.value(exp.metric),
            # The first seed's model-level facts go up to the entry (once, not per run).
            "runs": [
                {k: v for k, v in r.items() if k not in FIRST_SEED_KEYS}
                for r in runs[contender.key]
            ],
            "task": dataset.task,
            "classes": list(dataset.classes),
        }
        if usable:
            boot = bootstrap_scores(
                dataset.task, usable, targets, dataset.num_classes, indices[dataset.name]
            )
            boots[contender.key] = boot
            entry["summary"] = summarise(dataset.task, usable, targets, dataset.num_classes, boot)
            entry.update(_detail(dataset, usable, targets))
            entry["clinical"] = clinical_of(
                dataset.task,
                usable,
                targets,
                plan.classes[dataset.name],
                indices[dataset.name],
                plan.maps,
            )
            probe = probe_of(
                dataset.task, usable, targets, dataset.num_classes, indices[dataset.name]
            )
            if probe is not None:
                entry["probe"] = probe
            if "best" in contender.roles:
                entry.update({k: usable[0][k] for k in FIRST_SEED_KEYS if k in usable[0]})
                _trust(entry, dataset, usable, targets, plan, indices[dataset.name])
                transfers += _transfers(
                    contender, usable, dataset, plan, others, rounds, seed, entry.get("ood")
                )
        entries.append(entry)
    comparisons = _optimizer_comparisons(contenders, boots)
    return {
        "split": "test",
        "bootstrap_rounds": rounds,
        "entries": entries,
        "comparisons": comparisons,
        "factors": factor_effects(exp),
        "transfer": transfers,
        "label_maps": {"sources": list(plan.maps.sources)},
        "targets": {
            name: np.asarray(a.split("test").labels).tolist() for name, a in datasets.items()
        },
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# Facts of a best model's first seed (the model export packages): kept once, in the entry.
FIRST_SEED_KEYS: tuple[str, ...] = ("ood", "saliency", "files")


def _trust(
    entry: dict[str, Any],
    dataset: DatasetArrays,
    runs: Sequence[Mapping[str, Any]],
    targets: np.ndarray,
    plan: GeneralisationPlan,
    indices: np.ndarray,
) -> None:
    """The calibration (ECE before and after) and the screened class's operating points of a
    best configuration, into its clinical metrics."""
    calibration = calibration_summary(dataset.task, runs, targets, indices)
    if calibration is not None:
        entry["clinical"]["calibration"] = calibration
    positive = positive_class(plan.classes[dataset.name], plan.maps)
    points = operating_points_summary(
        dataset.task, runs, targets, dataset.classes, positive, indices
    )
    if points is not None:
        entry["clinical"]["operating_points"] = points


def _transfers(
    contender: Contender,
    runs: Sequence[Mapping[str, Any]],
    dataset: DatasetArrays,
    plan: GeneralisationPlan,
    others: Mapping[str, DatasetArrays],
    rounds: int,
    seed: int,
    ood: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for test_name, shared in plan.pairs.get(dataset.name, {}).items():
        if test_name not in others:
            continue
        row = transfer_of(runs, dataset, test_name, others[test_name], shared, rounds, seed)
        if row is not None:
            rows.append(
                {
                    "cell": contender.cell,
                    "model": str(contender.trial.config.get("model")),
                    "train": dataset.name,
                    "test": test_name,
                    "seeds": len(runs),
                    **row,
                    # The first seed's out-of-distribution flags on this set and its own test.
                    "ood": {
                        "own": (ood or {}).get("own"),
                        "external": ((ood or {}).get("external") or {}).get(test_name),
                    }
                    if ood
                    else None,
                }
            )
    return rows


def _detail(
    dataset: DatasetArrays, runs: Sequence[Mapping[str, Any]], targets: np.ndarray
) -> dict[str, Any]:
    """Confusion matrix (summed over seeds) or per-label scores, for the report."""
    from cxr_tune.metrics import label_positives, per_class_from_confusion, per_label_auroc

    if dataset.task == "multilabel":
        probabilities = np.mean([np.asarray(r["probabilities"]) for r in runs], axis=0)
        auroc = per_label_auroc(probabilities, targets)
        positives = label_positives(targets)
        return {
            "per_label": [
                {"label": c, "auroc": float(a), "positives": int(p)}
                for c, a, p in zip(dataset.classes, auroc, positives)
            ]
        }
    confusion = np.sum(
        [
            confusion_matrix(targets, np.asarray(r["predictions"]), dataset.num_classes)
            for r in runs
        ],
        axis=0,
    )
    per_class = per_class_from_confusion(confusion)
    return {
        "confusion": np.asarray(confusion).tolist(),
        "per_class": [
            {"class": c, **{k: float(per_class[k][i]) for k in ("precision", "recall", "f1")}}
            for i, c in enumerate(dataset.classes)
        ],
    }


def _optimizer_comparisons(
    contenders: Sequence[Contender], boots: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Within each cell, every pair of best-per-optimizer contenders, paired on test images."""
    comparisons = []
    by_cell: dict[str, list[tuple[str, Contender]]] = {}
    for contender in contenders:
        for role in contender.roles:
            if role.startswith("best_"):
                by_cell.setdefault(contender.cell, []).append((role[len("best_") :], contender))
    for cell, items in by_cell.items():
        for i, (name_a, a) in enumerate(items):
            for name_b, b in items[i + 1 :]:
                if a.key in boots and b.key in boots:
                    comparisons.append(
                        {
                            "cell": cell,
                            "factor": "optimizer",
                            "a": name_a,
                            "b": name_b,
                            "metrics": compare(
                                boots[a.key], boots[b.key], SUMMARY_METRICS + MULTILABEL_SUMMARY
                            ),
                        }
                    )
    return comparisons

"""The reproduced paper's result tables (test set), and how its names map to cxr_tune's.

Source: "Classification of Chest X-Ray images to distinguish between COVID-19 and Pneumonia"
(COMP 6721 final report, Group D, Concordia University); one run per cell, no intervals.
Accuracy is in percent, as the paper gives it; precision, recall and F1 are fractions.
"""

from __future__ import annotations

# cxr_tune dataset key -> the paper's name for it.
PAPER_DATASETS: dict[str, str] = {
    "covid19_radiography": "Dataset 1",
    "covid19_pneumonia_normal": "Dataset 2",
    "covid_chestxray": "Dataset 3",
}
PAPER_MODELS: dict[str, str] = {"alexnet": "AlexNet", "vgg11": "VGG11", "resnet50": "ResNet50"}
# The multi-label dataset: the paper's "accuracy" there is not comparable to anything.
MULTILABEL_DATASET = "covid_chestxray"

# metric (evaluation.json name) -> dataset key -> model -> the paper's number.
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "accuracy": {
        "covid19_radiography": {"alexnet": 91.51, "vgg11": 94.36, "resnet50": 90.94},
        "covid19_pneumonia_normal": {"alexnet": 93.12, "vgg11": 95.48, "resnet50": 94.26},
        "covid_chestxray": {"alexnet": 77.54, "vgg11": 75.03, "resnet50": 64.02},
    },
    "macro_precision": {
        "covid19_radiography": {"alexnet": 0.9361, "vgg11": 0.9461, "resnet50": 0.9090},
        "covid19_pneumonia_normal": {"alexnet": 0.9351, "vgg11": 0.9568, "resnet50": 0.9451},
        "covid_chestxray": {"alexnet": 0.2143, "vgg11": 0.0815, "resnet50": 0.1945},
    },
    "macro_recall": {
        "covid19_radiography": {"alexnet": 0.9106, "vgg11": 0.9550, "resnet50": 0.9236},
        "covid19_pneumonia_normal": {"alexnet": 0.9317, "vgg11": 0.9549, "resnet50": 0.9429},
        "covid_chestxray": {"alexnet": 0.1148, "vgg11": 0.0492, "resnet50": 0.1115},
    },
    "macro_f1": {
        "covid19_radiography": {"alexnet": 0.9152, "vgg11": 0.8880, "resnet50": 0.9095},
        "covid19_pneumonia_normal": {"alexnet": 0.9313, "vgg11": 0.9548, "resnet50": 0.9426},
        "covid_chestxray": {"alexnet": 0.2692, "vgg11": 0.1154, "resnet50": 0.2615},
    },
}
# The paper's four tables, in its order: (evaluation metric, title, shown in percent).
PAPER_TABLES: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "Accuracy (%)", True),
    ("macro_precision", "Precision (macro)", False),
    ("macro_recall", "Recall (macro)", False),
    ("macro_f1", "F1 (macro)", False),
)


def paper_value(metric: str, dataset: str, model: str) -> float | None:
    """The paper's number for ``metric`` on ``dataset`` with ``model``, or None if it has none."""
    return PAPER_RESULTS.get(metric, {}).get(dataset, {}).get(model)


def dataset_label(key: str) -> str:
    """``Dataset 1 (covid19_radiography)`` for the paper's datasets, the key otherwise."""
    paper = PAPER_DATASETS.get(key)
    return f"{paper} ({key})" if paper else key


def model_label(model: str) -> str:
    return PAPER_MODELS.get(model, model)

"""The model card: Mitchell et al.'s sections, the facts it is given stated plainly, what it
was not given said to be missing, and never a card without 'not for clinical use'."""

from __future__ import annotations

import re

from cxr_tune.bundle.card import NOT_EVALUATED, render_model_card

SECTIONS = (
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
)

FACTS = {
    "name": "phantom_marker alexnet",
    "version": "0.1.0",
    "date": "2026-12-07",
    "architecture": "alexnet",
    "task": "multiclass",
    "classes": ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"],
    "image_size": 64,
    "dataset": {
        "name": "phantom_marker",
        "hash": "abc123",
        "split_hash": "def456",
        "sizes": {"train": 448, "val": 96, "test": 96},
    },
    "search": {"space": "ablation", "trials": 18, "metric": "val_macro_f1"},
    "configuration": {"lr": 0.0003, "batch_size": 32, "optimizer": "adam"},
    "metrics": {
        "accuracy": {"mean": 0.9123, "ci95": [0.85, 0.96]},
        "macro_f1": {"mean": 0.9, "ci95": [0.84, 0.95]},
    },
    "external": [
        {
            "dataset": "phantom_b",
            "metric": "macro_f1",
            "own": {"mean": 0.9, "ci95": [0.84, 0.95]},
            "external": {"mean": 0.41, "ci95": [0.33, 0.5]},
            "drop": {"mean": 0.49, "ci95": [0.38, 0.6]},
        }
    ],
    "probe": {
        "flagged": True,
        "region": "lung masks",
        "macro_auroc": {"mean": 0.97, "ci95": [0.94, 0.99]},
    },
    "saliency": {
        "flagged": True,
        "share_in_lungs": {"mean": 0.08, "ci95": [0.06, 0.1]},
        "lung_share": {"mean": 0.23, "ci95": [0.22, 0.24]},
        "difference": {"mean": -0.15, "ci95": [-0.17, -0.13]},
        "images": 96,
    },
    "calibration": {
        "temperatures": [1.42],
        "ece_before": {"mean": 0.12, "ci95": [0.08, 0.16]},
        "ece_after": {"mean": 0.04, "ci95": [0.02, 0.07]},
    },
    "operating_points": {
        "class": "covid",
        "thresholds": {"0.90": 0.31, "0.95": 0.18},
        "specificity_at_sensitivity_90": {"mean": 0.8, "ci95": [0.7, 0.9]},
    },
    "ood": {"threshold": 41.5, "percentile": 99, "rates": {"phantom_b": 0.62}},
    "versions": {"torch": "2.14.1", "cxr_tune": "0.1.0"},
}


def test_card_has_every_section_in_order() -> None:
    card = render_model_card(FACTS)
    positions = [card.index(f"## {section}") for section in SECTIONS]
    assert positions == sorted(positions)
    assert card.startswith("# Model card: phantom_marker alexnet")


def test_card_states_the_results_and_the_flags_plainly() -> None:
    card = render_model_card(FACTS)
    assert "Not for clinical use" in card
    assert "| accuracy | 0.912 (0.850 to 0.960) |" in card
    assert "| phantom_b | macro_f1 | 0.900 (0.840 to 0.950) | 0.410 (0.330 to 0.500) |" in card
    assert "On phantom_b its macro_f1 dropped by 0.490" in card
    assert re.search(r"Shortcut probe \(lung masks\): macro AUROC 0\.970 .*\*\*FLAGGED\*\*", card)
    assert re.search(r"Saliency \(Grad-CAM\) in the lungs: 0\.080 .*\*\*FLAGGED\*\*", card)
    assert "The shortcut probe flagged this model" in card
    assert "T = 1.42" in card and "0.120 (0.080 to 0.160) before" in card
    assert "at 90% sensitivity: specificity 0.800 (0.700 to 0.900) (threshold 0.31)" in card
    assert "phantom_b 62.0%" in card
    assert "`abc123`" in card and "448 training" in card
    assert NOT_EVALUATED not in card


def test_card_says_what_was_not_evaluated_and_still_warns() -> None:
    card = render_model_card({"name": "bare", "architecture": "resnet50", "classes": ["a", "b"]})
    assert "Not for clinical use" in card
    assert card.count(NOT_EVALUATED) >= 6
    assert "FLAGGED" not in card
    assert "not scored on any external dataset" in card
    assert all(f"## {section}" in card for section in SECTIONS)

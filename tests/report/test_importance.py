"""fANOVA importance from a study file like the searcher writes, and the reasons when not."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cxr_tune.report.importance import cell_importances

CELL = "phantom/alexnet"


def _study(folder: Path, name: str = CELL) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}", direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0), load_if_exists=True,
    )  # fmt: skip


def _add(study: optuna.Study, lr: float, optimizer: str, value: float | None) -> None:
    """One trial with these values; PRUNED (as ASHA's stops reach the study) when no value."""
    study.enqueue_trial({"lr": lr, "optimizer": optimizer})
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if trial.suggest_categorical("optimizer", ["adam", "sgd"]) == "sgd":
        trial.suggest_categorical("weight_decay", [0.0, 0.5])  # conditional, as in ablation.yaml
    state = (
        optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
    )
    study.tell(trial, value, state=state)


def test_cell_importances_from_completed_trials(tmp_path: Path) -> None:
    study = _study(tmp_path)
    for i in range(8):
        _add(study, 10 ** -(1 + i % 4), "adam" if i % 2 else "sgd", 0.2 + 0.1 * (i % 4))
    _add(study, 1e-3, "adam", None)
    (result,) = cell_importances(tmp_path, [CELL])
    assert result.reason == "" and result.completed == 8
    assert set(result.values) == {"lr", "optimizer"}
    assert sum(result.values.values()) == pytest.approx(1.0)
    assert result.left_out == ("weight_decay",)


def test_cell_importances_need_two_completed_trials(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _add(study, 1e-3, "adam", 0.5)
    _add(study, 1e-2, "adam", None)
    (result,) = cell_importances(tmp_path, [CELL])
    assert not result.values
    assert "at least 2 completed trials; this cell has 1 (1 stopped early" in result.reason


def test_cell_importances_say_when_all_scores_are_equal(tmp_path: Path) -> None:
    study = _study(tmp_path)
    for lr in (1e-4, 1e-3, 1e-2):
        _add(study, lr, "adam", 0.25)
    (result,) = cell_importances(tmp_path, [CELL])
    assert "scored the same" in result.reason


def test_cell_importances_without_a_study_file_or_study(tmp_path: Path) -> None:
    (missing,) = cell_importances(tmp_path, [CELL])
    assert "optuna.db is not in the experiment folder" in missing.reason
    _study(tmp_path, "other/cell")
    (unknown,) = cell_importances(tmp_path, [CELL])
    assert f"no study named '{CELL}'" in unknown.reason


def test_cell_importances_of_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "optuna.db").write_bytes(b"not a database" * 100)
    (result,) = cell_importances(tmp_path, [CELL])
    assert result.reason and not result.values

"""What an evaluation scores under a deadline: each cell's best always, then what fits, in
order; checkpoints on disk stand in for what cannot be retrained in time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cxr_tune.constants import CHECKPOINT_FILE
from cxr_tune.evaluation.contenders import choose_contenders
from cxr_tune.evaluation.costs import FinishingCosts
from cxr_tune.evaluation.schedule import fastest_epochs, last_checkpoint, schedule
from tests.records import experiment_of, trial_record

# Round numbers: a best model's task costs 5 + 1 x epoch + 0 s, another's 5 + 0 s, plus
# retraining; the assembly 10 s.
COSTS = FinishingCosts(
    seeds=1,
    slots=1,
    best_scoring_epochs=1.0,
    best_scoring_s=0.0,
    other_scoring_epochs=0.0,
    task_start_s=5.0,
    fixed_s=10.0,
    contender_s=0.0,
)


def _trial(
    tmp_path: Path,
    trial_id: str,
    values: list[float],
    *,
    optimizer: str = "adam",
    checkpoints: tuple[int, ...] = (),
):
    """A trial of 10 s epochs with checkpoints written after ``checkpoints``' epochs."""
    trial = trial_record(trial_id, "phantom/alexnet", values, optimizer=optimizer)
    trial = dataclasses.replace(trial, folder=tmp_path / trial_id)
    for n, epoch in enumerate(checkpoints):
        folder = trial.folder / f"checkpoint_{n:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CHECKPOINT_FILE).write_bytes(b"weights")
        trial.results[epoch - 1]["checkpoint_dir_name"] = folder.name
    for result in trial.results:
        result["time_total_s"] = 10.0 * result["epoch"]
    return trial


def _experiment(tmp_path: Path):
    # The best (adam) was stopped by the budget after epoch 1 of 3, with a checkpoint; the
    # SGD alternate was stopped by ASHA after epoch 1, without one.
    best = _trial(tmp_path, "b", [0.8], checkpoints=(1,))
    sgd = _trial(tmp_path, "s", [0.3], optimizer="sgd")
    return experiment_of([best, sgd])


def _plan(tmp_path: Path, deadline_s: float | None, seeds: int = 1):
    exp = _experiment(tmp_path)
    costs = dataclasses.replace(COSTS, seeds=seeds)
    return schedule(choose_contenders(exp), seeds, fastest_epochs(exp.trials), costs, deadline_s)


def test_the_last_checkpoint_is_found_with_its_epoch(tmp_path: Path) -> None:
    trial = _trial(tmp_path, "t", [0.1, 0.2, 0.3], checkpoints=(1, 2))
    assert last_checkpoint(trial) == (trial.folder / "checkpoint_000001", 2)
    assert last_checkpoint(_trial(tmp_path, "u", [0.1])) is None


def test_without_a_deadline_everything_is_retrained_to_its_end(tmp_path: Path) -> None:
    jobs, left = _plan(tmp_path, None, seeds=2)
    assert [(j.contender.trial.trial_id, j.seed_index, j.source) for j in jobs] == [
        ("b", 0, "retrained"),
        ("b", 1, "retrained"),
        ("s", 0, "retrained"),
        ("s", 1, "retrained"),
    ]
    assert left == []


def test_a_short_deadline_scores_the_best_as_it_stands_and_leaves_the_rest_out(
    tmp_path: Path,
) -> None:
    # The best from its checkpoint: 5 + 10 s, and the assembly's 10 s: 25 s is all there is.
    jobs, left = _plan(tmp_path, 25.0, seeds=2)
    (job,) = jobs
    assert job.source == "search checkpoint at epoch 1 of 3, not retrained"
    assert job.seconds == 15.0
    assert {(each.contender.trial.trial_id, each.seed_index) for each in left} == {
        ("b", 1),
        ("s", 0),
        ("s", 1),
    }


def test_what_fits_is_bought_in_order_best_retrained_first(tmp_path: Path) -> None:
    # Retraining the best (3 x 10 s) makes its task 45 s; with the assembly 55 s. The SGD
    # alternate, retrained, is 5 + 30 s more on the one slot: 90 s.
    jobs, left = _plan(tmp_path, 60.0)
    assert [(j.contender.trial.trial_id, j.source) for j in jobs] == [("b", "retrained")]
    assert [each.contender.trial.trial_id for each in left] == ["s"]
    jobs, left = _plan(tmp_path, 90.0)
    assert [(j.contender.trial.trial_id, j.source) for j in jobs] == [
        ("b", "retrained"),
        ("s", "retrained"),
    ]
    assert left == []


def test_a_best_with_no_checkpoint_is_retrained_whatever_the_deadline(tmp_path: Path) -> None:
    exp = experiment_of([_trial(tmp_path, "b", [0.8])])
    jobs, _ = schedule(choose_contenders(exp), 1, fastest_epochs(exp.trials), COSTS, 1.0)
    assert [j.source for j in jobs] == ["retrained"]

"""The final evaluation's choices on hand-made experiments (no training)."""

from __future__ import annotations

from cxr_tune.evaluate import choose_contenders, retrain_seconds
from tests.records import experiment_of, trial_record


def test_contenders_are_the_best_trial_and_the_best_of_each_optimizer():
    exp = experiment_of(
        [
            trial_record("a1", "phantom/alexnet", [0.3, 0.5, 0.7]),
            trial_record("a2", "phantom/alexnet", [0.3, 0.4, 0.6]),
            trial_record("s1", "phantom/alexnet", [0.2, 0.3, 0.4], optimizer="sgd"),
            trial_record(
                "s2", "phantom/alexnet", [0.9], optimizer="sgd"
            ),  # stopped early: not comparable
        ]
    )
    contenders = {c.trial.trial_id: c.roles for c in choose_contenders(exp)}
    assert contenders == {"a1": ("best", "best_adam"), "s1": ("best_sgd",)}


def test_retraining_time_is_estimated_from_the_trials_own_epochs():
    stopped = trial_record("s", "phantom/vgg11", [0.2], epochs=3)
    stopped.results[-1]["time_total_s"] = 40.0  # one epoch in 40 s -> 3 epochs in 120 s
    assert retrain_seconds(stopped) == 120.0
    assert retrain_seconds(trial_record("n", "phantom/vgg11", [], epochs=3)) == 0.0

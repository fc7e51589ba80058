"""The final evaluation's choices on hand-made experiments (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.errors import DataError
from cxr_tune.evaluation.contenders import choose_contenders, retrain_seconds
from cxr_tune.evaluation.sources import reload_datasets
from cxr_tune.experiment import Experiment
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


def _recorded(options: DataOptions, split_hash: str) -> Experiment:
    record = {
        "data_options": options.to_record(),
        "datasets": [
            {"name": "phantom", "key": "phantom", "source": "built-in", "split_hash": split_hash}
        ],
    }
    return Experiment(Path("."), record, [], None)


def test_reload_rebuilds_the_data_from_every_recorded_option(tmp_path):
    # Options the search used that differ from every default: the reload must use them all.
    used = DataOptions(
        image_size=48, seed=3, fractions=(0.6, 0.2, 0.2), phantom_images=96, cache_dir=tmp_path
    )
    searched = load_dataset(DataSource.phantom(), used)
    (reloaded,) = reload_datasets(_recorded(used, searched.split_hash)).values()
    assert reloaded.split_hash == searched.split_hash
    assert reloaded.sizes() == searched.sizes() and reloaded.image_size == 48


def test_reload_refuses_data_whose_split_changed(tmp_path):
    used = DataOptions(image_size=48, phantom_images=96, cache_dir=tmp_path)
    with pytest.raises(DataError, match="is not the one the search used"):
        reload_datasets(_recorded(used, "0123456789abcdef"))


def test_data_options_round_trip_through_the_record(tmp_path):
    options = DataOptions(
        image_size=96,
        seed=7,
        fractions=(0.5, 0.25, 0.25),
        phantom_images=200,
        phantom_imbalance="dataset1",
        parser_options={"views": "PA"},
        min_label_positives=3,
        near_duplicate_similarity=0.99,
        cache_dir=tmp_path / "somewhere",
        workers=3,
    )
    again = DataOptions.from_record(options.to_record(), cache_dir=tmp_path / "here")
    # Where the cache lives and how many processes decode are this machine's, not the data's.
    assert again == DataOptions(
        **{**options.__dict__, "cache_dir": tmp_path / "here", "workers": 0}
    )

"""Out-of-distribution statistics on synthetic features: the distances are scikit-learn's
Ledoit-Wolf Mahalanobis distances, the threshold is the validation 99th percentile, shifted
features are flagged, and the statistics survive JSON and .npz."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from cxr_tune.ood import OodStats, fit_ood


def features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.2, 3.0, d)
    mixing = np.linalg.qr(np.random.default_rng(99).normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * scales) @ mixing + 1.0 + shift


@pytest.mark.parametrize(("n", "d"), [(200, 12), (15, 40)])
def test_distances_equal_scikit_learn_ledoit_wolf_mahalanobis(n: int, d: int) -> None:
    train = features(n, d, 0)
    probe = features(30, d, 1, shift=0.5)
    stats = fit_ood(train, features(20, d, 2))
    estimator = LedoitWolf().fit(train)
    expected = np.sqrt(estimator.mahalanobis(probe))
    assert stats.shrinkage == pytest.approx(estimator.shrinkage_, rel=1e-9)
    assert stats.components.shape[1] <= min(n - 1, d)
    np.testing.assert_allclose(stats.distances(probe), expected, rtol=1e-7)


def test_threshold_is_the_validation_percentile_and_shifted_features_are_flagged() -> None:
    d = 16
    stats = fit_ood(features(2000, d, 3), features(1000, d, 4))
    val_distances = stats.distances(features(1000, d, 4))
    assert stats.threshold == pytest.approx(np.percentile(val_distances, 99))
    assert stats.flags(features(1000, d, 4)).mean() == pytest.approx(0.01, abs=0.002)
    assert stats.flags(features(1000, d, 5)).mean() < 0.03  # in distribution
    assert stats.flags(features(1000, d, 6, shift=3.0)).mean() > 0.95


def test_round_trips_through_json_and_npz(tmp_path) -> None:
    stats = fit_ood(features(60, 24, 7), features(30, 24, 8))
    probe = features(10, 24, 9, shift=1.0)
    again = OodStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_allclose(again.distances(probe), stats.distances(probe), rtol=1e-12)
    stats.save(tmp_path / "ood.npz")
    loaded = OodStats.load(tmp_path / "ood.npz")
    np.testing.assert_allclose(loaded.distances(probe), stats.distances(probe), rtol=1e-5)
    assert loaded.threshold == stats.threshold and loaded.train_images == 60
    assert loaded.summary()["rank"] == stats.components.shape[1]


def test_constant_features_give_finite_statistics() -> None:
    train = np.ones((10, 5))
    stats = fit_ood(train, np.ones((4, 5)))
    assert np.isfinite(stats.distances(np.ones((1, 5)))).all()
    assert stats.flags(np.full((1, 5), 2.0)).all()


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        (np.zeros((1, 3)), np.zeros((2, 3)), ">= 2 training feature rows"),
        (np.zeros((5, 3)), np.zeros((2, 4)), "do not match"),
        (np.full((5, 3), np.nan), np.zeros((2, 3)), "NaN or infinite"),
    ],
)
def test_bad_features_are_errors(train, val, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_ood(train, val)

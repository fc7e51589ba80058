"""Out-of-distribution statistics: how far an image's features lie from the training images'.

A model's penultimate features (``cxr_tune.features``) on the training split give a mean and a
covariance, shrunk with scikit-learn's Ledoit-Wolf estimator (the sample covariance of a few
hundred images in thousands of dimensions is singular; the shrunk one is not). An image's
Mahalanobis distance to that distribution is its out-of-distribution score; the threshold is the
99th percentile of the validation split's distances, so about 1% of in-distribution images are
flagged, and an image is flagged when its distance exceeds the threshold.

Stored compactly and exactly: the shrunk covariance is ``(1 - s) S + s mu I`` (``S`` the sample
covariance, ``mu`` its mean eigenvalue, ``s`` the shrinkage), so it shares ``S``'s eigenvectors.
With ``n`` training images ``S`` has rank at most ``min(n - 1, D)``; the statistics keep only
those eigenvectors and their shrunk variances, and the rest of the space has variance ``s mu``.
That is ``D x min(n, D)`` numbers instead of ``D x D`` (AlexNet's 4096 features from 448 images:
7 MB, not 67 MB), and gives the same distances as the full precision matrix.

Pure numpy and scikit-learn (no torch, no Ray).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PERCENTILE = 99.0
# Eigenvalues of the sample covariance below this share of the largest are numerical zeros.
_RANK_TOLERANCE = 1e-10
# Variance given to directions when every training feature is identical (nothing to scale by).
_FLAT_VARIANCE = 1e-12


@dataclass(frozen=True)
class OodStats:
    """The out-of-distribution statistics of one model.

    Attributes:
        mean: (D,) mean training feature.
        components: (D, r) orthonormal eigenvectors of the sample covariance (r <= min(n-1, D)).
        variances: (r,) shrunk variances along ``components``.
        residual_variance: shrunk variance of every direction orthogonal to ``components``.
        shrinkage: Ledoit-Wolf's shrinkage coefficient.
        threshold: distance above which an image is flagged (the validation percentile).
        percentile: which percentile of the validation distances ``threshold`` is.
        train_images, val_images: how many images the statistics and the threshold came from.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    shrinkage: float
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    train_images: int = 0
    val_images: int = 0

    @property
    def dimensions(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (N, D) to the training features."""
        centred = np.asarray(features, dtype=np.float64).reshape(-1, self.dimensions) - self.mean
        projected = centred @ self.components
        inside = (projected**2 / self.variances).sum(axis=1)
        rest = np.maximum((centred**2).sum(axis=1) - (projected**2).sum(axis=1), 0.0)
        if self.components.shape[1] < self.dimensions:
            inside = inside + rest / self.residual_variance
        return np.sqrt(inside)

    def flags(self, features: np.ndarray) -> np.ndarray:
        """True for each row whose distance exceeds the threshold."""
        return self.distances(features) > self.threshold

    def summary(self) -> dict[str, Any]:
        """What the model package's metadata records (no arrays)."""
        return {
            "method": "Mahalanobis distance of penultimate features; Ledoit-Wolf shrunk covariance "
            "on the training split",
            "threshold": self.threshold,
            "percentile": self.percentile,
            "dimensions": self.dimensions,
            "rank": int(self.components.shape[1]),
            "shrinkage": self.shrinkage,
            "train_images": self.train_images,
            "val_images": self.val_images,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able values (lists); :meth:`from_dict` reads it back."""
        return {
            **self.summary(),
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "variances": self.variances.tolist(),
            "residual_variance": self.residual_variance,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> OodStats:
        mean = np.asarray(values["mean"], dtype=np.float64)
        components = np.asarray(values["components"], dtype=np.float64).reshape(len(mean), -1)
        return cls(
            mean=mean,
            components=components,
            variances=np.asarray(values["variances"], dtype=np.float64),
            residual_variance=float(values["residual_variance"]),
            shrinkage=float(values["shrinkage"]),
            threshold=float(values["threshold"]),
            percentile=float(values.get("percentile", DEFAULT_PERCENTILE)),
            train_images=int(values.get("train_images", 0)),
            val_images=int(values.get("val_images", 0)),
        )

    def to_bytes(self) -> bytes:
        """The compressed ``.npz`` that :meth:`save` writes, as bytes (arrays in float32:
        distances move by ~1e-6 relative)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            mean=self.mean.astype(np.float32),
            components=self.components.astype(np.float32),
            variances=self.variances.astype(np.float32),
            scalars=np.array(
                [
                    self.residual_variance,
                    self.shrinkage,
                    self.threshold,
                    self.percentile,
                    self.train_images,
                    self.val_images,
                ],
                dtype=np.float64,
            ),
        )
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_bytes` to ``path``, whole or not at all."""
        from cxr_tune.files import write_atomic

        write_atomic(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> OodStats:
        """Read what :meth:`save` wrote."""
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, payload: bytes) -> OodStats:
        """Read what :meth:`to_bytes` gave."""
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            residual, shrinkage, threshold, percentile, n_train, n_val = data["scalars"].tolist()
            return cls(
                mean=data["mean"].astype(np.float64),
                components=data["components"].astype(np.float64),
                variances=data["variances"].astype(np.float64),
                residual_variance=float(residual),
                shrinkage=float(shrinkage),
                threshold=float(threshold),
                percentile=float(percentile),
                train_images=int(n_train),
                val_images=int(n_val),
            )


def fit_ood(
    train_features: np.ndarray,
    val_features: np.ndarray,
    *,
    percentile: float = DEFAULT_PERCENTILE,
) -> OodStats:
    """Fit the statistics on training features and the threshold on validation features.

    Args:
        train_features: (N, D) penultimate features of the training split (N >= 2).
        val_features: (M, D) the validation split's (M >= 1).
        percentile: the threshold's percentile of the validation distances.

    Raises:
        ValueError: too few images, mismatched dimensions, or non-finite features.
    """
    train = np.asarray(train_features, dtype=np.float64)
    val = np.asarray(val_features, dtype=np.float64)
    if train.ndim != 2 or train.shape[0] < 2:
        raise ValueError(f"OOD statistics need >= 2 training feature rows, got shape {train.shape}")
    if val.ndim != 2 or val.shape[0] < 1 or val.shape[1] != train.shape[1]:
        raise ValueError(
            f"validation features of shape {val.shape} do not match training features of "
            f"shape {train.shape}"
        )
    if not (np.isfinite(train).all() and np.isfinite(val).all()):
        raise ValueError("features hold NaN or infinite values")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"The value of `percentile` is {percentile}, but must be in (0, 100].")
    mean, components, variances, residual, shrinkage = _shrunk_eigen(train)
    stats = OodStats(
        mean=mean,
        components=components,
        variances=variances,
        residual_variance=residual,
        shrinkage=shrinkage,
        threshold=math.inf,
        percentile=percentile,
        train_images=int(train.shape[0]),
        val_images=int(val.shape[0]),
    )
    threshold = float(np.percentile(stats.distances(val), percentile))
    return dataclasses.replace(stats, threshold=threshold)


def _shrunk_eigen(train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Mean, eigenvectors and shrunk eigenvalues of the Ledoit-Wolf covariance, from the
    eigen-decomposition of whichever Gram matrix is smaller (n x n or D x D)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    n, d = train.shape
    mean = train.mean(axis=0)
    centred = train - mean
    # The same shrinkage sklearn's LedoitWolf estimator computes (it calls this function).
    shrinkage = float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    if n < d:
        values, vectors = np.linalg.eigh(centred @ centred.T / n)
        keep = values > _RANK_TOLERANCE * max(values.max(), 0.0)
        values, vectors = values[keep], vectors[:, keep]
        # Eigenvectors of X^T X / n from those of X X^T / n: v = X^T u / sqrt(n * lambda).
        components = centred.T @ vectors / np.sqrt(n * values)
    else:
        values, components = np.linalg.eigh(centred.T @ centred / n)
        keep = values > _RANK_TOLERANCE * max(values.max(), 0.0)
        values, components = values[keep], components[:, keep]
    mu = float(values.sum() / d)  # trace(S) / D
    floor = (
        shrinkage * mu if shrinkage * mu > 0 else max(mu, _FLAT_VARIANCE) * 1e-6 + _FLAT_VARIANCE
    )
    variances = (1.0 - shrinkage) * values + shrinkage * mu
    variances = np.maximum(variances, floor)
    return mean, components, variances, float(floor), shrinkage

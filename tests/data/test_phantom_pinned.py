"""The phantom as it is (site A) must never change: search-efficiency grids are built on it.

These digests were taken before sites and markers were added; a change to the renderer that
moves any byte of site A fails here.
"""

from __future__ import annotations

import hashlib

import pytest

from cxr_tune.data import DataOptions
from cxr_tune.data.load import load_phantom
from cxr_tune.data.phantom import PhantomSpec, generate


def _digest(spec: PhantomSpec) -> str:
    data = generate(spec)
    payload = data.images.tobytes() + data.labels.tobytes() + "|".join(data.groups).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@pytest.mark.parametrize(
    ("spec", "images", "key"),
    [
        (PhantomSpec(n_images=24, image_size=64, seed=0), "986e3ec2cbbe1725", "6cbabd260cb95778"),
        (
            PhantomSpec(n_images=16, image_size=32, seed=3, imbalance="dataset1"),
            "b89402db60b83d23",
            "2ccd8464e5ede157",
        ),
        (
            PhantomSpec(n_images=16, image_size=48, seed=1, multilabel=True, strength=0.7),
            "c7aa7116c6e8afe3",
            "79f76b2ec8de85b0",
        ),
    ],
)
def test_phantom_site_a_bytes_and_key_unchanged(spec: PhantomSpec, images: str, key: str) -> None:
    assert _digest(spec) == images
    assert spec.key() == key


def test_phantom_site_a_dataset_and_split_hash_unchanged() -> None:
    arrays = load_phantom(DataOptions(image_size=64, phantom_images=128, seed=0))
    assert (arrays.dataset_hash, arrays.split_hash) == ("e1a9dba8aa7094b8", "4633b6321e32fc2b")

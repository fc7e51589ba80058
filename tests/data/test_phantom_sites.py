"""Phantom site B, the class-correlated marker, and lung masks."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.data.phantom import (
    MARKER_AGREEMENT,
    PhantomSpec,
    generate,
    lung_masks,
    marker_corners,
)
from cxr_tune.errors import ConfigError


def test_phantom_site_b_other_patients_same_classes() -> None:
    a = generate(PhantomSpec(n_images=80, image_size=48, seed=0))
    b = generate(PhantomSpec(n_images=80, image_size=48, seed=0, site="b"))
    assert a.classes == b.classes
    assert np.bincount(b.labels, minlength=4).tolist() == [20, 20, 20, 20]
    assert not np.array_equal(a.labels, b.labels)  # its own draws, not site A relabelled
    assert not set(a.groups) & set(b.groups)
    assert str(b.groups[0]).startswith("site-b-patient-")
    assert PhantomSpec(site="b").key() != PhantomSpec().key()


def test_phantom_site_b_has_its_own_look() -> None:
    spec_a = PhantomSpec(n_images=64, image_size=64, seed=2)
    spec_b = PhantomSpec(n_images=64, image_size=64, seed=2, site="b")
    a, b = generate(spec_a), generate(spec_b)
    # Wider field of view: the lungs fill less of the frame.
    area_a = lung_masks(spec_a, np.arange(64)).mean()
    area_b = lung_masks(spec_b, np.arange(64)).mean()
    assert area_b < 0.8 * area_a
    images_a, images_b = a.images.astype(np.float64), b.images.astype(np.float64)
    # A brighter tone curve: the background outside the body is lighter.
    assert images_b[:, :6, :6].mean() > images_a[:, :6, :6].mean() + 8
    # Flatter contrast: less difference between the spine and the lung fields.
    masks_a = lung_masks(spec_a, np.arange(64)).astype(bool)
    masks_b = lung_masks(spec_b, np.arange(64)).astype(bool)
    spine_a = images_a[:, 20:44, 30:34].mean() - images_a[masks_a].mean()
    spine_b = images_b[:, 20:44, 30:34].mean() - images_b[masks_b].mean()
    assert spine_b < 0.8 * spine_a
    # More grain: larger pixel-to-pixel steps.
    steps_a = np.abs(np.diff(images_a, axis=2)).mean()
    steps_b = np.abs(np.diff(images_b, axis=2)).mean()
    assert steps_b > 1.3 * steps_a


def test_phantom_marker_changes_only_corner_pixels_outside_the_lungs() -> None:
    spec = PhantomSpec(n_images=40, image_size=64, seed=1, marker=True)
    plain = generate(PhantomSpec(n_images=40, image_size=64, seed=1))
    marked = generate(spec)
    assert np.array_equal(plain.labels, marked.labels)
    changed = plain.images != marked.images
    masks = lung_masks(spec, np.arange(40)).astype(bool)
    assert not (changed & masks).any()
    # Each image's change lies in one corner quadrant, the one marker_corners names.
    corners = marker_corners(spec, marked.labels)
    half = 32
    for i, corner in enumerate(corners):
        rows, cols = np.nonzero(changed[i])
        assert len(rows) > 0
        top, left = divmod(int(corner), 2)
        assert ((rows >= half) == bool(top)).all() and ((cols >= half) == bool(left)).all()


def test_phantom_marker_agrees_with_the_class() -> None:
    spec = PhantomSpec(n_images=400, image_size=32, seed=0, marker=True)
    labels = generate(spec).labels
    agreement = float((marker_corners(spec, labels) == labels).mean())
    # MARKER_AGREEMENT of the images, plus a quarter of the random rest landing right.
    expected = MARKER_AGREEMENT + (1 - MARKER_AGREEMENT) / 4
    assert abs(agreement - expected) < 0.05


def test_phantom_marker_needs_classes() -> None:
    with pytest.raises(ValueError, match="multilabel=False"):
        PhantomSpec(marker=True, multilabel=True)
    with pytest.raises(ValueError, match="site"):
        PhantomSpec(site="c")


def test_lung_masks_match_rendered_lungs_and_any_order() -> None:
    spec = PhantomSpec(n_images=12, image_size=64, seed=4)
    data = generate(spec)
    masks = lung_masks(spec, np.arange(12))
    assert masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
    assert np.array_equal(lung_masks(spec, [7, 2]), masks[[7, 2]])
    # Lungs are the dark fields of the chest: darker than the rest of the central band.
    normal = data.labels == 2
    band = np.zeros_like(masks, dtype=bool)
    band[:, 16:48, 8:56] = True
    inside = data.images[normal][masks[normal].astype(bool)].mean()
    outside = data.images[normal][band[normal] & ~masks[normal].astype(bool)].mean()
    assert inside < outside


def test_load_dataset_phantom_variants_and_masks() -> None:
    options = DataOptions(image_size=32, phantom_images=96)
    a = load_dataset(DataSource.parse("phantom"), options)
    b = load_dataset(DataSource.parse("phantom_b"), options)
    marked = load_dataset(DataSource.parse("phantom_marker"), options)
    assert (a.name, b.name, marked.name) == ("phantom", "phantom_b", "phantom_marker")
    assert len({a.dataset_hash, b.dataset_hash, marked.dataset_hash}) == 3
    test = b.split("test")
    assert test.masks is not None and test.masks.shape == test.images.shape
    assert b.split("train").masks is None
    assert all(s.masks is None for s in b.for_search().splits.values())


def test_load_dataset_unknown_phantom_variant() -> None:
    source = DataSource.parse("phantom_c")
    assert (source.key, source.path) == ("phantom_c", None)
    with pytest.raises(ConfigError, match="Did you mean 'phantom_b'"):
        load_dataset(source, DataOptions(image_size=32, phantom_images=32))
    with pytest.raises(ConfigError, match="reads a folder"):
        load_dataset(DataSource("imagefolder", None), DataOptions(image_size=32))

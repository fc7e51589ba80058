from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cxr_tune.config import DataSource
from cxr_tune.data import DataOptions, load_dataset
from cxr_tune.data.phantom import CLASSES, FINDINGS, PhantomSpec, generate
from cxr_tune.data.splits import leakage_audit


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def test_phantom_same_seed_same_bytes():
    a = generate(PhantomSpec(n_images=40, image_size=48, seed=3))
    b = generate(PhantomSpec(n_images=40, image_size=48, seed=3))
    assert _digest(a.images) == _digest(b.images)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.groups, b.groups)


def test_phantom_other_seed_other_images():
    a = generate(PhantomSpec(n_images=16, image_size=48, seed=0))
    b = generate(PhantomSpec(n_images=16, image_size=48, seed=1))
    assert _digest(a.images) != _digest(b.images)


def test_phantom_rendering_does_not_depend_on_the_batch(monkeypatch):
    import cxr_tune.data.phantom as phantom

    whole = generate(PhantomSpec(n_images=24, image_size=40, seed=5))
    monkeypatch.setattr(phantom, "_RENDER_BATCH", 5)
    batched = generate(PhantomSpec(n_images=24, image_size=40, seed=5))
    assert _digest(whole.images) == _digest(batched.images)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_phantom_any_size(size):
    data = generate(PhantomSpec(n_images=8, image_size=size))
    assert data.images.shape == (8, size, size)
    assert 10 < data.images.mean() < 200  # an exposed image, not blank or saturated


def test_phantom_balanced_by_default_and_imbalanced_on_request():
    balanced = generate(PhantomSpec(n_images=80, image_size=32))
    assert np.bincount(balanced.labels, minlength=4).tolist() == [20, 20, 20, 20]
    skewed = generate(PhantomSpec(n_images=1000, image_size=32, imbalance="dataset1"))
    counts = dict(zip(CLASSES, np.bincount(skewed.labels, minlength=4).tolist()))
    assert counts == {"COVID": 171, "Lung_Opacity": 284, "Normal": 481, "Viral Pneumonia": 64}


def test_phantom_multilabel_findings():
    data = generate(PhantomSpec(n_images=200, image_size=32, multilabel=True))
    assert data.classes == FINDINGS
    assert data.labels.shape == (200, 3) and data.labels.dtype == np.uint8
    assert data.labels.sum(axis=0).min() > 0 and (data.labels.sum(axis=1) == 0).any()


def test_phantom_classes_differ_in_the_lungs():
    data = generate(PhantomSpec(n_images=400, image_size=64))
    means = [data.images[data.labels == c].mean() for c in range(4)]
    normal = means[CLASSES.index("Normal")]
    # Every finding adds opacity (brightness) on average.
    assert all(m > normal for i, m in enumerate(means) if CLASSES[i] != "Normal")


def test_phantom_split_keeps_patients_together():
    arrays = load_dataset(
        DataSource("phantom", None), DataOptions(image_size=32, phantom_images=300)
    )
    data = generate(PhantomSpec(n_images=300, image_size=32))
    sizes = arrays.sizes()
    assert sum(sizes.values()) == 300
    assert abs(sizes["train"] / 300 - 0.70) < 0.05
    # Rebuild the split indices from the images to audit the grouping.
    lookup = {data.images[i].tobytes(): i for i in range(300)}
    split = {
        name: np.array([lookup[img.tobytes()] for img in arrays.splits[name].images])
        for name in sizes
    }
    assert leakage_audit(list(data.groups), split)["crossing"] == 0


def test_search_copy_has_no_test_split():
    arrays = load_dataset(
        DataSource("phantom", None), DataOptions(image_size=32, phantom_images=64)
    )
    search = arrays.for_search()
    assert set(search.splits) == {"train", "val"}
    with pytest.raises(KeyError, match="carries no 'test' split"):
        search.split("test")

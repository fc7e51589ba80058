"""Loading a dataset: a ``DataSource`` (``--data [KEY=]PATH`` or a built-in phantom) in, a decoded
and split ``DatasetArrays`` out. Folders go through the decode-once cache
(``cxr_tune.data.prepare``); the phantoms are generated in memory.
"""

from __future__ import annotations

import numpy as np

from cxr_tune.config import DataSource
from cxr_tune.data.datasets import DATASETS, Generated
from cxr_tune.data.options import DataOptions
from cxr_tune.data.splits import grouped_stratified_split, split_hash
from cxr_tune.data.types import DatasetArrays, SplitArrays


def resolve_source(source: DataSource) -> DataSource:
    """``source`` with its layout and root folder found: detected from the folder, or checked
    against the forced KEY. The phantom and already resolved sources come back as they are.

    Raises:
        ConfigError: an unknown dataset key (with did-you-mean).
        DataError: the folder is missing, holds no known layout, or holds several datasets.
    """
    if source.is_phantom:
        generated_spec(source.key or "phantom")
    if source.resolved:
        return source
    from cxr_tune.data.detect import resolve

    detection = resolve(source)
    return DataSource(key=detection.dataset, path=detection.root, detected=detection.reason)


def load_dataset(source: DataSource, options: DataOptions) -> DatasetArrays:
    """Load one dataset, decoded and split, with all three splits.

    Use ``DatasetArrays.for_search()`` before handing it to trials: the search never reads
    the test split.

    Raises:
        DataError: the folder is missing, unreadable or not a known layout.
        ConfigError: an unknown dataset key.
    """
    if source.is_phantom:
        return load_phantom(options, source.key or "phantom")
    from cxr_tune.data.prepare import load_or_prepare

    return load_or_prepare(source, options)


def generated_spec(name: str) -> Generated:
    """What the built-in dataset ``name`` generates.

    Raises:
        ConfigError: ``name`` is unknown (with a did-you-mean), or a layout that reads a folder.
    """
    from cxr_tune.errors import ConfigError

    generated = DATASETS.get(name).generated
    if generated is None:
        raise ConfigError(
            f"The dataset '{name}' reads a folder; give it as --data {name}=PATH (built-in: "
            f"{', '.join(n for n in DATASETS.names() if DATASETS.get(n).generated)})."
        )
    return generated


def load_phantom(options: DataOptions, name: str = "phantom") -> DatasetArrays:
    """Generate a built-in phantom in memory and split it by simulated patient.

    Args:
        options: size, seed, image count and class shares.
        name: ``phantom`` (site A), ``phantom_b`` (site B) or ``phantom_marker`` (site A with a
            class-correlated marker); see ``DATASETS``.

    The test split carries each image's lung mask (``SplitArrays.masks``), for probes that
    blank the lungs.

    Raises:
        ConfigError: ``name`` is not a built-in generated dataset (with a did-you-mean).
    """
    from cxr_tune.data.phantom import PhantomSpec, generate, lung_masks

    generated = generated_spec(name)
    spec = PhantomSpec(
        n_images=options.phantom_images,
        image_size=options.image_size,
        seed=options.seed,
        imbalance=options.phantom_imbalance,
        multilabel=options.phantom_multilabel,
        site=generated.site,
        marker=generated.marker,
    )
    data = generate(spec)
    if data.labels.ndim == 1:
        strata = [data.classes[int(c)] for c in data.labels]
    else:
        strata = ["+".join(str(int(v)) for v in row) for row in data.labels]
    split = grouped_stratified_split(
        strata, list(data.groups), fractions=options.fractions, seed=options.seed
    )
    ids = [f"phantom-{i:06d}" for i in range(len(strata))]
    splits = {
        part: SplitArrays(
            images=data.images[idx],
            labels=np.ascontiguousarray(data.labels[idx]),
            masks=lung_masks(spec, idx) if part == "test" else None,
        )
        for part, idx in split.items()
    }
    return DatasetArrays(
        name=name,
        task="multilabel" if spec.multilabel else "multiclass",
        classes=data.classes,
        image_size=options.image_size,
        splits=splits,
        dataset_hash=spec.key(),
        split_hash=split_hash(ids, split),
    )

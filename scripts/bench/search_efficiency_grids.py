"""The grids of the search-efficiency benchmark: what each one trains, on which data, and its
role (``development``: settings are chosen on it; ``held-out``: never used to choose, every
quoted figure comes from these; ``legacy``: the first five AlexNet grids, in-sample, kept for
comparison).

A grid is every configuration of a space (learning rate x batch size x optimiser) trained to
its last epoch, with the real trial code, under every initialisation seed in ``seeds``. The
searches replayed on a grid see the curves of ``seeds[0]``; a configuration's reference value
averages its final value over all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where the real grid's images are (an imagefolder layout built outside the repository; see
# scripts/bench/README.md for how it was made). Never committed.
REAL_ROOT_ENV = "CXR_TUNE_REAL_GRID_ROOT"
REAL_ROOT_DEFAULT = "/work/data/real_cxr/imagefolder"

SMALL_LRS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)
LEGACY_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@dataclass(frozen=True)
class GridSpec:
    """One grid: its data, model, space, epochs, seeds and role.

    Attributes:
        name: the grid's name (``results/search_efficiency_grids.json`` is keyed by it).
        role: ``development``, ``held-out`` or ``legacy``.
        data: ``phantom`` (site A), ``phantom_b`` (site B) or ``real`` (an imagefolder).
        data_seed: the phantom's seed, and the seed of the train/val split.
        strength: the phantom's finding opacity (1.0: the standard difficulty; lower is harder).
        imbalance: None (balanced classes) or ``dataset1`` (the paper's Dataset 1 shares).
        images: phantom images (train, val and test together).
        image_size: side of the square images, px.
        model: a registered model (``smallcnn``: ``small_cnn.py``).
        epochs: epochs of every trial (cosine learning-rate schedule over them).
        seeds: initialisation seeds every configuration is trained under.
    """

    name: str
    role: str
    data: str
    data_seed: int
    strength: float = 1.0
    imbalance: str | None = None
    images: int = 1500
    image_size: int = 32
    model: str = "smallcnn"
    epochs: int = 10
    lrs: tuple[float, ...] = SMALL_LRS
    batch_sizes: tuple[int, ...] = (16, 32, 64)
    optimizers: tuple[str, ...] = ("adam", "sgd")
    seeds: tuple[int, ...] = (0, 1, 2)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def replay_seed(self) -> int:
        return self.seeds[0]

    def space(self) -> dict[str, Any]:
        """The grid's space as a search space's ``params`` block."""
        return {
            "lr": {"choice": [float(v) for v in self.lrs]},
            "batch_size": {"choice": [int(v) for v in self.batch_sizes]},
            "optimizer": {"choice": list(self.optimizers)},
        }

    def configurations(self) -> list[str]:
        """Every configuration as ``lr|batch|optimizer``."""
        return [
            f"{lr:g}|{batch}|{optimizer}"
            for lr in self.lrs
            for batch in self.batch_sizes
            for optimizer in self.optimizers
        ]

    def describe(self) -> dict[str, Any]:
        """What the packed grid file records of the spec."""
        data: dict[str, Any] = {"data": self.data, "data_seed": self.data_seed}
        if self.data != "real":
            data |= {"phantom_images": self.images, "strength": self.strength}
            if self.imbalance:
                data["imbalance"] = self.imbalance
        return {
            "name": self.name,
            "role": self.role,
            **data,
            "model": self.model,
            "epochs": self.epochs,
            "image_size": self.image_size,
            "lr_schedule": "cosine",
            "space": self.space(),
            "seeds": list(self.seeds),
            "replay_seed": self.replay_seed,
            **({"notes": self.notes} if self.notes else {}),
        }


def _legacy(seed: int) -> GridSpec:
    return GridSpec(
        name=f"legacy{seed}",
        role="legacy",
        data="phantom",
        data_seed=seed,
        images=1800,
        image_size=64,
        model="alexnet",
        epochs=6,
        lrs=LEGACY_LRS,
        batch_sizes=(16, 64),
        seeds=(seed, seed + 1, seed + 2),
        notes="the first five grids (AlexNet); 1 to 3 seeds per configuration; in-sample",
    )


GRIDS: dict[str, GridSpec] = {
    spec.name: spec
    for spec in (
        # Settings (ASHA, the searcher) are chosen on these two only.
        GridSpec("dev-a", "development", "phantom", 40),
        GridSpec("dev-b", "development", "phantom_b", 41),
        # Never used to choose: every quoted figure comes from these.
        GridSpec("held-a", "held-out", "phantom", 50),
        GridSpec("held-a-hard", "held-out", "phantom", 51, strength=0.75),
        GridSpec("held-b", "held-out", "phantom_b", 53),
        GridSpec("held-a-imbalanced", "held-out", "phantom", 54, imbalance="dataset1"),
        GridSpec("held-real", "held-out", "real", 0),
        *(_legacy(seed) for seed in range(5)),
    )
}


def real_root() -> Path:
    return Path(os.environ.get(REAL_ROOT_ENV, REAL_ROOT_DEFAULT))


def load_grid_data(spec: GridSpec) -> Any:
    """The grid's dataset, split as a search splits it (train and val only)."""
    if spec.data == "real":
        return _load_real(spec)
    return _load_phantom(spec)


def _load_real(spec: GridSpec) -> Any:
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, default_cache_dir, load_dataset, resolve_source

    options = DataOptions(
        image_size=spec.image_size, seed=spec.data_seed, cache_dir=default_cache_dir()
    )
    source = resolve_source(DataSource("imagefolder", real_root()))
    return load_dataset(source, options).for_search()


def _load_phantom(spec: GridSpec) -> Any:
    """A phantom of the spec's site, difficulty and class shares, split by simulated patient as
    ``cxr_tune.data.load_phantom`` splits the built-in one (which has no difficulty option)."""
    import numpy as np

    from cxr_tune.data.phantom import PhantomSpec, generate
    from cxr_tune.data.splits import DEFAULT_FRACTIONS, grouped_stratified_split, split_hash
    from cxr_tune.data.types import DatasetArrays, SplitArrays

    phantom = PhantomSpec(
        n_images=spec.images,
        image_size=spec.image_size,
        seed=spec.data_seed,
        imbalance=spec.imbalance,
        strength=spec.strength,
        site="b" if spec.data == "phantom_b" else "a",
    )
    data = generate(phantom)
    strata = [data.classes[int(c)] for c in data.labels]
    split = grouped_stratified_split(
        strata, list(data.groups), fractions=DEFAULT_FRACTIONS, seed=spec.data_seed
    )
    ids = [f"phantom-{i:06d}" for i in range(len(strata))]
    splits = {
        part: SplitArrays(
            images=data.images[idx], labels=np.ascontiguousarray(data.labels[idx]), masks=None
        )
        for part, idx in split.items()
        if part != "test"
    }
    return DatasetArrays(
        name=spec.data,
        task="multiclass",
        classes=data.classes,
        image_size=spec.image_size,
        splits=splits,
        dataset_hash=phantom.key(),
        split_hash=split_hash(ids, split),
    )

"""The data an evaluation scores on: the experiment's own datasets, decoded again from what
its record holds (and checked to be the split the search used), and the external sets that were
not searched (recorded by the search, or named on the command line).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_tune.config import DataSource
from cxr_tune.constants import DEFAULT_IMAGE_SIZE
from cxr_tune.data.types import DatasetArrays
from cxr_tune.experiment import Experiment

Echo = Callable[[str], None]


# What an external set's models are scored on.
WHOLE_COHORT = "whole cohort"
TEST_SPLIT = "test split"


@dataclass(frozen=True)
class ExternalSet:
    """A dataset scored only as an external set (``--external``): its arrays (``test`` is
    what is scored), its source, and ``scored_on``: the whole cohort when no model of the
    experiment trained on it, its test split when a searched dataset is given again."""

    arrays: DatasetArrays
    source: DataSource
    scored_on: str = WHOLE_COHORT

    def describe(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "key": self.source.key,
            "source": str(self.source.path) if self.source.path else "built-in",
            "task": self.arrays.task,
            "classes": list(self.arrays.classes),
            "scored_on": self.scored_on,
            "images": len(self.arrays.split("test")),
            "split_hash": self.arrays.split_hash,
        }


def external_name(key: str, taken: Sequence[str]) -> str:
    """A name for an external set (its folder's name), made unique among ``taken``."""
    name, n = key, 2
    while name in taken:
        name, n = f"{key}_{n}", n + 1
    return name


def reload_datasets(exp: Experiment, *, cache_dir: Path | None = None) -> dict[str, DatasetArrays]:
    """Decode (from the cache) the experiment's datasets again, from the sources and data
    options its record holds, and check that each split is the one the search used."""
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.errors import DataError

    options = DataOptions.from_record(_recorded_options(exp), cache_dir=cache_dir)
    datasets: dict[str, DatasetArrays] = {}
    for info in exp.record.get("datasets", []):
        arrays = dataclasses.replace(
            load_dataset(_recorded_source(info), options), name=str(info["name"])
        )
        if arrays.split_hash != info.get("split_hash"):
            raise DataError(
                f"The split of {info['name']} is not the one the search used "
                f"({arrays.split_hash} != {info.get('split_hash')}): the dataset changed."
            )
        datasets[str(info["name"])] = arrays
    return datasets


def load_externals(
    exp: Experiment,
    extra: Sequence[DataSource] = (),
    *,
    cache_dir: Path | None = None,
    echo: Echo = print,
) -> dict[str, ExternalSet]:
    """The experiment's external sets (recorded by the search) and ``extra`` ones, decoded with
    the experiment's data options (its image size), named by layout key. Each is scored on all
    its usable images, as external validation scores a cohort; a set that is also one of the
    experiment's searched datasets keeps its test split (its cells trained on the rest).

    Raises:
        ConfigError, DataError: as ``load_dataset``.
    """
    from cxr_tune.data import DataOptions, load_dataset, resolve_source

    options = DataOptions.from_record(_recorded_options(exp), cache_dir=cache_dir)
    recorded = [
        (_recorded_source(info), info.get("name")) for info in exp.record.get("externals", [])
    ]
    taken = [str(d["name"]) for d in exp.record.get("datasets", [])]
    searched = {
        _identity(_recorded_source(info))
        for info in exp.record.get("datasets", [])
        if "source" in info
    }
    out: dict[str, ExternalSet] = {}
    for given, recorded_name in [*recorded, *((source, None) for source in extra)]:
        # Named as the search names them: by the folder given (before detection may pick a
        # subfolder), unique among the experiment's datasets and the other external sets.
        name = external_name(str(recorded_name or given.default_name), [*taken, *out])
        source = resolve_source(given)
        arrays = dataclasses.replace(load_dataset(source, options), name=name)
        if _identity(source) in searched:
            external = ExternalSet(arrays.for_test(), source, TEST_SPLIT)
        else:
            external = ExternalSet(arrays.whole_as_test(), source, WHOLE_COHORT)
        out[name] = external
        echo(
            f"evaluate: external set {name}: {len(external.arrays.split('test'))} images "
            f"({external.scored_on}), classes {', '.join(arrays.classes)}"
        )
    return out


def _identity(source: DataSource) -> tuple[str, str]:
    """What makes two sources one dataset: the layout and the folder (resolved)."""
    path = str(Path(source.path).expanduser().resolve()) if source.path else "built-in"
    return str(source.key), path


def _recorded_options(exp: Experiment) -> dict[str, Any]:
    recorded = dict(exp.record.get("data_options", {}))
    # Records written before every option was kept hold only these three.
    recorded.setdefault("seed", exp.record.get("seed", 0))
    recorded.setdefault("phantom_images", 640)
    datasets = exp.record.get("datasets", [])
    size = datasets[0].get("image_size", DEFAULT_IMAGE_SIZE) if datasets else DEFAULT_IMAGE_SIZE
    recorded.setdefault("image_size", size)
    return recorded


def _recorded_source(info: Mapping[str, Any]) -> DataSource:
    """The data source of a recorded dataset, resolved as the search resolved it."""
    if info.get("source") == "built-in":
        return DataSource(str(info.get("key") or "phantom"), None)
    return DataSource(
        str(info.get("key") or info["name"]), Path(info["source"]), detected=info.get("detected")
    )

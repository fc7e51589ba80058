"""Typed, validated configuration objects.

One ``TrialConfig`` describes one training run, a ``DataSource`` one dataset given on the command
line, a ``Profile`` how a run sizes itself to the machine; a whole search is a ``Plan``
(``search/plan.py``) built from a ``SearchSpace`` (``spaces.py``). Everything downstream reads
these objects, never raw dicts from YAML or the command line.
This module imports neither Ray nor torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cxr_tune.constants import DEFAULT_IMAGE_SIZE
from cxr_tune.errors import ConfigError

Task = Literal["multiclass", "multilabel"]
Mode = Literal["min", "max"]

AUGMENTATIONS: tuple[str, ...] = ("none", "paper", "light", "strong")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
DATA_PATHS: tuple[str, ...] = ("resident", "streaming")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs to train one model on one dataset.

    ``dataset``, ``cell`` and ``seed`` are set by the search; the rest comes from the search
    space (``fixed`` values and sampled ``params``).
    """

    dataset: str = "phantom"
    model: str = "alexnet"
    optimizer: str = "adam"
    lr: float = 1e-4
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 50
    image_size: int = DEFAULT_IMAGE_SIZE
    pretrained: bool = False
    augment: str = "paper"
    lr_schedule: str = "constant"
    precision: str = "auto"
    compile: bool = False
    # Checkpoint every N epochs (and always after the last one): a restarted trial resumes
    # from its latest checkpoint, and the last one is the model the evaluation scores.
    checkpoint_every: int = 1
    seed: int = 0
    cell: str = ""
    # How the trial's data reach the device: copied once (``resident``), or a batch at a time
    # from host memory (``streaming``); the plan chooses it per cell (search/placement.py).
    data_path: str = "resident"

    def __post_init__(self) -> None:
        _check_positive("lr", self.lr)
        _check_int_at_least("batch_size", self.batch_size, 1)
        _check_int_at_least("epochs", self.epochs, 1)
        _check_int_at_least("checkpoint_every", self.checkpoint_every, 1)
        # AlexNet's feature stack needs >= 63 px; 32 px is the floor for the others.
        _check_int_at_least("image_size", self.image_size, 32)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"The value of `momentum` is {self.momentum}, but must be in [0, 1).")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise ConfigError(
                f"The value of `weight_decay` is {self.weight_decay}, but must be >= 0."
            )
        _check_choice("augment", self.augment, AUGMENTATIONS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("data_path", self.data_path, DATA_PATHS)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialConfig:
        """Build from a flat dict (a Tune config), ignoring keys that are not fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        return cls(**{k: _coerce(k, v) for k, v in kwargs.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def checkpoints_after(self, epoch: int) -> bool:
        """Whether the trial writes a checkpoint after ``epoch``."""
        return epoch % self.checkpoint_every == 0 or epoch >= self.epochs


def trial_field_types() -> dict[str, type]:
    """Field name -> Python type of ``TrialConfig`` (what a search space may set)."""
    defaults = TrialConfig()
    return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(TrialConfig)}


# Fields the search fills in itself; a search space must not set them.
SEARCH_MANAGED_FIELDS: frozenset[str] = frozenset({"dataset", "cell", "seed", "data_path"})


def _coerce(name: str, value: Any) -> Any:
    kind = trial_field_types()[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise ConfigError(f"The value of `{name}` is {value!r}, but must be a number > 0.")


def _check_int_at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"The value of `{name}` is {value!r}, but must be an integer >= {low}.")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"The value of `{name}` is {value!r}, but must be one of: {', '.join(allowed)}."
        )


def is_builtin_name(text: str) -> bool:
    """True for a name of a built-in generated dataset (``phantom``, ``phantom_<variant>``) that
    is not also a folder here."""
    if text == "phantom":
        return True
    variant = text.removeprefix("phantom_")
    return variant != text and variant.replace("_", "").isalnum() and not Path(text).exists()


# Characters a dataset name keeps (it becomes part of cell ids, study names and paths).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def safe_dataset_name(text: str) -> str:
    """``text`` with every character outside letters, digits, ``.``, ``_`` and ``-`` made
    ``_`` (a folder named ``COVID-19 Radiography Database`` becomes one token)."""
    return "".join(ch if ch in _NAME_CHARS else "_" for ch in text.strip()).strip("._")


def unique_dataset_names(wanted: Sequence[str], taken: Sequence[str] = ()) -> tuple[str, ...]:
    """``wanted`` made unique among themselves and ``taken``: a repeated name gets _2, _3..."""
    names: list[str] = []
    for name in wanted:
        candidate, n = name, 2
        while candidate in names or candidate in taken:
            candidate, n = f"{name}_{n}", n + 1
        names.append(candidate)
    return tuple(names)


@dataclass(frozen=True)
class DataSource:
    """A dataset given on the command line: ``--data [KEY=]PATH``, or the built-in phantom.

    As given, ``key`` may be None (detect the layout) and ``path`` is the folder named. Once
    resolved (``cxr_tune.data.resolve_source``), ``key`` is the layout, ``path`` the dataset's
    root folder (possibly a subfolder of the one named) and ``detected`` says why; loading a
    resolved source does not detect again.
    """

    key: str | None
    path: Path | None
    detected: str | None = None

    @classmethod
    def phantom(cls) -> DataSource:
        """The built-in phantom dataset."""
        return cls(key="phantom", path=None)

    @property
    def default_name(self) -> str:
        """What a run calls the dataset unless told otherwise: the folder's name, as people
        name their datasets (``itu4``), made safe for cell ids and paths; a built-in one's
        key."""
        if self.path is None:
            return str(self.key or "phantom")
        return safe_dataset_name(self.path.name) or str(self.key or "data")

    @property
    def is_phantom(self) -> bool:
        """A built-in generated dataset (the phantom, any site): no folder to read."""
        return self.path is None

    @property
    def resolved(self) -> bool:
        return self.is_phantom or self.detected is not None

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """Parse ``KEY=PATH``, ``PATH``, or a built-in generated dataset: ``phantom`` (site A),
        ``phantom_b`` (site B), ``phantom_marker`` (site A with a class-correlated marker).

        Raises:
            ConfigError: the text is empty or the path does not exist.
        """
        text = text.strip()
        if not text:
            raise ConfigError("--data: the value is empty; expected [KEY=]PATH.")
        if is_builtin_name(text):
            # Checked against the dataset registry (with a did-you-mean) where it is loaded.
            return cls(key=text, path=None)
        key: str | None = None
        raw_path = text
        # A Windows drive letter or a path containing '=' is rare; KEY must look like a name.
        head, sep, tail = text.partition("=")
        if sep and head and head.replace("_", "").isalnum():
            key, raw_path = head, tail
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise ConfigError(f"--data: the folder '{raw_path}' does not exist.")
        if not path.is_dir():
            raise ConfigError(
                f"--data: '{raw_path}' is not a folder; give a dataset's root folder."
            )
        return cls(key=key, path=path.resolve())


@dataclass(frozen=True)
class Profile:
    """How a run sizes itself to the machine.

    Caps are applied on top of the search space: a space's 50 epochs become ``max_epochs`` on a
    small profile, and so on. ``None`` means "take the space's value".
    """

    name: str
    description: str
    image_size: int | None = None
    max_epochs: int | None = None
    num_samples: int | None = None
    max_concurrent: int | None = None
    grace_period: int | None = None
    phantom_images: int = 6000
    eval_seeds: int = 3
    cpus_per_trial: float = 1.0
    # Trials' checkpoint_every unless the space sets it (None: every epoch).
    checkpoint_every: int | None = None
    # GPU share per architecture; a fraction packs several trials on one GPU.
    gpus_per_trial: Mapping[str, float] = field(default_factory=dict)

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpus_per_trial)


PROFILES: dict[str, Profile] = {
    "gpu": Profile(
        name="gpu",
        description="full study settings from the search space, trials on GPUs",
        phantom_images=6000,
        eval_seeds=3,
        cpus_per_trial=2.0,
        gpus_per_trial={"alexnet": 0.25, "vgg11": 0.5, "resnet50": 0.5},
    ),
    # The space as written where the cluster has no GPU (``resolve_profile`` gives the GPU
    # settings under this name where it has some): nothing capped, trials on CPUs.
    "full": Profile(
        name="full",
        description="full study settings from the search space, trials on CPUs (no GPU found)",
        phantom_images=6000,
        eval_seeds=3,
        cpus_per_trial=1.0,
    ),
    "cpu": Profile(
        name="cpu",
        description="shrunk to finish in minutes on a CPU-only machine",
        image_size=64,
        max_epochs=3,
        num_samples=6,
        grace_period=1,
        phantom_images=640,
        eval_seeds=1,
        cpus_per_trial=1.0,
        # Only the final checkpoint: a 3-epoch trial restarted from scratch loses little, and
        # writing VGG11's 1.5 GB of weights and Adam state each epoch costs seconds on a CPU
        # (scripts/bench/ray_overhead.py measures the checkpoint's share of a trial).
        checkpoint_every=3,
    ),
    "smoke": Profile(
        name="smoke",
        description="seconds per trial, for CI and quick checks",
        image_size=64,
        max_epochs=2,
        num_samples=2,
        grace_period=1,
        phantom_images=128,
        eval_seeds=1,
        cpus_per_trial=1.0,
        # Only the final checkpoint, as the cpu profile: AlexNet's weights and Adam state are
        # 0.7 GB, written and copied to storage in seconds of CPU, for a 2-epoch trial.
        checkpoint_every=2,
    ),
}
PROFILE_CHOICES: tuple[str, ...] = ("auto", *PROFILES)


def get_profile(name: str) -> Profile:
    """Return a named profile (not ``auto``, which the search resolves from the cluster)."""
    if name not in PROFILES:
        from cxr_tune.errors import unknown_name_message

        raise ConfigError("--profile: " + unknown_name_message("profile", name, PROFILE_CHOICES))
    return PROFILES[name]

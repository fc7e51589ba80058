"""Label mappings between datasets: which classes two datasets share, and how to compare them.

A model trained on one dataset can be scored on another only on the classes both have. The
mapping that puts every dataset on shared classes is declared in a YAML file: the package's own
``label_maps.yaml``, overridable by the user's file of the same schema (see that file). This
module reads it and answers, for two datasets' classes, the shared classes, the index maps of
both sides and what each side leaves out, so that a report can state every mapping it used.

Matching of a class onto a shared class, in order:

1. the dataset's own entry (by dataset name, then registry key): ``class -> shared`` or ``null``
   (left out on purpose), or for multi-label datasets ordered ``rules`` (first match wins);
2. else the aliases of the shared classes, compared without case, spaces, ``_`` and ``-``.

A class that matches nothing is left out, except in ``imagefolder`` datasets (names chosen by
whoever made the folders, where a typo is likely) when a transfer compares datasets: a name
within a small edit distance of a shared class or an alias (``Pnuemonia``) is an error with a
did-you-mean, and the user's file can map it or leave it out with ``null``. A name that an alias
contains, or that contains one (``Bacterial``, ``Viral-COVID19``), is a class of its own: it is
left out and named, as any other unmatched class.

Ray-free and torch-free: numpy and PyYAML only.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.config import DataSource, Task
from cxr_tune.errors import ConfigError

BUILTIN = "built-in label_maps.yaml"
# Datasets whose class names come from a user's folders: an unmatched name close to a shared
# class is taken for a typo and refused; one close to none (a user's own finding, such as
# 'effusion') is left out of the shared classes, as a registered layout's would be.
STRICT_DATASETS: frozenset[str] = frozenset({"imagefolder"})
LEFT_OUT = -1


def normalise(name: str) -> str:
    """The comparison form of a class name: lower case without spaces, ``_`` and ``-``."""
    return "".join(ch for ch in name.lower() if ch not in " _-\t")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset's declared mapping.

    Attributes:
        classes: own class -> shared class, or None to leave it out (multi-class).
        rules: (own label, shared class) in precedence order (multi-label).
        origin: the file the entry comes from.
    """

    classes: Mapping[str, str | None] = field(default_factory=dict)
    rules: tuple[tuple[str, str], ...] = ()
    origin: str = BUILTIN


@dataclass(frozen=True)
class LabelMaps:
    """The shared classes with their aliases, and the per-dataset entries.

    Attributes:
        classes: shared class -> aliases, in table order.
        datasets: dataset name or registry key -> entry.
        sources: the files read, built-in first.
    """

    classes: Mapping[str, tuple[str, ...]]
    datasets: Mapping[str, DatasetEntry]
    sources: tuple[str, ...] = (BUILTIN,)

    def alias_index(self) -> dict[str, str]:
        """Normalised alias (and shared name) -> shared class."""
        index: dict[str, str] = {}
        for shared, aliases in self.classes.items():
            for name in (shared, *aliases):
                index.setdefault(normalise(name), shared)
        return index


@dataclass(frozen=True)
class DatasetClasses:
    """What a dataset offers to a mapping: its name, registry key, task and classes."""

    name: str
    key: str
    task: Task
    classes: tuple[str, ...]


@dataclass(frozen=True)
class SideMap:
    """One dataset's classes on the shared classes (before pairing with another dataset).

    Attributes:
        dataset: the dataset.
        shared: own class (multi-class) or rule label (multi-label) -> shared class or None.
        rules: multi-label only: (label index, shared class) in precedence order.
        how: own class -> how it was matched ("declared", "by name", ...), for the report.
    """

    dataset: DatasetClasses
    shared: Mapping[str, str | None]
    rules: tuple[tuple[int, str], ...] = ()
    how: Mapping[str, str] = field(default_factory=dict)

    def targets(self) -> set[str]:
        if self.dataset.task == "multilabel":
            return {shared for _, shared in self.rules}
        return {s for s in self.shared.values() if s is not None}


@dataclass(frozen=True)
class Side:
    """One dataset of a pair, with index maps onto the pair's shared classes.

    Attributes:
        dataset: the dataset.
        index: multi-class: own class index -> shared index, or ``LEFT_OUT`` (-1).
        rules: multi-label: (own label index, shared index) in precedence order.
        left_out: own class (or label) -> why it is not compared.
        mapping: own class -> shared class, for the classes that are compared.
    """

    dataset: DatasetClasses
    index: tuple[int, ...]
    rules: tuple[tuple[int, int], ...]
    left_out: Mapping[str, str]
    mapping: Mapping[str, str]


@dataclass(frozen=True)
class SharedClasses:
    """Two datasets on their shared classes: what a transfer from ``train`` to ``test`` scores."""

    classes: tuple[str, ...]
    train: Side
    test: Side

    def describe(self) -> list[str]:
        """Plain lines for a report: the mapping of each side and what each leaves out."""
        lines = [
            f"{self.train.dataset.name} -> {self.test.dataset.name}: shared classes "
            f"{', '.join(self.classes) or 'none'}."
        ]
        for side in (self.train, self.test):
            mapped = ", ".join(f"{own} -> {shared}" for own, shared in side.mapping.items())
            lines.append(f"  {side.dataset.name}: {mapped or 'nothing mapped'}.")
            if side.left_out:
                shown = "; ".join(f"{own} ({why})" for own, why in side.left_out.items())
                lines.append(f"  {side.dataset.name} leaves out: {shown}.")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "train": {
                "dataset": self.train.dataset.name,
                "mapping": dict(self.train.mapping),
                "left_out": dict(self.train.left_out),
            },
            "test": {
                "dataset": self.test.dataset.name,
                "mapping": dict(self.test.mapping),
                "left_out": dict(self.test.left_out),
            },
        }

    def test_labels(self, labels: np.ndarray) -> np.ndarray:
        """The test side's labels as shared class indices; ``LEFT_OUT`` (-1) for images of no
        shared class (to be dropped).

        Args:
            labels: int class indices (N,) for multi-class, multi-hot (N, C) for multi-label.
        """
        return side_labels(self.test, labels)

    def train_scores(self, scores: np.ndarray) -> np.ndarray:
        """The train side's model outputs as probabilities over the shared classes (N, K).

        Multi-class softmax outputs: the probabilities of own classes mapped to one shared class
        are added, then renormalised over the shared classes (the left-out classes' mass is
        dropped). Multi-label sigmoid outputs: the chance that rule k is the first to match,
        ``p_k * prod_{j<k} (1 - p_j)``, renormalised.
        """
        return side_scores(self.train, scores, len(self.classes))


def load_label_maps(user_file: str | Path | None = None) -> LabelMaps:
    """The built-in mapping, with ``user_file`` (same schema) laid over it.

    Raises:
        ConfigError: a file that is not valid YAML or not of this schema (the message names the
            file, the key and what is allowed).
    """
    text = (importlib.resources.files("cxr_tune.data") / "label_maps.yaml").read_text("utf-8")
    maps = _parse(_load_yaml(text, BUILTIN), BUILTIN, base=None)
    if user_file is None:
        return maps
    path = Path(user_file).expanduser()
    try:
        user_text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"The label-map file '{path}' cannot be read: {err.strerror}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"The label-map file '{path}' is not UTF-8 text (byte {err.start}); a label map is "
            "a YAML file of the schema in the built-in label_maps.yaml."
        ) from None
    return _parse(_load_yaml(user_text, str(path)), str(path), base=maps)


def _load_yaml(text: str, origin: str) -> dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"The label-map file '{origin}' is not valid YAML: {err}.") from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"The label-map file '{origin}' holds {type(value).__name__}, but must be a mapping "
            "with keys version, classes, datasets."
        )
    return value


def _parse(raw: Mapping[str, Any], origin: str, base: LabelMaps | None) -> LabelMaps:
    unknown = set(raw) - {"version", "classes", "datasets"}
    if unknown:
        from cxr_tune.errors import unknown_name_message

        key = sorted(unknown)[0]
        raise ConfigError(
            f"In '{origin}': "
            + unknown_name_message("label-map key", key, ("version", "classes", "datasets"))
        )
    if raw.get("version", 1) != 1:
        raise ConfigError(f"In '{origin}': `version` is {raw['version']!r}, but must be 1.")
    classes = dict(base.classes) if base else {}
    for shared, aliases in _mapping(raw.get("classes"), "classes", origin).items():
        classes[str(shared)] = _aliases(aliases, str(shared), origin)
    if not classes:
        raise ConfigError(f"In '{origin}': `classes` names no shared class.")
    datasets = dict(base.datasets) if base else {}
    for name, entry in _mapping(raw.get("datasets"), "datasets", origin).items():
        datasets[str(name)] = _entry(entry, str(name), origin, set(classes))
    sources = (*base.sources, origin) if base else (origin,)
    return LabelMaps(classes=classes, datasets=datasets, sources=sources)


def _mapping(value: Any, key: str, origin: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"In '{origin}': `{key}` is {value!r}, but must be a mapping of names.")
    return value


def _aliases(value: Any, shared: str, origin: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        raise ConfigError(
            f"In '{origin}': `classes.{shared}` is {value!r}, but must be a list of class names."
        )
    return tuple(str(v) for v in value)


def _entry(value: Any, name: str, origin: str, shared: set[str]) -> DatasetEntry:
    where = f"datasets.{name}"
    value = _mapping(value, where, origin)
    extra = set(value) - {"classes", "rules"}
    if extra or ("classes" in value) == ("rules" in value):
        raise ConfigError(
            f"In '{origin}': `{where}` has keys {sorted(value)}, but must have exactly one of "
            "`classes` (class -> shared class or null) or `rules` (list of {label, class})."
        )
    if "classes" in value:
        classes = {
            str(own): _shared_name(target, f"{where}.classes.{own}", origin, shared)
            for own, target in _mapping(value["classes"], f"{where}.classes", origin).items()
        }
        return DatasetEntry(classes=classes, origin=origin)
    rules = value["rules"]
    if not isinstance(rules, list) or not rules:
        raise ConfigError(
            f"In '{origin}': `{where}.rules` is {rules!r}, but must be a non-empty list of "
            "{label: NAME, class: SHARED}."
        )
    parsed = []
    for k, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or set(rule) != {"label", "class"}:
            raise ConfigError(
                f"In '{origin}': `{where}.rules[{k}]` is {rule!r}, but must be "
                "{label: NAME, class: SHARED}."
            )
        target = _shared_name(rule["class"], f"{where}.rules[{k}].class", origin, shared)
        if target is None:
            raise ConfigError(f"In '{origin}': `{where}.rules[{k}].class` must name a class.")
        parsed.append((str(rule["label"]), target))
    return DatasetEntry(rules=tuple(parsed), origin=origin)


def _shared_name(value: Any, where: str, origin: str, shared: set[str]) -> str | None:
    if value is None:
        return None
    if str(value) not in shared:
        from cxr_tune.errors import unknown_name_message

        raise ConfigError(
            f"In '{origin}', `{where}`: " + unknown_name_message("shared class", str(value), shared)
        )
    return str(value)


# --- one dataset onto the shared classes ------------------------------------------------------


def map_dataset(dataset: DatasetClasses, maps: LabelMaps, strict: bool = True) -> SideMap:
    """Put one dataset's classes on the shared classes.

    Args:
        strict: refuse a class of an ``imagefolder`` dataset that looks like a misspelt shared
            class. Only a transfer (a model scored on another dataset) needs the names to
            match; a run that compares no datasets passes False and leaves such a class out.

    Raises:
        ConfigError: with ``strict``, a class of an ``imagefolder`` dataset matches no shared
            class but is a near spelling of one (a typo; the message says which); or a user's
            entry names a class the dataset does not have.
    """
    entry = maps.datasets.get(dataset.name) or maps.datasets.get(dataset.key)
    if dataset.task == "multilabel":
        return _map_rules(dataset, entry)
    declared = dict(entry.classes) if entry else {}
    if entry is not None and entry.origin != BUILTIN:
        _check_declared(dataset, declared, entry.origin)
    aliases = maps.alias_index()
    shared: dict[str, str | None] = {}
    how: dict[str, str] = {}
    unmatched: list[str] = []
    for own in dataset.classes:
        if own in declared:
            shared[own], how[own] = declared[own], "declared"
        elif normalise(own) in aliases:
            shared[own], how[own] = aliases[normalise(own)], "by name"
        else:
            shared[own], how[own] = None, "no shared class"
            unmatched.append(own)
    if strict and dataset.key in STRICT_DATASETS:
        typos = [own for own in unmatched if _closest_shared(own, maps)]
        if typos:
            raise ConfigError(_unmatched_message(dataset, typos[0], maps))
    return SideMap(dataset, shared, (), how)


def _check_declared(dataset: DatasetClasses, declared: Mapping[str, Any], origin: str) -> None:
    for own in declared:
        if own not in dataset.classes:
            from cxr_tune.errors import did_you_mean

            raise ConfigError(
                f"In '{origin}', `datasets.{dataset.name}.classes`: the dataset "
                f"'{dataset.name}' has no class '{own}'.{did_you_mean(own, dataset.classes)} "
                f"Its classes: {', '.join(dataset.classes)}."
            )


# A typo is at most one edit (a transposed pair counts as one) per this many characters of the
# name, and names shorter than TYPO_MIN_LENGTH are never typos ('a' is one edit from 'TB').
TYPO_CHARS_PER_EDIT = 4
TYPO_MIN_LENGTH = 4


def is_near_spelling(name: str, alias: str) -> bool:
    """Whether ``name`` looks like a misspelling of ``alias`` (both normalised): a few edits
    apart, and neither inside the other (``bacterial`` is a word of ``bacterialpneumonia``,
    not a misspelling of it)."""
    from rapidfuzz.distance import OSA

    if name == alias or name in alias or alias in name:
        return False
    if min(len(name), len(alias)) < TYPO_MIN_LENGTH:
        return False
    allowed = max(1, min(len(name), len(alias)) // TYPO_CHARS_PER_EDIT)
    return OSA.distance(name, alias) <= allowed


def _closest_shared(own: str, maps: LabelMaps) -> str | None:
    """The shared class whose name (or an alias of it) ``own`` looks like a misspelling of."""
    from rapidfuzz.distance import OSA

    name = normalise(own)
    aliases = maps.alias_index()
    near = [alias for alias in aliases if is_near_spelling(name, alias)]
    if not near:
        return None
    return aliases[min(near, key=lambda alias: OSA.distance(name, alias))]


def _unmatched_message(dataset: DatasetClasses, own: str, maps: LabelMaps) -> str:
    closest = _closest_shared(own, maps)
    hint = f" Did you mean '{closest}'?" if closest else ""
    return (
        f"The class '{own}' of dataset '{dataset.name}' matches no shared class.{hint} "
        f"Shared classes: {', '.join(maps.classes)}. Rename the folder, or map it in a "
        f"label-map file (datasets: {{{dataset.name}: {{classes: {{'{own}': SHARED or null}}}}}})."
    )


def _map_rules(dataset: DatasetClasses, entry: DatasetEntry | None) -> SideMap:
    if entry is None or not entry.rules:
        # A multi-label dataset without rules: each label stands for itself, nothing is shared.
        none: dict[str, str | None] = dict.fromkeys(dataset.classes)
        return SideMap(dataset, none, (), dict.fromkeys(dataset.classes, "no rule"))
    index = {name: k for k, name in enumerate(dataset.classes)}
    rules: list[tuple[int, str]] = []
    shared: dict[str, str | None] = {}
    how: dict[str, str] = {}
    for label, target in entry.rules:
        if label in index:
            rules.append((index[label], target))
            shared[label], how[label] = target, "rule"
        else:
            shared[label], how[label] = None, "label not in the dataset's kept labels"
    return SideMap(dataset, shared, tuple(rules), how)


# --- two datasets ---------------------------------------------------------------------------


def shared_classes(
    train: DatasetClasses, test: DatasetClasses, maps: LabelMaps | None = None
) -> SharedClasses:
    """The classes a model trained on ``train`` can be scored on in ``test``, with index maps.

    Args:
        train: the dataset the model was trained on.
        test: the dataset it is scored on.
        maps: the mapping (default: the built-in one).

    Raises:
        ConfigError: as :func:`map_dataset`.
    """
    maps = maps or load_label_maps()
    a, b = map_dataset(train, maps), map_dataset(test, maps)
    common = a.targets() & b.targets()
    order = [c for c in maps.classes if c in common]
    return SharedClasses(tuple(order), _side(a, order, b), _side(b, order, a))


def _side(side: SideMap, order: Sequence[str], other: SideMap) -> Side:
    position = {name: k for k, name in enumerate(order)}
    left_out: dict[str, str] = {}
    mapping: dict[str, str] = {}
    for own, target in side.shared.items():
        if target is None:
            left_out[own] = side.how.get(own, "left out")
            if side.how.get(own) == "declared":
                left_out[own] = "left out by the mapping"
        elif target not in position:
            left_out[own] = f"{target}: no counterpart in {other.dataset.name}"
        else:
            mapping[own] = target
    if side.dataset.task == "multilabel":
        rules = tuple((k, position[t]) for k, t in side.rules if t in position)
        named = ", ".join(side.dataset.classes[k] for k, _ in rules) or "none"
        left_out["other findings"] = f"images carrying none of {named} are left out"
        return Side(side.dataset, (), rules, left_out, mapping)
    index = tuple(
        position.get(side.shared.get(own) or "", LEFT_OUT) for own in side.dataset.classes
    )
    return Side(side.dataset, index, (), left_out, mapping)


def side_labels(side: Side, labels: np.ndarray) -> np.ndarray:
    """Labels of one side as shared indices (N,), ``LEFT_OUT`` where no shared class applies."""
    labels = np.asarray(labels)
    if side.dataset.task == "multiclass":
        lookup = np.asarray(side.index, dtype=np.int64)
        return lookup[labels.astype(np.int64)] if len(lookup) else np.full(len(labels), LEFT_OUT)
    out = np.full(len(labels), LEFT_OUT, dtype=np.int64)
    decided = np.zeros(len(labels), dtype=bool)
    for label, target in side.rules:
        hit = (labels[:, label] > 0) & ~decided
        out[hit] = target
        decided |= hit
    return out


def side_scores(side: Side, scores: np.ndarray, n_shared: int) -> np.ndarray:
    """Model outputs of one side as probabilities over the shared classes (N, n_shared)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.zeros((len(scores), n_shared), dtype=np.float64)
    if side.dataset.task == "multiclass":
        for own, target in enumerate(side.index):
            if target != LEFT_OUT:
                out[:, target] += scores[:, own]
    else:
        remaining = np.ones(len(scores))
        for label, target in side.rules:
            out[:, target] += scores[:, label] * remaining
            remaining = remaining * (1.0 - scores[:, label])
    total = out.sum(axis=1, keepdims=True)
    # An image whose model puts no mass on any shared class gets a uniform row.
    uniform = np.full_like(out, 1.0 / max(n_shared, 1))
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)


def classes_of(
    source: DataSource, name: str | None = None, parser_options: Mapping[str, Any] | None = None
) -> DatasetClasses:
    """A dataset's classes as its layout parser reads them (no image is decoded).

    For a multi-label layout these are all labels found, before rare labels are dropped.

    Raises:
        DataError, ConfigError: as layout detection and parsing do.
    """
    from cxr_tune.data.datasets import DATASETS
    from cxr_tune.data.detect import resolve
    from cxr_tune.data.layouts.common import check_options

    if source.path is None:
        from cxr_tune.data.phantom import CLASSES

        key = source.key or "phantom"
        DATASETS.get(key)  # an unknown built-in name: error with did-you-mean
        return DatasetClasses(name or key, key, "multiclass", CLASSES)
    detection = resolve(source)
    spec = DATASETS.get(detection.dataset)
    assert spec.parse is not None  # resolve() only returns parseable layouts
    chosen = check_options(spec.name, parser_options or {}, spec.options)
    manifest = spec.parse(detection.root, chosen)
    return DatasetClasses(name or spec.name, spec.name, manifest.task, manifest.classes)

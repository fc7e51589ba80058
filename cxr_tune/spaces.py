"""Search-space YAML files -> a validated, Ray-free ``SearchSpace``.

A space is flat and declarative (no code, no expressions)::

    name: ablation
    metric: {name: val_macro_f1, mode: max}
    cells: {model: [alexnet, vgg11, resnet50]}      # crossed exactly with the datasets given
    params:
      lr: {loguniform: [1.0e-5, 1.0e-1]}
      optimizer: {choice: [adam, sgd]}
      weight_decay: {choice: [0.0, 0.5], when: {optimizer: sgd}}
    fixed: {epochs: 50, image_size: 224}
    search: {algorithm: optuna, num_samples: 32, max_concurrent: 8, seed: 0,
             initial: [{lr: 1.0e-4, optimizer: adam}],
             budget_epochs: 400}                    # optional: most trial-epochs per cell
    data: {uncertain: ignore}                       # optional: dataset layout options
    scheduler: {name: asha, grace_period: 2, reduction_factor: 3}
    evaluation: {seeds: 3, bootstrap: 1000}

Every problem is reported as one ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxr_tune.config import SEARCH_MANAGED_FIELDS, Mode, TrialConfig, trial_field_types
from cxr_tune.constants import ENV_SPACES, METRIC_MODES
from cxr_tune.errors import ConfigError, did_you_mean, unknown_name_message

DOMAIN_KINDS: tuple[str, ...] = ("loguniform", "uniform", "int", "logint", "choice")
ALGORITHMS: tuple[str, ...] = ("optuna", "random", "grid", "gp")
SCHEDULERS: tuple[str, ...] = ("asha", "none")
TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "metric",
    "cells",
    "params",
    "fixed",
    "search",
    "scheduler",
    "evaluation",
    "resources",
    "data",
)


class SpaceLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads floats as YAML 1.2 does.

    PyYAML follows YAML 1.1, where a float needs a dot: ``1e-5`` (how most people write a
    learning rate) would be the string '1e-5'. YAML 1.2 reads it as 1.0e-05. Everything else is
    the safe loader's: no Python objects, no code.
    """


# YAML 1.2 core schema floats (and PyYAML's .inf/.nan spellings); ints stay PyYAML's, and its
# int resolver runs first, so "10" is still an int.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
SpaceLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpaceLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


def read_yaml(text: str) -> Any:
    """Parse YAML safely, with YAML 1.2 floats (see ``SpaceLoader``).

    Raises:
        yaml.YAMLError: the text is not valid YAML.
    """
    return yaml.load(text, Loader=SpaceLoader)


def spaces_dir() -> Path:
    """The folder of named spaces.

    ``$CXR_TUNE_SPACES`` when set; else the spaces shipped in an installed package
    (``cxr_tune/search_spaces/``, where a wheel puts the repository's ``search_spaces/``); else
    the ``search_spaces/`` of the checkout this package runs from (editable installs, tests).
    """
    env = os.environ.get(ENV_SPACES)
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    installed = package / "search_spaces"
    return installed if installed.is_dir() else package.parent / "search_spaces"


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter.

    Attributes:
        name: a ``TrialConfig`` field.
        kind: one of DOMAIN_KINDS.
        low, high: bounds of range kinds (inclusive).
        choices: values of a ``choice``.
        when: only sample this parameter when each named param takes one of the given values;
            otherwise the ``fixed`` (or default) value applies.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def grid_values(self) -> tuple[Any, ...]:
        """The values a grid search enumerates (choices only)."""
        if self.kind != "choice":
            raise ConfigError(
                f"params.{self.name}: a grid search needs `choice` domains, not `{self.kind}`."
            )
        return self.choices


@dataclass(frozen=True)
class SchedulerSpec:
    name: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0
    brackets: int = 1
    # What ASHA compares at its rungs; None: the space's metric. A smoother signal (val_loss)
    # can rank trials earlier than a thresholded one (F1) on a small validation split.
    metric: str | None = None
    # At this epoch, a trial whose validation loss is not NO_SKILL_MARGIN below the loss of
    # predicting the training class frequencies is stopped, whatever its rung; 0: never. Such
    # trials (a learning rate far too low or too high) otherwise race each other through
    # ASHA's rungs on differences of noise.
    no_skill_epoch: int = 0

    def rung_metric(self, space_metric: str, space_mode: str) -> tuple[str, str]:
        """(metric, mode) that ASHA compares."""
        if self.metric is None:
            return space_metric, space_mode
        return self.metric, METRIC_MODES[self.metric]


@dataclass(frozen=True)
class ResourceSpec:
    """Ray resources of one trial on GPU runs, from the space's optional ``resources`` key::

        resources: {cpus_per_trial: 2, gpus_per_trial: {alexnet: 0.25, resnet50: 0.5}}

    Attributes:
        cpus_per_trial: CPUs per trial (None: the profile's).
        gpus_per_trial: share of a GPU per architecture (a fraction packs several trials on
            one GPU; more than 1 must be whole GPUs); a model left out keeps the profile's.
    """

    cpus_per_trial: float | None = None
    gpus_per_trial: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space."""

    name: str
    description: str
    source: str
    metric: str = "val_macro_f1"
    mode: Mode = "max"
    cells: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    params: Mapping[str, Param] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    algorithm: str = "optuna"
    num_samples: int = 8
    max_concurrent: int = 4
    seed: int = 0
    initial: tuple[Mapping[str, Any], ...] = ()
    budget_epochs: int | None = None
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    eval_seeds: int | None = None
    bootstrap: int = 1000
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    # Dataset layout options (``views``, ``uncertain``...), flat or keyed by dataset name; the
    # layouts check names and values when they read a dataset.
    data_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return int(self.fixed.get("epochs", TrialConfig().epochs))


def available_spaces() -> list[str]:
    """Names of the spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def resolve_space_path(name_or_path: str) -> Path:
    """``--space NAME|PATH`` -> the YAML file.

    Raises:
        ConfigError: no such file, or an unknown name (with a did-you-mean).
    """
    text = name_or_path.strip()
    looks_like_path = text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"--space: the file '{text}' does not exist.")
        return path
    path = spaces_dir() / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError("--space: " + unknown_name_message("space", text, available_spaces()))
    return path


def load_space(name_or_path: str) -> SearchSpace:
    """Load and validate a search space by name (``search_spaces/NAME.yaml``) or path."""
    path = resolve_space_path(name_or_path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(exc)}).") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from None
    if raw is None:
        # An empty file would otherwise search the defaults: almost surely not what was meant.
        raise ConfigError(
            f"{path}: the file is empty (or only comments), but a search space needs at least "
            "`params` or `cells` (see search_spaces/smoke.yaml for a small example)."
        )
    return parse_space(raw, source=str(path), default_name=path.stem)


def parse_space(raw: Any, *, source: str, default_name: str = "space") -> SearchSpace:
    """Validate a parsed YAML document; ``source`` names it in error messages."""
    where = _Where(source)
    mapping = where.mapping(raw, "")
    where.no_unknown_keys(mapping, TOP_LEVEL_KEYS, "")
    metric, mode = _parse_metric(where, mapping.get("metric", {}))
    fixed = _parse_fixed(where, mapping.get("fixed", {}))
    cells = _parse_cells(where, mapping.get("cells", {}))
    params = _parse_params(where, mapping.get("params", {}))
    search = where.mapping(mapping.get("search", {}), "search")
    where.no_unknown_keys(
        search,
        ("algorithm", "num_samples", "max_concurrent", "seed", "initial", "budget_epochs"),
        "search",
    )
    scheduler = _parse_scheduler(where, mapping.get("scheduler", {}), fixed)
    evaluation = where.mapping(mapping.get("evaluation", {}), "evaluation")
    where.no_unknown_keys(evaluation, ("seeds", "bootstrap"), "evaluation")
    _check_overlaps(where, cells, params, fixed)
    algorithm = where.choice(
        search.get("algorithm", "optuna"), ALGORITHMS, "search.algorithm", "algorithm"
    )
    if algorithm == "grid":
        for param in params.values():
            if param.kind != "choice":
                where.fail(f"params.{param.name}", "a grid search needs `choice` domains only")
    space = SearchSpace(
        name=where.string(mapping.get("name", default_name), "name"),
        description=where.string(mapping.get("description", ""), "description"),
        source=source,
        metric=metric,
        mode=mode,
        cells=cells,
        params=params,
        fixed=fixed,
        algorithm=algorithm,
        num_samples=where.integer(search.get("num_samples", 8), "search.num_samples", low=1),
        max_concurrent=where.integer(
            search.get("max_concurrent", 4), "search.max_concurrent", low=1
        ),
        seed=where.integer(search.get("seed", 0), "search.seed", low=0),
        initial=_parse_initial(where, search.get("initial", []), params),
        budget_epochs=(
            where.integer(search["budget_epochs"], "search.budget_epochs", low=1)
            if search.get("budget_epochs") is not None
            else None
        ),
        scheduler=scheduler,
        eval_seeds=(
            where.integer(evaluation["seeds"], "evaluation.seeds", low=1)
            if "seeds" in evaluation
            else None
        ),
        bootstrap=where.integer(evaluation.get("bootstrap", 1000), "evaluation.bootstrap", low=100),
        resources=_parse_resources(where, mapping.get("resources", {})),
        data_options=_parse_data(where, mapping.get("data", {})),
    )
    return space


def _parse_data(where: _Where, raw: Any) -> dict[str, Any]:
    """``data:``: layout options, flat (``{uncertain: ones}``) or per dataset
    (``{chexpert: {uncertain: ones}}``); values are strings, lists of strings or such maps."""
    options = where.mapping(raw, "data")
    for key, value in options.items():
        values = value.values() if isinstance(value, dict) else [value]
        for item in values:
            items = item if isinstance(item, list) else [item]
            if not all(isinstance(v, str) for v in items):
                where.fail(
                    f"data.{key}",
                    f"the value is {value!r}, but must be a name, a list of names or a mapping "
                    "of them (e.g. uncertain: ignore, views: [PA, AP])",
                )
    return dict(options)


def _parse_resources(where: _Where, raw: Any) -> ResourceSpec:
    spec = where.mapping(raw, "resources")
    where.no_unknown_keys(spec, ("cpus_per_trial", "gpus_per_trial"), "resources")
    cpus = None
    if "cpus_per_trial" in spec:
        cpus = where.number(spec["cpus_per_trial"], "resources.cpus_per_trial")
        if cpus <= 0:
            where.fail("resources.cpus_per_trial", f"the value is {cpus:g}, but must be > 0")
    shares: dict[str, float] = {}
    for model, value in where.mapping(
        spec.get("gpus_per_trial", {}), "resources.gpus_per_trial"
    ).items():
        key = f"resources.gpus_per_trial.{model}"
        share = where.number(value, key)
        # Ray packs fractions of one GPU, or gives whole GPUs; 1.5 GPUs is neither.
        if share <= 0 or (share > 1 and not share.is_integer()):
            where.fail(
                key, f"the value is {value!r}, but must be a share in (0, 1] or a whole number"
            )
        shares[str(model)] = share
    return ResourceSpec(cpus_per_trial=cpus, gpus_per_trial=shares)


class _Where:
    """Error helper: every message starts with the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        location = f"{self.source}: {key}" if key else self.source
        raise ConfigError(f"{location}: {problem}.")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key or "top level", f"expected a mapping, got {_describe(value)}")
        return value

    def no_unknown_keys(
        self, mapping: Mapping[str, Any], allowed: tuple[str, ...], key: str
    ) -> None:
        for name in mapping:
            if name not in allowed:
                prefix = f"{key}." if key else ""
                self.fail(
                    f"{prefix}{name}",
                    f"unknown key.{did_you_mean(str(name), allowed)} Allowed: {', '.join(allowed)}",
                )

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_describe(value)}")
        return value

    def integer(self, value: Any, key: str, *, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, f"the value is {value!r}, but must be an integer >= {low}")
        return value

    def number(self, value: Any, key: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            self.fail(key, f"the value is {value!r}, but must be a finite number")
        return float(value)

    def choice(self, value: Any, allowed: tuple[str, ...], key: str, kind: str = "value") -> str:
        if value not in allowed:
            self.fail(key, unknown_name_message(kind, str(value), allowed).rstrip("."))
        return value

    def field_value(self, name: str, value: Any, key: str) -> Any:
        """Check a value against the TrialConfig field's type and constraints."""
        kind = trial_field_types()[name]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            self.fail(key, f"the value is {value!r}, but `{name}` takes {article} {kind.__name__}")
        try:
            TrialConfig.from_dict({name: value})
        except ConfigError as exc:
            self.fail(key, str(exc).rstrip("."))
        return float(value) if kind is float else value


def _parse_metric(where: _Where, raw: Any) -> tuple[str, Mode]:
    metric = where.mapping(raw, "metric")
    where.no_unknown_keys(metric, ("name", "mode"), "metric")
    name = where.choice(
        metric.get("name", "val_macro_f1"), tuple(METRIC_MODES), "metric.name", "metric"
    )
    mode = where.choice(metric.get("mode", METRIC_MODES[name]), ("min", "max"), "metric.mode")
    return name, mode  # type: ignore[return-value]


def _field_name(where: _Where, name: Any, key: str) -> str:
    fields = tuple(n for n in trial_field_types() if n not in SEARCH_MANAGED_FIELDS)
    if name in SEARCH_MANAGED_FIELDS:
        where.fail(
            f"{key}.{name}",
            "is set by the search itself (datasets come from --data, seeds from --seed)",
        )
    if name not in fields:
        where.fail(
            f"{key}.{name}",
            f"unknown hyperparameter.{did_you_mean(str(name), fields)} Allowed: {', '.join(fields)}",
        )
    return name


def _parse_fixed(where: _Where, raw: Any) -> dict[str, Any]:
    fixed = where.mapping(raw, "fixed")
    return {
        _field_name(where, k, "fixed"): where.field_value(k, v, f"fixed.{k}")
        for k, v in fixed.items()
    }


def _parse_cells(where: _Where, raw: Any) -> dict[str, tuple[Any, ...]]:
    cells = where.mapping(raw, "cells")
    parsed: dict[str, tuple[Any, ...]] = {}
    for name, values in cells.items():
        _field_name(where, name, "cells")
        if not isinstance(values, list) or not values:
            where.fail(f"cells.{name}", "expected a non-empty list of values")
        if len(set(map(repr, values))) != len(values):
            where.fail(f"cells.{name}", "lists a value twice")
        parsed[name] = tuple(
            where.field_value(name, v, f"cells.{name}[{i}]") for i, v in enumerate(values)
        )
    return parsed


def _parse_params(where: _Where, raw: Any) -> dict[str, Param]:
    params = where.mapping(raw, "params")
    parsed: dict[str, Param] = {}
    for name, spec in params.items():
        key = f"params.{name}"
        _field_name(where, name, "params")
        spec = where.mapping(spec, key)
        kinds = [k for k in spec if k in DOMAIN_KINDS]
        where.no_unknown_keys(spec, (*DOMAIN_KINDS, "when"), key)
        if len(kinds) != 1:
            where.fail(key, f"expected exactly one of {', '.join(DOMAIN_KINDS)}")
        kind = kinds[0]
        parsed[name] = _parse_domain(where, name, kind, spec[kind], key)
    for param in list(parsed.values()):
        when = _parse_when(where, param.name, parsed, params[param.name].get("when"))
        parsed[param.name] = Param(
            param.name, param.kind, param.low, param.high, param.choices, when
        )
    return parsed


def _parse_domain(where: _Where, name: str, kind: str, raw: Any, key: str) -> Param:
    key = f"{key}.{kind}"
    if kind == "choice":
        if not isinstance(raw, list) or not raw:
            where.fail(key, "expected a non-empty list of values")
        values = tuple(where.field_value(name, v, f"{key}[{i}]") for i, v in enumerate(raw))
        if len(set(map(repr, values))) != len(values):
            where.fail(key, "lists a value twice")
        return Param(name, kind, choices=values)
    if not isinstance(raw, list) or len(raw) != 2:
        where.fail(key, f"expected [low, high], got {_describe(raw)}")
    low, high = (where.number(v, f"{key}[{i}]") for i, v in enumerate(raw))
    if low >= high:
        where.fail(key, f"low ({raw[0]}) must be < high ({raw[1]})")
    if kind in ("loguniform", "logint") and low <= 0:
        where.fail(key, f"a log scale needs low > 0, got {raw[0]}")
    if kind in ("int", "logint") and not (float(low).is_integer() and float(high).is_integer()):
        where.fail(key, "integer bounds expected")
    for i, bound in enumerate(raw):
        value = int(bound) if kind in ("int", "logint") else bound
        where.field_value(name, value, f"{key}[{i}]")
    return Param(name, kind, low=low, high=high)


def _parse_when(
    where: _Where, name: str, params: Mapping[str, Param], raw: Any
) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    key = f"params.{name}.when"
    conditions = where.mapping(raw, key)
    parsed: dict[str, tuple[Any, ...]] = {}
    for other, values in conditions.items():
        if other == name or other not in params or params[other].kind != "choice":
            where.fail(f"{key}.{other}", "must name another searched `choice` parameter")
        options = tuple(values) if isinstance(values, list) else (values,)
        for value in options:
            if value not in params[other].choices:
                where.fail(
                    f"{key}.{other}",
                    f"{value!r} is not one of {other}'s choices {list(params[other].choices)}",
                )
        parsed[other] = options
    return parsed


def _parse_scheduler(where: _Where, raw: Any, fixed: Mapping[str, Any]) -> SchedulerSpec:
    spec = where.mapping(raw, "scheduler")
    where.no_unknown_keys(
        spec,
        ("name", "grace_period", "reduction_factor", "brackets", "metric", "no_skill_epoch"),
        "scheduler",
    )
    name = where.choice(spec.get("name", "asha"), SCHEDULERS, "scheduler.name", "scheduler")
    grace = where.integer(spec.get("grace_period", 1), "scheduler.grace_period", low=1)
    factor = where.number(spec.get("reduction_factor", 3), "scheduler.reduction_factor")
    if factor <= 1:
        where.fail("scheduler.reduction_factor", f"the value is {factor}, but must be > 1")
    epochs = int(fixed.get("epochs", TrialConfig().epochs))
    if name == "asha" and grace > epochs:
        where.fail("scheduler.grace_period", f"{grace} is more than the {epochs} epochs of a trial")
    brackets = where.integer(spec.get("brackets", 1), "scheduler.brackets", low=1)
    metric = spec.get("metric")
    if metric is not None:
        where.choice(metric, tuple(METRIC_MODES), "scheduler.metric", "metric")
    no_skill = where.integer(spec.get("no_skill_epoch", 0), "scheduler.no_skill_epoch", low=0)
    if no_skill and name != "asha":
        where.fail("scheduler.no_skill_epoch", "stops trials early, so it needs `name: asha`")
    return SchedulerSpec(
        name=name,
        grace_period=grace,
        reduction_factor=factor,
        brackets=brackets,
        metric=metric,
        no_skill_epoch=no_skill,
    )


def _parse_initial(
    where: _Where, raw: Any, params: Mapping[str, Param]
) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        where.fail("search.initial", "expected a list of {param: value} mappings")
    points = []
    for i, point in enumerate(raw):
        key = f"search.initial[{i}]"
        point = where.mapping(point, key)
        for name, value in point.items():
            if name not in params:
                where.fail(f"{key}.{name}", f"is not a searched parameter ({', '.join(params)})")
            param = params[name]
            where.field_value(name, value, f"{key}.{name}")
            if param.kind == "choice" and value not in param.choices:
                where.fail(f"{key}.{name}", f"{value!r} is not one of {list(param.choices)}")
            if param.kind != "choice" and not (param.low <= value <= param.high):
                where.fail(f"{key}.{name}", f"{value!r} is outside [{param.low}, {param.high}]")
        points.append(dict(point))
    return tuple(points)


def _check_overlaps(
    where: _Where,
    cells: Mapping[str, Any],
    params: Mapping[str, Param],
    fixed: Mapping[str, Any],
) -> None:
    for name in cells:
        if name in params:
            where.fail(f"cells.{name}", "is also searched under params; pick one")
        if name in fixed:
            where.fail(f"cells.{name}", "is also under fixed; pick one")
    for name, param in params.items():
        if name in fixed and not param.when:
            where.fail(
                f"params.{name}", "is also under fixed; a fixed value only makes sense with `when`"
            )


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict) else "a mapping"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())

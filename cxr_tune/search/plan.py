"""The resolved plan of a search: cells, their fixed settings, what is searched, and how much.

Ray-free: ``--dry-run`` prints ``Plan.lines()`` and starts nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cxr_tune.config import PROFILES, Profile, TrialConfig
from cxr_tune.constants import DEFAULT_IMAGE_SIZE, EPOCH
from cxr_tune.errors import ConfigError
from cxr_tune.search.budget import ExperimentBudget
from cxr_tune.search.placement import Placement
from cxr_tune.spaces import Param, SchedulerSpec, SearchSpace


@dataclass(frozen=True)
class Cell:
    """One comparison unit: a dataset crossed with one value of each cell factor.

    Optuna searches within a cell; ASHA compares trials of one cell only.
    """

    id: str
    dataset: str
    factors: Mapping[str, Any]

    def label(self) -> str:
        return " / ".join([self.dataset, *(str(v) for v in self.factors.values())])


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over the space and the profile (None: not given)."""

    seed: int | None = None
    num_samples: int | None = None
    max_concurrent: int | None = None
    eval_seeds: int | None = None
    budget_epochs: int | None = None
    epochs: int | None = None
    image_size: int | None = None
    time_budget_s: float | None = None
    gpu_hours: float | None = None
    # Dataset layout options given on the command line (e.g. ``uncertain``): win over ``data:``.
    data_options: Mapping[str, Any] = field(default_factory=dict)
    # Device memory (bytes) to plan each cell's data path for (``--device-memory``).
    device_memory: int | None = None


@dataclass(frozen=True)
class Plan:
    """Everything the search runs, after the profile and the command line were applied."""

    space: SearchSpace
    profile: Profile
    datasets: tuple[str, ...]
    cells: tuple[Cell, ...]
    fixed: Mapping[str, Any]
    params: Mapping[str, Param]
    num_samples: int
    max_concurrent: int
    seed: int
    scheduler: SchedulerSpec
    eval_seeds: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The most trial-epochs the search spends on each cell (None: no limit but num_samples).
    budget_epochs: int | None = None
    # Wall-clock and GPU-hour limits of the whole experiment (None: none).
    budget: ExperimentBudget | None = None
    # Dataset layout options: the space's ``data:`` with the command line's on top.
    data_options: Mapping[str, Any] = field(default_factory=dict)
    # The device memory each cell's data path is planned for, and where that figure came from.
    device_memory: int | None = None
    device_memory_source: str = ""
    # Cell id -> where its trials' data live (search/placement.py); empty until placed.
    placements: Mapping[str, Placement] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return int(self.fixed["epochs"])

    @property
    def total_trials(self) -> int:
        return len(self.cells) * self.num_samples * self.grid_size()

    def expected_trials_per_cell(self) -> int:
        """Trials a cell is expected to run: ``num_samples`` (times the grid's size), or fewer
        when its epoch budget runs out first at the scheduler's nominal cost per trial."""
        planned = self.num_samples * self.grid_size()
        if self.budget_epochs is None:
            return planned
        return max(1, min(planned, int(self.budget_epochs // self.nominal_epochs_per_trial())))

    def nominal_epochs_per_trial(self) -> float:
        """Epochs a trial costs on average: all of them without ASHA; with it, every trial to
        the first rung and 1/reduction_factor of those at each rung on to the next (Ray's
        rungs: grace_period x reduction_factor^k below the last epoch)."""
        epochs = self.epochs
        if self.scheduler.name != "asha":
            return float(epochs)
        factor = self.scheduler.reduction_factor
        rungs: list[float] = [self.scheduler.grace_period]
        while rungs[-1] * factor < epochs:
            rungs.append(rungs[-1] * factor)
        cost, previous = 0.0, 0.0
        for level, rung in enumerate([*rungs, epochs]):
            cost += (rung - previous) / factor**level
            previous = rung
        return cost

    def rung_epochs(self) -> tuple[int, ...]:
        """Epochs at which ASHA compares trials (every bracket's rungs below the last epoch)."""
        if self.scheduler.name != "asha":
            return ()
        factor, epochs = self.scheduler.reduction_factor, self.epochs
        rungs: set[int] = set()
        for bracket in range(self.scheduler.brackets):
            rung = self.scheduler.grace_period * factor**bracket
            while rung < epochs:
                rungs.add(int(rung))
                rung *= factor
        return tuple(sorted(rungs))

    def search_epochs_per_cell(self) -> float:
        """Trial-epochs the search is expected to spend on a cell."""
        expected = self.expected_trials_per_cell() * self.nominal_epochs_per_trial()
        return float(min(expected, self.budget_epochs or expected))

    def evaluation_epochs_per_cell(self) -> float:
        """Trial-epochs the final evaluation retrains per cell: each contender (the best, and
        the best of each optimizer searched) once per evaluation seed after the first, which
        scores the search trial's own checkpoint."""
        optimizers = self.params.get("optimizer")
        contenders = len(optimizers.choices) if optimizers and optimizers.kind == "choice" else 1
        return float(contenders * max(self.eval_seeds - 1, 0) * self.epochs)

    def evaluation_share(self) -> float:
        """The final evaluation's expected share of the experiment's training."""
        evaluation = self.evaluation_epochs_per_cell()
        total = evaluation + self.search_epochs_per_cell()
        return evaluation / total if total > 0 else 0.0

    def grid_size(self) -> int:
        """Points per grid repetition (1 unless the algorithm is ``grid``)."""
        if self.space.algorithm != "grid":
            return 1
        return math.prod(len(p.choices) for p in self.params.values()) if self.params else 1

    def base_config(self, cell: Cell) -> dict[str, Any]:
        """The trial config of ``cell`` before any searched value is filled in."""
        return {
            **self.fixed,
            **cell.factors,
            "dataset": cell.dataset,
            "cell": cell.id,
            "seed": self.seed,
            "data_path": self.placement(cell).path,
        }

    def placement(self, cell: Cell) -> Placement:
        """Where the trials of ``cell`` keep their data (resident until ``placed``)."""
        if cell.id in self.placements:
            return self.placements[cell.id]
        if self.device_memory is None:
            return Placement(
                "resident",
                "no device memory to fit (a CPU run reads the node's shared arrays in place); "
                "give --device-memory to plan for one",
            )
        return Placement("resident", "not planned yet: the data's size is not known")

    def needs_placement(self) -> bool:
        """Whether a device memory is known, so that cells' data paths must be planned."""
        return self.device_memory is not None

    def placed(self, data: Mapping[str, tuple[int, int]]) -> Plan:
        """This plan with each cell's data path chosen (search/placement.py).

        Args:
            data: dataset name -> (train + val images, classes), exact or estimated.
        """
        from cxr_tune.search.placement import place, trials_per_device

        placements = {}
        for cell in self.cells:
            config = self.base_config(cell)
            images, classes = data.get(cell.dataset, (None, 2))
            model = str(config.get("model", "alexnet"))
            precision = str(config.get("precision", "auto"))
            placements[cell.id] = place(
                model=model,
                optimizer=self.hungriest("optimizer", str(config.get("optimizer", "adam"))),
                batch_size=int(self.largest("batch_size", config.get("batch_size", 32))),
                image_size=int(config.get("image_size", DEFAULT_IMAGE_SIZE)),
                num_classes=int(classes),
                bf16=precision == "bf16" or (precision == "auto" and self.profile.uses_gpu),
                data_images=images,
                trials_per_device=trials_per_device(self.resources(model)["GPU"]),
                budget=self.device_memory,
                budget_source=self.device_memory_source,
            )
        return dataclasses.replace(self, placements=placements)

    def largest(self, name: str, default: Any) -> Any:
        """The largest value ``name`` takes in the plan (searched, a cell factor or fixed)."""
        values: list[Any] = [self.fixed.get(name, default)]
        if name in self.params:
            param = self.params[name]
            values = list(param.choices) if param.kind == "choice" else [param.high]
        return max([*values, *self.space.cells.get(name, ())])

    def hungriest(self, name: str, default: str) -> str:
        """The optimiser of the plan that keeps the most state per parameter."""
        from cxr_tune.search.placement import OPTIMIZER_STATE

        names = [str(self.fixed.get(name, default))]
        if name in self.params:
            names = [str(v) for v in self.params[name].choices]
        names += [str(v) for v in self.space.cells.get(name, ())]
        return max(names, key=lambda n: OPTIMIZER_STATE.get(n, 2))

    def resources(self, model: str) -> dict[str, float]:
        """Ray resources of one trial of ``model``.

        GPU profiles take the space's ``resources`` over the profile's (a model with a share in
        neither gets a whole GPU); CPU profiles size trials to the machine and use no GPU.
        """
        if not self.profile.uses_gpu:
            return {"CPU": self.profile.cpus_per_trial, "GPU": 0.0}
        spec = self.space.resources
        share = spec.gpus_per_trial.get(model, self.profile.gpus_per_trial.get(model, 1.0))
        return {"CPU": spec.cpus_per_trial or self.profile.cpus_per_trial, "GPU": float(share)}

    def lines(self) -> list[dict[str, Any]]:
        """One JSON-able object per cell (the ``--dry-run`` output)."""
        return [
            {
                "cell": cell.id,
                "dataset": cell.dataset,
                **dict(cell.factors),
                "profile": self.profile.name,
                "fixed": {
                    k: v
                    for k, v in self.base_config(cell).items()
                    if k not in ("cell", "data_path")
                },
                "data_path": self.placement(cell).to_dict(),
                "search": {
                    "algorithm": self.space.algorithm,
                    "params": {name: _describe_param(p) for name, p in self.params.items()},
                    "initial_points": len(self.space.initial),
                    "num_samples": self.num_samples * self.grid_size(),
                    "budget_epochs": self.budget_epochs,
                },
                "scheduler": {
                    "name": self.scheduler.name,
                    "grace_period": self.scheduler.grace_period,
                    "reduction_factor": self.scheduler.reduction_factor,
                    "metric": self.scheduler.rung_metric(self.space.metric, self.space.mode)[0],
                    "no_skill_epoch": self.scheduler.no_skill_epoch,
                    "max_t": self.epochs,
                    "time_attr": EPOCH,
                },
                "metric": {"name": self.space.metric, "mode": self.space.mode},
                "data_options": dict(self.data_options),
                "resources": self.resources(str(self.base_config(cell).get("model"))),
                "max_concurrent": self.max_concurrent,
                "eval_seeds": self.eval_seeds,
                **({"budget": self.budget.describe()} if self.budget else {}),
            }
            for cell in self.cells
        ]


def _describe_param(param: Param) -> dict[str, Any]:
    described: dict[str, Any] = {"kind": param.kind}
    if param.kind == "choice":
        described["choices"] = list(param.choices)
    else:
        described["range"] = [param.low, param.high]
    if param.when:
        described["when"] = {k: list(v) for k, v in param.when.items()}
    return described


def cell_id(dataset: str, factors: Mapping[str, Any]) -> str:
    """``phantom/alexnet`` for the model factor; other factors as ``name=value``."""
    parts = [dataset]
    for name, value in factors.items():
        parts.append(str(value) if name == "model" else f"{name}={value}")
    return "/".join(parts)


def build_plan(
    space: SearchSpace,
    profile: Profile,
    datasets: tuple[str, ...],
    overrides: Overrides = Overrides(),
    *,
    cpu_count: int | None = None,
) -> Plan:
    """Cross datasets with the space's cell factors and apply the profile and the overrides.

    Raises:
        ConfigError: an unknown model or optimiser, or a setting the profile makes invalid.
    """
    if not datasets:
        raise ConfigError("No dataset to search over.")
    fixed = _effective_fixed(space, profile, overrides)
    names = list(space.cells)
    cells = tuple(
        Cell(
            id=cell_id(dataset, dict(zip(names, values))),
            dataset=dataset,
            factors=dict(zip(names, values)),
        )
        for dataset in datasets
        for values in itertools.product(*(space.cells[n] for n in names))
    )
    notes: list[str] = []
    num_samples = overrides.num_samples or _cap(space.num_samples, profile.num_samples)
    if space.algorithm == "grid" and overrides.num_samples is None:
        num_samples = space.num_samples
    max_concurrent = overrides.max_concurrent or _default_concurrency(space, profile, cpu_count)
    grace = _cap(space.scheduler.grace_period, profile.grace_period)
    epochs = int(fixed["epochs"])
    if grace > epochs:
        notes.append(f"grace period {grace} > {epochs} epochs: lowered to {epochs}")
        grace = epochs
    no_skill = space.scheduler.no_skill_epoch
    if no_skill >= epochs:
        if no_skill:
            notes.append(f"no-skill check at epoch {no_skill} >= {epochs} epochs: off")
        no_skill = 0
    scheduler = SchedulerSpec(
        name=space.scheduler.name,
        grace_period=grace,
        reduction_factor=space.scheduler.reduction_factor,
        brackets=space.scheduler.brackets,
        metric=space.scheduler.metric,
        no_skill_epoch=no_skill,
    )
    budget = overrides.budget_epochs or space.budget_epochs
    if budget is not None and budget < epochs:
        notes.append(
            f"budget of {budget} epochs per cell < {epochs} epochs of one trial: "
            "no trial can train to the end"
        )
    eval_seeds = overrides.eval_seeds or _cap(
        space.eval_seeds or profile.eval_seeds, profile.eval_seeds
    )
    if overrides.gpu_hours is not None and not profile.uses_gpu:
        notes.append(
            f"--gpu-hours: the {profile.name} profile asks for no GPU, so trials spend no "
            "GPU-hours and that budget never ends the search; --time-budget bounds it"
        )
    plan = Plan(
        space=space,
        profile=profile,
        datasets=datasets,
        cells=cells,
        fixed=fixed,
        params=space.params,
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        seed=space.seed if overrides.seed is None else overrides.seed,
        scheduler=scheduler,
        eval_seeds=eval_seeds,
        notes=tuple(notes),
        budget_epochs=budget,
        data_options={**space.data_options, **overrides.data_options},
        **_device_memory(profile, overrides.device_memory),
    )
    if overrides.time_budget_s is not None or overrides.gpu_hours is not None:
        plan = dataclasses.replace(
            plan,
            budget=ExperimentBudget(
                wall_s=overrides.time_budget_s,
                gpu_hours=overrides.gpu_hours,
                evaluation_share=plan.evaluation_share(),
            ),
        )
    check_plan_names(plan)
    return plan


def _device_memory(profile: Profile, given: int | None) -> dict[str, Any]:
    """The device memory to plan data paths for: the command line's, else (GPU profiles) this
    machine's GPU's; none on a CPU run without ``--device-memory``."""
    if given is not None:
        return {"device_memory": given, "device_memory_source": "--device-memory"}
    if profile.uses_gpu:
        from cxr_tune.search.placement import local_device_memory

        found = local_device_memory()
        if found is not None:
            return {"device_memory": found, "device_memory_source": "this machine's GPU 0"}
    return {}


def _cap(value: int, cap: int | None) -> int:
    return value if cap is None else min(value, cap)


def _effective_fixed(
    space: SearchSpace, profile: Profile, overrides: Overrides = Overrides()
) -> dict[str, Any]:
    """Defaults, then the space's fixed values, then the profile's caps; explicit command-line
    values win over all of them."""
    fixed = {
        k: v for k, v in TrialConfig().to_dict().items() if k not in ("dataset", "cell", "seed")
    }
    if profile.checkpoint_every is not None:
        fixed["checkpoint_every"] = profile.checkpoint_every
    fixed.update(space.fixed)
    if profile.image_size is not None:
        fixed["image_size"] = profile.image_size
    fixed["epochs"] = _cap(int(fixed["epochs"]), profile.max_epochs)
    if overrides.image_size is not None:
        fixed["image_size"] = overrides.image_size
    if overrides.epochs is not None:
        fixed["epochs"] = overrides.epochs
    if overrides.time_budget_s is not None and "checkpoint_every" not in space.fixed:
        # Under a wall-clock budget the evaluation may have to score a trial as it stood when
        # the budget stopped it (``evaluation/schedule.py``): each epoch leaves its weights.
        fixed["checkpoint_every"] = 1
    return fixed


def _default_concurrency(space: SearchSpace, profile: Profile, cpu_count: int | None) -> int:
    if profile.uses_gpu:
        return space.max_concurrent
    cpus = cpu_count or os.cpu_count() or 1
    # On CPUs, more trials than cores only thrash: each trial gets whole cores.
    return max(1, min(space.max_concurrent, int(cpus // max(profile.cpus_per_trial, 1.0))))


def check_plan_names(plan: Plan) -> None:
    """Check every model and optimiser name against the registries, naming the YAML key."""
    from cxr_tune.models import MODELS, check_image_size
    from cxr_tune.optim import OPTIMIZERS
    from cxr_tune.registry import Registry

    registries: dict[str, Registry[Any]] = {"model": MODELS, "optimizer": OPTIMIZERS}
    for name, registry in registries.items():
        for key, values in _values_of(plan, name):
            for value in values:
                if value not in registry:
                    try:
                        registry.get(value)
                    except ConfigError as exc:
                        raise ConfigError(f"{plan.space.source}: {key}: {exc}") from None
    for model in plan.space.resources.gpus_per_trial:
        if model not in MODELS:
            try:
                MODELS.get(model)
            except ConfigError as exc:
                key = f"resources.gpus_per_trial.{model}"
                raise ConfigError(f"{plan.space.source}: {key}: {exc}") from None
    image_size = int(plan.fixed["image_size"])
    for _key, models in _values_of(plan, "model"):
        for model in models:
            try:
                check_image_size(model, image_size)
            except ConfigError as exc:
                raise ConfigError(f"{plan.space.source}: {exc}") from None


def check_batch_sizes(plan: Plan, train_sizes: Mapping[str, int]) -> None:
    """Refuse a batch size larger than a dataset's training split.

    Such a batch silently means "the whole split at once", one step per epoch, so a searched
    batch size would not be what the space says.

    Raises:
        ConfigError: naming the space file and key, the value, the dataset and the most allowed.
    """
    if not train_sizes:
        return
    dataset, smallest = min(train_sizes.items(), key=lambda item: item[1])
    for key, values in _batch_size_values(plan):
        too_big = sorted({int(v) for v in values if int(v) > smallest})
        if too_big:
            raise ConfigError(
                f"{plan.space.source}: {key}: the batch size {too_big[-1]} is larger than the "
                f"{smallest} training images of {dataset}, but must be at most {smallest} "
                "(lower it, or give the search more data)."
            )


def _batch_size_values(plan: Plan) -> list[tuple[str, tuple[Any, ...]]]:
    """Where the batch size is set (YAML key) and the largest values it can take."""
    found = []
    for key, values in _values_of(plan, "batch_size"):
        if key == "fixed.batch_size" and "batch_size" not in plan.space.fixed:
            key = "batch_size (the default, not set in the space)"
        found.append((key, values))
    param = plan.params.get("batch_size")
    if param is not None and param.kind != "choice" and param.high is not None:
        found.append((f"params.batch_size.{param.kind}", (param.high,)))
    return found


def _values_of(plan: Plan, name: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Where ``name`` is set in the plan (YAML key) and which values it can take."""
    found: list[tuple[str, tuple[Any, ...]]] = []
    if name in plan.space.cells:
        found.append((f"cells.{name}", tuple(plan.space.cells[name])))
    if name in plan.params:
        found.append((f"params.{name}.choice", tuple(plan.params[name].choices)))
    if name in plan.space.fixed or not found:
        found.append((f"fixed.{name}", (plan.fixed[name],)))
    return found


def uses_pretrained(plan: Plan) -> set[str]:
    """Models whose trials may load ImageNet weights."""
    pretrained_values = {bool(plan.fixed.get("pretrained"))}
    pretrained_values |= {bool(v) for v in plan.space.cells.get("pretrained", ())}
    if "pretrained" in plan.params:
        pretrained_values |= {bool(v) for v in plan.params["pretrained"].choices}
    if True not in pretrained_values:
        return set()
    return {str(m) for _key, models in _values_of(plan, "model") for m in models}


def resolve_profile(name: str, *, gpus_available: float) -> tuple[Profile, str]:
    """``auto`` -> ``gpu`` when the cluster has GPUs, else ``cpu``; ``full`` -> the space as
    written, on the GPUs where the cluster has them, else on CPUs; returns (profile, why)."""
    if name == "full":
        if gpus_available > 0:
            on_gpus = dataclasses.replace(
                PROFILES["gpu"],
                name="full",
                description="full study settings from the search space, trials on GPUs",
            )
            return on_gpus, f"full: {gpus_available:g} GPU(s) found"
        return PROFILES["full"], "full: no GPU found, trials on CPUs"
    if name != "auto":
        return PROFILES[name], "chosen with --profile"
    if gpus_available > 0:
        return PROFILES["gpu"], f"auto: {gpus_available:g} GPU(s) found"
    return PROFILES["cpu"], "auto: no GPU found"

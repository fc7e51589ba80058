"""``run_search``: from a plan to a finished experiment folder with a report.

Order of work: validate everything that can be checked without Ray (space, names, pretrained
weights, storage, name clash), start or join Ray (and check that a GPU run can get GPUs), load
and split the data on the driver (decoding once into the cache), run one Tuner over all cells,
then evaluate the best configurations on the test split and write the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_tune.config import DataSource
from cxr_tune.constants import (
    DEFAULT_MIN_LABEL_POSITIVES,
    DEFAULT_SPLIT_MODE,
    ENV_RAY_CHDIR,
    RECORD_FILE,
    REPORT_MD,
    STUDY_FILE,
)
from cxr_tune.data import DataOptions, DatasetArrays, default_cache_dir, load_dataset
from cxr_tune.errors import ConfigError
from cxr_tune.evaluation.finish import Finished, FinishOptions, finish
from cxr_tune.search._ray_internals import restored_parts
from cxr_tune.search.budget import BUDGET_MARGIN, TimeBudget
from cxr_tune.search.plan import Plan, check_batch_sizes, uses_pretrained
from cxr_tune.search.reserve import ContenderIds, FinishingCosts
from cxr_tune.storage import Storage, scratch_dir

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SearchRequest:
    """One search, as the command line asked for it.

    ``sources`` are resolved (``cxr_tune.data.resolve_source``): the runner loads the folders
    the command line found, without detecting their layouts again.
    """

    plan: Plan
    sources: tuple[DataSource, ...]
    dataset_names: tuple[str, ...]
    dataset_keys: tuple[str, ...]
    storage: Storage
    name: str
    resume: bool = False
    evaluate: bool = True
    keep_checkpoints: bool = False
    cache_dir: Path | None = None
    # One of SPLIT_MODES; None: the default. A resumed search keeps its recorded one.
    split: str | None = None
    ray_address: str | None = None
    argv: tuple[str, ...] = ()
    profile_reason: str = ""
    # Datasets not searched, on which the final models are also scored (external validation).
    externals: tuple[DataSource, ...] = ()
    # Their names (default: the folder's), unique among the searched datasets' names.
    external_names: tuple[str, ...] = ()
    label_map: str | None = None
    min_label_positives: int = DEFAULT_MIN_LABEL_POSITIVES
    # When the command started (time.monotonic): a time budget counts from there (None: from
    # the start of run_search).
    started: float | None = None


@dataclass(frozen=True)
class SearchOutcome:
    experiment: str
    trials: int
    states: Mapping[str, int]
    report: str | None
    interrupted: bool = False


def check_before_start(request: SearchRequest) -> None:
    """Everything that can fail fast, before data is decoded or Ray started."""
    from cxr_tune.models import check_pretrained

    for model in sorted(uses_pretrained(request.plan)):
        check_pretrained(model)
    exists = request.storage.exists(request.name)
    if exists and not request.resume:
        raise ConfigError(
            f"--name: the experiment '{request.storage.experiment(request.name)}' already exists. "
            "Add --resume to continue it, or pick another --name."
        )
    if request.resume and not request.storage.exists(request.name, RECORD_FILE):
        raise ConfigError(
            f"--resume: there is no experiment to resume at "
            f"'{request.storage.experiment(request.name)}'."
        )
    check_external_classes(request)


def compares_datasets(request: SearchRequest) -> bool:
    """Whether the run scores a model on a dataset it did not train on (a transfer: several
    searched datasets, or an external set). Class names must match shared classes only then."""
    return len(request.sources) + len(request.externals) > 1


def _external_names(request: SearchRequest) -> tuple[str, ...]:
    """The external sets' names (a request built without them names each by its folder)."""
    if len(request.external_names) == len(request.externals):
        return request.external_names
    from cxr_tune.config import unique_dataset_names

    wanted = [source.default_name for source in request.externals]
    return unique_dataset_names(wanted, taken=request.dataset_names)


def check_external_classes(request: SearchRequest) -> None:
    """The label-map file reads, and every class of an external set maps onto a shared class
    (a bad file or a misspelt imagefolder class stops the search here, before hours of
    training, rather than at the evaluation). So do the class folders of a searched
    imagefolder dataset, the one layout whose class names are the user's own: read from the
    folder names, before Ray starts or an image is decoded (``check_searched_classes`` checks
    every dataset again once its data is read). A run that compares no datasets never stops
    over a class name."""
    from cxr_tune.data.labelmap import classes_of, load_label_maps, map_dataset
    from cxr_tune.data.layouts.imagefolder import NAME as IMAGEFOLDER

    maps = load_label_maps(request.label_map)
    strict = compares_datasets(request)
    for source, name in zip(request.externals, _external_names(request), strict=True):
        map_dataset(classes_of(source, name), maps)
    for name, source in zip(request.dataset_names, request.sources, strict=True):
        if source.key == IMAGEFOLDER:
            map_dataset(classes_of(source, name, request.plan.data_options), maps, strict)


def check_searched_classes(
    request: SearchRequest, datasets: Mapping[str, DatasetArrays], echo: Echo = print
) -> None:
    """Every searched dataset's classes map onto the shared classes as the final evaluation
    will map them (its clinical metrics and transfers), checked once the data is read and
    before any trial runs; the classes that match none are named."""
    from cxr_tune.data.labelmap import DatasetClasses, load_label_maps, map_dataset

    maps = load_label_maps(request.label_map)
    strict = compares_datasets(request)
    for (name, arrays), key in zip(datasets.items(), request.dataset_keys, strict=True):
        side = map_dataset(
            DatasetClasses(name, key, arrays.task, tuple(arrays.classes)), maps, strict
        )
        unmatched = [own for own, target in side.shared.items() if target is None]
        if unmatched:
            where = "left out of its transfers" if strict else "this run compares no datasets"
            echo(f"labels: {name}: {', '.join(unmatched)}: no shared class ({where})")


def load_search_data(
    request: SearchRequest, echo: Echo, previous: Mapping[str, Any] | None = None
) -> dict[str, DatasetArrays]:
    """Decode (or reuse from the cache) and split every dataset, with all three splits (the
    trials get ``for_search()``, the final evaluation the test split). A resumed search uses
    the data options its record holds (``previous``), so it rebuilds the data it started on."""
    options = request_data_options(request)
    if previous and "data_options" in previous:
        options = DataOptions.from_record(
            previous["data_options"], cache_dir=request.cache_dir or default_cache_dir()
        )
    data: dict[str, DatasetArrays] = {}
    for name, source in zip(request.dataset_names, request.sources):
        started = time.perf_counter()
        # Called by the run's name for it (the folder's, or --data-name), not the layout's.
        arrays = dataclasses.replace(load_dataset(source, options), name=name)
        sizes = ", ".join(f"{k} {v}" for k, v in arrays.sizes().items())
        echo(
            f"data: {name}: {arrays.num_classes} classes ({arrays.task}), {sizes}, "
            f"{arrays.image_size} px, split {arrays.split_hash} "
            f"[{time.perf_counter() - started:.1f} s]"
        )
        data[name] = arrays
    return data


def data_options(
    plan: Plan,
    cache_dir: Path | None,
    split: str = DEFAULT_SPLIT_MODE,
    min_label_positives: int = DEFAULT_MIN_LABEL_POSITIVES,
) -> DataOptions:
    return DataOptions(
        image_size=int(plan.fixed["image_size"]),
        seed=plan.seed,
        cache_dir=cache_dir or default_cache_dir(),
        phantom_images=plan.profile.phantom_images,
        split=split,
        parser_options=dict(plan.data_options),
        min_label_positives=min_label_positives,
    )


def request_data_options(request: SearchRequest) -> DataOptions:
    """The data options a search asks for (a resumed one uses its record's instead)."""
    return data_options(
        request.plan,
        request.cache_dir,
        request.split or DEFAULT_SPLIT_MODE,
        request.min_label_positives,
    )


def check_without_training(request: SearchRequest, echo: Echo = print) -> None:
    """What ``--dry-run`` checks: every check a search makes before its first trial apart
    from Ray's (GPUs reachable, GPU shares): the experiment's name, the label map and the
    class names, the data (decoded into the cache as the search decodes it, or read from
    there, with its split and label checks) and the batch sizes against each training split.

    Raises:
        ConfigError, DataError: as the search would raise them, before its first trial.
    """
    check_before_start(request)
    datasets = load_search_data(request, echo, _previous_record(request))
    check_searched_classes(request, datasets, echo)
    check_batch_sizes(request.plan, {n: a.sizes()["train"] for n, a in datasets.items()})


def experiment_record(request: SearchRequest, data: Mapping[str, DatasetArrays]) -> dict[str, Any]:
    """The ``cxr_tune.json`` of an experiment: what was asked, on what data, where."""
    plan = request.plan
    return {
        "name": request.name,
        "experiment": request.storage.experiment(request.name),
        "space": {
            "name": plan.space.name,
            "source": plan.space.source,
            "description": plan.space.description,
            "algorithm": plan.space.algorithm,
        },
        "metric": {"name": plan.space.metric, "mode": plan.space.mode},
        "profile": {"name": plan.profile.name, "reason": request.profile_reason},
        "seed": plan.seed,
        "num_samples": plan.num_samples,
        "epochs": plan.epochs,
        "eval_seeds": plan.eval_seeds,
        "bootstrap": plan.space.bootstrap,
        "plan": plan.lines(),
        "data_options": request_data_options(request).to_record(),
        "datasets": [
            {
                "name": name,
                "key": key,
                "source": str(source.path) if source.path else "built-in",
                "detected": source.detected,
                "task": arrays.task,
                "classes": list(arrays.classes),
                "image_size": arrays.image_size,
                "sizes": arrays.sizes(),
                "dataset_hash": arrays.dataset_hash,
                "split_hash": arrays.split_hash,
                "published_split": arrays.published_split,
                "uncertain_policy": arrays.uncertain_policy,
            }
            for (name, arrays), source, key in zip(
                data.items(), request.sources, request.dataset_keys
            )
        ],
        "externals": [
            {
                "name": name,
                "key": source.key,
                "source": str(source.path) if source.path else "built-in",
                "detected": source.detected,
            }
            for source, name in zip(request.externals, _external_names(request), strict=True)
        ],
        "label_map": request.label_map,
        "command": " ".join(request.argv),
        "driver": {"host": socket.gethostname(), "python": platform.python_version()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _placed(
    request: SearchRequest, datasets: Mapping[str, DatasetArrays], echo: Echo
) -> SearchRequest:
    """The request with each cell's data path planned on the loaded data's exact sizes."""
    plan = request.plan
    if not plan.needs_placement():
        return request
    sizes = {
        name: (len(arrays.split("train")) + len(arrays.split("val")), arrays.num_classes)
        for name, arrays in datasets.items()
    }
    placed = plan.placed(sizes)
    for cell in placed.cells:
        where = placed.placement(cell)
        if where.path != plan.placement(cell).path or where.path == "streaming":
            echo(f"data path: {cell.id}: {where.path} ({where.reason})")
    return dataclasses.replace(request, plan=placed)


def run_search(request: SearchRequest, echo: Echo = print) -> SearchOutcome:
    """Run (or resume) a search and write its report; returns counts of trial outcomes."""
    import ray

    _quiet_ray_output()
    check_before_start(request)
    previous = _previous_record(request)
    # Counted from the command's start, so decoding the data counts too; a resumed run
    # continues the account.
    time_budget = _time_budget(request.plan, previous, request.started)
    started_ray = _init_ray(request.ray_address)
    try:
        from cxr_tune.search.resources import check_gpu_shares, check_gpus_reachable

        # Before decoding: a GPU run on a cluster that can never have a GPU fails at once.
        check_gpus_reachable(request.plan, echo)
        datasets = load_search_data(request, echo, previous)
        check_searched_classes(request, datasets, echo)
        request = _placed(request, datasets, echo)
        check_batch_sizes(request.plan, {n: a.sizes()["train"] for n, a in datasets.items()})
        search_data = {name: arrays.for_search() for name, arrays in datasets.items()}
        check_gpu_shares(request.plan, datasets, echo)
        record = _record_for_run(request, datasets, previous)
        request.storage.write_text(request.name, RECORD_FILE, json.dumps(record, indent=2))
        study_db = _study_location(request)
        tuner = build_tuner(request, search_data, str(study_db), time_budget)
        echo(
            f"search: {request.plan.total_trials} trials -> {request.storage.experiment(request.name)}"
        )
        if time_budget is not None:
            echo(f"budget: {_budget_line(time_budget)}")
        started = time.time()
        results = tuner.fit()
        interrupted = was_interrupted(results, request.plan, str(study_db), time_budget)
        record["search_seconds"] = record.get("search_seconds", 0.0) + time.time() - started
        if time_budget is not None:
            record["budget"] = {
                **time_budget.describe(),
                "spent": time_budget.account(),
                # The budget's time zero on the clock of the results' timestamps (a resumed
                # experiment's pause between runs is left out, as the budget leaves it out).
                "origin_unix": time.time() - time_budget.wall_spent_s(),
            }
            echo(f"budget: {_budget_end_line(time_budget)}")
        if not interrupted:
            record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        request.storage.write_text(request.name, RECORD_FILE, json.dumps(record, indent=2))
        request.storage.upload(study_db, request.name, STUDY_FILE)
        if interrupted:
            echo(
                "search: interrupted; finished trials, checkpoints and the Optuna study are kept. "
                f"Continue with: --resume --name {request.name}"
                + (
                    ""
                    if request.storage.root == Storage.parse(None).root
                    else f" --storage {request.storage.root}"
                )
            )
        # Evaluation (unless interrupted) and report, while Ray is still up.
        finishing_started = time.monotonic()
        finished = finish(
            request.storage.experiment(request.name),
            datasets,
            FinishOptions(
                evaluate=request.evaluate and not interrupted,
                label_map=request.label_map,
                cache_dir=request.cache_dir,
                deadline=_finishing_deadline(time_budget),
                slots=request.plan.max_concurrent,
            ),
            echo,
        )
        if time_budget is not None and time_budget.budget.wall_s is not None:
            _record_finishing(request, record, time_budget, finishing_started, echo)
    finally:
        if started_ray:
            ray.shutdown()
    return _summarise(finished, request, echo, interrupted=interrupted)


def _time_budget(
    plan: Plan, previous: Mapping[str, Any] | None, started: float | None = None
) -> TimeBudget | None:
    """The running account of the plan's time budget (None without one); a resumed search
    starts from what the earlier runs spent."""
    if plan.budget is None:
        return None
    recorded = (previous or {}).get("budget") or {}
    spent = recorded.get("spent") or {}
    # What earlier runs used of the budget: each whole command, its evaluation and report
    # included (the search alone where a run ended before its finishing was recorded).
    before = (recorded.get("finishing") or {}).get("total_wall_s") or spent.get("wall_s") or 0.0
    models = {str(plan.base_config(cell).get("model")) for cell in plan.cells}
    gpu_shares = {model: plan.resources(model)["GPU"] for model in models}
    finishing = FinishingCosts(
        seeds=plan.eval_seeds, slots=plan.max_concurrent, mode=plan.space.mode
    )
    return TimeBudget(
        plan.budget,
        gpu_shares,
        wall_spent_before_s=float(before),
        finishing=finishing,
        metric=plan.space.metric,
        started=started,
        # Until this run's trials report, the reserve the last run estimated.
        reserve_s=recorded.get("evaluation_reserve_s"),
    )


def _finishing_deadline(budget: TimeBudget | None) -> float | None:
    """When (``time.monotonic()``) the wall-clock budget ends: the evaluation scores what fits
    by then (None: no wall-clock budget)."""
    if budget is None or budget.budget.wall_s is None:
        return None
    return time.monotonic() + budget.budget.wall_s - budget.wall_spent_s()


def _record_finishing(
    request: SearchRequest,
    record: dict[str, Any],
    budget: TimeBudget,
    started: float,
    echo: Echo,
) -> None:
    """Say, and record, how long the evaluation and report took against their reserve, and
    how much of the wall-clock budget the whole run used."""
    took = time.monotonic() - started
    total = budget.wall_spent_s()
    wall = budget.budget.wall_s or 0.0
    searched = float(record.get("budget", {}).get("spent", {}).get("wall_s", total - took))
    echo(
        f"budget: evaluation and report {took / 60:.1f} min (reserved {budget.reserve_s / 60:.1f}"
        f" min); the whole run {total / 60:.1f} of {wall / 60:.1f} min"
    )
    if total > wall * (1 + BUDGET_MARGIN):
        echo(
            "budget: overrun: "
            + (
                "the evaluation and report needed more than the search left of the budget "
                "(each cell's best model is scored, whatever the budget); give a larger "
                "--time-budget"
                if searched + budget.reserve_s > wall * (1 + BUDGET_MARGIN)
                else "the evaluation and report took longer than their estimate"
            )
        )
    record.setdefault("budget", {})["finishing"] = {"seconds": took, "total_wall_s": total}
    request.storage.write_text(request.name, RECORD_FILE, json.dumps(record, indent=2))


def _budget_line(budget: TimeBudget) -> str:
    """'search 12.0 of 45.0 min spent (evaluation reserve 15.0 min), 0.00 of 1.0 GPU-hours'."""
    limits, spent = budget.budget, budget.account()
    parts = []
    search_wall_s = budget.search_wall_s()
    if search_wall_s is not None and not budget.reserve_measured:
        parts.append(
            f"search {spent['wall_s'] / 60:.1f} min spent of {(limits.wall_s or 0) / 60:.1f}; the "
            "evaluation and report's reserve is estimated once a trial reports"
        )
    elif search_wall_s is not None:
        parts.append(
            f"search {spent['wall_s'] / 60:.1f} of {search_wall_s / 60:.1f} min spent "
            f"(evaluation and report reserve {budget.reserve_s / 60:.1f} min)"
        )
    if limits.search_gpu_s is not None:
        parts.append(_gpu_part(budget))
    return ", ".join(parts)


def _gpu_part(budget: TimeBudget) -> str:
    """'0.50 of 1.00 search GPU-hours spent'."""
    spent, search_gpu_s = budget.account()["gpu_hours"], budget.budget.search_gpu_s or 0.0
    return f"{spent:.2f} of {search_gpu_s / 3600:.2f} search GPU-hours spent"


def _budget_end_line(budget: TimeBudget) -> str:
    """After the search: what it spent, and what is left for the evaluation and report against
    their full reserve ('search 5.0 min; 3.0 min left of 8.0 for the evaluation and report
    (their full reserve 4.7 min: the evaluation scores what fits)')."""
    wall = budget.budget.wall_s
    if wall is None:
        return _budget_line(budget)
    spent = budget.wall_spent_s()
    left = max(wall - spent, 0.0)
    line = (
        f"search {spent / 60:.1f} min; {left / 60:.1f} min left of {wall / 60:.1f} for the "
        f"evaluation and report (their full reserve {budget.reserve_s / 60:.1f} min"
    )
    if budget.reserve_s > left:
        line += ": the evaluation scores what fits"
    line += ")"
    if budget.budget.search_gpu_s is not None:
        line += f", {_gpu_part(budget)}"
    return line


def was_interrupted(
    results: Any, plan: Plan, study_db: str, time_budget: TimeBudget | None = None
) -> bool:
    """True when Tune returned before the search ended (Ctrl-C saves and returns): a trial is
    not over, or a cell can still deal trials. A spent time budget ends the search. A cell may
    end before all of its planned trials,
    when its space of choices is used up or its epoch budget spent; its study then says so."""
    from cxr_tune.search.searcher import ended_cells

    ended = results.num_terminated + results.num_errors
    if ended < len(results):
        return True
    if len(results) >= plan.total_trials or (time_budget is not None and time_budget.spent()):
        return False
    return not {cell.id for cell in plan.cells} <= set(ended_cells(study_db))


def _previous_record(request: SearchRequest) -> dict[str, Any] | None:
    """The record of the experiment being resumed (None for a new search)."""
    if not request.resume:
        return None
    try:
        record = json.loads(request.storage.read_text(request.name, RECORD_FILE))
    except (ValueError, UnicodeDecodeError) as exc:
        record = exc
    if not isinstance(record, dict):
        where = f"{request.storage.experiment(request.name)}/{RECORD_FILE}"
        raise ConfigError(
            f"--resume: '{where}' is damaged (not a JSON object), but resuming reads the "
            "experiment's datasets and plan from it; restore it from a copy, or start a new "
            "search under another --name."
        )
    return record


def _record_for_run(
    request: SearchRequest,
    datasets: Mapping[str, DatasetArrays],
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """A fresh record, or the existing one (with this resume noted) when resuming."""
    record = experiment_record(request, datasets)
    if previous is None:
        return record
    changed = [
        d["name"]
        for d, old in zip(record["datasets"], previous.get("datasets", []))
        if d["split_hash"] != old.get("split_hash")
    ]
    if changed:
        raise ConfigError(
            f"--resume: the data of {', '.join(changed)} changed since the experiment started "
            "(different split hash); resuming would mix results of different datasets."
        )
    previous.setdefault("resumes", []).append(record["started_at"])
    previous.pop("finished_at", None)
    return previous


def _study_location(request: SearchRequest) -> Path:
    if request.storage.is_local:
        return Path(request.storage.experiment(request.name)) / STUDY_FILE
    return scratch_dir() / request.name / STUDY_FILE


def _quiet_ray_output() -> None:
    """Progress comes as one line per event (ProgressLines); Tune's own tables and INFO lines
    would bury it. Warnings and errors still show."""
    import logging

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Short epochs with CheckpointConfig(num_to_keep) force frequent experiment snapshots;
    # that is what keeps a resumed run consistent, not a problem to warn about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _init_ray(address: str | None) -> bool:
    """Join the given or running cluster, or start a local one; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if not (address or os.environ.get("RAY_ADDRESS")):
        _check_ray_temp_dir()
    # Trials resolve no relative paths, but keep them in the driver's folder anyway.
    env = {ENV_RAY_CHDIR: "0"}
    os.environ.update(env)
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        runtime_env={"env_vars": env},
        # Workers' own logs (one line per checkpoint) drown the progress lines; errors still
        # reach the driver and each trial's error.txt.
        log_to_driver=False,
        include_dashboard=False if not (address or os.environ.get("RAY_ADDRESS")) else None,
    )
    return True


# What a local Ray adds below its temporary folder for its longest socket path
# (``ray/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store``), and the most a Unix
# socket path may hold.
_RAY_SOCKET_SUFFIX = 68
_UNIX_SOCKET_MAX = 107


def _check_ray_temp_dir() -> None:
    """A local Ray cannot start under a long temporary folder (its socket paths would be too
    long); say so, naming the folder, instead of Ray's traceback.

    Raises:
        ConfigError: ``$RAY_TMPDIR`` (or the system's temporary folder) is too long.
    """
    import tempfile

    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    room = _UNIX_SOCKET_MAX - _RAY_SOCKET_SUFFIX
    if len(base) > room:
        raise ConfigError(
            f"RAY_TMPDIR: '{base}' is {len(base)} characters, but a local Ray needs a temporary "
            f"folder of at most {room} (its socket paths are limited to {_UNIX_SOCKET_MAX}); "
            "set RAY_TMPDIR to a short folder such as /tmp/ray-$USER."
        )


def build_tuner(
    request: SearchRequest,
    data: Mapping[str, DatasetArrays],
    study_db: str,
    time_budget: TimeBudget | None = None,
):
    """The Tuner for a new run, or the restored one for ``--resume``; both keep
    ``time_budget`` (the experiment's time and GPU-hours) where one is given."""
    from ray import tune

    from cxr_tune.search.progress import ProgressLines
    from cxr_tune.search.retention import CheckpointRetention
    from cxr_tune.search.scheduler import OverrunStopper, scheduler_for
    from cxr_tune.search.searcher import CellSearcher
    from cxr_tune.search.tensorboard import TrialTensorBoard
    from cxr_tune.trainable import train_trial

    plan = request.plan
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=dict(data)),
        resources=lambda config: tune.PlacementGroupFactory([plan.resources(str(config["model"]))]),
    )
    path = request.storage.experiment(request.name)
    if request.resume:
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        _use_time_budget(tuner, time_budget)
        _use_study_db(tuner, study_db)
        return tuner
    searcher = CellSearcher(plan, study_db)
    searcher.use_time_budget(time_budget)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler_for(plan, time_budget, study_db=study_db),
            num_samples=plan.total_trials,
            max_concurrent_trials=plan.max_concurrent,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=request.name,
            storage_path=request.storage.root,
            # Two, not one: Tune deletes the older checkpoint as it registers a new one and saves
            # the experiment state only after that; with one kept, a driver stopped in between
            # leaves a state that points at a deleted checkpoint. Ended trials are pruned
            # further by search/retention.py.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
            stop=OverrunStopper(time_budget) if time_budget else None,
            callbacks=[
                ProgressLines(
                    plan.space.metric,
                    plan.budget_epochs,
                    plan.scheduler.no_skill_epoch,
                    time_budget,
                ),
                TrialTensorBoard(),
                *(
                    []
                    if request.keep_checkpoints
                    else [
                        CheckpointRetention(
                            ContenderIds(plan.space.metric, plan.space.mode)
                            if time_budget
                            else None
                        )
                    ]
                ),
            ],
            verbose=0,
        ),
    )


def _use_time_budget(tuner: Any, budget: TimeBudget | None) -> None:
    """Hand this run's time budget to a restored tuner's searcher, scheduler and stopper: they
    were unpickled with the account of the run that saved them. Ray offers no public way to
    reach them (its tune and run configs are private)."""
    from cxr_tune.search.scheduler import OverrunStopper

    search_alg, scheduler, run_config = restored_parts(tuner)
    for algorithm in (search_alg, scheduler):
        if hasattr(algorithm, "use_time_budget"):
            algorithm.use_time_budget(budget)
    if run_config is not None and (
        budget is not None or isinstance(run_config.stop, OverrunStopper)
    ):
        run_config.stop = OverrunStopper(budget) if budget else None
    for callback in getattr(run_config, "callbacks", None) or ():
        if hasattr(callback, "use_time_budget"):
            callback.use_time_budget(budget)


def _use_study_db(tuner: Any, study_db: str) -> None:
    """Point a restored tuner's searcher and scheduler at this run's study file: they were
    unpickled with the path of the run that started the experiment. Ray offers no public way
    to reach them (its tune config is private); a Ray Client tuner keeps them remote."""
    search_alg, scheduler, _run_config = restored_parts(tuner)
    for algorithm in (search_alg, scheduler):
        if hasattr(algorithm, "use_study_db"):
            algorithm.use_study_db(study_db)


def _trial_name(trial: Any) -> str:
    cell = str(trial.config.get("cell", "trial")).replace("/", "-").replace("=", "-")
    return f"{cell}-{trial.trial_id}"


def _summarise(
    finished: Finished, request: SearchRequest, echo: Echo, *, interrupted: bool
) -> SearchOutcome:
    """Say where the results are, and count the trials' outcomes."""
    experiment = finished.experiment
    echo(f"trials: {len(experiment.trials)} ({experiment.state_summary()})")
    copy = f" (a copy: {experiment.folder / REPORT_MD})" if finished.is_copy else ""
    echo(f"report: {finished.report}{copy}")
    echo(f"tensorboard: tensorboard --logdir {finished.location}")
    echo(f"optuna: optuna-dashboard sqlite:///{_study_location(request)}")
    return SearchOutcome(
        finished.location,
        len(experiment.trials),
        experiment.state_counts(),
        finished.report,
        interrupted,
    )


def default_name(space: str, profile: str) -> str:
    return f"{space}-{profile}-{time.strftime('%Y%m%d-%H%M%S')}"

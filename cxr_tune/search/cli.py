"""``cxr-tune search`` (also ``python -m cxr_tune.search``): the command line of a search.

Heavy modules (torch, Ray) are imported after the arguments are parsed and checked, so
``--help`` and most user errors answer at once. ``cxr_tune.cli`` parses and runs the command and
turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from cxr_tune.config import PROFILE_CHOICES, DataSource, unique_dataset_names
from cxr_tune.constants import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MIN_LABEL_POSITIVES,
    DIVERGED,
    FAILED,
    SPLIT_MODES,
)
from cxr_tune.errors import ConfigError
from cxr_tune.search.budget import parse_duration
from cxr_tune.search.placement import parse_size

DESCRIPTION = (
    "Search learning rate, batch size and optimizer (and more) for chest X-ray classifiers, "
    "with Optuna TPE and per-cell ASHA on Ray Tune."
)
INTERRUPTED = "finished trials and checkpoints are kept. Continue with --resume."
EXAMPLES = """
examples:
  python -m cxr_tune.search --space ablation
  python -m cxr_tune.search --space paper --data covid19_radiography=~/data/COVID-19_Radiography_Dataset
  python -m cxr_tune.search --space ablation --name my-study --resume
  python -m cxr_tune.search --space smoke --dry-run
"""


# The built-in phantom's other site: the default search (no --data) scores its final models on
# it as an external set, so every default report shows how the models transfer.
DEFAULT_EXTERNAL = "phantom_b"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``search`` command's options."""
    parser.add_argument(
        "--space",
        default="ablation",
        help="a search space in search_spaces/ by name, or a YAML path (default: ablation)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[KEY=]PATH",
        help="a dataset root folder; repeat for several. KEY forces a layout. Built in: phantom "
        "(the default; site A), phantom_b (site B), phantom_marker (site A, class-correlated marker)",
    )
    parser.add_argument(
        "--data-name",
        action="append",
        default=[],
        metavar="NAME",
        help="the name of the --data of the same position (repeat in order): in cells, reports, "
        "trials.csv and label-map files (default: the dataset's folder name; a built-in "
        "dataset's own name)",
    )
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="[KEY=]PATH",
        help="a dataset not searched, on whose test split the final models are also scored "
        "(external validation); repeat for several. Default with no --data: phantom_b",
    )
    parser.add_argument(
        "--label-map",
        metavar="FILE",
        help="your own label-map YAML, laid over cxr_tune/data/label_maps.yaml: how the "
        "datasets' classes map onto the shared classes for external validation",
    )
    parser.add_argument(
        "--storage",
        help="experiments root: a folder, an NFS path or s3://... (default: ~/cxr_tune_results)",
    )
    parser.add_argument("--name", help="experiment name (default: <space>-<profile>-<time>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the experiment --name (or the latest of this space)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the data split, the phantom, the samplers and the trials"
    )
    parser.add_argument(
        "--num-samples", type=int, help="trials per cell (overrides the space and the profile)"
    )
    parser.add_argument(
        "--epochs", type=int, help="epochs per trial (overrides the space and the profile)"
    )
    parser.add_argument(
        "--image-size", type=int, help="image side in px (overrides the space and the profile)"
    )
    parser.add_argument("--max-concurrent", type=int, help="trials running at once")
    parser.add_argument(
        "--budget-epochs",
        type=int,
        help="the most trial-epochs spent on each cell (overrides search.budget_epochs)",
    )
    parser.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="wall-clock budget of the whole experiment, e.g. 3h, 90m, 1h30m: the search "
        "spends what the evaluation and report leave (no epoch starts that would end past its "
        "share; all trials stop at once past a 10%% margin), the evaluation scores what fits "
        "in the rest, each cell's best model always; --resume goes on with what is left",
    )
    parser.add_argument(
        "--gpu-hours",
        type=float,
        help="GPU-hours of the whole experiment, each trial's time times its GPU share, "
        "summed; kept as --time-budget is",
    )
    parser.add_argument(
        "--profile",
        default="auto",
        choices=PROFILE_CHOICES,
        help="how to size the run: gpu (full study on GPUs), full (the space as written, on GPUs "
        "if the cluster has them, else CPUs), cpu, smoke, or auto (gpu if the cluster has GPUs, "
        "else cpu)",
    )
    parser.add_argument("--eval-seeds", type=int, help="seeds of the final evaluation per cell")
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every trial's last full checkpoint (default: a finished trial keeps only its "
        "final weights, a stopped one none)",
    )
    parser.add_argument(
        "--no-eval", action="store_true", help="skip the final evaluation on the test split"
    )
    parser.add_argument(
        "--cache-dir", help="decoded-dataset cache (default: $CXR_TUNE_CACHE or ~/.cache/cxr_tune)"
    )
    parser.add_argument(
        "--split",
        choices=SPLIT_MODES,
        help="a dataset's own split (train/ and test/ folders, ...): grouped moves images to keep "
        "patients and near-duplicates whole, published keeps it exactly (default: grouped, or "
        "the experiment's with --resume)",
    )
    parser.add_argument(
        "--device-memory",
        metavar="SIZE",
        help="device memory to plan each cell's data path for, e.g. 80GB (default: the local "
        "GPU's; on a CPU, none): a cell whose data do not fit beside its packed trials streams "
        "its batches from host memory; --dry-run shows each cell's path and why",
    )
    parser.add_argument(
        "--uncertain",
        choices=("ones", "zeros", "ignore"),
        help="CheXpert's uncertain labels count as ones or zeros, or are ignored (masked in the "
        "loss and metrics); overrides the space's data.uncertain (default: ignore)",
    )
    parser.add_argument(
        "--min-label-positives",
        type=int,
        default=DEFAULT_MIN_LABEL_POSITIVES,
        help="multi-label datasets: a label is kept when it has this many positive images in "
        f"every split (default: {DEFAULT_MIN_LABEL_POSITIVES})",
    )
    parser.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="make every check the search makes before its first trial (the data, decoded "
        "into the cache, and the label map included) and print the resolved plan, one JSON "
        "object per cell; no trial runs",
    )


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{name}: the value is {value}, but must be >= 1.")


def run(args: argparse.Namespace) -> int:
    """Run (or plan, with ``--dry-run``) a search; returns the exit code.

    ``args.command_line`` is the command as the user typed it (recorded in the experiment).
    """
    import time
    from pathlib import Path

    # A time budget counts from here: resolving and announcing the data count too.
    started = time.monotonic()

    from cxr_tune.data import resolve_source
    from cxr_tune.search.plan import Overrides, build_plan, resolve_profile
    from cxr_tune.spaces import load_space
    from cxr_tune.storage import Storage

    for flag, value in (
        ("--num-samples", args.num_samples),
        ("--max-concurrent", args.max_concurrent),
        ("--eval-seeds", args.eval_seeds),
        ("--budget-epochs", args.budget_epochs),
        ("--epochs", args.epochs),
        ("--min-label-positives", args.min_label_positives),
    ):
        _positive(flag, value)
    if args.image_size is not None and args.image_size < 32:
        raise ConfigError(f"--image-size: the value is {args.image_size}, but must be >= 32.")
    time_budget_s = parse_duration(args.time_budget) if args.time_budget is not None else None
    if args.gpu_hours is not None and not (args.gpu_hours > 0 and math.isfinite(args.gpu_hours)):
        raise ConfigError(f"--gpu-hours: the value is {args.gpu_hours}, but must be a number > 0.")
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed: the value is {args.seed}, but must be >= 0.")
    space = load_space(args.space)
    given = tuple(DataSource.parse(text) for text in args.data) or (DataSource.phantom(),)
    dataset_names = _dataset_names(given, args.data_name)
    # Each layout is detected here, once: the runner loads the folders found.
    sources = tuple(_announced(resolve_source(source)) for source in given)
    given_externals = tuple(
        DataSource.parse(text)
        for text in (args.external or ([] if args.data else [DEFAULT_EXTERNAL]))
    )
    external_names = unique_dataset_names(
        [source.default_name for source in given_externals], taken=dataset_names
    )
    externals = tuple(_announced(resolve_source(source)) for source in given_externals)
    dataset_keys = tuple(str(source.key) for source in sources)
    storage = Storage.parse(args.storage)
    profile, reason = resolve_profile(args.profile, gpus_available=_gpus_available(args))
    plan = build_plan(
        space,
        profile,
        dataset_names,
        Overrides(
            seed=args.seed,
            num_samples=args.num_samples,
            max_concurrent=args.max_concurrent,
            eval_seeds=args.eval_seeds,
            budget_epochs=args.budget_epochs,
            epochs=args.epochs,
            image_size=args.image_size,
            time_budget_s=time_budget_s,
            gpu_hours=args.gpu_hours,
            data_options={"uncertain": args.uncertain} if args.uncertain else {},
            device_memory=parse_size(args.device_memory) if args.device_memory else None,
        ),
    )
    _check_data_options(dataset_keys, plan.data_options)
    if plan.needs_placement():
        plan = plan.placed(_estimated_sizes(plan, sources, dataset_names, args))
    name = _experiment_name(args, storage, space.name, profile.name)
    from cxr_tune.search.runner import SearchRequest, check_without_training, run_search

    request = SearchRequest(
        plan=plan,
        sources=sources,
        dataset_names=dataset_names,
        dataset_keys=dataset_keys,
        storage=storage,
        name=name,
        resume=args.resume,
        evaluate=not args.no_eval,
        keep_checkpoints=args.keep_checkpoints,
        cache_dir=Path(args.cache_dir).expanduser() if args.cache_dir else None,
        split=args.split,
        externals=externals,
        external_names=external_names,
        label_map=str(Path(args.label_map).expanduser().resolve()) if args.label_map else None,
        ray_address=args.address,
        argv=tuple(args.command_line),
        profile_reason=reason,
        min_label_positives=args.min_label_positives,
        started=started,
    )
    if args.dry_run:
        # Every check the search makes before its first trial. What the checks read goes to
        # stderr once they pass (stdout is the plan, one JSON object per cell; a refusal is
        # one line).
        read: list[str] = []
        check_without_training(request, echo=read.append)
        print("\n".join(read), file=sys.stderr)
        for line in plan.lines():
            print(json.dumps(line))
        return 0
    _announce(plan, reason, name, args)
    outcome = run_search(request)
    if outcome.interrupted:
        return 130
    failed = outcome.states.get(FAILED, 0) + outcome.states.get(DIVERGED, 0)
    if failed:
        print(f"note: {failed} of {outcome.trials} trials failed or diverged; see the report.")
    return 0


def _announced(source: DataSource) -> DataSource:
    """Print where a dataset folder was found and why (detected or forced by KEY=)."""
    if source.detected:
        print(f"data: {source.path}: {source.key} ({source.detected})")
    return source


def _estimated_sizes(
    plan: Any, sources: tuple[DataSource, ...], names: tuple[str, ...], args: argparse.Namespace
) -> dict[str, tuple[int, int]]:
    """Images each dataset trains and validates on, and its classes, without decoding (the
    runner plans again with the exact figures once the data are loaded)."""
    from pathlib import Path

    from cxr_tune.data.prepare import search_images
    from cxr_tune.search.runner import data_options

    options = data_options(plan, Path(args.cache_dir).expanduser() if args.cache_dir else None)
    return {name: search_images(source, options) for name, source in zip(names, sources)}


def _check_data_options(keys: tuple[str, ...], options: Mapping[str, Any]) -> None:
    """Fail before any work on a layout option no layout knows (with a did-you-mean)."""
    if not options:
        return
    from cxr_tune.data.datasets import DATASETS
    from cxr_tune.data.layouts.common import check_options

    for key in dict.fromkeys(keys):
        check_options(key, options, DATASETS.get(key).options)


def _dataset_names(given: tuple[DataSource, ...], chosen: list[str]) -> tuple[str, ...]:
    """Each dataset's name: ``--data-name`` where given (in the order of ``--data``), else the
    folder's name; unique within the run (a repeated default gets _2, _3...)."""
    from cxr_tune.config import safe_dataset_name, unique_dataset_names

    if len(chosen) > len(given):
        raise ConfigError(
            f"--data-name: {len(chosen)} names for {len(given)} datasets; give one --data-name "
            "per --data, in the same order."
        )
    for name in chosen:
        if safe_dataset_name(name) != name or not name:
            raise ConfigError(
                f"--data-name: '{name}' is not a usable name; use letters, digits, '.', '_' "
                "and '-' (not at either end)."
            )
    if len(set(chosen)) < len(chosen):
        raise ConfigError(f"--data-name: the names {', '.join(chosen)} repeat; give each once.")
    defaults = [source.default_name for source in given[len(chosen) :]]
    return (*chosen, *unique_dataset_names(defaults, taken=chosen))


def _gpus_available(args: argparse.Namespace) -> float:
    """GPUs the run can use: the cluster's when one is given, else this machine's."""
    if args.profile not in ("auto", "full"):
        return 0.0
    if args.address or os.environ.get("RAY_ADDRESS"):
        if args.dry_run:
            return 0.0
        import ray

        ray.init(address=args.address or os.environ.get("RAY_ADDRESS"), log_to_driver=False)
        return float(ray.cluster_resources().get("GPU", 0.0))
    import torch

    return float(torch.cuda.device_count())


def _experiment_name(args: argparse.Namespace, storage, space: str, profile: str) -> str:
    from cxr_tune.search.runner import default_name

    if args.name:
        if "/" in args.name or args.name.startswith("."):
            raise ConfigError(f"--name: '{args.name}' must be a plain folder name.")
        return args.name
    if args.resume:
        latest = storage.latest(f"{space}-")
        if latest is None:
            raise ConfigError(
                f"--resume: no experiment of space '{space}' under {storage.root}; give --name."
            )
        print(f"resume: continuing the latest '{space}' experiment, {latest}")
        return latest
    return default_name(space, profile)


def _announce(plan, reason: str, name: str, args: argparse.Namespace) -> None:
    profile = plan.profile
    print(
        f"profile: {profile.name} ({reason}): {profile.description}. "
        f"{len(plan.cells)} cells x {plan.num_samples * plan.grid_size()} trials, "
        f"{plan.epochs} epochs max, {plan.fixed['image_size']} px, {plan.max_concurrent} at a time"
        + (f", phantom of {profile.phantom_images} images" if "phantom" in plan.datasets else "")
        + (f", at most {plan.budget_epochs} epochs per cell" if plan.budget_epochs else "")
        + "."
    )
    if profile.name not in ("gpu", "full"):
        print(
            f"        The full study ({plan.space.epochs} epochs, {plan.space.num_samples} trials per cell, "
            f"{plan.space.fixed.get('image_size', DEFAULT_IMAGE_SIZE)} px) runs with --profile gpu on a GPU machine or "
            "cluster, or with --profile full on any; --epochs, --image-size and --num-samples "
            "set one value each; see README.md, 'The full study'."
        )
    if plan.budget is not None:
        print(f"budget: {_budget_text(plan.budget)}")
    for note in plan.notes:
        print(f"note: {note}")


def _budget_text(budget) -> str:
    """'0.05 h of wall-clock time: the search's share ends where the reserve for the evaluation
    and report begins (estimated as the trials report, from their measured epochs; ...)'."""
    share = f"{100 * budget.evaluation_share:.0f}%"
    parts = []
    if budget.wall_s is not None:
        parts.append(
            f"{budget.wall_s / 3600:.2f} h of wall-clock time: the search spends what the "
            "evaluation and report leave; their reserve is estimated from the trials' measured "
            "epoch times as they report (retraining the contenders not trained to the end and "
            "for each seed after the first, scoring, the report), "
            f"{budget.wall_s * budget.evaluation_share / 3600:.2f} h ({share}) until the first "
            "trial reports"
        )
    if budget.gpu_hours is not None:
        parts.append(
            f"{budget.gpu_hours:g} GPU-hours: the search {budget.search_gpu_s / 3600:.2f}, the "
            f"final evaluation's reserve {budget.gpu_hours * budget.evaluation_share:.2f} ({share})"
        )
    return "; ".join(parts) + (
        "; no trial starts, or goes on to, an epoch expected to end past the search's share "
        "(the evaluation's contenders excepted: their remaining epochs are reserved); the "
        "evaluation scores what fits in the rest, each cell's best model always"
    )

"""``cxr-tune evaluate EXPERIMENT`` (also ``python -m cxr_tune.evaluation``): the final evaluation
of an experiment, local or on cluster storage, then its report.

Exit codes as every command (``cxr_tune.cli``): 0 evaluated and reported, 2 a usage, data or
label-map error (before any model runs), 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr_tune.errors import ConfigError

DESCRIPTION = (
    "Retrain each cell's best configurations with several seeds and score them once on the test "
    "split, on the other datasets' and on --external ones; writes evaluation.json and refreshes "
    "the report. EXPERIMENT is a folder or a storage URI (s3://bucket/prefix/name)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``evaluate`` command's options."""
    parser.add_argument(
        "experiment",
        help="an experiment folder written by a search, or its storage URI (s3://, gs://: "
        "evaluated on a local copy, results uploaded next to the experiment)",
    )
    parser.add_argument(
        "--seeds", type=int, help="seeds per configuration (default: the experiment's)"
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.add_argument(
        "--cache-dir", help="decoded-dataset cache (default: $CXR_TUNE_CACHE or ~/.cache/cxr_tune)"
    )
    parser.add_argument(
        "--external",
        nargs="+",
        action="extend",
        default=[],
        metavar="[KEY=]PATH",
        help="datasets that were not searched (a hospital's own folder, phantom_b): each cell's "
        "best models are also scored on their test split, on the classes they share",
    )
    parser.add_argument(
        "--label-map", help="your own label-map YAML, laid over cxr_tune/data/label_maps.yaml"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate the experiment, then rewrite its report; returns the exit code."""
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds: the value is {args.seeds}, but must be >= 1.")
    # Heavy imports (torch, Ray, pandas) only once the arguments parse: --help is instant.
    from cxr_tune.config import DataSource
    from cxr_tune.evaluation.finish import FinishOptions, finish

    options = FinishOptions(
        seeds=args.seeds,
        externals=tuple(DataSource.parse(text) for text in args.external),
        label_map=args.label_map,
        cache_dir=Path(args.cache_dir).expanduser() if args.cache_dir else None,
        ray_address=args.address,
    )
    finished = finish(args.experiment, options=options)
    print(f"report: {finished.report}")
    return 0

"""``cxr-tune report EXPERIMENT [--out DIR]`` (also ``python -m cxr_tune.report``): write an
experiment's report.

Exit codes: 0 written (possibly partial: the report says what is missing), 2 the folder is not
an experiment or the output cannot be written, 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cxr_tune.errors import DataError

if TYPE_CHECKING:
    from cxr_tune.experiment import Experiment

DESCRIPTION = (
    "Write the best-trial report of a finished or interrupted experiment folder "
    "(report.md, self-contained report.html, trials.csv, plots/*.png). Needs no Ray."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` command's options."""
    parser.add_argument(
        "experiment",
        help="the experiment folder a search wrote, or its storage URI (s3://bucket/.../name: "
        "the report is written on a local copy and uploaded next to the experiment)",
    )
    parser.add_argument(
        "--out", default=None, help="where to write the report (default: the experiment folder)"
    )


def run(args: argparse.Namespace) -> int:
    """Write the report; returns the exit code."""
    # Heavy imports (pandas, matplotlib, optuna) only after the arguments parse: --help is instant.
    from cxr_tune.experiment import load_experiment
    from cxr_tune.report import write_experiment_report
    from cxr_tune.storage import is_uri

    try:
        if is_uri(args.experiment):
            experiment, path = _report_remote(args.experiment, args.out)
        else:
            experiment = load_experiment(args.experiment)
            path = write_experiment_report(experiment, args.out)
    except OSError as exc:
        where = args.out or args.experiment
        raise DataError(f"cannot write the report to '{where}': {exc}") from exc
    print(f"report: {path} (and report.html, trials.csv, plots/ beside it)")
    summary = experiment.state_summary() or "none has reported yet"
    print(f"trials: {len(experiment.trials)} ({summary})")
    if experiment.interrupted:
        print("note: the search did not finish; the report covers the trials so far")
    return 0


def _report_remote(location: str, out: str | None) -> tuple[Experiment, Path]:
    """Report an experiment on remote storage from a local copy; the report goes back up
    unless ``out`` names a local folder for it."""
    from cxr_tune.experiment import load_experiment
    from cxr_tune.report import write_experiment_report
    from cxr_tune.storage import Storage, local_copy_folder

    storage, name = Storage.of_experiment(location)
    if not storage.exists(name):
        raise DataError(f"There is no experiment at '{location}'.")
    with storage.local_copy(name, local_copy_folder(name)) as folder:
        experiment = load_experiment(folder)
        path = write_experiment_report(experiment, out)
    if out is None:
        print(f"report: uploaded next to the experiment, {storage.experiment(name)}/report.md")
    return experiment, path

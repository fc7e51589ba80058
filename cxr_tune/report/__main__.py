"""``python -m cxr_tune.report EXPERIMENT_DIR [--out DIR]``: write an experiment's report.

Exit codes: 0 written (possibly partial: the report says what is missing), 2 the folder is not
an experiment or the output cannot be written, 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cxr_tune.errors import DataError

if TYPE_CHECKING:
    from cxr_tune.report import Experiment


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cxr_tune.report",
        description=(
            "Write the best-trial report of a finished or interrupted experiment folder "
            "(report.md, self-contained report.html, trials.csv, plots/*.png). Needs no Ray."
        ),
    )
    parser.add_argument(
        "experiment",
        help="the experiment folder a search wrote, or its storage URI (s3://bucket/.../name: "
        "the report is written on a local copy and uploaded next to the experiment)",
    )
    parser.add_argument(
        "--out", default=None, help="where to write the report (default: the experiment folder)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = parse_args(argv)
    # Heavy imports (pandas, matplotlib, optuna) only after the arguments parse: --help is instant.
    from cxr_tune.errors import CxrTuneError
    from cxr_tune.report import load_experiment, write_experiment_report
    from cxr_tune.search.storage import is_uri

    try:
        if is_uri(args.experiment):
            experiment, path = _report_remote(args.experiment, args.out)
        else:
            experiment = load_experiment(args.experiment)
            path = write_experiment_report(experiment, args.out)
    except CxrTuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = args.out or args.experiment
        print(f"error: cannot write the report to '{where}': {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not the user's input: one line, and a way to report it
        print(
            f"error: the report failed ({type(exc).__name__}: {exc}); please file an issue "
            "with this line",
            file=sys.stderr,
        )
        return 1
    counts = ", ".join(
        f"{n} {s.replace('_', ' ')}" for s, n in experiment.state_counts().items() if n
    )
    print(f"report: {path} (and report.html, trials.csv, plots/ beside it)")
    print(f"trials: {len(experiment.trials)} ({counts or 'none has reported yet'})")
    if experiment.interrupted:
        print("note: the search did not finish; the report covers the trials so far")
    return 0


def _report_remote(location: str, out: str | None) -> tuple[Experiment, Path]:
    """Report an experiment on remote storage from a local copy; the report goes back up
    unless ``out`` names a local folder for it."""
    from cxr_tune.report import load_experiment, write_experiment_report
    from cxr_tune.search.remote import local_copy_folder
    from cxr_tune.search.storage import Storage

    storage, name = Storage.of_experiment(location)
    if not storage.exists(name):
        raise DataError(f"There is no experiment at '{location}'.")
    with storage.local_copy(name, local_copy_folder(name)) as folder:
        experiment = load_experiment(folder)
        path = write_experiment_report(experiment, out)
    if out is None:
        print(f"report: uploaded next to the experiment, {storage.experiment(name)}/report.md")
    return experiment, path


if __name__ == "__main__":
    sys.exit(main())

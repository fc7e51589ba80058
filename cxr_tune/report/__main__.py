"""``python -m cxr_tune.report EXPERIMENT_DIR [--out DIR]``: write an experiment's report.

Exit codes: 0 written (possibly partial: the report says what is missing), 2 the folder is not
an experiment or the output cannot be written, 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cxr_tune.report",
        description=(
            "Write the best-trial report of a finished or interrupted experiment folder "
            "(report.md, self-contained report.html, trials.csv, plots/*.png). Needs no Ray."
        ),
    )
    parser.add_argument("experiment", help="the experiment folder a search wrote")
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

    try:
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


if __name__ == "__main__":
    sys.exit(main())

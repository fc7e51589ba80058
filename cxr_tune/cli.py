"""``cxr-tune``: the one command line, with subcommands ``search``, ``data``, ``evaluate``,
``report``, ``export`` and ``predict``; ``python -m cxr_tune.search`` and the other
``python -m`` forms run the same code.

One error policy for every subcommand:

- 0: done (a search whose trials partly failed still exits 0 and says how many);
- 2: a usage, configuration or data error: one line on stderr naming what is wrong, no traceback;
- 1: an internal error: one line on stderr, and the full traceback written to a log file whose
  path the line gives (``--debug`` or ``CXR_TUNE_DEBUG=1`` prints it instead);
- 130: interrupted (Ctrl-C); what was computed is kept.

Each subcommand's options live beside its code (``search/cli.py``, ``data/cli.py``,
``evaluation/cli.py``, ``report/cli.py``, ``bundle/cli.py``); heavy modules are imported only once the arguments parse, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr_tune import __version__
from cxr_tune.bundle import cli as bundle_cli
from cxr_tune.constants import DEFAULT_CACHE_DIR, ENV_CACHE, ENV_DEBUG
from cxr_tune.data import cli as data_cli
from cxr_tune.errors import CxrTuneError
from cxr_tune.evaluation import cli as evaluation_cli
from cxr_tune.report import cli as report_cli
from cxr_tune.search import cli as search_cli

PROG = "cxr-tune"


@dataclass(frozen=True)
class Command:
    """A subcommand: how to declare its options and how to run it."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str | None = None
    # What to tell the user when Ctrl-C stops the command.
    interrupted: str = "nothing already written was lost."


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "search",
            "search hyperparameters per dataset x architecture (Optuna TPE + ASHA on Ray Tune)",
            search_cli.DESCRIPTION,
            search_cli.add_arguments,
            search_cli.run,
            epilog=search_cli.EXAMPLES,
            interrupted=search_cli.INTERRUPTED,
        ),
        Command(
            "data",
            "inspect a dataset folder, or decode it once into the cache",
            data_cli.DESCRIPTION,
            data_cli.add_arguments,
            data_cli.run,
        ),
        Command(
            "evaluate",
            "retrain the best configurations with several seeds and score them on the test split",
            evaluation_cli.DESCRIPTION,
            evaluation_cli.add_arguments,
            evaluation_cli.run,
        ),
        Command(
            "report",
            "write an experiment's best-trial report (md, html, csv, plots); needs no Ray",
            report_cli.DESCRIPTION,
            report_cli.add_arguments,
            report_cli.run,
        ),
        Command(
            "export",
            "write each cell's best model as a model package (MONAI bundle, TorchScript, card)",
            bundle_cli.EXPORT_DESCRIPTION,
            bundle_cli.add_export_arguments,
            bundle_cli.run_export,
            interrupted=bundle_cli.EXPORT_INTERRUPTED,
        ),
        Command(
            "predict",
            "predict image files with a model package or an experiment's best model (CSV)",
            bundle_cli.PREDICT_DESCRIPTION,
            bundle_cli.add_predict_arguments,
            bundle_cli.run_predict,
            interrupted=bundle_cli.PREDICT_INTERRUPTED,
        ),
    )
}


def _debug_flag(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's parser must not reset a --debug given before the subcommand.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"print the full traceback of an internal error (or set {ENV_DEBUG}=1)",
    )


def _command_parser(command: Command, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=command.description,
        epilog=command.epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser, command)
    return parser


def _configure(parser: argparse.ArgumentParser, command: Command) -> None:
    command.add_arguments(parser)
    _debug_flag(parser)
    parser.set_defaults(command_name=command.name)


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr-tune`` parser: every subcommand, with ``cxr-tune --help`` listing them."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Hyperparameter search for chest X-ray classifiers, and what comes after it: "
        "datasets, final evaluation on the test split, reports, model packages, prediction.",
        epilog="Run `cxr-tune COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _debug_flag(parser)
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _configure(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``cxr-tune [--debug] COMMAND ...``; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    name = args.command_name
    return _execute(COMMANDS[name], args, f"{PROG} {name}", [PROG, *arguments])


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """``python -m cxr_tune.<name> ...``: one subcommand under its module's name."""
    command = COMMANDS[name]
    prog = f"python -m cxr_tune.{name}"
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _command_parser(command, prog).parse_args(arguments)
    return _execute(command, args, prog, [prog, *arguments])


def _execute(command: Command, args: argparse.Namespace, prog: str, line: list[str]) -> int:
    """Run a parsed command under the one error policy (see the module docstring)."""
    args.command_line = line
    # A file name that is not UTF-8 (kept by Python as surrogates) prints escaped, not as a
    # crash, whatever the terminal's encoding.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return command.run(args)
    except CxrTuneError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {command.interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not the user's input: keep the traceback for a report
        if getattr(args, "debug", False) or os.environ.get(ENV_DEBUG, "") not in ("", "0"):
            traceback.print_exc()
            print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        log = _write_traceback(prog, line)
        where = f"the full traceback is in {log}" if log else "the traceback could not be saved"
        print(
            f"{prog}: internal error: {type(exc).__name__}: {_first_line(exc)} ({where}; "
            f"rerun with --debug to print it; please include it in a bug report)",
            file=sys.stderr,
        )
        return 1


def _write_traceback(prog: str, line: list[str]) -> Path | None:
    """Write the current exception's traceback, with the command line, to a log file."""
    folder = Path(os.environ.get(ENV_CACHE, DEFAULT_CACHE_DIR)).expanduser() / "errors"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"command: {' '.join(line)}\ncxr_tune {__version__}, Python {sys.version.split()[0]}"
            f"\n\n{traceback.format_exc()}",
            encoding="utf-8",
        )
    except OSError:
        return None
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


if __name__ == "__main__":
    sys.exit(main())

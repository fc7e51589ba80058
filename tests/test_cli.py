"""``cxr-tune``: one command with subcommands, and one error policy for all of them."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_tune import cli
from cxr_tune.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cxr_tune.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("search", "data", "evaluate", "report"):
        assert f"    {name} " in result.stdout


def test_subcommand_and_module_forms_parse_alike() -> None:
    as_subcommand = cli.build_parser().parse_args(["report", "exp", "--out", "x"])
    as_module = cli._command_parser(cli.COMMANDS["report"], "p").parse_args(["exp", "--out", "x"])
    assert vars(as_subcommand) == vars(as_module)


def _failing(error: BaseException) -> cli.Command:
    def run(args: argparse.Namespace) -> int:
        raise error

    return cli.Command("boom", "", "", lambda parser: None, run)


@pytest.fixture
def boom(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CXR_TUNE_CACHE", str(tmp_path))
    monkeypatch.delenv("CXR_TUNE_DEBUG", raising=False)


def test_a_user_error_is_one_line_and_exit_2(boom, capsys) -> None:
    code = cli._execute(_failing(ConfigError("--x: bad")), argparse.Namespace(), "cxr-tune x", [])
    err = capsys.readouterr().err
    assert code == 2 and err == "cxr-tune x: error: --x: bad\n"


def test_an_internal_error_is_one_line_with_the_log_of_its_traceback(
    boom, capsys, tmp_path
) -> None:
    code = cli._execute(
        _failing(ZeroDivisionError("division by zero")), argparse.Namespace(), "p", ["p", "a"]
    )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error: ZeroDivisionError: division by zero" in err
    (log,) = (tmp_path / "errors").glob("*.log")
    assert str(log) in err
    text = log.read_text()
    assert "command: p a" in text and "Traceback" in text and "ZeroDivisionError" in text


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_traceback(boom, capsys, monkeypatch, how) -> None:
    args = argparse.Namespace(debug=True) if how == "flag" else argparse.Namespace()
    if how == "env":
        monkeypatch.setenv("CXR_TUNE_DEBUG", "1")
    code = cli._execute(_failing(KeyError("k")), args, "p", ["p"])
    assert code == 1 and "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130_and_says_what_is_kept(boom, capsys) -> None:
    code = cli._execute(_failing(KeyboardInterrupt()), argparse.Namespace(), "p", ["p"])
    assert (
        code == 130 and "interrupted; nothing already written was lost" in capsys.readouterr().err
    )


def test_debug_before_the_subcommand_is_kept() -> None:
    args = cli.build_parser().parse_args(["--debug", "report", "exp"])
    assert args.debug is True and args.command_name == "report"

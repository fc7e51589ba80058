"""How the adversarial suite runs the entry points and judges a user error.

Most cases call an entry point's ``main(argv)`` in this process (fast): an exception escaping
it fails the test, so "no traceback" is checked as strictly as in a subprocess. The cases
where the process boundary matters (the exit code a shell sees, files left after the process
is gone, another user's permissions) run ``python -m cxr_tune.<x>`` as users do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import repo_root

MODULES = ("cxr_tune.search", "cxr_tune.data", "cxr_tune.report", "cxr_tune.evaluate")


@dataclass(frozen=True)
class Outcome:
    """What an entry point did: exit code, standard output and standard error."""

    code: int
    out: str
    err: str


def run_module(
    module: str,
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    as_plain_user: bool = False,
) -> Outcome:
    """``python -m module args`` in a subprocess (the checkout first on the path).

    ``as_plain_user``: file permissions apply to the process even when the tests run as root
    (see ``drop_root_file_access``).
    """
    assert module in MODULES
    full_env = {**os.environ, "PYTHONPATH": str(repo_root()), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=repo_root(),
        timeout=timeout,
        preexec_fn=drop_root_file_access if as_plain_user and os.geteuid() == 0 else None,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


# Linux capabilities that let root read and search any file regardless of its permissions.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def drop_root_file_access() -> None:
    """In a child about to exec: give up root's power to ignore file permissions (it keeps
    its own files and everything else), so a file with mode 000 is unreadable to it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def can_drop_root_file_access() -> bool:
    """Whether permissions can be made to apply to a child process here (always as non-root)."""
    if os.geteuid() != 0:
        return True
    try:
        subprocess.run(["true"], preexec_fn=drop_root_file_access, check=True)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def call_main(
    main: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str], *args: str | Path
) -> Outcome:
    """An entry point's ``main(argv)`` in this process (argparse's exit 2 included)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse rejects a flag
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_user_error(outcome: Outcome, *needles: str) -> str:
    """Exit 2, one line on stderr, no traceback, and every needle in that line; returns it."""
    assert outcome.code == 2, f"exit {outcome.code}\nstdout: {outcome.out}\nstderr: {outcome.err}"
    assert "Traceback" not in outcome.err and "Traceback" not in outcome.out, outcome.err
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{outcome.err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    return lines[0]


def assert_no_files(folder: Path) -> None:
    """Nothing (not even a temporary or partial file) was left in ``folder``."""
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
    assert not left, f"files left in {folder}: {left}"


def command(name: str) -> Callable[[Sequence[str]], int]:
    """The ``main(argv)`` of ``python -m cxr_tune.<name>`` (one error policy for all)."""
    from cxr_tune.cli import run_command

    return lambda argv: run_command(name, argv)


@pytest.fixture(scope="session")
def preloaded() -> None:
    """torch and Ray imported once, before the tests that reach them: their import time
    (seconds) is set-up, not the test's own time."""
    import ray  # noqa: F401
    import torch  # noqa: F401

    import cxr_tune.models  # noqa: F401


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache folder of the test's own (created by whoever writes to it)."""
    return tmp_path / "cache"

"""The package as users install it: a wheel (not editable) carries the named spaces and runs.

The slow test builds the wheel from a copy of the repository, installs it into a fresh virtual
environment that borrows the test environment's third-party packages (torch, Ray: nothing is
downloaded) but not its cxr_tune, and runs a smoke search from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_tune.spaces import available_spaces, spaces_dir
from tests.conftest import repo_root

# What a wheel is built from (tests, scripts and dotfiles are not part of it).
SOURCES = ("pyproject.toml", "README.md", "cxr_tune", "search_spaces")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    with open(repo_root() / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def test_pyproject_lists_every_package_folder() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(repo_root()).parts)
        for init in (repo_root() / "cxr_tune").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = set(setuptools["packages"])
    assert on_disk <= listed, f"package folders missing from pyproject.toml: {on_disk - listed}"
    assert setuptools["package-dir"] == {"cxr_tune.search_spaces": "search_spaces"}
    assert setuptools["package-data"]["cxr_tune.search_spaces"] == ["*.yaml"]


def test_spaces_dir_is_the_checkouts_search_spaces_folder() -> None:
    assert spaces_dir() == repo_root() / "search_spaces"
    assert {"ablation", "smoke", "paper"} <= set(available_spaces())


@pytest.fixture(scope="module")
def installed_wheel() -> Iterator[tuple[Path, Path]]:
    """(python of a fresh venv with the wheel installed, a work folder outside the repo)."""
    pytest.importorskip("build")
    base = Path(tempfile.mkdtemp(prefix="cxrw", dir="/tmp"))
    try:
        source = base / "src"
        source.mkdir()
        for name in SOURCES:
            copy = shutil.copytree if (repo_root() / name).is_dir() else shutil.copy2
            copy(repo_root() / name, source / name)
        # --no-isolation: build with this environment's setuptools instead of downloading one.
        built = _run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(base / "dist")],
            cwd=source,
        )
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        wheel = next((base / "dist").glob("cxr_tune-*.whl"))
        venv = base / "venv"
        made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
        assert made.returncode == 0, made.stderr
        python = venv / "bin" / "python"
        # The venv borrows third-party packages through a .pth line (a plain path: the
        # editable cxr_tune that this environment's own .pth files install is not loaded).
        site = Path(
            subprocess.check_output(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                text=True,
            ).strip()
        )
        borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
        (site / "borrowed.pth").write_text("".join(f"{p}\n" for p in sorted(borrowed)))
        installed = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "--no-deps",
                "--no-index",
                str(wheel),
            ],
            cwd=base,
        )
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        work = base / "elsewhere"
        work.mkdir()
        yield python, work
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CXR_TUNE_SPACES")}
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.mark.integration
@pytest.mark.slow
def test_wheel_runs_named_spaces_from_another_folder(installed_wheel: tuple[Path, Path]) -> None:
    python, work = installed_wheel
    where = _run([str(python), "-c", "import cxr_tune; print(cxr_tune.__file__)"], cwd=work)
    assert where.returncode == 0, where.stderr
    assert str(repo_root()) not in where.stdout, f"imported from the checkout: {where.stdout}"
    assert "/venv/lib/" in where.stdout

    planned = _run([str(python), "-m", "cxr_tune.search", "--space", "ablation", "--dry-run"], work)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert '"cell": "phantom/alexnet"' in planned.stdout

    env = {
        "CXR_TUNE_CACHE": str(work / "cache"),
        "CXR_TUNE_SCRATCH": str(work / "scratch"),
        "RAY_TMPDIR": str(work / "ray"),
    }
    command = [str(python), "-m", "cxr_tune.search", "--space", "smoke", "--profile", "smoke"]
    searched = _run([*command, "--storage", str(work / "results")], work, env=env)
    assert searched.returncode == 0, searched.stdout[-3000:] + searched.stderr[-3000:]
    reports = list((work / "results").glob("smoke-smoke-*/report.md"))
    assert len(reports) == 1, searched.stdout[-2000:]
    assert "trials: " in searched.stdout and "Traceback" not in searched.stderr
    # The default search scores site B as an external set, through the label map the wheel ships.
    report = reports[0].read_text()
    assert "## Generalisation" in report and "`phantom_b`" in report

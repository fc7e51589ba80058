"""A report rewritten onto a disk that fills up: the command fails with one line, and what is
on disk is the old report or whole new files, never half of one, and no temporary file."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cxr_tune.report import write_report
from tests.conftest import repo_root
from tests.report.builders import ablation_evaluation, ablation_trials, write_experiment


@pytest.mark.slow  # two reports with plots, one in a fresh interpreter
def test_report_rewrite_on_a_full_disk_keeps_whole_files(tmp_path: Path) -> None:
    experiment = write_experiment(
        tmp_path / "exp", ablation_trials(), evaluation=ablation_evaluation()
    )
    write_report(experiment)
    old_html = (experiment / "report.html").read_bytes()
    md_size = (experiment / "report.md").stat().st_size
    assert md_size * 2 < len(old_html)  # plots are embedded in the HTML only
    limit = (md_size + len(old_html)) // 2

    def small_disk() -> None:  # no file may grow beyond `limit`: the HTML cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "cxr_tune.report", str(experiment)],
        capture_output=True, text=True, cwd=repo_root(), preexec_fn=small_disk, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the report" in lines[0], done.stderr
    assert "File too large" in lines[0]
    assert not [p for p in experiment.rglob("*") if p.name.endswith(".tmp")]
    assert (experiment / "report.html").read_bytes() == old_html
    for png in (experiment / "plots").glob("*.png"):
        with Image.open(png) as image:
            image.verify()  # a whole PNG
    for name in re.findall(r"\(plots/([^)]+\.png)\)", (experiment / "report.md").read_text()):
        assert (experiment / "plots" / name).is_file(), name

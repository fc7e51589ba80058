"""--storage s3://...: a real search against a local S3-compatible server (moto).

Ray, the search and the report all reach it through pyarrow's S3 filesystem, pointed at the
server with AWS_ENDPOINT_URL, as they would reach AWS S3 with real credentials.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_tune.storage import Storage

pytestmark = pytest.mark.integration

BUCKET = "cxr-tune-test"


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with one bucket; the environment that points at it."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        server.stop()


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_search_on_s3_keeps_everything_in_the_bucket(s3_env: dict[str, str], tmp_path: Path):
    root = f"s3://{BUCKET}/results"
    common = ("--space", "smoke", "--profile", "smoke", "--storage", root, "--name", "s3run")
    result = run_cli("cxr_tune.search", *common, "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"report: {root}/s3run/report.md" in result.stdout

    files = Storage.parse(root).list_files("s3run")
    for name in ("cxr_tune.json", "optuna.db", "evaluation.json", "report.md", "report.html"):
        assert name in files, f"{name} not in the bucket: {files}"
    trials = {path.split("/")[0] for path in files if path.endswith("/result.json")}
    assert len(trials) == 2
    checkpoints = [path for path in files if "/checkpoint_" in path]
    assert checkpoints and all(path.split("/")[0] in trials for path in checkpoints)
    assert not [path for path in files if path.startswith("copy/")]

    # Any machine can report from the bucket, and nobody can overwrite the experiment.
    out = tmp_path / "report"
    report = run_cli("cxr_tune.report", f"{root}/s3run", "--out", str(out), timeout=120)
    assert report.returncode == 0, report.stderr
    assert (out / "report.md").is_file()
    again = run_cli("cxr_tune.search", *common, timeout=120)
    assert again.returncode == 2
    assert "already exists" in again.stderr

    # The experiment in the bucket is scored on a cohort that was not searched, from any machine:
    # the new evaluation and report go back into the bucket.
    evaluated = run_cli(
        "cxr_tune.evaluate",
        f"{root}/s3run",
        *("--external", "phantom_marker", "--cache-dir", str(tmp_path / "cache")),
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    assert f"report: {root}/s3run/report.md" in evaluated.stdout
    evaluation = json.loads(Storage.parse(root).read_text("s3run", "evaluation.json"))
    assert [s["name"] for s in evaluation["external_sets"]] == ["phantom_b", "phantom_marker"]
    assert {row["test"] for row in evaluation["transfer"]} == {"phantom_b", "phantom_marker"}
    assert "phantom_marker" in Storage.parse(root).read_text("s3run", "report.md")


def test_unreachable_bucket_is_a_config_error(s3_env: dict[str, str]) -> None:
    result = run_cli(
        "cxr_tune.search",
        *("--space", "smoke", "--profile", "smoke", "--storage", "s3://no-such-bucket/x"),
        *("--name", "a", "--resume"),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

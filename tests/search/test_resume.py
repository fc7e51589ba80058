"""A killed driver resumes with --resume: finished trials stay finished, the Optuna study whole.

The driver runs as its own process, joined to a Ray cluster that outlives it (as on a real
cluster, where the head keeps running when the search driver dies).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cxr_tune.spaces import spaces_dir
from tests.search.conftest import read_results, trial_folders

pytestmark = pytest.mark.integration

NAME = "killed"
SAMPLES = 4
EPOCHS = 3
EPOCH_LINE = re.compile(r" (\w+) \([^)]*\) epoch (\d+)/\d+ ")


def reported_epochs(log: str) -> dict[str, list[int]]:
    """Trial id -> the epochs the driver's progress lines reported, in order."""
    found: dict[str, list[int]] = {}
    for match in EPOCH_LINE.finditer(log):
        found.setdefault(match.group(1), []).append(int(match.group(2)))
    return found


def every_epoch_space(folder: Path) -> Path:
    """The smoke space, checkpointing after every epoch (the smoke profile keeps the final
    checkpoint only): what a resumed trial restarts from."""
    text = (spaces_dir() / "smoke.yaml").read_text()
    assert "  epochs: 2\n" in text
    path = folder / "smoke_every_epoch.yaml"
    path.write_text(text.replace("  epochs: 2\n", "  epochs: 2\n  checkpoint_every: 1\n"))
    return path


def search_command(storage: Path, address: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cxr_tune.search",
        "--space",
        str(every_epoch_space(storage.parent)),
        "--profile",
        "smoke",
        "--storage",
        str(storage),
        "--name",
        NAME,
        "--num-samples",
        str(SAMPLES),
        # Three epochs: a trial killed mid-way that restarted from scratch instead of from its
        # last checkpoint would train an epoch it had reported again.
        "--epochs",
        str(EPOCHS),
        "--max-concurrent",
        "2",
        "--no-eval",
        "--address",
        address,
        *extra,
    ]


def ended(results: list[dict[str, Any]]) -> bool:
    return bool(results) and bool(results[-1].get("done"))


def wait_for_ended_trials(experiment: Path, driver: subprocess.Popen, count: int) -> None:
    """Until the Optuna study (the durable record of ended trials) has ``count`` of them."""
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail(f"the search ended (exit {driver.returncode}) before it could be killed")
        if len(ended_in_study(experiment / "optuna.db")) >= count:
            return
        time.sleep(0.2)
    pytest.fail("no trial ended within 150 s")


def ended_in_study(db: Path) -> set[str]:
    if not db.is_file():
        return set()
    try:
        return {r[3] for r in study_rows(db) if r[2] in ("COMPLETE", "PRUNED") and r[3]}
    except sqlite3.Error:  # the driver is writing it
        return set()


def study_rows(db: Path) -> list[tuple[str, int, str, str | None]]:
    """(study name, trial number, state, Ray trial id) of every Optuna trial."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            """
            SELECT s.study_name, t.number, t.state,
                   (SELECT json_extract(a.value_json, '$') FROM trial_user_attributes a
                     WHERE a.trial_id = t.trial_id AND a.key = 'ray_trial_id')
            FROM trials t JOIN studies s ON s.study_id = t.study_id
            ORDER BY s.study_name, t.number
            """
        ).fetchall()


def test_resume_after_driver_killed_repeats_no_finished_trial(
    ray_cluster: Any, short_tmp: Path
) -> None:
    storage = short_tmp / "results"
    experiment = storage / NAME
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (short_tmp / "first.log").open("w")
    driver = subprocess.Popen(
        search_command(storage, ray_cluster.address),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Killed at once: the saved experiment state may not know yet that the trial ended,
        # which --resume must handle (the Optuna study knows).
        wait_for_ended_trials(experiment, driver, count=1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        log.close()
    # What had ended is what the study says: result.json files on the storage lag behind the
    # driver's own copy by up to one sync, and the killed driver never syncs again.
    finished_before = ended_in_study(experiment / "optuna.db")
    assert finished_before, "no trial had ended when the driver was killed"
    assert len(finished_before) < SAMPLES, "every trial ended before the kill; nothing to resume"
    rows_before = study_rows(experiment / "optuna.db")

    resumed = subprocess.run(
        search_command(storage, ray_cluster.address, "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # A trial Tune created just before the kill, after its last saved state, never trained
    # (its folder holds no result) and is replaced; every trial that trained is counted once.
    after = {f.name: r for f in trial_folders(experiment) if (r := read_results(f))}
    assert len(after) == SAMPLES, f"expected {SAMPLES} trials, found {sorted(after)}"
    trained_again = [
        line
        for line in resumed.stdout.splitlines()
        if re.search(r" epoch \d+/\d+ ", line)
        and any(f" {trial_id} " in line for trial_id in finished_before)
    ]
    assert not trained_again, "trials that had ended trained again:\n" + "\n".join(trained_again)
    for name, results in after.items():
        assert ended(results), f"{name} did not end"
        epochs = [r["epoch"] for r in results]
        assert epochs[0] == 1 and epochs == sorted(epochs), f"{name}: epochs {epochs}"
        if name.rsplit("-", 1)[-1] in finished_before:
            assert len(set(epochs)) == len(epochs), f"{name} ended before the kill: {epochs}"

    # At most the running epochs are lost: a trial trains again at most the one epoch it was
    # on when the driver died (whose checkpoint the saved state may not list yet), never
    # epochs before it.
    before_kill = reported_epochs((short_tmp / "first.log").read_text())
    after_resume = reported_epochs(resumed.stdout)
    for trial_id, epochs in after_resume.items():
        again = sorted(set(epochs) & set(before_kill.get(trial_id, [])))
        assert again in ([], [max(before_kill.get(trial_id, [0]))]), (
            f"{trial_id} trained epochs {again} again (before the kill: "
            f"{before_kill.get(trial_id)}, after: {epochs})"
        )
    running = [t for t, e in before_kill.items() if t not in finished_before]
    redone = sum(len(set(e) & set(before_kill.get(t, []))) for t, e in after_resume.items())
    assert redone <= len(running), f"{redone} epochs trained again, {len(running)} were running"

    rows = study_rows(experiment / "optuna.db")
    assert not [r for r in rows if r[2] == "RUNNING"], "Optuna trials left RUNNING"
    kept = {(r[0], r[1]) for r in rows}
    assert {(r[0], r[1]) for r in rows_before} <= kept, "Optuna trials lost on resume"
    told = [r[3] for r in rows if r[2] in ("COMPLETE", "PRUNED")]
    assert sorted(told) == sorted({f.rsplit("-", 1)[-1] for f in after}), (
        "each Tune trial must be in the study once as COMPLETE or PRUNED"
    )


def test_second_search_with_existing_name_refuses(tmp_path: Path) -> None:
    (tmp_path / NAME).mkdir()
    command = search_command(tmp_path, "127.0.0.1:1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "already exists" in lines[0] and "--resume" in lines[0]


def test_resume_of_unknown_experiment_refuses(tmp_path: Path) -> None:
    command = search_command(tmp_path, "127.0.0.1:1", "--resume")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no experiment to resume" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ended_trial_ids_come_from_the_study(tmp_path: Path) -> None:
    import optuna

    from cxr_tune.search.scheduler import ended_trial_ids

    db = tmp_path / "optuna.db"
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="phantom/alexnet")
    for ray_id, state in (("a1", "complete"), ("b2", "pruned"), ("c3", "running")):
        trial = study.ask()
        trial.set_user_attr("ray_trial_id", ray_id)
        if state == "complete":
            study.tell(trial, 0.5)
        elif state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert ended_trial_ids(str(db)) == {"a1", "b2"}
    assert ended_trial_ids(str(tmp_path / "missing.db")) == set()

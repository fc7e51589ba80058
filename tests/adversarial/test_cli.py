"""Bad command lines of ``search``, ``report`` and ``evaluate``: exit 2 and one line, before any
work starts and without touching what is already there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adversarial.conftest import (
    assert_no_files,
    assert_user_error,
    call_main,
    command,
    run_module,
)
from tests.data.builders import save_image
from tests.report.builders import ablation_trials, write_experiment

pytestmark = pytest.mark.usefixtures("preloaded")
search_main, report_main, evaluate_main = command("search"), command("report"), command("evaluate")


def search(capsys, tmp_path: Path, *args: str | Path) -> object:
    """A smoke search into ``tmp_path/results`` (stops at the error, before Ray starts)."""
    storage = tmp_path / "results"
    return call_main(
        search_main, capsys, "--space", "smoke", "--profile", "smoke", "--storage", storage, *args
    )


# --- search -------------------------------------------------------------------------------------


def test_data_folder_that_does_not_exist(capsys, tmp_path: Path) -> None:
    outcome = search(capsys, tmp_path, "--data", tmp_path / "nowhere")
    assert_user_error(outcome, f"--data: the folder '{tmp_path / 'nowhere'}' does not exist.")
    assert_no_files(tmp_path / "results")


def test_data_that_is_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "archive.zip").write_bytes(b"PK\x03\x04")
    outcome = search(capsys, tmp_path, "--data", tmp_path / "archive.zip")
    assert_user_error(outcome, "is not a folder; give a dataset's root folder")
    assert_no_files(tmp_path / "results")


def test_data_with_an_unknown_key(capsys, tmp_path: Path) -> None:
    outcome = search(capsys, tmp_path, "--data", f"covid_chestxrays={tmp_path}")
    assert_user_error(
        outcome, "Unknown dataset 'covid_chestxrays'", "Did you mean 'covid_chestxray'?"
    )


def test_data_folder_that_holds_no_dataset(capsys, tmp_path: Path) -> None:
    save_image(tmp_path / "photos" / "holiday.png", 1)
    outcome = search(capsys, tmp_path, "--data", tmp_path / "photos", "--dry-run")
    assert_user_error(outcome, "is not a dataset layout", "KEY=PATH")


def test_resume_of_an_unknown_experiment(capsys, tmp_path: Path) -> None:
    outcome = search(capsys, tmp_path, "--resume", "--name", "never-ran")
    assert_user_error(outcome, "--resume: there is no experiment to resume at", "never-ran")
    assert_no_files(tmp_path / "results")


def test_resume_without_any_experiment_of_the_space(capsys, tmp_path: Path) -> None:
    outcome = search(capsys, tmp_path, "--resume")
    assert_user_error(outcome, "--resume: no experiment of space 'smoke' under", "give --name")


def test_name_clashing_with_an_existing_experiment(capsys, tmp_path: Path) -> None:
    existing = write_experiment(tmp_path / "results" / "mine", ablation_trials())
    before = {p: p.stat().st_mtime_ns for p in existing.rglob("*")}
    outcome = search(capsys, tmp_path, "--name", "mine")
    assert_user_error(outcome, f"--name: the experiment '{existing}' already exists", "--resume")
    assert {p: p.stat().st_mtime_ns for p in existing.rglob("*")} == before


@pytest.mark.parametrize("damage", [b'{"name": "mine", "datas', b"[1, 2]", b"\xff\xfe"])
def test_resume_of_an_experiment_whose_record_is_damaged(capsys, tmp_path: Path, damage) -> None:
    existing = write_experiment(tmp_path / "results" / "mine", ablation_trials())
    (existing / "cxr_tune.json").write_bytes(damage)
    outcome = search(capsys, tmp_path, "--resume", "--name", "mine")
    assert_user_error(outcome, "--resume:", "cxr_tune.json' is damaged", "another --name")
    assert (existing / "cxr_tune.json").read_bytes() == damage


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden"])
def test_name_that_is_not_a_plain_folder_name(capsys, tmp_path: Path, name: str) -> None:
    outcome = search(capsys, tmp_path, "--name", name)
    assert_user_error(outcome, f"--name: '{name}' must be a plain folder name.")


def test_storage_that_is_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "results.txt").write_text("not a folder")
    outcome = call_main(
        search_main, capsys, "--space", "smoke", "--profile", "smoke",
        "--storage", tmp_path / "results.txt", "--name", "x",
    )  # fmt: skip
    assert_user_error(outcome, "--storage:", "is a file")


def test_ray_temp_dir_too_long_for_its_sockets(capsys, tmp_path: Path, monkeypatch) -> None:
    import ray

    if ray.is_initialized():  # another test's: the search would join it instead of starting one
        ray.shutdown()
    long = tmp_path / ("x" * 60)
    monkeypatch.setenv("RAY_TMPDIR", str(long))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    outcome = search(capsys, tmp_path, "--name", "long")
    assert_user_error(outcome, "RAY_TMPDIR:", "characters, but a local Ray needs", "/tmp/ray-$USER")
    assert_no_files(long)


@pytest.mark.slow  # a fresh interpreter imports torch and Ray: ~10 s
def test_search_error_exits_2_in_a_real_process(tmp_path: Path) -> None:
    outcome = run_module(
        "cxr_tune.search", "--space", "smoke", "--profile", "smoke",
        "--storage", tmp_path, "--resume", "--name", "never-ran",
    )  # fmt: skip
    assert_user_error(outcome, "--resume: there is no experiment to resume at")


# --- report -------------------------------------------------------------------------------------


def test_report_on_a_folder_that_is_not_an_experiment(capsys, tmp_path: Path) -> None:
    save_image(tmp_path / "photos" / "holiday.png", 1)
    outcome = call_main(report_main, capsys, tmp_path / "photos")
    assert_user_error(outcome, "is not a cxr_tune experiment")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["holiday.png"]


def test_report_on_a_file_or_nothing(capsys, tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text("# old")
    assert_user_error(call_main(report_main, capsys, tmp_path / "report.md"), "is a file")
    assert_user_error(call_main(report_main, capsys, tmp_path / "gone"), "does not exist")


def test_report_out_that_is_a_file(capsys, tmp_path: Path) -> None:
    experiment = write_experiment(tmp_path / "exp", ablation_trials())
    (tmp_path / "taken").write_text("x")
    outcome = call_main(report_main, capsys, experiment, "--out", tmp_path / "taken")
    assert_user_error(outcome, f"cannot write the report to '{tmp_path / 'taken'}'")


def test_report_exits_2_in_a_real_process(tmp_path: Path) -> None:
    assert_user_error(run_module("cxr_tune.report", tmp_path), "is not a cxr_tune experiment")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: (e / "cxr_tune.json").write_text('{"name": '), "cxr_tune.json is not valid"),
        (lambda e: (e / "cxr_tune.json").write_text("[1, 2]"), "cxr_tune.json is not a JSON"),
        (lambda e: (e / "cxr_tune.json").write_bytes(b"\xff\xfe\x00"), "cxr_tune.json is not"),
        (lambda e: (e / "evaluation.json").write_text("[]"), "evaluation.json is not a JSON"),
        (lambda e: (e / "optuna.db").write_text("not sqlite"), None),
        (lambda e: _first_trial(e, "result.json", b'\xff\xfe\n{"epoch": "x"}\n[3]\n'), "line 3"),
        (lambda e: _first_trial(e, "params.json", b"nope"), "params.json is not valid JSON"),
    ],
    ids=[
        "record cut short",
        "record not an object",
        "record binary",
        "evaluation not an object",
        "study not sqlite",
        "results garbled",
        "params garbled",
    ],
)
def test_report_of_a_damaged_experiment_lists_the_damage(
    capsys, tmp_path: Path, damage, problem: str | None
) -> None:
    experiment = write_experiment(tmp_path / "exp", ablation_trials())
    damage(experiment)
    outcome = call_main(report_main, capsys, experiment)
    assert outcome.code == 0, outcome.err
    assert "Traceback" not in outcome.err
    report = (experiment / "report.md").read_text()
    if problem is not None:
        assert problem in report


def _first_trial(experiment: Path, name: str, content: bytes) -> None:
    folder = sorted(p for p in experiment.iterdir() if (p / "params.json").is_file())[0]
    (folder / name).write_bytes(content)


# --- evaluate -----------------------------------------------------------------------------------


def test_evaluate_on_a_folder_that_is_not_an_experiment(capsys, tmp_path: Path) -> None:
    outcome = call_main(evaluate_main, capsys, tmp_path)
    assert_user_error(outcome, "is not a cxr_tune experiment")
    assert_user_error(call_main(evaluate_main, capsys, tmp_path / "gone"), "does not exist")


def test_evaluate_with_no_seeds(capsys, tmp_path: Path) -> None:
    experiment = write_experiment(tmp_path / "exp", ablation_trials())
    outcome = call_main(evaluate_main, capsys, experiment, "--seeds", "0")
    assert_user_error(outcome, "--seeds: the value is 0, but must be >= 1.")
    assert not (experiment / "evaluation.json").exists()


def test_evaluate_exits_2_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({}))
    assert_user_error(run_module("cxr_tune.evaluate", tmp_path / "x.json"), "is a file")


# --- a dry run checks what the search checks before its first trial ------------------------


def test_dry_run_refuses_a_label_map_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    label_map = tmp_path / "maps.yaml"
    label_map.write_bytes(b"datasets:\n  phantom: {classes: {Normal: \xff\xfe}}\n")
    outcome = search(capsys, tmp_path, "--label-map", label_map, "--dry-run")
    assert_user_error(outcome, f"The label-map file '{label_map}' is not UTF-8 text")
    assert_no_files(tmp_path / "results")


def test_dry_run_refuses_a_label_map_naming_a_class_the_data_lacks(capsys, tmp_path: Path) -> None:
    label_map = tmp_path / "maps.yaml"
    label_map.write_text("datasets:\n  phantom:\n    classes:\n      Normall: normal\n")
    outcome = search(
        capsys, tmp_path, "--label-map", label_map, "--cache-dir", tmp_path / "c", "--dry-run"
    )
    assert_user_error(outcome, "has no class 'Normall'", "Did you mean 'Normal'?")
    assert_no_files(tmp_path / "results")


@pytest.mark.slow  # decodes a miniature dataset twice
def test_dry_run_refuses_the_data_that_data_inspect_refuses(capsys, tmp_path: Path) -> None:
    from tests.data.builders import build_nih_chestxray14

    root = build_nih_chestxray14(tmp_path / "nih").root
    cache = tmp_path / "cache"
    # Too few positives per split for any label: both commands refuse, the same way; the
    # option the message names can be set on both.
    options = ("--cache-dir", cache, "--min-label-positives", "100")
    inspected = call_main(command("data"), capsys, "inspect", root, *options)
    line = assert_user_error(inspected, "leaves no label with at least 100 positive images")
    assert "--min-label-positives" in line
    planned = search(capsys, tmp_path, "--data", root, *options, "--dry-run")
    # The same message, apart from the command's name in front.
    assert assert_user_error(planned).split(": error: ")[1] == line.split(": error: ")[1]
    # With the default the same folder plans, and says what it read.
    planned = search(capsys, tmp_path, "--data", root, "--cache-dir", cache, "--dry-run")
    assert planned.code == 0, planned.err
    assert "data: archive: 3 classes (multilabel)" in planned.err
    plan = [json.loads(line) for line in planned.out.splitlines() if line.startswith("{")]
    # Named after its folder (the Kaggle archive's), as people name it.
    assert [cell["cell"] for cell in plan] == ["archive/alexnet"]


@pytest.mark.slow  # reads two miniature folders' class names
def test_datasets_are_named_after_their_folders_or_as_told(capsys, tmp_path: Path) -> None:
    for folder in ("itu4", "other/itu4"):
        for name in ("covid", "normal"):
            for k in range(16):
                save_image(tmp_path / folder / name / f"{name}{k}.png", 100 * k + len(folder))
    data = ("--data", tmp_path / "itu4", "--data", tmp_path / "other" / "itu4")
    common = ("--cache-dir", tmp_path / "cache", "--dry-run", "--num-samples", "1")

    def cells(outcome) -> list[str]:
        assert outcome.code == 0, outcome.err
        return [json.loads(line)["cell"] for line in outcome.out.splitlines() if line[:1] == "{"]

    assert cells(search(capsys, tmp_path, *data, *common)) == ["itu4/alexnet", "itu4_2/alexnet"]
    named = search(capsys, tmp_path, *data, "--data-name", "site1", *common)
    assert cells(named) == ["site1/alexnet", "itu4/alexnet"]
    # A label-map file names a dataset by that name.
    label_map = tmp_path / "maps.yaml"
    label_map.write_text("datasets:\n  site1:\n    classes:\n      Covid: covid\n")
    refused = search(capsys, tmp_path, *data, "--data-name", "site1", "--label-map", label_map)
    assert_user_error(refused, "the dataset 'site1' has no class 'Covid'")
    bad = search(capsys, tmp_path, *data, "--data-name", "a b", *common)
    assert_user_error(bad, "--data-name: 'a b' is not a usable name")
    many = search(capsys, tmp_path, "--data", tmp_path / "itu4", *("--data-name", "x") * 2)
    assert_user_error(many, "--data-name: 2 names for 1 datasets")

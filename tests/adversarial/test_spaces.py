"""Bad search-space files and flags fed to ``python -m cxr_tune.search --dry-run``: exit 2 and
one line naming the file, the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.conftest import assert_user_error, call_main, command, run_module

pytestmark = pytest.mark.usefixtures("preloaded")
search_main = command("search")

# (space text, what the one line must say). {path} is the space file.
BAD_SPACES = {
    "invalid YAML": ("params: {lr: [1e-5,\n", ["{path}: not valid YAML"]),
    "empty file": ("", ["{path}: the file is empty", "`params` or `cells`"]),
    "only comments": ("# lr: {loguniform: [1e-5, 1e-1]}\n", ["{path}: the file is empty"]),
    "not a mapping": ("- lr\n- batch_size\n", ["{path}: top level: expected a mapping"]),
    "unknown top-level key": (
        "parms: {lr: {loguniform: [1e-5, 1e-1]}}",
        ["{path}: parms: unknown key", "Did you mean 'params'?", "Allowed: name"],
    ),
    "unknown hyperparameter": (
        "params: {learning_rate: {loguniform: [1e-5, 1e-1]}}",
        ["{path}: params.learning_rate: unknown hyperparameter", "Allowed:"],
    ),
    "unknown domain": (
        "params: {lr: {log_uniform: [1e-5, 1e-1]}}",
        ["{path}: params.lr.log_uniform: unknown key", "Did you mean 'loguniform'?"],
    ),
    "wrong type (string lr)": (
        "fixed: {lr: fast}",
        ["{path}: fixed.lr: the value is 'fast', but `lr` takes a float"],
    ),
    "wrong type (float batch size)": (
        "params: {batch_size: {choice: [16, 32.5]}}",
        ["{path}: params.batch_size.choice[1]: the value is 32.5, but `batch_size` takes an int"],
    ),
    "wrong type (bound)": (
        "params: {lr: {loguniform: [small, 1e-1]}}",
        ["{path}: params.lr.loguniform[0]: the value is 'small', but must be a finite number"],
    ),
    "lr = 0": ("fixed: {lr: 0}", ["{path}: fixed.lr", "is 0.0, but must be a number > 0"]),
    "lr < 0 in a range": (
        "params: {lr: {uniform: [-0.1, 0.1]}}",
        ["{path}: params.lr.uniform[0]", "-0.1, but must be a number > 0"],
    ),
    "log range through 0": (
        "params: {lr: {loguniform: [0, 1e-1]}}",
        ["{path}: params.lr.loguniform: a log scale needs low > 0, got 0"],
    ),
    "infinite lr": (
        "params: {lr: {loguniform: [1e-5, .inf]}}",
        ["{path}: params.lr.loguniform[1]: the value is inf, but must be a finite number"],
    ),
    "empty choice": (
        "params: {optimizer: {choice: []}}",
        ["{path}: params.optimizer.choice: expected a non-empty list of values"],
    ),
    "low = high": (
        "params: {lr: {loguniform: [1e-3, 1e-3]}}",
        ["{path}: params.lr.loguniform: low (0.001) must be < high (0.001)"],
    ),
    "low > high": (
        "params: {lr: {loguniform: [1e-1, 1e-5]}}",
        ["{path}: params.lr.loguniform: low (0.1) must be < high (1e-05)"],
    ),
    "unknown model": (
        "cells: {model: [alexnet, resnet5]}",
        ["{path}: cells.model: Unknown model 'resnet5'", "Did you mean 'resnet50'?"],
    ),
    "unknown optimizer": (
        "params: {optimizer: {choice: [adam, sdg]}}",
        ["{path}: params.optimizer.choice: Unknown optimizer 'sdg'", "Available: adam"],
    ),
    "dataset set in the space": (
        "fixed: {dataset: covid}",
        ["{path}: fixed.dataset: is set by the search itself", "--data"],
    ),
    "negative epochs": (
        "fixed: {epochs: -3}",
        ["{path}: fixed.epochs", "-3, but must be an integer >= 1"],
    ),
}


def write_space(folder: Path, text: str, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_is_one_line_naming_file_key_and_what_is_allowed(
    capsys, tmp_path: Path, case: str
) -> None:
    text, needles = BAD_SPACES[case]
    path = write_space(tmp_path, text)
    outcome = call_main(search_main, capsys, "--space", path, "--dry-run")
    assert_user_error(outcome, *(n.format(path=path) for n in needles))


def test_space_that_is_not_utf8_text(capsys, tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(b"name: caf\xe9\nparams: {}\n")
    outcome = call_main(search_main, capsys, "--space", path, "--dry-run")
    assert_user_error(outcome, f"{path}: not UTF-8 text")


def test_space_that_runs_code_is_refused(capsys, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_space(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    outcome = call_main(search_main, capsys, "--space", path, "--dry-run")
    assert_user_error(outcome, f"{path}: not valid YAML")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--space", "ablaton"], ["--space: Unknown space 'ablaton'", "Did you mean 'ablation'?"]),
        (["--space", "missing/space.yaml"], ["--space: the file 'missing/space.yaml' does not"]),
        (["--num-samples", "0"], ["--num-samples: the value is 0, but must be >= 1"]),
        (["--epochs", "0"], ["--epochs: the value is 0, but must be >= 1"]),
        (["--image-size", "10"], ["--image-size: the value is 10, but must be >= 32"]),
        (["--image-size", "40"], ["`image_size` is 40, but alexnet needs at least 63 px"]),
        (["--seed", "-1"], ["--seed: the value is -1, but must be >= 0"]),
        (["--max-concurrent", "-2"], ["--max-concurrent: the value is -2, but must be >= 1"]),
        (["--profile", "gpus"], ["argument --profile: invalid choice: 'gpus'"]),
        (["--epochs", "three"], ["argument --epochs: invalid int value: 'three'"]),
    ],
)
def test_bad_flag_is_one_line(capsys, args: list[str], needles: list[str]) -> None:
    outcome = call_main(search_main, capsys, "--space", "smoke", *args, "--dry-run")
    # argparse prints its usage before the message: the message is the last line.
    if "argument" in needles[0]:
        assert outcome.code == 2 and "Traceback" not in outcome.err
        assert needles[0] in outcome.err.strip().splitlines()[-1]
        return
    assert_user_error(outcome, *needles)


@pytest.mark.slow  # a fresh interpreter imports torch and Ray: ~10 s
def test_bad_space_exits_2_in_a_real_process(tmp_path: Path) -> None:
    path = write_space(tmp_path, "params: {lr: {loguniform: [1e-1, 1e-5]}}")
    outcome = run_module("cxr_tune.search", "--space", path, "--dry-run")
    assert_user_error(outcome, f"{path}: params.lr.loguniform: low (0.1) must be < high")


def test_lr_written_the_usual_way_is_a_number(capsys, tmp_path: Path) -> None:
    path = write_space(
        tmp_path, "cells: {model: [alexnet]}\nparams: {lr: {loguniform: [1e-5, 1e-1]}}"
    )
    outcome = call_main(search_main, capsys, "--space", path, "--profile", "cpu", "--dry-run")
    assert outcome.code == 0, outcome.err
    assert '"range": [1e-05, 0.1]' in outcome.out

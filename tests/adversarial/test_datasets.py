"""Bad dataset folders fed to ``data inspect`` and ``data prepare``: exit 2 with one line naming
the folder and what is expected, or (for damage a real download has) exit 0 with the damaged
part skipped and listed. Never a traceback, never a partial cache."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from cxr_tune.data.cache import read_manifest
from cxr_tune.data.layouts import covid_chestxray as d3
from tests.adversarial.conftest import (
    Outcome,
    assert_no_files,
    assert_user_error,
    call_main,
    command,
    run_module,
)
from tests.data import builders
from tests.data.builders import save_image

data_main = command("data")

COMMANDS = ("inspect", "prepare")


def data(capsys: pytest.CaptureFixture[str], cache: Path, *args: str | Path) -> Outcome:
    return call_main(data_main, capsys, *args, "--image-size", "32", "--cache-dir", cache)


def summary(capsys: pytest.CaptureFixture[str], cache: Path, root: str | Path) -> dict:
    outcome = data(capsys, cache, "inspect", root, "--json")
    assert outcome.code == 0, outcome.err
    return json.loads(outcome.out)


def image_folder(root: Path, classes: Sequence[str], per_class: int = 10) -> Path:
    for c, name in enumerate(classes):
        for k in range(per_class):
            save_image(root / name / f"{k}.png", 1000 * c + k)
    return root


@pytest.fixture(scope="module")
def chestxray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A covid-chestxray-dataset miniature (Latin-1 CSV, a duplicated row, a missing file)."""
    return builders.build_covid_chestxray(tmp_path_factory.mktemp("d3")).dataset_root


def copy_with_csv(source: Path, target: Path, text: str, *, encoding: str = "utf-8") -> Path:
    shutil.copytree(source, target)
    (target / "metadata.csv").write_bytes(text.encode(encoding))
    return target


def csv_text(root: Path) -> str:
    return (root / "metadata.csv").read_bytes().decode("latin-1")


# --- folders that are not a dataset: exit 2 ---------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_empty_root_is_not_a_dataset(capsys, tmp_path: Path, cache: Path, command: str) -> None:
    (tmp_path / "empty").mkdir()
    assert_user_error(
        data(capsys, cache, command, tmp_path / "empty"),
        f"'{tmp_path / 'empty'}' is not a dataset layout",
        "expected one of",
        "KEY=PATH",
    )
    assert_no_files(cache)


def test_one_class_only_is_refused(capsys, tmp_path: Path, cache: Path) -> None:
    root = image_folder(tmp_path / "xr", ["only"])
    assert_user_error(data(capsys, cache, "inspect", root), "is not a dataset layout")
    assert_user_error(
        data(capsys, cache, "inspect", f"imagefolder={root}"),
        "holds 1 class folder(s) with images (only)",
        "needs at least 2",
    )
    assert_no_files(cache)


@pytest.mark.parametrize("command", COMMANDS)
def test_class_names_differing_only_in_case_are_named(
    capsys, tmp_path: Path, cache: Path, command: str
) -> None:
    root = image_folder(tmp_path / "xr", ["Effusion", "effusion", "normal"])
    assert_user_error(
        data(capsys, cache, command, root),
        "'Effusion' and 'effusion'",
        "differ only in case or spacing",
        "rename them",
    )
    assert_no_files(cache)


def test_metadata_without_a_required_column_is_named(
    capsys, tmp_path: Path, cache: Path, chestxray: Path
) -> None:
    header, rest = csv_text(chestxray).split("\n", 1)
    root = copy_with_csv(
        chestxray, tmp_path / "ds", header.replace("finding", "diagnosis") + "\n" + rest
    )
    assert_user_error(data(capsys, cache, "inspect", root), "is not a dataset layout")
    line = assert_user_error(
        data(capsys, cache, "inspect", f"covid_chestxray={root}"),
        "metadata.csv' has no column 'finding'",
        "are required",
    )
    assert "'patientid', 'finding', 'view', 'modality', 'filename'" in line
    assert_no_files(cache)


@pytest.mark.parametrize("command", COMMANDS)
def test_splits_left_empty_by_grouping_say_what_to_change(
    capsys, tmp_path: Path, cache: Path, command: str
) -> None:
    # Two classes of near-identical scans: each class is one near-duplicate group.
    root = tmp_path / "xr"
    for c, name in enumerate(("normal", "effusion")):
        for k in range(12):
            builders.save_copy(root / name / f"{k}.png", 50 + c, ("hflip", "crop")[k % 2])
    assert_user_error(
        data(capsys, cache, command, root),
        f"The split of '{root}' leaves",
        "empty",
        "24 images form 2 group(s)",
        "Add more images",
    )
    assert_no_files(cache)


def test_a_file_given_as_the_dataset(capsys, tmp_path: Path, cache: Path) -> None:
    (tmp_path / "data.zip").write_bytes(b"PK\x03\x04")
    assert_user_error(data(capsys, cache, "inspect", tmp_path / "data.zip"), "is not a folder")
    assert_user_error(data(capsys, cache, "inspect", tmp_path / "nowhere"), "does not exist")


def test_data_command_exits_2_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    outcome = run_module("cxr_tune.data", "prepare", tmp_path / "empty")
    assert_user_error(outcome, "is not a dataset layout")


# --- damage a real download has: read, with the damage skipped and listed -----------------------


def test_empty_class_folder_is_ignored_with_a_note(capsys, tmp_path: Path, cache: Path) -> None:
    root = image_folder(tmp_path / "xr", ["a", "b"])
    (root / "c").mkdir()
    found = summary(capsys, cache, root)
    assert found["classes"] == ["a", "b"]
    assert f"Empty class folder ignored: '{root / 'c'}'." in found["notes"]


def test_rows_naming_missing_files_are_skipped_and_listed(
    capsys, cache: Path, chestxray: Path
) -> None:
    found = summary(capsys, cache, chestxray)
    assert found["skipped"]["counts"][d3.SKIP_MISSING] == 1
    assert found["skipped"]["counts"][d3.SKIP_DUPLICATE_ROW] == 1  # duplicated rows
    assert "metadata.csv is not UTF-8; read as latin-1." in found["notes"]  # non-UTF-8 bytes


def test_metadata_with_a_byte_order_mark_is_read(
    capsys, tmp_path: Path, cache: Path, chestxray: Path
) -> None:
    root = copy_with_csv(chestxray, tmp_path / "ds", "\ufeff" + csv_text(chestxray))
    found = summary(capsys, cache, root)
    assert found["dataset"] == "covid_chestxray"
    assert found["sizes"] == summary(capsys, cache, chestxray)["sizes"]
    assert not any("not UTF-8" in note for note in found["notes"])


def test_metadata_paths_cannot_escape_the_dataset_root(
    capsys, tmp_path: Path, cache: Path, chestxray: Path
) -> None:
    # A real image outside the dataset that an escaping path would reach.
    outside = save_image(tmp_path / "secret.png", 4242)
    header, first = csv_text(chestxray).split("\n")[:2]
    columns = header.split(",")
    escapes = []
    for folder, filename in (
        ("images", "../../secret.png"),
        ("../..", "secret.png"),
        ("images", str(outside)),
        ("images", "../../../../../../../../etc/passwd"),
    ):
        row = next(csv.reader([first]))
        row[columns.index("folder")], row[columns.index("filename")] = folder, filename
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        escapes.append(buffer.getvalue())
    root = copy_with_csv(chestxray, tmp_path / "ds", csv_text(chestxray) + "".join(escapes))
    found = summary(capsys, cache, root)
    missing = found["skipped"]["counts"][d3.SKIP_MISSING]
    assert missing == 1 + len(escapes), found["skipped"]
    for row in read_manifest(Path(found["cache"]["path"])):
        assert not row["path"].startswith(("/", "..")), row["path"]
        assert (root / row["path"]).resolve().is_relative_to(root.resolve())


def test_dataset_1_without_its_xlsx_files_is_read_with_notes(
    capsys, tmp_path: Path, cache: Path
) -> None:
    expected = builders.build_covid19_radiography(tmp_path, per_class=4)
    for sheet in expected.dataset_root.glob("*.xlsx"):
        sheet.unlink()
    found = summary(capsys, cache, expected.root)
    assert found["classes"] == list(builders.D1_CLASSES)
    for name in builders.D1_CLASSES:
        assert (
            f"No {name}.metadata.xlsx: image sources of class {name} are unknown."
            in (found["notes"])
        )


def test_file_names_that_are_not_utf8_are_read(capsys, tmp_path: Path, cache: Path) -> None:
    root = image_folder(tmp_path / "xr", ["a", "b"])
    latin1 = bytes(root / "a") + b"/caf\xe9-scan.png"  # a Latin-1 name from an old archive
    with open(latin1, "wb") as handle:
        handle.write((root / "a" / "0.png").read_bytes())
    found = summary(capsys, cache, root)
    assert (
        found["counts"]["train"]["a"] + found["counts"]["val"]["a"] + found["counts"]["test"]["a"]
        == 11
    )


def test_file_names_that_are_not_utf8_print_in_a_strict_utf8_terminal(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "xr", ["a", "b"])
    with open(bytes(root / "a") + b"/caf\xe9.txt", "wb") as handle:  # skipped, so printed
        handle.write(b"notes")
    outcome = run_module(
        "cxr_tune.data", "inspect", root, "--image-size", "32", "--cache-dir", tmp_path / "c",
        env={"PYTHONIOENCODING": "utf-8:strict"},
    )  # fmt: skip
    assert outcome.code == 0, outcome.err
    assert "caf\\udce9.txt" in outcome.out

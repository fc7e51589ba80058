"""``cxr-tune export`` and ``cxr-tune predict`` on the finished smoke experiment the test run
shares (``tests/experiments.py``): the package predicts the phantom's test images (written out
as PNG files) with the evaluation's own test accuracy; ``models/model.ts`` in a Python that
cannot import cxr_tune gives predict's probabilities; an experiment folder works as the model
source too; a file that cannot be read is a row with its reason; bad input is one message and
exit 2; a package is never overwritten without ``--force``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_tune.cli import main
from tests.experiments import FinishedSearch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CELL = "phantom/alexnet"
SLUG = "phantom-alexnet"


def run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cxr_tune.<command> ...`` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", f"cxr_tune.{command}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def experiment(finished_search: FinishedSearch) -> Path:
    return finished_search.folder


@pytest.fixture(scope="module")
def evaluated(experiment: Path) -> dict:
    """The best model's evaluation entry."""
    evaluation = json.loads((experiment / "evaluation.json").read_text())
    (entry,) = [e for e in evaluation["entries"] if e["cell"] == CELL and "best" in e["roles"]]
    return entry


@pytest.fixture(scope="module")
def test_images(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The phantom's test split (rebuilt from the experiment's record), as PNG files."""
    from cxr_tune.evaluation.sources import reload_datasets
    from cxr_tune.experiment import load_experiment

    test = reload_datasets(load_experiment(experiment))["phantom"].split("test")
    folder = tmp_path_factory.mktemp("phantom_test")
    images = np.asarray(test.images)
    for k, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{k:04d}.png")
    return {"folder": folder, "images": images, "labels": np.asarray(test.labels)}


@pytest.fixture(scope="module")
def package(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packages")
    done = run("export", str(experiment), "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"export: {CELL} -> {out / SLUG}" in done.stdout
    return out / SLUG


@pytest.fixture(scope="module")
def predicted(package: Path, test_images: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("predicted") / "predictions.csv"
    done = run("predict", str(package), str(test_images["folder"]), "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return {"rows": read_csv(out), "stdout": done.stdout}


def test_export_writes_the_package_with_the_evaluations_facts(
    package: Path, experiment: Path, evaluated: dict
) -> None:
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt",
                 "models/model.ts", "models/ood.npz", "docs/README.md"):  # fmt: skip
        assert (package / name).is_file(), name
    meta = json.loads((package / "configs" / "metadata.json").read_text())
    own = meta["cxr_tune"]
    manifest = json.loads((experiment / "models" / SLUG / "model.json").read_text())
    assert own["test_metrics"]["accuracy"] == evaluated["summary"]["accuracy"]
    assert own["calibration"]["temperatures"] == manifest["calibration"]["temperatures"]
    assert own["ood"]["threshold"] == pytest.approx(evaluated["ood"]["threshold"], rel=1e-3)
    assert own["configuration"] == evaluated["config"]
    assert own["dataset_info"]["split_hash"] and own["versions"]["torch"]
    card = (package / "docs" / "README.md").read_text()
    assert "not for clinical use" in card.lower()


def test_predict_gives_the_evaluations_test_accuracy(
    predicted: dict, test_images: dict, evaluated: dict
) -> None:
    rows = predicted["rows"]
    classes = evaluated["classes"]
    assert len(rows) == len(test_images["labels"]) and not any(r["error"] for r in rows)
    names = [classes[k] for k in test_images["labels"]]
    accuracy = float(np.mean([r["predicted"] == name for r, name in zip(rows, names)]))
    assert accuracy == pytest.approx(evaluated["summary"]["accuracy"]["mean"], abs=1e-12)
    # Image by image: the evaluation's own (first seed's) predictions and probabilities.
    run0 = evaluated["runs"][0]
    assert [r["predicted"] for r in rows] == [classes[k] for k in run0["predictions"]]
    raw = np.array([[float(r[f"raw_probability_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(raw, np.asarray(run0["probabilities"]), atol=1e-4, rtol=0)
    calibrated = np.array([[float(r[f"probability_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(
        calibrated, np.asarray(run0["calibrated_probabilities"]), atol=1e-4, rtol=0
    )
    flags = [r["ood_flag"] for r in rows]
    assert set(flags) <= {"0", "1"} and all(float(r["ood_distance"]) > 0 for r in rows)
    rate = flags.count("1") / len(flags)
    assert rate == pytest.approx(evaluated["ood"]["own"]["flag_rate"], abs=1e-3)
    assert f"{len(rows)} predicted, 0 could not be read" in predicted["stdout"]


WITHOUT_CXR_TUNE = """
import json, sys
sys.path.append(sys.argv[1])
import numpy, torch
try:
    import cxr_tune
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("cxr_tune is importable: " + str(cxr_tune.__file__))
module = torch.jit.load(sys.argv[2])
with torch.no_grad():
    print(json.dumps(module(torch.from_numpy(numpy.load("images.npy"))).tolist()))
"""


def test_model_ts_alone_gives_predicts_probabilities(
    package: Path, predicted: dict, test_images: dict, evaluated: dict, tmp_path: Path
) -> None:
    np.save(tmp_path / "images.npy", test_images["images"])
    site = str(Path(np.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", WITHOUT_CXR_TUNE, site,
         str(package / "models" / "model.ts")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    alone = np.asarray(json.loads(done.stdout))
    classes = evaluated["classes"]
    rows = predicted["rows"]
    csv_values = np.array([[float(r[f"probability_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(alone, csv_values, atol=1e-5, rtol=0)


def test_predict_from_the_experiment_folder_keeps_unreadable_files_as_rows(
    experiment: Path, predicted: dict, test_images: dict, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "from_experiment.csv"
    overlays = tmp_path / "overlays"
    done = run(
        "predict", str(experiment), str(corrupt), str(test_images["folder"]), str(notes),
        str(tmp_path / "missing.png"), "--out", str(out), "--saliency", str(overlays),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = read_csv(out)
    images = len(test_images["labels"])
    assert len(rows) == images + 3
    assert rows[0]["path"] == str(corrupt) and rows[0]["error"] and not rows[0]["predicted"]
    assert rows[-2]["error"] and rows[-1]["error"] == "missing file (no such file or folder)"
    # The experiment's best model is the package's: the same rows for the test images.
    package_rows = predicted["rows"]
    for mine, theirs in zip(rows[1 : 1 + images], package_rows, strict=True):
        assert {k: v for k, v in mine.items()} == theirs
    assert len(list(overlays.glob("*.png"))) == images
    assert f"{images} predicted, 3 could not be read" in done.stdout


def test_export_never_overwrites_without_force(experiment: Path, package: Path) -> None:
    before = (package / "models" / "model.ts").stat().st_mtime_ns
    done = run("export", str(experiment), "--out", str(package.parent), "--cell", CELL)
    assert done.returncode == 2
    assert "already exists" in done.stderr and "--force" in done.stderr
    assert "Traceback" not in done.stderr
    assert (package / "models" / "model.ts").stat().st_mtime_ns == before
    forced = run("export", str(experiment), "--out", str(package.parent), "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert (package / "models" / "model.ts").stat().st_mtime_ns != before
    assert not [p for p in package.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def _exit_and_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_bad_input_is_one_clear_message_and_exit_2(
    experiment: Path, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _exit_and_error(capsys, ["predict", str(package), str(empty)])
    assert code == 2 and "No files to predict on" in err
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)

    newer = tmp_path / "newer"
    (newer / "configs").mkdir(parents=True)
    meta = json.loads((package / "configs" / "metadata.json").read_text())
    meta["cxr_tune"]["format_version"] = 99
    (newer / "configs" / "metadata.json").write_text(json.dumps(meta))
    code, err = _exit_and_error(capsys, ["predict", str(newer), str(image)])
    assert code == 2 and "format version is 99" in err

    unevaluated = tmp_path / "unevaluated"
    unevaluated.mkdir()
    shutil.copy(experiment / "cxr_tune.json", unevaluated / "cxr_tune.json")
    for command in (["export", str(unevaluated)], ["predict", str(unevaluated), str(image)]):
        code, err = _exit_and_error(capsys, command)
        assert code == 2 and "no finished evaluation" in err, (command, err)

    code, err = _exit_and_error(capsys, ["export", str(experiment), "--cell", "phantom/alexnt"])
    assert code == 2 and "Did you mean 'phantom/alexnet'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

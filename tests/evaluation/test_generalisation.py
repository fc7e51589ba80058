"""External validation, the shortcut probe and clinical metrics, assembled from hand-made test
predictions whose scores are known by construction (no training)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cxr_tune.data.types import DatasetArrays, SplitArrays
from cxr_tune.evaluation.assemble import assemble
from cxr_tune.evaluation.contenders import Contender
from cxr_tune.evaluation.generalisation import (
    REGION_CENTRAL,
    REGION_MASKS,
    generalisation_plan,
    probe_images,
    probe_summary,
)
from cxr_tune.experiment import Experiment
from tests.records import trial_record

D1 = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
D2 = ("covid", "normal", "pneumonia")
PER_CLASS = 20


def _dataset(name: str, classes: tuple[str, ...]) -> DatasetArrays:
    labels = np.repeat(np.arange(len(classes)), PER_CLASS)
    images = np.zeros((len(labels), 8, 8), dtype=np.uint8)
    split = SplitArrays(images=images, labels=labels)
    return DatasetArrays(name, "multiclass", classes, 8, {"test": split}, name, name)


def _confident(predicted: np.ndarray, k: int) -> list[list[float]]:
    """Probability 0.97 on the predicted class, the rest spread evenly."""
    rest = 0.03 / (k - 1)
    out = np.full((len(predicted), k), rest)
    out[np.arange(len(predicted)), predicted] = 0.97
    return out.tolist()


def _experiment() -> tuple[Experiment, list[Contender]]:
    trials, contenders = [], []
    for dataset in ("covid19_radiography", "covid19_pneumonia_normal"):
        trial = trial_record(f"t-{dataset}", f"{dataset}/alexnet", [0.5, 0.6, 0.7])
        trial.config.update({"dataset": dataset, "model": "alexnet"})
        trials.append(trial)
        contenders.append(Contender(trial.cell, ("best",), trial))
    record = {
        "metric": {"name": "val_macro_f1", "mode": "max"},
        "seed": 0,
        "datasets": [
            {"name": "covid19_radiography", "key": "covid19_radiography"},
            {"name": "covid19_pneumonia_normal", "key": "covid19_pneumonia_normal"},
        ],
        "finished_at": "x",
    }
    return Experiment(Path("."), record, trials, None), contenders


def _runs() -> dict[str, list[dict]]:
    d1_labels = np.repeat(np.arange(4), PER_CLASS)
    d2_labels = np.repeat(np.arange(3), PER_CLASS)
    # The Dataset 1 model: right on its own images; on Dataset 2 it calls covid and normal
    # right and every pneumonia image Normal.
    on_d2 = np.array([0] * PER_CLASS + [2] * PER_CLASS + [2] * PER_CLASS)
    d1_run = {
        "seed": 0,
        "predictions": d1_labels.tolist(),
        "probabilities": _confident(d1_labels, 4),
        "external": {"covid19_pneumonia_normal": {"probabilities": _confident(on_d2, 4)}},
        "probe": {"region": REGION_MASKS, "probabilities": _confident(d1_labels, 4)},
    }
    # The Dataset 2 model is right everywhere (it has no Lung_Opacity: those images drop out).
    on_d1 = np.array([0] * PER_CLASS + [1] * PER_CLASS + [1] * PER_CLASS + [2] * PER_CLASS)
    d2_run = {
        "seed": 0,
        "predictions": d2_labels.tolist(),
        "probabilities": _confident(d2_labels, 3),
        "external": {"covid19_radiography": {"probabilities": _confident(on_d1, 3)}},
        "probe": {
            "region": REGION_CENTRAL,
            "probabilities": np.full((3 * PER_CLASS, 3), 1 / 3).tolist(),
        },
    }
    return {
        "covid19_radiography/alexnet#t-covid19_radiography": [d1_run],
        "covid19_pneumonia_normal/alexnet#t-covid19_pneumonia_normal": [d2_run],
    }


@pytest.fixture(scope="module")
def assembled() -> dict:
    """The evaluation of both cells, assembled once (100 bootstrap rounds)."""
    exp, contenders = _experiment()
    datasets = {
        "covid19_radiography": _dataset("covid19_radiography", D1),
        "covid19_pneumonia_normal": _dataset("covid19_pneumonia_normal", D2),
    }
    plan = generalisation_plan(exp, datasets, {})
    return assemble(exp, datasets, contenders, _runs(), 100, plan=plan)


def test_transfer_matrix_known_by_construction(assembled: dict) -> None:
    result = assembled
    rows = {(t["train"], t["test"]): t for t in result["transfer"]}
    assert set(rows) == {
        ("covid19_radiography", "covid19_pneumonia_normal"),
        ("covid19_pneumonia_normal", "covid19_radiography"),
    }
    d1_to_d2 = rows[("covid19_radiography", "covid19_pneumonia_normal")]
    assert d1_to_d2["classes"] == ["covid", "normal", "pneumonia"]
    # Own split on the shared classes: perfect. There: covid F1 1, normal 2*20/(40+20), 0.
    assert d1_to_d2["own"]["macro_f1"]["mean"] == pytest.approx(1.0)
    expected = (1.0 + 2 / 3 + 0.0) / 3
    assert d1_to_d2["external"]["macro_f1"]["mean"] == pytest.approx(expected)
    assert d1_to_d2["drop"]["macro_f1"]["mean"] == pytest.approx(1.0 - expected)
    low, high = d1_to_d2["drop"]["macro_f1"]["ci95"]
    assert 0 < low <= 1.0 - expected <= high  # a clear drop
    sens = {c: v["mean"] for c, v in d1_to_d2["external"]["sensitivity"].items()}
    assert sens == pytest.approx({"covid": 1.0, "normal": 1.0, "pneumonia": 0.0})
    # AUROC: covid 1; normal vs (covid below, pneumonia tied) 0.75; pneumonia all tied 0.5.
    assert d1_to_d2["external"]["macro_auroc"]["mean"] == pytest.approx((1 + 0.75 + 0.5) / 3)
    assert d1_to_d2["left_out_images"] == {"own": PER_CLASS, "external": 0}
    assert any("Lung_Opacity" in line for line in d1_to_d2["mapping_lines"])
    d2_to_d1 = rows[("covid19_pneumonia_normal", "covid19_radiography")]
    assert d2_to_d1["external"]["macro_f1"]["mean"] == pytest.approx(1.0)
    assert d2_to_d1["drop"]["macro_f1"]["mean"] == pytest.approx(0.0)
    assert d2_to_d1["left_out_images"] == {"own": 0, "external": PER_CLASS}


def test_probe_flags_only_the_model_that_scores_without_lungs(assembled: dict) -> None:
    entries = {e["cell"]: e for e in assembled["entries"]}
    probed = entries["covid19_radiography/alexnet"]["probe"]
    blind = entries["covid19_pneumonia_normal/alexnet"]["probe"]
    assert probed["flagged"] and probed["macro_auroc"]["mean"] == pytest.approx(1.0)
    assert not blind["flagged"] and blind["macro_auroc"]["mean"] == pytest.approx(0.5)
    assert (probed["region"], blind["region"]) == (REGION_MASKS, REGION_CENTRAL)


def test_clinical_metrics_of_each_entry(assembled: dict) -> None:
    entries = {e["cell"]: e for e in assembled["entries"]}
    clinical = entries["covid19_radiography/alexnet"]["clinical"]
    assert [row["class"] for row in clinical["per_class"]] == list(D1)
    assert all(row["sensitivity"]["mean"] == 1.0 for row in clinical["per_class"])
    assert clinical["positive_class"]["class"] == "COVID"
    assert clinical["positive_class"]["specificity_at_sensitivity_95"]["mean"] == 1.0
    # Confident (0.97) and always right: ECE 0.03.
    assert clinical["ece"]["mean"] == pytest.approx(0.03)
    assert clinical["roc"]["COVID"]["auc"] == pytest.approx(1.0)


# The facts a best model's first seed brings (evidence.py), made by hand: temperature scaling
# took the raw 0.97 on the predicted class to 0.999; the operating thresholds; OOD flag rates;
# a saliency summary that is flagged; one overlay file.
OVERLAY = "saliency/covid19_radiography-alexnet/covid-right-0.png"


def _trusted_runs() -> dict[str, list[dict]]:
    runs = _runs()
    d1 = runs["covid19_radiography/alexnet#t-covid19_radiography"][0]
    labels = np.repeat(np.arange(4), PER_CLASS)
    sharp = np.full((len(labels), 4), 0.001 / 3)
    sharp[np.arange(len(labels)), labels] = 0.999
    d1.update(
        {
            "calibration": {"temperatures": [0.5], "fits": [{"reason": None}]},
            "calibrated_probabilities": sharp.tolist(),
            "operating_thresholds": {"0.9": 0.9, "0.95": 0.5},
            "ood": {
                "threshold": 12.5,
                "own": {"images": 80, "flag_rate": 0.015, "mean_distance": 9.0},
                "external": {
                    "covid19_pneumonia_normal": {
                        "images": 60, "flag_rate": 0.4, "mean_distance": 14.0
                    }
                },
            },
            "saliency": {
                "available": True, "layer": "features.4", "grid": 7, "images": 80,
                "share_in_lungs": {"mean": 0.1, "ci95": [0.08, 0.12]},
                "lung_share": {"mean": 0.25, "ci95": [0.24, 0.26]},
                "difference": {"mean": -0.15, "ci95": [-0.17, -0.13]},
                "flagged": True,
            },
            "files": {"overlays": [OVERLAY], "ood": None, "weights": None},
        }
    )  # fmt: skip
    return runs


@pytest.mark.slow  # renders a whole report with its plots (about 7 s of CPU)
def test_calibration_operating_points_ood_and_saliency_are_assembled_and_reported(
    tmp_path: Path,
) -> None:
    from cxr_tune.report import write_experiment_report

    exp, contenders = _experiment()
    exp.folder = tmp_path
    datasets = {
        "covid19_radiography": _dataset("covid19_radiography", D1),
        "covid19_pneumonia_normal": _dataset("covid19_pneumonia_normal", D2),
    }
    plan = generalisation_plan(exp, datasets, {})
    result = assemble(exp, datasets, contenders, _trusted_runs(), 100, plan=plan)
    entry = next(e for e in result["entries"] if e["cell"] == "covid19_radiography/alexnet")
    calibration = entry["clinical"]["calibration"]
    assert calibration["before"]["mean"] == pytest.approx(0.03)
    assert calibration["after"]["mean"] == pytest.approx(0.001)
    assert calibration["difference"]["mean"] == pytest.approx(-0.029)
    points = entry["clinical"]["operating_points"]
    assert points["class"] == "COVID" and points["targets"]["0.95"]["threshold"] == 0.5
    assert points["targets"]["0.95"]["sensitivity"]["mean"] == 1.0
    assert points["targets"]["0.95"]["specificity"]["mean"] == 1.0
    # The first seed's facts sit on the entry once, not in its runs.
    assert entry["saliency"]["flagged"] and entry["ood"]["threshold"] == 12.5
    assert "ood" not in entry["runs"][0] and "saliency" not in entry["runs"][0]
    transfer = next(t for t in result["transfer"] if t["cell"] == entry["cell"])
    assert transfer["ood"]["external"]["flag_rate"] == 0.4
    assert transfer["ood"]["own"]["flag_rate"] == 0.015

    (tmp_path / OVERLAY).parent.mkdir(parents=True)
    (tmp_path / OVERLAY).write_bytes(b"\x89PNG overlay")
    exp.evaluation = result
    out = tmp_path / "report"
    markdown = write_experiment_report(exp, out).read_text()
    html = (out / "report.html").read_text()
    assert "1.5% → 40.0%" in markdown  # OOD flagged, own → external, beside the drop
    assert "### Out-of-distribution flag" in markdown and "12.5" in markdown
    assert "### Saliency in the lungs" in markdown and "**not clearly in the lungs**" in markdown
    assert "**likely uses shortcuts**" in markdown  # the probe, in the same table
    assert "ECE after temperature scaling" in markdown and "0.0010" in markdown
    assert "threshold (validation)" in markdown
    # The overlay is linked, never embedded.
    link = f"../{OVERLAY}"
    assert f"]({link})" in markdown and f'href="{link}"' in html
    assert not [m for m in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown) if "saliency" in m]
    assert all(src.startswith("data:image/png") for src in re.findall(r'<img src="([^"]+)"', html))


def test_probe_summary_on_random_scores_is_quiet() -> None:
    rng = np.random.default_rng(1)
    targets = np.repeat(np.arange(4), 50)
    runs = [{"probe": {"probabilities": rng.dirichlet(np.ones(4), size=200).tolist()}}]
    indices = rng.integers(0, 200, size=(200, 200))
    probe = probe_summary("multiclass", runs, targets, 4, indices, REGION_MASKS)
    assert not probe["flagged"] and abs(probe["macro_auroc"]["mean"] - 0.5) < 0.1


def test_probe_images_blank_masks_or_the_centre() -> None:
    images = np.full((2, 10, 10), 200, dtype=np.uint8)
    masks = np.zeros((2, 10, 10), dtype=np.uint8)
    masks[:, 3:7, 2:5] = 1
    blanked, region = probe_images(SplitArrays(images, np.zeros(2), masks))
    assert region == REGION_MASKS and (blanked == 0).sum() == 2 * 12
    central, region = probe_images(SplitArrays(images, np.zeros(2)))
    assert region == REGION_CENTRAL
    assert central[0, 5, 5] == 0 and central[0, 0, 0] == 200 and central[0, 9, 9] == 200
    assert images.min() == 200  # the split itself is untouched


@pytest.mark.slow  # renders a whole report with its plots (about 4 s unloaded)
def test_report_shows_generalisation_and_clinical_sections(assembled: dict, tmp_path: Path) -> None:
    from cxr_tune.report import write_experiment_report

    exp, _ = _experiment()
    exp.evaluation = assembled
    report = write_experiment_report(exp, tmp_path).read_text()
    assert "## Generalisation" in report and "### Transfer matrix" in report
    assert "a clear drop of" in report and "no clear difference" in report
    assert "**likely uses shortcuts**" in report and "no sign of a shortcut" in report
    assert "Lung_Opacity (lung_opacity: no counterpart in covid19_pneumonia_normal)" in report
    assert "## Clinical metrics" in report and "specificity at 90% sensitivity" in report
    plots = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert {"transfer.png", "roc-covid19_radiography-alexnet.png"} <= plots
    assert "reliability-covid19_pneumonia_normal-alexnet.png" in plots
    assert "could not be" not in report
    import pandas as pd

    trials = pd.read_csv(tmp_path / "trials.csv")
    assert {"test_ece", "test_covid_spec_at_sens95", "probe_flagged"} <= set(trials.columns)


def _phantom_experiment(folder: Path, tmp_path: Path) -> Path:
    """An experiment folder whose record names the built-in phantom as the search did."""
    import json

    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset

    options = DataOptions(image_size=32, phantom_images=64, cache_dir=tmp_path / "cache")
    arrays = load_dataset(DataSource.phantom(), options)
    record = {
        "name": folder.name,
        "data_options": options.to_record(),
        "datasets": [
            {
                "name": "phantom",
                "key": "phantom",
                "source": "built-in",
                "split_hash": arrays.split_hash,
                "image_size": 32,
            }
        ],
        "metric": {"name": "val_macro_f1", "mode": "max"},
    }
    folder.mkdir(parents=True)
    (folder / "cxr_tune.json").write_text(json.dumps(record))
    return folder


def test_evaluate_external_with_an_unknown_class_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cxr_tune.cli import run_command
    from tests.data.builders import save_image

    exp = _phantom_experiment(tmp_path / "exp", tmp_path)
    hospital = tmp_path / "hospital"
    for k, name in enumerate(("COVID", "Pneumnia", "Normal")):
        for i in range(4):
            save_image(hospital / name / f"{i}.png", 50 * k + i, size=(40, 40))
    args = [str(exp), "--external", str(hospital), "--cache-dir", str(tmp_path / "cache")]
    assert run_command("evaluate", args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'Pneumnia'" in err[0] and "Did you mean 'pneumonia'?" in err[0]
    assert not (exp / "evaluation.json").exists()


@pytest.mark.slow  # decodes a DICOM folder and renders a whole report
def test_dicom_external_set_leaves_no_patient_identifier_in_the_report(
    assembled: dict, tmp_path: Path
) -> None:
    """A hospital's DICOM folder as an external set: its header values reach neither the
    evaluation nor any file of the report."""
    import json

    from cxr_tune.config import DataSource
    from cxr_tune.evaluation.sources import load_externals
    from cxr_tune.report import write_experiment_report
    from tests.data.builders import pattern
    from tests.data.dicom_builders import OTHER_IDS, PATIENT_ID, PATIENT_NAME, write_image

    hospital = tmp_path / "hospital"
    for k, name in enumerate(("covid", "normal", "pneumonia")):
        for i in range(8):
            stored = pattern(300 + 10 * k + i, 40, 40).astype(np.uint16) * 16
            write_image(hospital / name / f"IM{i:04d}", stored, bits_stored=12)
    exp, contenders = _experiment()
    exp.record["data_options"] = {"image_size": 8, "seed": 0}
    externals = load_externals(
        exp, [DataSource.parse(str(hospital))], cache_dir=tmp_path / "cache", echo=lambda _: None
    )
    (name,) = externals
    ext = externals[name]
    datasets = {
        "covid19_radiography": _dataset("covid19_radiography", D1),
        "covid19_pneumonia_normal": _dataset("covid19_pneumonia_normal", D2),
    }
    runs = _runs()
    for key, (run,) in runs.items():
        width = 4 if key.startswith("covid19_radiography") else 3
        test = np.asarray(ext.arrays.split("test").labels)
        run["external"][name] = {"probabilities": _confident(test % width, width)}
    plan = generalisation_plan(exp, datasets, externals)
    evaluation = assemble(
        exp, datasets, contenders, runs, 50, plan=plan, others={**datasets, name: ext.arrays}
    )
    evaluation["external_sets"] = [ext.describe(name)]
    assert {t["test"] for t in evaluation["transfer"]} >= {name}
    exp.evaluation = evaluation
    out = tmp_path / "report"
    write_experiment_report(exp, out)
    (out / "evaluation.json").write_text(json.dumps(evaluation))
    secrets = [PATIENT_NAME, PATIENT_ID, *OTHER_IDS, OTHER_IDS[1].replace("-", "")]
    secrets += PATIENT_NAME.split("^")
    written = [p for p in [*out.rglob("*"), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert any(p.suffix == ".png" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} in {path.name}"


def test_report_split_lines_state_the_mode_and_the_published_split() -> None:
    from cxr_tune.report.sections.summary import split_lines

    exp, _ = _experiment()
    exp.record["data_options"] = {"split": "grouped"}
    exp.record["datasets"][0]["published_split"] = {
        "mode": "grouped",
        "crossing_pairs_same_patient": 60,
        "crossing_pairs_near_duplicate": 3,
        "moved_total": 22,
        "test_images": {"published": 257, "used": 279},
    }
    lines = split_lines(exp)
    assert lines[0].startswith("split: `grouped`")
    assert lines[1] == (
        "`covid19_radiography` publishes a split: 60 same-patient and 3 near-duplicate pairs "
        "of images lie on both sides of it; regrouped, 22 images moved to keep groups whole "
        "(test split 279 images, published 257)"
    )
    assert len(lines) == 2  # the other dataset publishes no split


def test_clinical_summary_multilabel_uses_the_covid_label() -> None:
    from cxr_tune.data.labelmap import DatasetClasses, load_label_maps
    from cxr_tune.evaluation.generalisation import clinical_of

    classes = ("COVID-19", "No Finding", "Pneumonia")
    targets = np.array([[1, 0, 1]] * 10 + [[0, 1, 0]] * 10 + [[0, 0, 1]] * 10)
    probabilities = np.where(targets == 1, 0.9, 0.1)
    run = {"probabilities": probabilities.tolist()}
    dataset = DatasetClasses("covid_chestxray", "covid_chestxray", "multilabel", classes)
    indices = np.random.default_rng(0).integers(0, 30, size=(50, 30))
    clinical = clinical_of("multilabel", [run], targets, dataset, indices, load_label_maps())
    assert clinical["positive_class"]["class"] == "COVID-19"
    assert clinical["positive_class"]["specificity_at_sensitivity_95"]["mean"] == 1.0
    assert [row["sensitivity"]["mean"] for row in clinical["per_class"]] == [1.0, 1.0, 1.0]
    # Every label probability is 0.9 where positive and 0.1 where not: ECE 0.1.
    assert clinical["ece"]["mean"] == pytest.approx(0.1)


def test_an_external_set_is_scored_whole_and_a_searched_one_on_its_test_split(
    tmp_path: Path,
) -> None:
    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.evaluation.sources import TEST_SPLIT, WHOLE_COHORT, load_externals

    exp = Experiment(
        Path("."),
        {
            "seed": 0,
            "data_options": {"image_size": 32, "seed": 0, "phantom_images": 96},
            "datasets": [{"name": "phantom", "key": "phantom", "source": "built-in"}],
        },
        [],
        None,
    )
    options = DataOptions(image_size=32, phantom_images=96, cache_dir=tmp_path / "cache")
    sources = [DataSource("phantom_b", None), DataSource.phantom()]
    externals = load_externals(exp, sources, cache_dir=tmp_path / "cache", echo=lambda _: None)
    site_b, again = externals["phantom_b"], externals["phantom_2"]
    whole_b = load_dataset(sources[0], options)
    # No model trained on site B: every usable image is scored, labels in split order.
    assert site_b.scored_on == WHOLE_COHORT
    assert len(site_b.arrays.split("test")) == sum(whole_b.sizes().values())
    expected = np.concatenate([whole_b.split(s).labels for s in ("train", "val", "test")])
    assert np.array_equal(site_b.arrays.split("test").labels, expected)
    assert site_b.describe("phantom_b")["images"] == sum(whole_b.sizes().values())
    # The searched dataset given again keeps its test split: its cells trained on the rest.
    assert again.scored_on == TEST_SPLIT
    assert len(again.arrays.split("test")) == load_dataset(sources[1], options).sizes()["test"]

"""The whole report from hand-written experiments: files, numbers, self-containment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cxr_tune.report import write_report
from tests.report.builders import (
    TrialSpec,
    ablation_evaluation,
    ablation_trials,
    entry,
    write_experiment,
)
from tests.report.checks import assert_self_contained, assert_valid_pngs, markdown_images


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mini") / "exp"
    write_experiment(folder, ablation_trials(), evaluation=ablation_evaluation())
    return write_report(folder)


def test_write_report_writes_every_output(report: Path) -> None:
    folder = report.parent
    for name in ("report.md", "report.html", "trials.csv"):
        assert (folder / name).is_file()
    plots = assert_valid_pngs(folder / "plots")
    names = {p.name for p in plots}
    assert {"confusion-covid19_radiography-alexnet.png", "curves-phantom-resnet50.png"} <= names
    assert {"ablation-lr.png", "ablation-optimizer.png", "efficiency.png"} <= names
    assert sorted(markdown_images(report.read_text())) == sorted(f"plots/{n}" for n in names)


def test_report_sections_come_in_order(report: Path) -> None:
    text = report.read_text()
    titles = [
        "## Summary",
        "## Results beside the paper",
        "### Accuracy (%)",
        "### Precision (macro)",
        "### Recall (macro)",
        "### F1 (macro)",
        "## Best configuration per cell",
        "## Ablation answers",
        "## Hyperparameter importance",
        "## Search efficiency",
        "## Failed, diverged and unfinished trials",
    ]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)
    assert "could not be built" not in text and "could not be drawn" not in text


def test_report_sets_the_paper_beside_ours(report: Path) -> None:
    text = report.read_text()
    assert (
        "| Dataset 1 (covid19_radiography) | AlexNet | 0.8100 | [0.7600, 0.8600] | 2 | 0.9152 | -0.1052 |"
        in text
    )
    assert (
        "| Dataset 1 (covid19_radiography) | AlexNet | 90.00 | [85.00, 95.00] | 2 | 91.51 | -1.51 |"
        in text
    )
    assert "| phantom | ResNet50 | 0.4400 | [0.3900, 0.4900] | 2 | — | — |" in text
    assert "`phantom`: no paper column" in text


def test_report_answers_the_ablation_questions(report: Path) -> None:
    text = report.read_text()
    assert (
        "covid19_radiography/alexnet: Adam beats SGD by 0.21 macro-F1 [0.15, 0.27] on the test split."
        in text
    )
    assert "covid19_radiography/alexnet: learning rate matters: 1e-4…1e-3 scored best" in text
    assert "The batch size" in text or "batch size" in text


def test_report_lists_failed_and_diverged_trials_with_reasons(report: Path) -> None:
    text = report.read_text()
    failures = text[text.index("## Failed") : text.index("## All trials")]
    assert "`a4` | diverged | 2 |" in failures and "training loss became inf in epoch 2" in failures
    assert "`b2` | failed |" in failures and "out of memory" in failures


def test_report_summary_shows_compute_and_data(report: Path) -> None:
    text = report.read_text()
    assert "GPU-hours" in text and "trial-hours" in text and "wall time 60.0 min" in text
    assert "| `covid19_radiography` | Dataset 1 |" in text and "`ssssssssssssssss`" in text


def test_trials_csv_matches_the_trial_results(report: Path) -> None:
    rows = list(csv.DictReader((report.parent / "trials.csv").open()))
    assert len(rows) == 6
    by_id = {r["trial_id"]: r for r in rows}
    result = json.loads(
        (report.parent / "covid19_radiography-alexnet-a1" / "result.json")
        .read_text()
        .splitlines()[-1]
    )
    assert float(by_id["a1"]["final_val_macro_f1"]) == pytest.approx(result["val_macro_f1"])
    assert by_id["a3"]["state"] == "stopped_early" and by_id["a3"]["epochs_done"] == "1"
    assert by_id["a4"]["state"] == "diverged" and "inf" in by_id["a4"]["failure_reason"]


def test_report_html_is_self_contained(report: Path) -> None:
    page = (report.parent / "report.html").read_text()
    images = assert_self_contained(page)
    assert images == len(list((report.parent / "plots").iterdir()))
    assert "@media print" in page


def test_write_report_into_another_folder(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1"), TrialSpec("t2", f1=(0.1, 0.3))])
    path = write_report(folder, tmp_path / "out")
    assert path == tmp_path / "out" / "report.md"
    assert not (folder / "report.md").exists()
    text = path.read_text()
    assert "The final evaluation on the test split is missing" in text
    assert "there is no `evaluation.json` yet" in text and "could not be" not in text


def _multilabel_evaluation() -> dict:
    evaluation = {"entries": [entry("covid_chestxray/vgg11", "m1", ["best"], 0.12)]}
    item = evaluation["entries"][0]
    item.pop("confusion")
    item["task"] = "multilabel"
    item["summary"]["macro_auroc"] = {"mean": 0.71, "std": 0.0, "per_seed": [0.7, 0.72],
                                      "ci95": [0.64, 0.78]}  # fmt: skip
    item["per_label"] = [
        {"label": "COVID-19", "auroc": 0.8, "positives": 12},
        {"label": "Pneumocystis", "auroc": float("nan"), "positives": 0},
    ]
    return evaluation


def test_report_of_the_multilabel_dataset_shows_auroc(tmp_path: Path) -> None:
    folder = write_experiment(
        tmp_path / "exp",
        [TrialSpec("m1", "covid_chestxray/vgg11"), TrialSpec("m2", "covid_chestxray/vgg11")],
        evaluation=_multilabel_evaluation(),
    )
    text = write_report(folder).read_text()
    assert (
        "| Dataset 3 (covid_chestxray) | VGG11 | 0.1200 | [0.0700, 0.1700] | 2 | 0.1154 | +0.0046 |"
        in text
    )
    assert "| Dataset 3 (covid_chestxray) | VGG11 | 0.7100 | [0.6400, 0.7800] | 2 |" in text
    assert "per-label (Hamming) accuracy" in text
    assert "plots/auroc-covid_chestxray-vgg11.png" in text
    assert_valid_pngs(folder / "plots")
    assert "could not be" not in text


def test_report_of_a_trial_without_any_readable_file(tmp_path: Path) -> None:
    folder = write_experiment(tmp_path / "exp", [TrialSpec("t1")])
    broken = folder / "broken-trial-x9"
    broken.mkdir()
    (broken / "result.json").write_text('{"epoch": 1, "val_m')
    text = write_report(folder).read_text()
    assert "(unknown cell)" in text and "cut short" in text
    assert "could not be" not in text


def test_efficiency_section_counts_the_no_skill_stops(tmp_path: Path) -> None:
    from cxr_tune.metrics import NO_SKILL_KEY, TRAIN_NO_SKILL_KEY

    cell = "phantom/alexnet"
    trials = [
        TrialSpec("done", cell, (0.5, 0.6, 0.7, 0.8), epochs=4),
        TrialSpec("asha", cell, (0.3, 0.4), epochs=4),  # stopped at 2 by a rung: it learns
        TrialSpec("flat", cell, (0.1, 0.1), epochs=4),  # stopped at 2: learned nothing
    ]
    folder = write_experiment(tmp_path / "exp", trials)
    record_path = folder / "cxr_tune.json"
    data = json.loads(record_path.read_text())
    for line in data["plan"]:
        line["scheduler"] = {"name": "asha", "grace_period": 2, "no_skill_epoch": 2}
    record_path.write_text(json.dumps(data))
    for trial_id, val_loss, train_loss in (("asha", 0.9, 0.8), ("flat", 1.3870, 1.3861)):
        path = folder / f"phantom-alexnet-{trial_id}" / "result.json"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            row.update(val_loss=val_loss, train_loss=train_loss)
            row.update({NO_SKILL_KEY: 1.3863, TRAIN_NO_SKILL_KEY: 1.3863})
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = write_report(folder).read_text()
    assert "stopped 2 trials (1 of them by the no-skill check: nothing learned by epoch 2)" in text


def test_a_time_budgets_cut_backs_are_stated_where_they_change_a_reading(tmp_path: Path) -> None:
    evaluation = ablation_evaluation()
    sgd = evaluation["entries"][1]
    sgd["runs"] = [
        {
            "seed": 0,
            "source": "search checkpoint at epoch 1 of 2, not retrained",
            "epochs_trained": 1,
        }
    ]
    evaluation["left_out"] = [
        {
            "cell": "phantom/resnet50",
            "roles": ["best_sgd"],
            "trial_id": "b9",
            "seed_index": 0,
            "reason": "the time budget left no room to retrain it to its last epoch",
        }
    ]
    folder = write_experiment(tmp_path / "exp", ablation_trials(), evaluation=evaluation)
    text = write_report(folder).read_text()
    assert (
        "Not at equal training: the time budget left no room to retrain "
        "`covid19_radiography/alexnet` best_sgd (search checkpoint at epoch 1 of 2, not "
        "retrained) to the last epoch" in text
    )
    assert "Left out of the final evaluation by the time budget:" in text
    assert "`phantom/resnet50` (best_sgd, trial `b9`): not scored: the time budget" in text

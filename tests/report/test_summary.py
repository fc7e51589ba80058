from __future__ import annotations

from cxr_tune.report.sections.summary import _datasets_table


def test_datasets_table_states_the_uncertain_label_policy() -> None:
    info = {"name": "chexpert", "key": "chexpert", "task": "multilabel", "classes": ["a"]}
    plain = _datasets_table([{**info, "uncertain_policy": None}])
    assert "Uncertain labels" not in plain.caption
    table = _datasets_table([{**info, "uncertain_policy": "ignore"}])
    assert "Uncertain labels: `chexpert`: ignore (U-Ignore: masked in the loss" in table.caption

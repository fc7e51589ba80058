"""The optional ONNX export: onnxruntime gives the TorchScript module's probabilities (skipped
where the `onnx` extra is not installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_tune.bundle.inference import build_inference_module, save_torchscript
from cxr_tune.calibration import Calibration, TemperatureFit
from cxr_tune.models import create_model
from tests.data.builders import pattern

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cxr_tune.bundle.onnx import check_onnx, export_onnx, onnx_probabilities  # noqa: E402

SIZE = 64


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_onnx_export_matches_torchscript(tmp_path: Path, task: str) -> None:
    torch.manual_seed(4)
    model = create_model("alexnet", num_classes=3).eval()
    temperatures = (1.5,) if task == "multiclass" else (0.7, 1.0, 2.0)
    calibration = Calibration(task, tuple(TemperatureFit(t, 0.0, 0.0, 5) for t in temperatures))
    module = build_inference_module(
        model, "alexnet", image_size=SIZE, task=task, classes=("a", "b", "c"),
        calibration=calibration,
    )  # fmt: skip
    save_torchscript(module, tmp_path / "model.ts")
    export_onnx(module, tmp_path / "model.onnx")
    images = np.stack([pattern(k, SIZE, SIZE) for k in range(5)])  # a batch size not exported
    assert check_onnx(tmp_path / "model.onnx", tmp_path / "model.ts", images) <= 1e-5
    found = onnx_probabilities(tmp_path / "model.onnx", images)
    assert found.shape == (5, 3)
    if task == "multiclass":
        np.testing.assert_allclose(found.sum(axis=1), 1.0, atol=1e-5)


def test_check_onnx_reports_a_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(5)
    first = create_model("alexnet", num_classes=2).eval()
    second = create_model("alexnet", num_classes=2).eval()
    identity = Calibration.identity("multiclass", 2)
    for name, model in (("a", first), ("b", second)):
        module = build_inference_module(
            model, "alexnet", image_size=SIZE, task="multiclass", classes=("x", "y"),
            calibration=identity,
        )  # fmt: skip
        save_torchscript(module, tmp_path / f"{name}.ts")
        export_onnx(module, tmp_path / f"{name}.onnx")
    images = np.stack([pattern(k, SIZE, SIZE) for k in range(2)])
    with pytest.raises(ValueError, match="differs from the TorchScript module"):
        check_onnx(tmp_path / "a.onnx", tmp_path / "b.ts", images)

"""The optional ONNX export: onnxruntime gives the TorchScript module's probabilities (skipped
where the `onnx` extra is not installed). Exporting takes tens of seconds on two cores."""

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
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from cxr_tune.bundle.onnx import check_onnx, export_onnx, onnx_probabilities  # noqa: E402

pytestmark = pytest.mark.slow
SIZE = 64


def exported(folder: Path, task: str, temperatures: tuple[float, ...], seed: int) -> Path:
    """Export a random AlexNet's module to ``folder`` (model.onnx and model.ts)."""
    torch.manual_seed(seed)
    model = create_model("alexnet", num_classes=3).eval()
    calibration = Calibration(task, tuple(TemperatureFit(t, 0.0, 0.0, 5) for t in temperatures))
    module = build_inference_module(
        model, "alexnet", image_size=SIZE, task=task, classes=("a", "b", "c"),
        calibration=calibration,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    save_torchscript(module, folder / "model.ts")
    export_onnx(module, folder / "model.onnx")
    return folder


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported(tmp_path_factory.mktemp("onnx"), "multiclass", (1.5,), seed=4)


def images(n: int) -> np.ndarray:
    return np.stack([pattern(k, SIZE, SIZE) for k in range(n)])


def test_onnx_export_matches_torchscript(multiclass: Path) -> None:
    batch = images(5)  # not the batch size the graph was exported with
    assert check_onnx(multiclass / "model.onnx", multiclass / "model.ts", batch) <= 1e-5
    found = onnx_probabilities(multiclass / "model.onnx", batch)
    assert found.shape == (5, 3)
    np.testing.assert_allclose(found.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_export_of_a_multilabel_model_keeps_its_label_temperatures(tmp_path: Path) -> None:
    folder = exported(tmp_path, "multilabel", (0.7, 1.0, 2.0), seed=6)
    assert check_onnx(folder / "model.onnx", folder / "model.ts", images(3)) <= 1e-5


def test_check_onnx_reports_a_mismatch(multiclass: Path, tmp_path: Path) -> None:
    torch.manual_seed(5)
    other = create_model("alexnet", num_classes=3).eval()
    module = build_inference_module(
        other, "alexnet", image_size=SIZE, task="multiclass", classes=("a", "b", "c")
    )
    save_torchscript(module, tmp_path / "other.ts")
    with pytest.raises(ValueError, match="differs from the TorchScript module"):
        check_onnx(multiclass / "model.onnx", tmp_path / "other.ts", images(2))

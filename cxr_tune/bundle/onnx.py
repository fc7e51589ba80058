"""Optional ONNX export of the inference module, checked with onnxruntime (``pip install
cxr_tune[onnx]``).

The ONNX graph takes what the package's decoder hands over: uint8 grayscale squares
(B, S, S) at the model's image size, any batch size, and returns the calibrated probabilities.
The TorchScript module's other input layouts and its resize are shape-dependent Python, which an
exported graph fixes at the shapes it was traced with, so they stay out of the ONNX file:
decode files with ``cxr_tune.data.images.decode_file`` (or ``cxr-tune predict``) first.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxr_tune.bundle.inference import InferenceModule, load_torchscript
from cxr_tune.files import replacing

# onnxruntime and PyTorch's CPU kernels differ in float rounding (convolution algorithms).
TOLERANCE = 1e-5
OPSET = 18


class _SquareInput(nn.Module):
    """The inference module restricted to uint8 (B, S, S) squares: no layout or resize branch."""

    def __init__(self, module: InferenceModule) -> None:
        super().__init__()
        self.inner = module

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        m = self.inner
        x = image.float().unsqueeze(1).mul(1.0 / 255.0).sub(m.mean).div(m.std)
        logits = m.head(m.body(x)) / m.temperature
        return torch.sigmoid(logits) if m.multilabel else torch.softmax(logits, dim=1)


def export_onnx(module: InferenceModule, path: str | Path) -> Path:
    """Export ``module`` (not scripted) to ONNX at ``path``: input ``image`` uint8
    (batch, S, S), output ``probabilities`` (batch, classes).

    Raises:
        ImportError: the ``onnx`` extra (onnx, onnxscript) is not installed.
    """
    import onnx  # noqa: F401  (torch.onnx needs both; fail early with their names)
    import onnxscript  # noqa: F401

    size = module.image_size
    sample = torch.zeros((2, size, size), dtype=torch.uint8)
    target = Path(path)
    # The dynamo exporter: the TorchScript one cannot export AlexNet's adaptive pooling below
    # 224 px (a 1x1 feature map pooled to 6x6).
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _SquareInput(module).eval(),
            (sample,),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET,
            dynamo=True,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    with replacing(target) as partial:
        program.save(str(partial))
    return target


def onnx_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of uint8 squares (N, S, S) through onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["probabilities"], {"image": np.ascontiguousarray(images, np.uint8)})
    return np.asarray(output)


def check_onnx(onnx_path: str | Path, torchscript_path: str | Path, images: np.ndarray) -> float:
    """The largest absolute difference between the ONNX file's and the TorchScript module's
    probabilities on ``images``.

    Raises:
        ValueError: the difference exceeds :data:`TOLERANCE`.
    """
    scripted, _ = load_torchscript(torchscript_path)
    with torch.no_grad():
        expected = scripted(torch.as_tensor(np.asarray(images, np.uint8))).numpy()
    found = onnx_probabilities(onnx_path, images)
    difference = float(np.abs(found - expected).max()) if len(images) else 0.0
    if not difference <= TOLERANCE:
        raise ValueError(
            f"The ONNX export differs from the TorchScript module by {difference:.2e} "
            f"(more than {TOLERANCE:g}) on {len(images)} images."
        )
    return difference

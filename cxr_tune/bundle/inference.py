"""The model with its preprocessing inside: one TorchScript module, image in, probabilities out.

:class:`InferenceModule` does what a trial does to an image between the decoder and the network,
then the network, then the calibrated activation:

1. any layout in: (H, W) one grayscale image; (B, H, W) a batch of them; (H, W, 3|4) one colour
   image as PIL and numpy hold it; (B, C, H, W) with C in 1, 3, 4; or (B, H, W, 3|4);
2. uint8 as is (0..255), float read as 0..1 (torchvision's convention) and put on the 0..255
   scale;
3. colour to grayscale with Pillow's ITU-R 601 luma (exactly Pillow's integer formula for uint8
   input, as ``cxr_tune.data.images.to_gray``); alpha is dropped as the decoder drops it;
4. the decoder's geometry (``resize_shorter`` then ``center_crop``): the shorter side resized to
   the image size (bilinear, antialiased, rounded to 8-bit values as the decoder stores them),
   the centre square kept; an image already at the image size is passed through untouched;
5. the training loop's normalisation (``engine.prepare_batch``: /255, minus the gray mean,
   over the gray std), in the same operations;
6. the network, then softmax (multi-class) or sigmoid (multi-label) of the logits divided by
   the calibration temperature(s).

Decoding files is not its job: PNG, JPEG and DICOM files are decoded by
``cxr_tune.data.images.decode_file``, the function training used, which hands over squares at
the image size (step 4 then does nothing, and the probabilities equal the training path's to
float rounding). Step 4 is for users who feed their own arrays of another size: its resize is
PyTorch's antialiased bilinear, not Pillow's, and comes within a few gray levels of it (the
tests and ``scripts/bench`` measure how close); JPEG files decoded at reduced DCT scale by the
decoder differ a little more.

``forward`` returns the calibrated probabilities; ``outputs`` (exported) also returns the
logits, the uncalibrated probabilities and the penultimate features (for the
out-of-distribution score). The module scripts with ``torch.jit.script``, so a user needs only
``torch.jit.load``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_tune.calibration import Calibration
from cxr_tune.engine import GRAY_MEAN, GRAY_STD, LoopSettings, predict_logits
from cxr_tune.features import split_head

# The name of the JSON file stored inside model.ts (torch.jit's extra files): what a user of
# the TorchScript file alone needs to read its outputs.
EXTRA_FILE = "cxr_tune.json"


class InferenceModule(nn.Module):
    """A trained model with the training path's preprocessing and the calibration inside.

    Args:
        body: the network up to its head (``cxr_tune.features.split_head``).
        head: its final linear layer.
        image_size: the side of the square images the model was trained on.
        multilabel: sigmoid per label instead of softmax.
        temperatures: one temperature (multi-class) or one per label.
        classes: the output names, in order.
    """

    def __init__(
        self,
        body: nn.Module,
        head: nn.Module,
        *,
        image_size: int,
        multilabel: bool,
        temperatures: Sequence[float],
        classes: Sequence[str],
    ) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.image_size = int(image_size)
        self.multilabel = bool(multilabel)
        self.classes: list[str] = [str(c) for c in classes]
        self.mean = float(GRAY_MEAN)
        self.std = float(GRAY_STD)
        self.temperatures: list[float] = [float(t) for t in temperatures]
        self.register_buffer("temperature", torch.tensor(self.temperatures, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (B, C) of one image or a batch (any layout in the module
        doc)."""
        return self.outputs(image)["probabilities"]

    @torch.jit.export
    def outputs(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits``, ``raw`` (uncalibrated probabilities), ``probabilities`` (calibrated) and
        ``features`` (penultimate, (B, D)) of one image or a batch."""
        pixels = self.preprocess(image)
        x = pixels.unsqueeze(1).mul(1.0 / 255.0).sub(self.mean).div(self.std)
        features = self.body(x)
        logits = self.head(features)
        scaled = logits / self.temperature
        if self.multilabel:
            raw = torch.sigmoid(logits)
            probabilities = torch.sigmoid(scaled)
        else:
            raw = torch.softmax(logits, dim=1)
            probabilities = torch.softmax(scaled, dim=1)
        return {"logits": logits, "raw": raw, "probabilities": probabilities, "features": features}

    @torch.jit.export
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """What the network sees before normalisation: float (B, S, S) holding 8-bit values,
        exactly a decoded image of ``cxr_tune.data.images.decode_file``'s at the image size."""
        # The buffer is a Tensor (mypy sees register_buffer's attributes as Tensor | Module).
        device = self.temperature.device
        x = self._channels_first(image.to(device))  # type: ignore[arg-type]
        if x.dtype == torch.uint8:
            gray = self._gray_u8(x)
        else:
            gray = self._gray_float(x.float().mul(255.0))
        return self._resize_crop(gray)[:, 0]

    def _channels_first(self, image: torch.Tensor) -> torch.Tensor:
        """Any accepted layout as (B, C, H, W), C in 1, 3, 4."""
        if image.dim() == 2:
            return image.unsqueeze(0).unsqueeze(0)
        if image.dim() == 3:
            if image.shape[2] == 3 or image.shape[2] == 4:
                return image.permute(2, 0, 1).unsqueeze(0)  # one (H, W, C) colour image
            return image.unsqueeze(1)  # a batch of grayscale images
        if image.dim() == 4:
            if image.shape[1] == 1 or image.shape[1] == 3 or image.shape[1] == 4:
                return image
            if image.shape[3] == 3 or image.shape[3] == 4:
                return image.permute(0, 3, 1, 2)
        raise ValueError(
            "expected an image (H, W), (H, W, C), a batch (B, H, W), (B, C, H, W) or "
            f"(B, H, W, C) with C in 1, 3, 4; got shape {list(image.shape)}"
        )

    def _gray_u8(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, 1, H, W) of 8-bit values; colour with Pillow's own
        integer luma, (R*19595 + G*38470 + B*7471 + 2^15) >> 16, alpha dropped."""
        if x.shape[1] == 1:
            return x.float()
        wide = x.to(torch.int32)
        luma = wide[:, 0:1] * 19595 + wide[:, 1:2] * 38470 + wide[:, 2:3] * 7471 + 32768
        return torch.div(luma, 65536, rounding_mode="floor").float()

    def _gray_float(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, C, H, W) on the 0..255 scale -> (B, 1, H, W), rounded to 8-bit values."""
        if x.shape[1] != 1:
            x = x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114
        return x.round().clamp(0.0, 255.0)

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's geometry: shorter side to the image size, then the centre square."""
        size = self.image_size
        height, width = x.shape[2], x.shape[3]
        short = min(height, width)
        if short != size:
            new_long = int(float(size) * float(max(height, width)) / float(short))
            if width <= height:
                height, width = new_long, size
            else:
                height, width = size, new_long
            x = F.interpolate(
                x, size=[height, width], mode="bilinear", align_corners=False, antialias=True
            )
            x = x.round().clamp(0.0, 255.0)  # the decoder stores 8-bit values
        top = _half_even((height - size) // 2, (height - size) % 2)
        left = _half_even((width - size) // 2, (width - size) % 2)
        return x[:, :, top : top + size, left : left + size]


def _half_even(floor_half: int, odd: int) -> int:
    """``round(d / 2)`` as Python rounds it (half to even), from ``d // 2`` and ``d % 2``: the
    decoder's ``center_crop`` computes its offsets with Python's ``round``."""
    if odd == 0:
        return floor_half
    return floor_half if floor_half % 2 == 0 else floor_half + 1


def build_inference_module(
    model: nn.Module,
    name: str,
    *,
    image_size: int,
    task: str,
    classes: Sequence[str],
    calibration: Calibration | None = None,
) -> InferenceModule:
    """Wrap a trained model (built by ``create_model(name, ...)``) for inference, in eval mode,
    on the CPU. The caller's model is not changed (its body and head are copied)."""
    calibration = calibration or Calibration.identity(task, len(classes))
    if calibration.task != task:
        raise ValueError(f"a {calibration.task} calibration for a {task} model")
    body, head = split_head(model, name)
    module = InferenceModule(
        body.cpu(),
        head.cpu(),
        image_size=image_size,
        multilabel=task == "multilabel",
        temperatures=calibration.temperatures,
        classes=classes,
    )
    return module.eval()


def script(module: InferenceModule) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of the module (every registered architecture scripts)."""
    with warnings.catch_warnings():
        # TorchScript is in maintenance mode and says so; it is still what plain
        # ``torch.jit.load`` (no Python code, no cxr_tune) can run.
        warnings.simplefilter("ignore")
        return torch.jit.script(module.eval())


def save_torchscript(
    module: InferenceModule, path: str | Path, facts: Mapping[str, Any] | None = None
) -> Path:
    """Script ``module`` and save it to ``path`` (atomically), with ``facts`` (class names,
    image size, ...) as the JSON extra file :data:`EXTRA_FILE` inside it."""
    import io

    from cxr_tune.files import write_atomic

    scripted = script(module)
    extra = {
        "classes": list(module.classes),
        "image_size": module.image_size,
        "task": "multilabel" if module.multilabel else "multiclass",
        "temperatures": list(module.temperatures),
        "input": "uint8 0..255 or float 0..1; (H,W), (B,H,W), (H,W,C), (B,C,H,W) or (B,H,W,C)",
        "output": "forward: calibrated probabilities (B, classes); outputs(): logits, raw, "
        "probabilities, features",
        **dict(facts or {}),
    }
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's maintenance-mode notice
        torch.jit.save(scripted, buffer, _extra_files={EXTRA_FILE: json.dumps(extra, indent=1)})
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, buffer.getvalue())
    return target


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A saved module (on the CPU, eval mode) and the facts stored inside it."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE] or "{}")


def reference_probabilities(
    model: nn.Module,
    images: np.ndarray,
    *,
    task: str,
    calibration: Calibration | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Probabilities of uint8 images (N, S, S) through the training code's own path
    (``engine.predict_logits`` on the CPU in fp32, then the calibration), for checking the
    TorchScript module against."""
    settings = LoopSettings(device=torch.device("cpu"))
    logits = predict_logits(
        model.cpu(), torch.as_tensor(np.asarray(images)), batch_size=batch_size, settings=settings
    )
    calibration = calibration or Calibration.identity(task, logits.shape[1])
    temperature = torch.tensor(calibration.temperatures, dtype=torch.float32)
    scaled = logits / temperature
    if task == "multilabel":
        return torch.sigmoid(scaled).numpy()
    return torch.softmax(scaled, dim=1).numpy()

"""Writing and reading a model package: a MONAI bundle's layout around one trained model.

::

    <package>/
      configs/metadata.json    MONAI bundle schema fields + cxr_tune's block (format version,
                               classes, image size, calibration, OOD summary, ...)
      configs/inference.json   what ``python -m monai.bundle run`` executes on a folder of
                               images (``monai_config.py``)
      models/model.pt          the network's state dict (``create_model(architecture, ...)``)
      models/model.ts          TorchScript: preprocessing + network + calibration
      models/ood.npz           out-of-distribution statistics (when given)
      models/model.onnx        the ONNX export (when asked for)
      docs/README.md           the model card

``write_bundle`` builds the whole package in a temporary folder beside the target and renames
it into place, so a crash leaves either no package or the old one, never half of one. An
existing package is replaced only with ``force``. ``load_bundle`` reads one back and refuses a
package of another format version with one clear message.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxr_tune.bundle.card import render_model_card
from cxr_tune.bundle.inference import build_inference_module, load_torchscript, save_torchscript
from cxr_tune.bundle.metadata import build_metadata, check_format
from cxr_tune.bundle.monai_config import inference_config
from cxr_tune.calibration import Calibration
from cxr_tune.errors import ConfigError, DataError
from cxr_tune.ood import OodStats

METADATA = Path("configs") / "metadata.json"
INFERENCE = Path("configs") / "inference.json"
STATE_DICT = Path("models") / "model.pt"
TORCHSCRIPT = Path("models") / "model.ts"
OOD = Path("models") / "ood.npz"
ONNX = Path("models") / "model.onnx"
CARD = Path("docs") / "README.md"


@dataclass(frozen=True)
class Bundle:
    """A model package read back from its folder.

    Attributes:
        folder: where it is.
        metadata: ``configs/metadata.json``.
        info: its ``cxr_tune`` block (format version checked).
        calibration: the temperatures (identity when the package has none).
        ood: the out-of-distribution statistics, or None.
    """

    folder: Path
    metadata: dict[str, Any]
    info: dict[str, Any]
    calibration: Calibration
    ood: OodStats | None

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.info["classes"])

    @property
    def task(self) -> str:
        return str(self.info["task"])

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])

    @property
    def architecture(self) -> str:
        return str(self.info["architecture"])

    def torchscript(self) -> torch.jit.ScriptModule:
        """``models/model.ts`` on the CPU, in eval mode."""
        return load_torchscript(self.folder / TORCHSCRIPT)[0]

    def model(self) -> nn.Module:
        """The network rebuilt by ``create_model`` with ``models/model.pt`` loaded (for
        Grad-CAM, which needs the module itself), on the CPU, in eval mode."""
        from cxr_tune.models import create_model

        model = create_model(self.architecture, num_classes=len(self.classes))
        state = torch.load(self.folder / STATE_DICT, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()


def write_bundle(
    folder: str | Path,
    model: nn.Module,
    *,
    architecture: str,
    classes: Sequence[str],
    task: str,
    image_size: int,
    dataset: str,
    calibration: Calibration | None = None,
    ood: OodStats | None = None,
    info: Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
    onnx_images: np.ndarray | None = None,
    force: bool = False,
) -> Path:
    """Write one model's package to ``folder`` (layout in the module doc).

    Args:
        model: the trained network, built by ``create_model(architecture, ...)``.
        classes: its output names, in order.
        task: ``multiclass`` or ``multilabel``.
        image_size: the side of the squares it was trained on.
        dataset: the dataset it was trained on.
        calibration: temperature scaling (default: none, T = 1).
        ood: out-of-distribution statistics to ship (``models/ood.npz``).
        info: facts for the metadata's ``cxr_tune`` block (the experiment's: hashes, space,
            configuration, metrics, ...).
        card: facts for the model card (``cxr_tune.bundle.card``); defaults from the above.
        onnx_images: uint8 (N, S, S) images: also export ``models/model.onnx`` and check it
            with onnxruntime against the TorchScript module on them (needs the ``onnx`` extra).
        force: replace an existing package.

    Returns:
        The package folder.

    Raises:
        ConfigError: ``folder`` exists and ``force`` is not set, or is not a package.
    """
    target = Path(folder)
    _check_target(target, force)
    calibration = calibration or Calibration.identity(task, len(classes))
    model = model.cpu().eval()
    module = build_inference_module(
        model,
        architecture,
        image_size=image_size,
        task=task,
        classes=classes,
        calibration=calibration,
    )
    block: dict[str, Any] = {
        **dict(info or {}),
        "calibration": calibration.to_dict(),
        "ood": ood.summary() if ood is not None else None,
        "files": {
            "state_dict": STATE_DICT.as_posix(),
            "torchscript": TORCHSCRIPT.as_posix(),
            "ood": OOD.as_posix() if ood is not None else None,
            "onnx": ONNX.as_posix() if onnx_images is not None else None,
        },
    }
    metadata = build_metadata(
        classes=classes,
        image_size=image_size,
        task=task,
        architecture=architecture,
        dataset=dataset,
        cxr_tune=block,
    )
    card_facts = {
        "name": metadata["name"],
        "version": metadata["version"],
        "architecture": architecture,
        "task": task,
        "classes": list(classes),
        "image_size": image_size,
        "dataset": {"name": dataset},
        "versions": metadata["cxr_tune"]["versions"],
        "calibration": {"temperatures": list(calibration.temperatures)},
        **({"ood": ood.summary()} if ood is not None else {}),
        **dict(card or {}),
    }
    work = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        for sub in ("configs", "models", "docs"):
            (work / sub).mkdir(parents=True)
        (work / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        (work / INFERENCE).write_text(
            json.dumps(inference_config(), indent=2) + "\n", encoding="utf-8"
        )
        torch.save(model.state_dict(), work / STATE_DICT)
        save_torchscript(module, work / TORCHSCRIPT, {"architecture": architecture})
        if ood is not None:
            ood.save(work / OOD)
        if onnx_images is not None:
            from cxr_tune.bundle.onnx import check_onnx, export_onnx

            export_onnx(module, work / ONNX)
            check_onnx(work / ONNX, work / TORCHSCRIPT, onnx_images)
        (work / CARD).write_text(render_model_card(card_facts), encoding="utf-8")
        _replace(work, target, force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _check_target(target: Path, force: bool) -> None:
    if not target.exists():
        return
    if not force:
        raise ConfigError(
            f"{target} already exists; a model package is never overwritten without --force."
        )
    if not target.is_dir() or (any(target.iterdir()) and not (target / METADATA).is_file()):
        raise ConfigError(
            f"{target} exists and is not a model package (no {METADATA.as_posix()}); "
            "refusing to replace it, even with --force."
        )


def _replace(work: Path, target: Path, force: bool) -> None:
    """Move the finished package into place; an old one (``force``) is removed after."""
    old = None
    if target.exists():
        _check_target(target, force)
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    try:
        os.replace(work, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_bundle(folder: str | Path) -> Bundle:
    """Read a package written by :func:`write_bundle`.

    Raises:
        DataError: the folder is missing, is not a package, or has another format version.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"The model package {root} does not exist (or is not a folder).")
    meta_path = root / METADATA
    if not meta_path.is_file():
        raise DataError(
            f"{root} is not a model package: it has no {METADATA.as_posix()} "
            "(`cxr-tune export` writes one)."
        )
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{meta_path} cannot be read as JSON ({err}).") from None
    info = check_format(metadata, str(meta_path))
    for name in (TORCHSCRIPT, STATE_DICT):
        if not (root / name).is_file():
            raise DataError(f"The model package {root} lacks {name.as_posix()}.")
    calibration = (
        Calibration.from_dict(info["calibration"])
        if info.get("calibration")
        else Calibration.identity(str(info["task"]), len(info["classes"]))
    )
    ood = OodStats.load(root / OOD) if (root / OOD).is_file() else None
    return Bundle(root, metadata, info, calibration, ood)

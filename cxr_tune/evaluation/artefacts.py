"""The evaluation's files beside ``evaluation.json``, for each cell's best model (its first seed):

::

    models/<cell slug>/model.json   which trial and seed, where the weights are, the
                                    calibration and operating thresholds (what export reads)
    models/<cell slug>/ood.npz      the out-of-distribution statistics (``cxr_tune.ood``)
    models/<cell slug>/model.pt     the weights, when the first seed was retrained (otherwise
                                    they are the search trial's final checkpoint, named in
                                    model.json)
    saliency/<cell slug>/*.png      Grad-CAM overlays of a few test images per class, right
                                    and wrong: images from the data, so the report links them
                                    and never embeds them

The evaluation tasks hand these back as bytes (they may run on another node); the driver writes
them here, into the experiment folder or its local copy (which ``finish()`` uploads). Paths in
model.json are relative to the experiment folder, so it reads the same after a copy or on
cluster storage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_tune.constants import MODEL_MANIFEST, MODELS_DIR, SALIENCY_DIR
from cxr_tune.evaluation.contenders import Contender
from cxr_tune.evaluation.evidence import OOD_FILE, WEIGHTS_FILE
from cxr_tune.experiment import cell_slug
from cxr_tune.files import write_atomic

# model.json's own format: a reader of a later one can tell.
MANIFEST_VERSION = 1


def model_folder(cell: str) -> str:
    """``models/<cell slug>``, relative to the experiment folder."""
    return f"{MODELS_DIR}/{cell_slug(cell)}"


def saliency_folder(cell: str) -> str:
    """``saliency/<cell slug>``, relative to the experiment folder."""
    return f"{SALIENCY_DIR}/{cell_slug(cell)}"


def store_artefacts(
    folder: Path,
    contender: Contender,
    run: dict[str, Any],
    checkpoint: Path | None,
) -> dict[str, Any]:
    """Write the files of one best model's first-seed run (taking its ``artefacts`` out of
    ``run``), replacing what an earlier evaluation wrote for the cell.

    Args:
        folder: the experiment folder (or its local copy).
        run: the run as the task returned it.
        checkpoint: the trial's final checkpoint folder the run read its weights from (a local
            path inside ``folder``), or None when it retrained them.

    Returns:
        The manifest (also written as ``models/<slug>/model.json``): paths relative to
        ``folder``.
    """
    artefacts = run.pop("artefacts", None) or {}
    models = model_folder(contender.cell)
    pictures = saliency_folder(contender.cell)
    _clear(folder / models)
    _clear(folder / pictures)
    (folder / models).mkdir(parents=True)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "cell": contender.cell,
        "trial_id": contender.trial.trial_id,
        "trial_folder": contender.trial.folder.name,
        "config": contender.trial.config,
        "seed": run.get("seed"),
        "source": run.get("source"),
        "weights": None,
        "ood": None,
        "overlays": [],
        "calibration": run.get("calibration"),
        "operating_thresholds": run.get("operating_thresholds"),
    }
    if artefacts.get("weights") is not None:
        write_atomic(folder / models / WEIGHTS_FILE, artefacts["weights"])
        manifest["weights"] = {"file": f"{models}/{WEIGHTS_FILE}", "kind": "state_dict"}
    elif checkpoint is not None:
        manifest["weights"] = {
            "file": _relative(checkpoint, folder) + "/state.pt",
            "kind": "search checkpoint",
        }
    if artefacts.get(OOD_FILE) is not None:
        write_atomic(folder / models / OOD_FILE, artefacts[OOD_FILE])
        manifest["ood"] = f"{models}/{OOD_FILE}"
    if artefacts.get("overlays"):
        (folder / pictures).mkdir(parents=True)
    for name, data in sorted((artefacts.get("overlays") or {}).items()):
        write_atomic(folder / pictures / name, data)
        manifest["overlays"].append(f"{pictures}/{name}")
    write_atomic(folder / models / MODEL_MANIFEST, json.dumps(manifest, indent=1))
    return {k: manifest[k] for k in ("weights", "ood", "overlays")} | {
        "manifest": f"{models}/{MODEL_MANIFEST}"
    }


def read_manifest(folder: Path, cell: str) -> dict[str, Any] | None:
    """``models/<slug>/model.json`` of a cell, or None when the evaluation wrote none."""
    path = folder / model_folder(cell) / MODEL_MANIFEST
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    return dict(value) if isinstance(value, Mapping) else None


def _clear(path: Path) -> None:
    """Remove a folder this module wrote before (a cell's best model may have changed)."""
    if path.is_dir():
        shutil.rmtree(path)


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.as_posix()

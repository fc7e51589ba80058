"""One final model: a configuration trained (or loaded from its search checkpoint) with one
seed and scored once on the test split, on other datasets' test splits and on the shortcut
probe's images; for a cell's best configuration also its calibration and, for the first seed,
its out-of-distribution statistics, saliency and what the model package needs
(``evidence.py``). The body of one evaluation task: it runs wherever Ray places it, and needs no
Ray itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxr_tune.constants import CHECKPOINT_FILE, STATUS, STATUS_OK
from cxr_tune.data.types import DatasetArrays, SplitArrays
from cxr_tune.evaluation.evidence import EvidenceRequest
from cxr_tune.evaluation.generalisation import probe_images

# Probabilities are stored to this many decimals (evaluation.json stays small; metrics unmoved).
PROBABILITY_DIGITS = 4


def evaluate_run(
    config: Mapping[str, Any],
    seed: int,
    dataset: DatasetArrays,
    checkpoint: str | None,
    others: Mapping[str, DatasetArrays] | None = None,
    external: Sequence[str] = (),
    probe: bool = False,
    evidence: EvidenceRequest | None = None,
) -> dict[str, Any]:
    """Train (or load) one configuration with ``seed`` and score it once on the test split.

    Args:
        others: test splits of other datasets (``DatasetArrays.for_test()``), by name.
        external: the names in ``others`` to score this model on (external validation).
        probe: also score the test split with the lung field removed (the shortcut probe).
        evidence: also measure the calibration (and, with ``explain``, the OOD statistics and
            the saliency) of ``evidence.py``.

    Returns:
        The run: seed, where the model came from, and the test probabilities (multi-class runs
        also their predictions); ``probe`` and ``external`` hold the probe's and each external
        test split's probabilities; with ``evidence``: ``calibration``,
        ``calibrated_probabilities``, ``operating_thresholds``, ``ood``, ``saliency``, and
        ``artefacts`` (bytes for the driver to write and drop: ``ood.npz``, overlays, the
        weights of a retrained model).
    """
    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import (
        build_state,
        eval_batch_size,
        loop_settings,
        place_split,
        predict_logits,
        select_device,
        train_epochs,
    )

    cfg = TrialConfig.from_dict({**config, "seed": seed})
    device = select_device()
    settings = loop_settings(device, cfg.precision)
    state = build_state(cfg, dataset, device)
    started = time.perf_counter()
    if checkpoint is not None:
        saved = read_checkpoint_state(checkpoint, device)
        state.model.load_state_dict(saved["model"])
        source = "search checkpoint"
    else:
        train = place_split(dataset.split("train"), device, dataset.task, cfg.data_path)
        # The trials' own loop, without a validation split: the same seed trains the same model.
        for result in train_epochs(state, cfg, dataset, train, None, settings):
            if result[STATUS] != STATUS_OK:
                return {
                    "seed": seed,
                    "source": "retrained",
                    "diverged": True,
                    "epoch": result["epoch"],
                }
        source = "retrained"
    batch = eval_batch_size(device, cfg.image_size)

    def logits_of(images: Any) -> np.ndarray:
        # Labels are not read here; the split only carries the images down the data path.
        unlabelled = SplitArrays(np.asarray(images), np.zeros(len(images), dtype=np.int64))
        pixels = place_split(unlabelled, device, "multiclass", cfg.data_path)
        return (
            predict_logits(state.model, pixels, batch_size=batch, settings=settings).cpu().numpy()
        )

    def probabilities(images: Any) -> np.ndarray:
        return _activate(logits_of(images), dataset.task)

    explained = None
    if evidence is not None and evidence.explain:
        from cxr_tune.evaluation.evidence import split_features

        explained = split_features(
            state.model, cfg.model, dataset, others or {}, external, settings, batch, evidence
        )
    # The features pass runs without autocast: its logits are the scored ones only where the
    # loop runs in float32 too (on CPUs), which spares a second pass over the test split and
    # every external set; under mixed precision they are scored as every other model is.
    reuse = explained is not None and settings.autocast_dtype is None
    test = dataset.split("test")
    test_logits = explained[1].test if reuse and explained else logits_of(test.images)
    own = _activate(test_logits, dataset.task)
    run: dict[str, Any] = {"seed": seed, "source": source, "seconds": time.perf_counter() - started}
    run["probabilities"] = own.round(PROBABILITY_DIGITS).tolist()
    if dataset.task != "multilabel":
        run["predictions"] = own.argmax(axis=1).tolist()
    if probe:
        images, region = probe_images(test)
        run["probe"] = {
            "region": region,
            "probabilities": probabilities(images).round(PROBABILITY_DIGITS).tolist(),
        }
    for name in external:
        if reuse and explained:
            scored = _activate(explained[1].external[name], dataset.task)
        else:
            scored = probabilities((others or {})[name].split("test").images)
        run.setdefault("external", {})[name] = {
            "probabilities": scored.round(PROBABILITY_DIGITS).tolist()
        }
    if evidence is not None:
        run.update(
            _evidence(
                state.model,
                cfg.model,
                dataset,
                test_logits,
                explained,
                settings,
                evidence,
                logits_of,
            )  # fmt: skip
        )
        if evidence.keep_weights and source == "retrained":
            from cxr_tune.evaluation.evidence import weights_bytes

            run.setdefault("artefacts", {})["weights"] = weights_bytes(state.model)
    run["seconds"] = time.perf_counter() - started
    return run


def _activate(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multi-class) or sigmoid (multi-label) of float32 logits, as the runs always
    computed them (in PyTorch, float32)."""
    import torch

    values = torch.as_tensor(logits)
    if task == "multilabel":
        return torch.sigmoid(values).numpy()
    return torch.softmax(values, dim=1).numpy()


def _evidence(
    model: Any,
    name: str,
    dataset: DatasetArrays,
    test_logits: np.ndarray,
    explained: Any,
    settings: Any,
    request: EvidenceRequest,
    logits_of: Any,
) -> dict[str, Any]:
    """Calibration (and with ``request.explain`` OOD statistics and saliency) of one model;
    ``explained``: the features and logits of ``split_features`` (None without ``explain``)."""
    from cxr_tune.evaluation.evidence import (
        OOD_FILE,
        calibration_evidence,
        ood_evidence,
        saliency_evidence,
    )

    out: dict[str, Any] = {}
    val = dataset.split("val")
    val_logits = explained[1].val if explained is not None else logits_of(val.images)
    if request.calibrate and len(val):
        out.update(
            calibration_evidence(
                val_logits, np.asarray(val.labels), test_logits, dataset.task, request.positive
            )
        )
    if explained is not None:
        artefacts: dict[str, Any] = {}
        out["ood"], artefacts[OOD_FILE] = ood_evidence(explained[0])
        out["saliency"], artefacts["overlays"] = saliency_evidence(
            model, name, dataset.split("test"), dataset.classes, settings, request
        )
        out["artefacts"] = artefacts
    return out


def read_checkpoint_state(checkpoint: str, device: Any) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder: a local path, or a storage URI (s3://...) that
    every node can read (the tasks may run on another node than the local copy)."""
    import io

    import torch

    if "://" not in checkpoint:
        return torch.load(
            Path(checkpoint) / CHECKPOINT_FILE, map_location=device, weights_only=True
        )
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(checkpoint)
    with fs.open_input_file(f"{path}/{CHECKPOINT_FILE}") as handle:  # one request, not one per MiB
        payload = io.BytesIO(handle.read())
    return torch.load(payload, map_location=device, weights_only=True)

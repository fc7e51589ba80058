"""One final model: a configuration trained (or loaded from its search checkpoint) with one
seed and scored once on the test split, on other datasets' test splits and on the shortcut
probe's images. The body of one evaluation task: it runs wherever Ray places it, and needs no
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
) -> dict[str, Any]:
    """Train (or load) one configuration with ``seed`` and score it once on the test split.

    Args:
        others: test splits of other datasets (``DatasetArrays.for_test()``), by name.
        external: the names in ``others`` to score this model on (external validation).
        probe: also score the test split with the lung field removed (the shortcut probe).

    Returns:
        The run: seed, where the model came from, and the test probabilities (multi-class runs
        also their predictions); ``probe`` and ``external`` hold the probe's and each external
        test split's probabilities.
    """
    import torch

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

    def probabilities(images: Any) -> np.ndarray:
        # Labels are not read here; the split only carries the images down the data path.
        unlabelled = SplitArrays(np.asarray(images), np.zeros(len(images), dtype=np.int64))
        pixels = place_split(unlabelled, device, "multiclass", cfg.data_path)
        logits = predict_logits(state.model, pixels, batch_size=batch, settings=settings)
        if dataset.task == "multilabel":
            return torch.sigmoid(logits).cpu().numpy()
        return torch.softmax(logits, dim=1).cpu().numpy()

    test = dataset.split("test")
    own = probabilities(test.images)
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
        other = (others or {})[name].split("test")
        run.setdefault("external", {})[name] = {
            "probabilities": probabilities(other.images).round(PROBABILITY_DIGITS).tolist()
        }
    return run


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

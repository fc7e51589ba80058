"""Training a grid of the search-efficiency benchmark, and packing its runs into the committed file.

``train``: every configuration of a grid (``search_efficiency_grids.GRIDS``) under each seed,
with the real trial code (``cxr_tune.engine``'s model, optimiser, schedule, batches and
evaluation: the loop ``cxr_tune.trainable`` runs) in this process, one torch thread per run as a
one-CPU trial has. Each run writes its per-epoch signals and its final per-image validation
predictions to ``scripts/bench/runs/search_efficiency/<grid>/`` (ignored by git).

``pack``: fold a grid's runs into ``results/search_efficiency_grids.json``, one entry per grid:
every configuration's curves under every seed (rounded to ``DIGITS`` decimals: the replays read
these), the final predictions of the configurations that can matter for the tolerance (the
``PREDICTED`` best by reference value), the labels, and seconds per epoch. A run of a seed the
file already holds must reproduce its stored curves, and is recorded as reproduced.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, RESULTS, machine_description
from search_efficiency_grids import GRIDS, GridSpec, load_grid_data

RUNS = REPO / "scripts" / "bench" / "runs" / "search_efficiency"
PACKED = RESULTS / "search_efficiency_grids.json"
SIGNALS = ("val_macro_f1", "val_loss", "val_accuracy", "train_loss")
DIGITS = 4
# Configurations (best reference values first) whose final predictions are kept: delta needs
# the best's; a few more let a reader check how close the runners-up are.
PREDICTED = 5

_DATA: dict[str, Any] = {}


def run_path(folder: Path, grid: str, key: str, seed: int) -> Path:
    return folder / grid / f"{key.replace('|', '_')}_seed{seed}.json"


def trial_config(spec: GridSpec, key: str, seed: int) -> dict[str, Any]:
    """The trial config a grid search over the space gives this configuration, with ``seed``."""
    from cxr_tune.config import TrialConfig

    lr, batch, optimizer = key.split("|")
    return {
        **TrialConfig().to_dict(),
        "epochs": spec.epochs,
        "image_size": spec.image_size,
        "momentum": 0.9,
        "lr_schedule": "cosine",
        "model": spec.model,
        "dataset": spec.data,
        "cell": f"{spec.data}/{spec.model}",
        "lr": float(lr),
        "batch_size": int(batch),
        "optimizer": optimizer,
        "seed": seed,
    }


def grid_data(spec: GridSpec) -> Any:
    """The grid's dataset, built once per process."""
    if spec.name not in _DATA:
        _DATA[spec.name] = load_grid_data(spec)
    return _DATA[spec.name]


def train_one(spec: GridSpec, key: str, seed: int) -> dict[str, Any]:
    """Train one configuration under one seed as a grid trial does (the trial's own epoch
    loop, ``engine.train_epochs``); curves and final predictions."""
    import torch
    from small_cnn import register

    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import (
        build_state,
        eval_batch_size,
        loop_settings,
        predict_logits,
        to_device,
        train_epochs,
    )
    from cxr_tune.metrics import no_skill_losses

    register()
    torch.set_num_threads(1)
    dataset = grid_data(spec)
    cfg = TrialConfig.from_dict(trial_config(spec, key, seed))
    device = torch.device("cpu")
    settings = loop_settings(device, cfg.precision)
    state = build_state(cfg, dataset, device)
    train = to_device(dataset.split("train"), device, dataset.task)
    val = to_device(dataset.split("val"), device, dataset.task)
    rows = list(train_epochs(state, cfg, dataset, train, val, settings))
    size = eval_batch_size(device, cfg.image_size)
    logits = predict_logits(state.model, val.images, batch_size=size, settings=settings)
    return {
        "grid": spec.name,
        "configuration": key,
        "seed": seed,
        "status": rows[-1]["status"],
        "signals": {name: [float(r[name]) for r in rows if name in r] for name in SIGNALS},
        "epoch_seconds": [float(r.get("epoch_time_s", 0.0)) for r in rows],
        "predictions": "".join(str(int(p)) for p in logits.argmax(dim=1).tolist()),
        "labels": "".join(str(int(y)) for y in val.labels.tolist()),
        "classes": list(dataset.classes),
        "split_sizes": {name: len(dataset.split(name)) for name in ("train", "val")},
        **no_skill_losses(dataset),
    }


def _train_and_write(item: tuple[str, str, int, Path]) -> str:
    name, key, seed, runs = item
    spec = GRIDS[name]
    started = time.time()
    result = train_one(spec, key, seed)
    result["machine"] = machine_description()
    path = run_path(runs, name, key, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    curve = result["signals"]["val_macro_f1"]
    final = curve[-1] if curve else float("nan")
    return f"{name} {key} seed {seed}: F1 {final:.4f} [{time.time() - started:.0f} s]"


def train(spec: GridSpec, seeds: Sequence[int], keys: Sequence[str], jobs: int, runs: Path) -> int:
    """Train ``keys`` under ``seeds`` (runs already on disk are skipped)."""
    todo = [
        (spec.name, key, seed, runs)
        for seed in seeds
        for key in keys
        if not run_path(runs, spec.name, key, seed).exists()
    ]
    print(f"{len(todo)} runs to train ({len(keys) * len(seeds) - len(todo)} already there)")
    grid_data(spec)  # a real grid is decoded into the cache once, before the workers read it
    if jobs <= 1:
        for item in todo:
            print(_train_and_write(item), flush=True)
        return 0
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for line in pool.imap_unordered(_train_and_write, todo):
            print(line, flush=True)
    return 0


# ---- pack ---------------------------------------------------------------------------------------
def _round(values: Sequence[float]) -> list[float]:
    return [round(float(v), DIGITS) for v in values]


def new_grid(spec: GridSpec, run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "grid": {
            **spec.describe(),
            "seed": spec.data_seed,
            "classes": run.get("classes"),
            "split_sizes": run.get("split_sizes"),
            "val_loss_no_skill": run["val_loss_no_skill"],
            "train_loss_no_skill": run["train_loss_no_skill"],
            "labels": run["labels"],
        },
        "configurations": {},
        "reproduced": [],
    }


def pack_run(
    grid: dict[str, Any],
    run: Mapping[str, Any],
    *,
    retrained: bool = False,
    digits: int | None = DIGITS,
) -> None:
    """Add one run to a grid. A seed the grid holds must come out the same (to the stored
    digits); packing a run again changes nothing. A ``retrained`` run (trained again, apart,
    to check that training repeats) must be of a seed the grid holds; it is recorded in
    ``reproduced`` and changes nothing else.

    Raises:
        ValueError: other validation labels, a curve that differs from the stored one, or a
            retrained run of a seed the grid does not hold.
    """
    key, seed = run["configuration"], str(run["seed"])
    if run["labels"] != grid["grid"]["labels"]:
        raise ValueError(f"{key} seed {seed}: validation labels differ from the grid's")
    stored = grid["configurations"].get(key, {"runs": {}})["runs"].get(seed)
    if retrained and stored is None:
        raise ValueError(f"{key} seed {seed}: retrained, but the grid holds no such run")
    curves = {
        name: (_round(values) if digits is not None else list(values))
        for name, values in run["signals"].items()
        if values
    }
    if stored is not None:
        stored_f1 = stored["val_macro_f1"]
        new_f1 = [round(v, len(str(stored_f1[0]).split(".")[-1])) for v in curves["val_macro_f1"]]
        if stored_f1 != curves["val_macro_f1"] and stored_f1 != new_f1:
            raise ValueError(f"{key} seed {seed}: the run does not reproduce the stored curve")
        if retrained:
            if [key, int(seed)] not in grid["reproduced"]:
                grid["reproduced"].append([key, int(seed)])
            return
        # The stored curves stay as they were (to the digits they were stored with).
        curves = {**curves, **{k: v for k, v in stored.items() if k != "predictions"}}
    entry = grid["configurations"].setdefault(key, {"runs": {}})
    entry["runs"][seed] = {**curves, "predictions": run["predictions"]}


def keep_predictions(grid: dict[str, Any], keep: int = PREDICTED) -> None:
    """Drop the final predictions of all but the ``keep`` best configurations (by mean final
    value over their seeds): the tolerance needs only the best's."""
    epochs = int(grid["grid"]["epochs"])
    means = {}
    for key, entry in grid["configurations"].items():
        finals = [
            r["val_macro_f1"][-1]
            for r in entry["runs"].values()
            if len(r["val_macro_f1"]) == epochs
        ]
        means[key] = sum(finals) / len(finals) if finals else -1.0
    kept = set(sorted(means, key=lambda k: -means[k])[:keep])
    for key, entry in grid["configurations"].items():
        if key not in kept:
            for run in entry["runs"].values():
                run.pop("predictions", None)


def epoch_seconds(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per epoch by batch size and optimiser (``16|adam``) and by batch size alone
    (``16``): medians over ``runs``.

    Replays only need the order in which trials' epochs end; medians over every run of a grid
    keep that order free of what else the machine ran while one run trained."""
    pooled: dict[str, list[float]] = {}
    for run in runs:
        kind = run["configuration"].split("|", 1)[1]
        seconds = [s for s in run.get("epoch_seconds", []) if s > 0]
        pooled.setdefault(kind, []).extend(seconds)
        pooled.setdefault(kind.split("|")[0], []).extend(seconds)
    return {kind: round(float(np.median(v)), 3) for kind, v in sorted(pooled.items()) if v}


def fill_epoch_seconds(grid: dict[str, Any], seconds: Mapping[str, float]) -> None:
    """Each configuration's seconds per epoch, from ``epoch_seconds`` (by batch size alone
    where no run had its optimiser). A configuration that has them keeps them: replays of a
    grid must not change because more runs were packed."""
    for key, entry in grid["configurations"].items():
        if "epoch_seconds" in entry:
            continue
        kind = key.split("|", 1)[1]
        value = seconds.get(kind, seconds.get(kind.split("|")[0]))
        if value is not None:
            entry["epoch_seconds"] = value


def read_packed(path: Path = PACKED) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"benchmark": "search_efficiency_grids", "grids": {}}


def pack(spec: GridSpec, runs: Path, output: Path = PACKED, *, retrained: bool = False) -> int:
    """Fold the runs of ``spec`` under ``runs`` into the packed file (``retrained``: check
    them against the runs it holds and record them as reproduced; see ``pack_run``)."""
    folder = runs / spec.name
    paths = sorted(folder.glob("*.json"))
    if not paths:
        print(f"error: no runs of grid {spec.name} in {folder}", file=sys.stderr)
        return 2
    packed = read_packed(output)
    grid = packed["grids"].get(spec.name)
    loaded = [json.loads(p.read_text()) for p in paths]
    for run in loaded:
        grid = grid or new_grid(spec, run)
        pack_run(grid, run, retrained=retrained)
    assert grid is not None
    held = grid["configurations"]
    missing = [
        (k, s)
        for k in spec.configurations()
        for s in spec.seeds
        if str(s) not in held.get(k, {}).get("runs", {})
    ]
    if missing:
        print(f"warning: {spec.name}: {len(missing)} runs missing", file=sys.stderr)
    keep_predictions(grid)
    fill_epoch_seconds(grid, epoch_seconds(loaded))
    grid["configurations"] = dict(
        sorted(grid["configurations"].items(), key=lambda kv: spec.configurations().index(kv[0]))
    )
    packed["grids"][spec.name] = grid
    packed["grids"] = dict(sorted(packed["grids"].items(), key=lambda kv: list(GRIDS).index(kv[0])))
    write_packed(output, packed)
    print(f"wrote {output}: {spec.name}, {len(paths)} runs", file=sys.stderr)
    return 0


def write_packed(path: Path, packed: Mapping[str, Any]) -> None:
    """The packed file with one line per run (curves and predictions), so diffs stay readable."""
    text = json.dumps(packed, indent=1)
    text = re.sub(r"\[\n\s+([-0-9.e,\s]+?)\n\s+\]", _one_line, text)
    path.write_text(text + "\n")


def _one_line(match: re.Match[str]) -> str:
    return "[" + ", ".join(v.strip() for v in match.group(1).split(",")) + "]"

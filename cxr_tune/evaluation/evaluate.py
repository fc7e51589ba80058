"""The final evaluation of an experiment on Ray: every contender (``contenders.py``) with every
seed as one task (``runs.evaluate_run``), placed as its search trials were, then the assembly
(``assemble.py``) written to ``evaluation.json``, and each cell's best model's files
(``artefacts.py``: what export needs, the saliency overlays) beside it.

The search never sees the test split (trials receive ``DatasetArrays.for_search()``); the
evaluation is its only reader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cxr_tune.constants import EVALUATION_FILE
from cxr_tune.data.types import DatasetArrays
from cxr_tune.evaluation.artefacts import store_artefacts
from cxr_tune.evaluation.assemble import assemble
from cxr_tune.evaluation.contenders import choose_contenders
from cxr_tune.evaluation.costs import FinishingCosts
from cxr_tune.evaluation.evidence import EvidenceRequest
from cxr_tune.evaluation.generalisation import generalisation_plan, positive_class
from cxr_tune.evaluation.runs import evaluate_run
from cxr_tune.evaluation.schedule import NO_ROOM, Job, LeftOut, fastest_epochs, schedule
from cxr_tune.evaluation.sources import ExternalSet, reload_datasets
from cxr_tune.experiment import Experiment
from cxr_tune.files import write_atomic

Echo = Callable[[str], None]


def _checkpoint_location(
    checkpoint: Path | None, folder: Path, checkpoint_root: str | None
) -> str | None:
    if checkpoint is None:
        return None
    if checkpoint_root is None:
        return str(checkpoint)
    return f"{checkpoint_root.rstrip('/')}/{checkpoint.relative_to(folder).as_posix()}"


def evaluate_experiment(
    exp: Experiment,
    datasets: Mapping[str, DatasetArrays] | None = None,
    *,
    seeds: int | None = None,
    echo: Echo = print,
    checkpoint_root: str | None = None,
    externals: Mapping[str, ExternalSet] | None = None,
    label_map: str | Path | None = None,
    deadline: float | None = None,
    slots: int = 1,
) -> dict[str, Any]:
    """Evaluate an experiment's contenders on the test split and write ``evaluation.json``.

    Each cell's best configuration is also scored on the test split of every other dataset it
    shares classes with (the experiment's, and ``externals``), and on its own test split with
    the lungs removed (``cxr_tune.generalisation``); its calibration is fitted on the
    validation split, and its first seed's out-of-distribution statistics, saliency and
    overlays are measured and written beside ``evaluation.json`` (``artefacts.py``). The
    result is also set as
    ``exp.evaluation``, so a report written next from ``exp`` shows it without reading the
    folder again.

    Args:
        exp: the loaded experiment (its folder is where ``evaluation.json`` goes).
        datasets: the decoded datasets with their test splits; reloaded from the record if None.
        seeds: seeds per contender (default: the experiment's ``eval_seeds``).
        checkpoint_root: where the evaluation tasks read trial checkpoints when the experiment
            folder is a local copy of a remote experiment (its storage URI); default the folder.
        externals: datasets that were not searched, scored as external sets (test split only).
        label_map: a user's label-map file laid over the built-in mapping (default: the one
            the search was given, if any).
        deadline: when (``time.monotonic()``) the evaluation and the report should be done,
            under a time budget: what does not fit is cut back (``schedule.py``) and the
            evaluation says what. None: every contender and seed, trained to the end.
        slots: evaluation tasks that run at once (for the deadline's estimate).

    Raises:
        ConfigError: a class of an external or imagefolder dataset is close to a shared
            class but not one (a typo).
    """
    import ray

    folder = exp.folder
    datasets = datasets or reload_datasets(exp)
    externals = dict(externals or {})
    plan = generalisation_plan(exp, datasets, externals, label_map)
    n_seeds = seeds or int(exp.record.get("eval_seeds", 1))
    base_seed = int(exp.record.get("seed", 0))
    rounds = int(exp.record.get("bootstrap", 1000))
    contenders = choose_contenders(exp)
    started = time.monotonic()
    costs = FinishingCosts(seeds=n_seeds, slots=slots, mode=exp.mode)
    jobs, left_out = schedule(
        contenders,
        n_seeds,
        fastest_epochs(exp.trials),
        costs,
        None if deadline is None else deadline - started,
    )
    echo(f"evaluate: {len(contenders)} configurations x {n_seeds} seed(s) on the test split")
    _say_cut_back(jobs, left_out, echo)
    refs = {name: ray.put(arrays) for name, arrays in datasets.items()}
    others = {name: arrays.for_test() for name, arrays in datasets.items()}
    others.update({name: ext.arrays.for_test() for name, ext in externals.items()})
    others_ref = ray.put(others)
    positives = {name: positive_class(plan.classes[name], plan.maps) for name in datasets}
    pending: dict[str, dict[int, Any]] = {}
    # Longest first (``schedule`` sorts them): retraining runs go out before checkpoint loads
    # (seconds), so the last task to finish is not a long one started when the others were done.
    for job in jobs:
        contender, k = job.contender, job.seed_index
        config = contender.trial.config
        best = "best" in contender.roles
        resources = _resources(exp, str(config.get("model")))
        task = ray.remote(num_cpus=resources["CPU"], num_gpus=resources["GPU"])(evaluate_run)
        evidence = None
        if best:
            # Calibration for every seed; the first seed (the model export packages) also
            # gets its OOD statistics, saliency and, when retrained, its weights kept.
            evidence = EvidenceRequest(
                positive=positives.get(str(config["dataset"])),
                explain=k == 0,
                keep_weights=k == 0,
                rounds=rounds,
                seed=base_seed,
            )
        pending.setdefault(contender.key, {})[k] = task.remote(
            config,
            int(config.get("seed", base_seed)) + k,
            refs[str(config["dataset"])],
            _checkpoint_location(job.checkpoint, folder, checkpoint_root),
            others_ref if best else None,
            tuple(plan.pairs.get(str(config["dataset"]), {})) if best else (),
            best,
            evidence,
        )
    by_key = {(job.contender.key, job.seed_index): job for job in jobs}
    runs: dict[str, list[dict[str, Any]]] = {}
    for key, by_seed in pending.items():
        runs[key] = []
        for k in sorted(by_seed):
            run = ray.get(by_seed[k])
            run["source"] = by_key[(key, k)].source
            if by_key[(key, k)].epochs_trained is not None:
                run["epochs_trained"] = by_key[(key, k)].epochs_trained
            runs[key].append(run)
    echo(f"evaluate: {len(jobs)} models scored [{time.monotonic() - started:.0f} s]")
    scored = [c for c in contenders if runs.get(c.key)]
    for contender in scored:
        first = runs[contender.key][0]
        first_job = by_key.get((contender.key, 0))
        if "best" in contender.roles and first_job is not None and not first.get("diverged"):
            first["files"] = store_artefacts(folder, contender, first, first_job.checkpoint)
        for run in runs[contender.key]:
            run.pop("artefacts", None)
    all_sets = {**datasets, **{name: ext.arrays for name, ext in externals.items()}}
    result = assemble(exp, datasets, scored, runs, rounds, plan=plan, others=all_sets)
    result["external_sets"] = [ext.describe(name) for name, ext in externals.items()]
    if left_out:
        result["left_out"] = [each.describe() for each in left_out]
    write_atomic(folder / EVALUATION_FILE, json.dumps(result, indent=1))
    exp.evaluation = result
    echo(f"evaluate: wrote {folder / EVALUATION_FILE} [{time.monotonic() - started:.0f} s]")
    return result


def _say_cut_back(jobs: list[Job], left_out: list[LeftOut], echo: Echo) -> None:
    """One line per model scored as it stands, or left out, to meet a time budget."""
    for job in jobs:
        if job.epochs_trained is not None:
            echo(
                f"evaluate: {job.contender.cell} ({', '.join(job.contender.roles)}): "
                f"{job.source}: {NO_ROOM}"
            )
    for each in left_out:
        what = "left out" if each.seed_index == 0 else f"extra seed {each.seed_index} left out"
        echo(
            f"evaluate: {each.contender.cell} ({', '.join(each.contender.roles)}): {what}: "
            f"{each.reason}"
        )


def _resources(exp: Experiment, model: str) -> dict[str, float]:
    for line in exp.record.get("plan", []):
        if line.get("model") == model and "resources" in line:
            return {
                "CPU": float(line["resources"].get("CPU", 1)),
                "GPU": float(line["resources"].get("GPU", 0)),
            }
    return {"CPU": 1.0, "GPU": 0.0}

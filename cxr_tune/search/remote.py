"""Evaluation and report of an experiment on remote storage (s3://, gs://, ...).

The report and the choice of configurations to evaluate read the experiment folder as local
files, so the driver works on a local copy (without trial checkpoints, which can be gigabytes)
and uploads what it wrote (``evaluation.json``, ``report.md``, ``report.html``, ``trials.csv``,
``plots/``) back into the experiment folder. The evaluation tasks read each contender's final
checkpoint straight from the storage, on whichever node they run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from cxr_tune.data.types import DatasetArrays
from cxr_tune.search.storage import CHECKPOINT_PREFIX, Storage

Echo = Callable[[str], None]


def local_copy_folder(name: str) -> Path:
    """Where a driver keeps its copy of the remote experiment ``name`` (kept: open the report)."""
    scratch = Path(os.environ.get("CXR_TUNE_SCRATCH", "~/.cache/cxr_tune/studies")).expanduser()
    return scratch / name / "copy"


def fetch_final_checkpoints(storage: Storage, name: str, copy: Path) -> int:
    """Download into ``copy`` the last checkpoint of each trial the evaluation will use.

    ``final_checkpoint`` looks for them locally to decide whether a trial's own weights can be
    scored; the tasks then read them from the storage. Returns how many were fetched.
    """
    from cxr_tune.evaluate import choose_contenders
    from cxr_tune.report.experiment import load_experiment

    fetched = 0
    for contender in choose_contenders(load_experiment(copy)):
        folder = contender.trial.folder.name
        checkpoints = sorted(
            {
                path.split("/")[1]
                for path in storage.list_files(name, folder)
                if path.split("/")[1].startswith(CHECKPOINT_PREFIX)
            }
        )
        if checkpoints:
            storage.download(name, copy, relative=f"{folder}/{checkpoints[-1]}", checkpoints=True)
            fetched += 1
    return fetched


def evaluate_and_report(
    storage: Storage,
    name: str,
    datasets: Mapping[str, DatasetArrays] | None,
    echo: Echo = print,
) -> tuple[Path, dict[str, int], int]:
    """Evaluate (when ``datasets`` are given; needs Ray) and report a remote experiment.

    Returns:
        The local copy, the trial counts by state, and the number of trials.
    """
    from cxr_tune.report import write_experiment_report
    from cxr_tune.report.experiment import load_experiment

    copy = local_copy_folder(name)
    echo(f"report: working on a local copy of {storage.experiment(name)} in {copy}")
    with storage.local_copy(name, copy) as folder:
        if datasets is not None:
            from cxr_tune.evaluate import evaluate_experiment

            fetch_final_checkpoints(storage, name, folder)
            evaluate_experiment(
                folder, datasets, echo=echo, checkpoint_root=storage.experiment(name)
            )
        experiment = load_experiment(folder)
        write_experiment_report(experiment)
    return copy, experiment.state_counts(), len(experiment.trials)

"""Evaluation and report of an experiment on remote storage (s3://, gs://, ...).

The report and the choice of configurations to evaluate read the experiment folder as local
files, so the driver works on a local copy (without trial checkpoints, which can be gigabytes)
and uploads what it wrote (``evaluation.json``, ``report.md``, ``report.html``, ``trials.csv``,
``plots/``) back into the experiment folder. The evaluation tasks read each contender's final
checkpoint straight from the storage, on whichever node they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cxr_tune.constants import CHECKPOINT_PREFIX
from cxr_tune.data.types import DatasetArrays
from cxr_tune.experiment import Experiment, load_experiment
from cxr_tune.storage import Storage, local_copy_folder

Echo = Callable[[str], None]


def fetch_final_checkpoints(storage: Storage, name: str, experiment: Experiment) -> int:
    """Download into the local copy ``experiment`` the last checkpoint of each trial the
    evaluation will use.

    ``final_checkpoint`` looks for them locally to decide whether a trial's own weights can be
    scored; the tasks then read them from the storage. Returns how many were fetched.
    """
    from cxr_tune.evaluate import choose_contenders

    fetched = 0
    for contender in choose_contenders(experiment):
        folder = contender.trial.folder.name
        checkpoints = sorted(
            {
                path.split("/")[1]
                for path in storage.list_files(name, folder)
                if path.split("/")[1].startswith(CHECKPOINT_PREFIX)
            }
        )
        if checkpoints:
            storage.download(
                name, experiment.folder, relative=f"{folder}/{checkpoints[-1]}", checkpoints=True
            )
            fetched += 1
    return fetched


def evaluate_and_report(
    storage: Storage,
    name: str,
    datasets: Mapping[str, DatasetArrays] | None,
    echo: Echo = print,
) -> Experiment:
    """Evaluate (when ``datasets`` are given; needs Ray) and report a remote experiment.

    Returns:
        The experiment as read from its local copy (``folder``: the copy, kept afterwards).
    """
    from cxr_tune.report import write_experiment_report

    copy = local_copy_folder(name)
    echo(f"report: working on a local copy of {storage.experiment(name)} in {copy}")
    with storage.local_copy(name, copy) as folder:
        experiment = load_experiment(folder)
        if datasets is not None:
            from cxr_tune.evaluate import evaluate_experiment, load_externals

            fetch_final_checkpoints(storage, name, experiment)
            evaluate_experiment(
                experiment,
                datasets,
                echo=echo,
                checkpoint_root=storage.experiment(name),
                externals=load_externals(experiment, echo=echo),
            )
        write_experiment_report(experiment)
    return experiment

"""Finishing an experiment, in one place: the final evaluation on the test split (needs Ray),
then the report. The local search, the search on cluster storage and ``cxr-tune evaluate`` all
call :func:`finish`.

An experiment on remote storage (s3://, gs://, ...) is finished on a local copy without trial
checkpoints (they can be gigabytes): the choice of contenders and the report read local files,
the evaluation tasks read each contender's final checkpoint straight from the storage, on
whichever node they run, and what was written (``evaluation.json``, ``report.md``,
``report.html``, ``trials.csv``, ``plots/``) goes back up into the experiment folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cxr_tune.config import DataSource
from cxr_tune.constants import CHECKPOINT_PREFIX, REPORT_MD
from cxr_tune.data.types import DatasetArrays
from cxr_tune.errors import DataError
from cxr_tune.evaluation.contenders import choose_contenders
from cxr_tune.evaluation.evaluate import evaluate_experiment
from cxr_tune.evaluation.generalisation import generalisation_plan
from cxr_tune.evaluation.sources import load_externals, reload_datasets
from cxr_tune.experiment import Experiment, load_experiment
from cxr_tune.report import write_experiment_report
from cxr_tune.storage import Storage, is_uri, local_copy_folder

Echo = Callable[[str], None]


@dataclass(frozen=True)
class FinishOptions:
    """How to finish an experiment.

    Attributes:
        evaluate: run the final evaluation before the report (False: the report only, e.g.
            for an interrupted search).
        seeds: seeds per evaluated configuration (default: the experiment's ``eval_seeds``).
        externals: datasets not searched to score the final models on, besides the ones the
            search recorded.
        label_map: a user's label-map file (default: the one the search was given, if any).
        cache_dir: the decoded-dataset cache (default: ``$CXR_TUNE_CACHE``).
        ray_address: the cluster to run the evaluation on when no Ray is running yet
            (default: ``$RAY_ADDRESS``, else a local one).
        deadline: when (``time.monotonic()``) the evaluation and report should be done (a
            time budget's end): the evaluation scores what fits (``schedule.py``). None: all.
        slots: evaluation tasks that run at once (for the deadline's estimate).
    """

    evaluate: bool = True
    seeds: int | None = None
    externals: tuple[DataSource, ...] = ()
    label_map: str | None = None
    cache_dir: Path | None = None
    ray_address: str | None = None
    deadline: float | None = None
    slots: int = 1


@dataclass(frozen=True)
class Finished:
    """A finished experiment.

    Attributes:
        experiment: as loaded from its local folder (for remote storage, the local copy,
            kept afterwards: its ``folder`` holds the report too).
        location: the experiment folder (a path or a storage URI).
        report: where ``report.md`` is, beside the experiment (a path or a URI).
    """

    experiment: Experiment
    location: str
    report: str

    @property
    def is_copy(self) -> bool:
        """Whether ``experiment.folder`` is a local copy of a remote experiment."""
        return is_uri(self.location)


def finish(
    location: str | Path,
    datasets: Mapping[str, DatasetArrays] | None = None,
    options: FinishOptions | None = None,
    echo: Echo = print,
) -> Finished:
    """Evaluate an experiment's best configurations on the test split, then write its report.

    Args:
        location: the experiment folder, local or a storage URI (``s3://bucket/prefix/name``).
        datasets: the experiment's decoded datasets with their test splits (a search passes the
            ones it loaded); decoded again from the record when None.
        options: see ``FinishOptions``.

    Raises:
        DataError: ``location`` is no experiment, or a dataset changed since the search.
        ConfigError: a class that maps onto no shared class (checked before any model runs).
    """
    options = options or FinishOptions()
    storage, name = _storage_of(str(location))
    copy = local_copy_folder(name)
    if not storage.is_local:
        echo(f"report: working on a local copy of {storage.experiment(name)} in {copy}")
    with storage.local_copy(name, copy) as folder:
        experiment = load_experiment(folder)
        if options.evaluate:
            _evaluate(storage, name, experiment, datasets, options, echo)
        report = write_experiment_report(experiment)
    where = storage.experiment(name)
    return Finished(experiment, where, str(report) if storage.is_local else f"{where}/{REPORT_MD}")


def _storage_of(location: str) -> tuple[Storage, str]:
    """The storage holding the experiment at ``location``, and the experiment's name there."""
    if not is_uri(location):
        path = Path(location).expanduser().resolve()
        # load_experiment says what is wrong with a local folder (missing, a file, ...).
        return Storage(str(path.parent)), path.name
    storage, name = Storage.of_experiment(location)
    if not storage.exists(name):
        raise DataError(f"There is no experiment at '{location}'.")
    return storage, name


def _evaluate(
    storage: Storage,
    name: str,
    experiment: Experiment,
    datasets: Mapping[str, DatasetArrays] | None,
    options: FinishOptions,
    echo: Echo,
) -> None:
    """Decode what the evaluation needs and check its label mapping, all before Ray starts; then
    run it (on the Ray already running, or one started for it)."""
    if datasets is None:
        datasets = reload_datasets(experiment, cache_dir=options.cache_dir)
    externals = load_externals(
        experiment, options.externals, cache_dir=options.cache_dir, echo=echo
    )
    # Every class must map before a model runs: an unmatched name stops here (exit 2).
    generalisation_plan(experiment, datasets, externals, options.label_map)
    checkpoint_root = None
    if not storage.is_local:
        fetch_final_checkpoints(storage, name, experiment)
        checkpoint_root = storage.experiment(name)
    with ray_session(options.ray_address):
        evaluate_experiment(
            experiment,
            datasets,
            seeds=options.seeds,
            echo=echo,
            checkpoint_root=checkpoint_root,
            externals=externals,
            label_map=options.label_map,
            deadline=options.deadline,
            slots=options.slots,
        )


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """The Ray already running in this process (a search's), else one joined or started for the
    block (``address``, ``$RAY_ADDRESS``, or a local one) and shut down after it."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # A local Ray started for the evaluation needs no dashboard (the search's runner starts
    # none either); a cluster keeps its own.
    ray.init(address=address, log_to_driver=False, include_dashboard=False if not address else None)
    try:
        yield
    finally:
        ray.shutdown()


def fetch_final_checkpoints(storage: Storage, name: str, experiment: Experiment) -> int:
    """Download into the local copy ``experiment`` the last checkpoint of each trial the
    evaluation will use.

    ``final_checkpoint`` looks for them locally to decide whether a trial's own weights can be
    scored; the tasks then read them from the storage. Returns how many were fetched.
    """
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

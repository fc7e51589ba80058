"""A search on a two-node cluster (one process, ``ray.cluster_utils``) that loses a node.

Head and worker offer one CPU each, so the two concurrent trials run one per node. The worker
is killed once a trial on it has reported (and checkpointed) an epoch; that trial must finish
on the head, continuing from its checkpoint rather than from epoch 1.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cxr_tune.config import DataSource, Profile
from cxr_tune.search.plan import build_plan
from cxr_tune.search.runner import SearchRequest, run_search
from cxr_tune.spaces import parse_space
from cxr_tune.storage import Storage
from tests.search.conftest import read_results, trial_folders

pytestmark = pytest.mark.integration

EPOCHS = 4
TRIALS = 3
SPACE = {
    "name": "nodes",
    "metric": {"name": "val_macro_f1", "mode": "max"},
    "cells": {"model": ["alexnet"]},
    "params": {"lr": {"loguniform": [1.0e-4, 1.0e-3]}},
    "fixed": {"epochs": EPOCHS, "batch_size": 16, "image_size": 64, "augment": "none"},
    "search": {"algorithm": "random", "num_samples": TRIALS, "max_concurrent": 2, "seed": 0},
    "scheduler": {"name": "none"},
}
# Small and uncapped: the smoke profile would cut the trials to 2 epochs.
PROFILE = Profile(
    name="test",
    description="four short epochs per trial",
    image_size=64,
    phantom_images=128,
    eval_seeds=1,
    cpus_per_trial=1.0,
)


class NodeKiller(threading.Thread):
    """Kills ``node`` once a trial on it has reported an epoch, and notes which trial."""

    def __init__(self, cluster: Any, node: Any, experiment: Path) -> None:
        super().__init__(daemon=True)
        self.cluster, self.node, self.experiment = cluster, node, experiment
        self.victim: str | None = None
        self.epoch_at_kill = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for folder in trial_folders(self.experiment):
                results = read_results(folder)
                on_node = [r for r in results if r.get("node_id") == self.node.node_id]
                if on_node and not results[-1].get("done") and results[-1]["epoch"] < EPOCHS:
                    self.victim, self.epoch_at_kill = folder.name, int(results[-1]["epoch"])
                    self.cluster.remove_node(self.node, allow_graceful=False)
                    return
            time.sleep(0.1)


@pytest.mark.parametrize("ray_cluster", [1], indirect=True)
def test_search_survives_losing_a_worker_node(ray_cluster: Any, short_tmp: Path) -> None:
    import ray

    worker = ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
    ray.init(address=ray_cluster.address, log_to_driver=False)
    head_id = ray_cluster.head_node.node_id
    plan = build_plan(parse_space(SPACE, source="nodes.yaml"), PROFILE, ("phantom",))
    storage = Storage.parse(str(short_tmp / "results"))
    request = SearchRequest(
        plan=plan,
        sources=(DataSource("phantom", None),),
        dataset_names=("phantom",),
        dataset_keys=("phantom",),
        storage=storage,
        name="nodes",
        evaluate=False,
    )
    killer = NodeKiller(ray_cluster, worker, Path(storage.experiment("nodes")))
    killer.start()
    try:
        outcome = run_search(request, echo=lambda line: None)
    finally:
        killer.stop.set()
        killer.join(timeout=10)

    assert killer.victim is not None, "no trial was seen running on the worker node"
    assert outcome.states.get("completed") == TRIALS, outcome.states
    results = {f.name: read_results(f) for f in trial_folders(Path(outcome.experiment))}
    nodes = {r["node_id"] for lines in results.values() for r in lines}
    assert {head_id, worker.node_id} <= nodes, "trials did not run on both nodes"

    moved = results[killer.victim]
    epochs = [r["epoch"] for r in moved]
    where = [r["node_id"] for r in moved]
    assert epochs[-1] == EPOCHS and epochs == sorted(epochs), f"epochs {epochs}"
    first_on_head = where.index(head_id)
    assert where[:first_on_head] == [worker.node_id] * first_on_head
    # Resumed from its checkpoint: the head went on after the worker's last epoch.
    assert epochs[first_on_head] == epochs[first_on_head - 1] + 1 > 1, f"epochs {epochs}"
    assert epochs[first_on_head - 1] >= killer.epoch_at_kill
    iterations = [r["training_iteration"] for r in moved]
    assert iterations == epochs, f"training_iteration {iterations} (restored from checkpoint)"

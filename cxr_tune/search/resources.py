"""Before a GPU search starts: does each architecture's GPU share fit the GPU's memory?

A share below one GPU (``gpus_per_trial``: 0.25 packs four AlexNet trials on a GPU) is only
safe if one trial fits in that part of the GPU's memory at the largest batch size the space can
choose. This is measured, not guessed: for each such architecture, one training step at that
batch size and one evaluation pass at the evaluation batch size run on a GPU of the cluster, in
a Ray task that holds the whole GPU; what the trial needed is the CUDA context (the GPU memory
in use before the model was built) plus the peak memory torch's allocator reserved. It must not
exceed share x the GPU's memory. CPU-only runs skip the check.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cxr_tune.constants import ENV_GPU_CHECK_TIMEOUT
from cxr_tune.data.types import DatasetArrays
from cxr_tune.errors import ConfigError
from cxr_tune.search.plan import Plan

Echo = Callable[[str], None]
# How long to wait for a GPU: an autoscaling cluster may be starting its first GPU node.
DEFAULT_WAIT_S = 900.0
# Optimisers by the state they keep per parameter (the most state is the largest need).
OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd": 1}
GIB = 1024**3
# How often a wait for a GPU node says that it is still waiting.
PROGRESS_EVERY_S = 60.0
# The node type Ray's read-only autoscaler gives each node of a cluster it cannot grow (a local
# `ray.init()`, `ray start` without an autoscaling config): `node_<node id>`.
_READONLY_NODE_TYPE = re.compile(r"^node_[0-9a-f]{56}$")


@dataclass(frozen=True)
class Probe:
    """One architecture to measure, in its most memory-hungry setting of the space."""

    model: str
    share: float
    batch_size: int
    eval_batch_size: int
    image_size: int
    num_classes: int
    task: str
    optimizer: str
    precision: str


@dataclass(frozen=True)
class Measurement:
    model: str
    needed_bytes: int
    total_bytes: int
    device: str


def largest_choice(plan: Plan, name: str, default: Any) -> Any:
    """The largest value ``name`` can take in the plan (searched, cell factor or fixed)."""
    values: list[Any] = [plan.fixed.get(name, default)]
    if name in plan.params:
        param = plan.params[name]
        values = list(param.choices) if param.kind == "choice" else [param.high]
    values += list(plan.space.cells.get(name, ()))
    return max(values)


def models_of(plan: Plan) -> set[str]:
    """Every architecture a trial of the plan can train (cell factor, searched or fixed)."""
    models = {str(plan.base_config(cell).get("model")) for cell in plan.cells}
    if "model" in plan.params:
        models |= {str(v) for v in plan.params["model"].choices}
    return models


def hungriest_optimizer(plan: Plan) -> str:
    names = [str(plan.fixed.get("optimizer", "adam"))]
    if "optimizer" in plan.params:
        names = [str(v) for v in plan.params["optimizer"].choices]
    names += [str(v) for v in plan.space.cells.get("optimizer", ())]
    return max(names, key=lambda n: OPTIMIZER_STATE.get(n, 2))


def probes(plan: Plan, datasets: Mapping[str, DatasetArrays]) -> list[Probe]:
    """What to measure: each architecture of the plan whose GPU share is a fraction of a GPU."""
    image_size = int(plan.fixed["image_size"])
    batch = int(math.floor(largest_choice(plan, "batch_size", 32)))
    widest = max(datasets.values(), key=lambda d: d.num_classes)
    models = sorted(models_of(plan))
    found = []
    for model in models:
        share = plan.resources(model)["GPU"]
        if 0 < share < 1:
            found.append(
                Probe(
                    model=model,
                    share=share,
                    batch_size=batch,
                    eval_batch_size=_eval_batch(image_size),
                    image_size=image_size,
                    num_classes=widest.num_classes,
                    task=widest.task,
                    optimizer=hungriest_optimizer(plan),
                    precision=str(plan.fixed.get("precision", "auto")),
                )
            )
    return found


def _eval_batch(image_size: int) -> int:
    import torch

    from cxr_tune.engine import eval_batch_size

    return eval_batch_size(torch.device("cuda"), image_size)


def measure(probe: Probe) -> Measurement:
    """Peak GPU memory of one training step and one evaluation pass (runs on a GPU)."""
    import torch

    from cxr_tune.engine import (
        DeviceSplit,
        loop_settings,
        place_model,
        predict_logits,
        train_one_epoch,
    )
    from cxr_tune.models import create_model
    from cxr_tune.optim import create_optimizer

    device = torch.device("cuda")
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    context = total - free  # the CUDA context, measured before anything of the model
    torch.cuda.reset_peak_memory_stats(device)
    settings = loop_settings(device, probe.precision)
    model = create_model(probe.model, num_classes=probe.num_classes, pretrained=False)
    model = place_model(model, settings)
    optimizer = create_optimizer(
        probe.optimizer, model.parameters(), lr=1e-4, momentum=0.9, weight_decay=0.0
    )
    size = (probe.batch_size, probe.image_size, probe.image_size)
    images = torch.randint(0, 256, size, dtype=torch.uint8, device=device)
    if probe.task == "multilabel":
        labels = torch.randint(0, 2, (probe.batch_size, probe.num_classes), device=device).float()
    else:
        labels = torch.randint(0, probe.num_classes, (probe.batch_size,), device=device)
    train_one_epoch(
        model,
        optimizer,
        DeviceSplit(images=images, labels=labels),
        task=probe.task,  # type: ignore[arg-type]
        batch_size=probe.batch_size,
        settings=settings,
    )
    held_out = torch.randint(
        0, 256, (probe.eval_batch_size, probe.image_size, probe.image_size), dtype=torch.uint8
    ).to(device)
    predict_logits(model, held_out, batch_size=probe.eval_batch_size, settings=settings)
    torch.cuda.synchronize(device)
    needed = context + torch.cuda.max_memory_reserved(device)
    del model, optimizer, images, labels, held_out
    torch.cuda.empty_cache()
    return Measurement(probe.model, int(needed), int(total), torch.cuda.get_device_name(device))


def measure_all(probes_: Sequence[Probe]) -> list[Measurement]:
    return [measure(probe) for probe in probes_]


def smallest_share(needed_bytes: int, total_bytes: int) -> float | None:
    """The smallest share Ray can pack evenly (1/k of a GPU) that holds ``needed_bytes``."""
    for k in range(8, 0, -1):
        if needed_bytes <= total_bytes / k:
            return 1.0 / k
    return None


def problems(checked: Sequence[tuple[Probe, Measurement]]) -> list[str]:
    """One line per architecture whose share is too small for what it needed."""
    found = []
    for probe, got in checked:
        allowed = probe.share * got.total_bytes
        if got.needed_bytes <= allowed:
            continue
        fits = smallest_share(got.needed_bytes, got.total_bytes)
        advice = (
            f"set resources.gpus_per_trial.{probe.model} to {fits:.3g} in the space"
            if fits is not None
            else "it does not fit one GPU at all"
        )
        found.append(
            f"{probe.model} at batch {probe.batch_size}, {probe.image_size} px needs "
            f"{got.needed_bytes / GIB:.1f} GiB, but a {probe.share:g} share of this "
            f"{got.total_bytes / GIB:.0f} GiB {got.device} is {allowed / GIB:.1f} GiB: "
            f"{advice}, or lower the largest batch size"
        )
    return found


def summary(checked: Sequence[tuple[Probe, Measurement]]) -> str:
    return ", ".join(
        f"{p.model} {m.needed_bytes / GIB:.1f} of {p.share * m.total_bytes / GIB:.1f} GiB"
        for p, m in checked
    )


def check_gpus_reachable(plan: Plan, echo: Echo = print) -> None:
    """Before data is decoded or trials start: can the GPU trials of ``plan`` ever run?

    A cluster with GPUs: yes. Without: where an autoscaler can add nodes, wait for a GPU node
    (asking the autoscaler for one), saying so every ``PROGRESS_EVERY_S``; where none can, fail
    at once instead of leaving trials to wait for ever.

    Raises:
        ConfigError: no GPU and no autoscaler, or no GPU node came within the wait.
    """
    import ray

    if not plan.profile.uses_gpu or ray.cluster_resources().get("GPU"):
        return
    cpus = ray.cluster_resources().get("CPU", 0.0)
    if not autoscaler_can_add_nodes():
        raise ConfigError(
            f"--profile {plan.profile.name}: the cluster has no GPU ({cpus:g} CPUs) and no "
            "autoscaler that could add one, so its GPU trials would wait for ever. Use "
            "--profile full to run the space as written on these CPUs, --profile cpu for a run "
            "sized to finish in minutes, or --address of a cluster with GPUs."
        )
    wait = float(os.environ.get(ENV_GPU_CHECK_TIMEOUT, DEFAULT_WAIT_S))
    echo(
        f"resources: no GPU yet; asking the cluster's autoscaler for a GPU node (up to {wait:.0f} s)"
    )
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}])
    try:
        found = wait_for(
            lambda: bool(ray.cluster_resources().get("GPU")),
            timeout_s=wait,
            echo=echo,
            waiting_for="a GPU node from the autoscaler",
        )
    finally:
        request_resources(bundles=[])  # trials ask for what they need themselves
    if not found:
        raise ConfigError(
            f"--profile {plan.profile.name}: no GPU node joined the cluster within {wait:.0f} s "
            f"({ENV_GPU_CHECK_TIMEOUT}); check the autoscaler (`ray status`, `ray monitor cluster.yaml`) and "
            "the GPU node types and limits of the cluster configuration."
        )
    echo(f"resources: {ray.cluster_resources().get('GPU', 0):g} GPU(s) in the cluster")


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout_s: float,
    echo: Echo,
    waiting_for: str,
    every_s: float | None = None,
    poll_s: float = 1.0,
) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; True if it held.

    Prints ``resources: still waiting for <waiting_for> (N s of M s)`` every ``every_s``
    (default ``PROGRESS_EVERY_S``), so that a long wait is never silent.
    """
    every = PROGRESS_EVERY_S if every_s is None else every_s
    started = time.monotonic()
    said = started
    while True:
        if condition():
            return True
        now = time.monotonic()
        if now - started >= timeout_s:
            return False
        if now - said >= every:
            echo(
                f"resources: still waiting for {waiting_for} "
                f"({now - started:.0f} s of {timeout_s:.0f} s)"
            )
            said = now
        time.sleep(min(poll_s, max(0.0, timeout_s - (now - started))))


def autoscaler_can_add_nodes(status_wait_s: float = 15.0) -> bool:
    """Whether the connected cluster runs an autoscaler that can start nodes.

    Ray has no public API for this; it is read from the autoscaler's own state. Autoscaler v2
    (what `ray up` starts since Ray 2.50): yes. Autoscaler v1 reports its status in the GCS
    every few seconds; a cluster it cannot grow has only read-only node types (see
    ``readonly_status``). No status within ``status_wait_s``: no autoscaler.
    """
    from cxr_tune.search._ray_internals import autoscaler_v2_running, autoscaling_status

    try:
        if autoscaler_v2_running():
            return True
    except Exception:  # an older GCS without the key: read the v1 status below
        pass
    deadline = time.monotonic() + status_wait_s
    while True:
        raw = autoscaling_status()
        if raw:
            return not readonly_status(json.loads(raw))
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def readonly_status(status: Mapping[str, Any]) -> bool:
    """True when a v1 autoscaling status comes from Ray's read-only autoscaler (or none): every
    node type it knows is the `node_<node id>` type that it gives nodes it cannot add to."""
    report = status.get("autoscaler_report") or {}
    types = set(report.get("active_nodes") or {}) | set(report.get("idle_nodes") or {})
    types |= set(report.get("pending_launches") or {})
    types |= {str(node[1]) for node in report.get("pending_nodes") or [] if len(node) > 1}
    return all(_READONLY_NODE_TYPE.match(t) for t in types)


def check_gpu_shares(
    plan: Plan, datasets: Mapping[str, DatasetArrays], echo: Echo = print
) -> list[Measurement]:
    """Measure each fractional GPU share on a GPU of the cluster before trials start.

    Raises:
        ConfigError: a share is too small for what its architecture needs (with the share
            that fits).
    """
    if not plan.profile.uses_gpu:
        echo("resources: no GPUs asked for (CPU profile); no GPU shares to check")
        return []
    todo = probes(plan, datasets)
    if not todo:
        echo("resources: every trial has whole GPUs; no shares to check")
        return []
    measured = _measure_on_cluster(todo, echo)
    if measured is None:
        return []
    checked = list(zip(todo, measured))
    wrong = problems(checked)
    if wrong:
        raise ConfigError("GPU shares too small: " + "; ".join(wrong) + ".")
    echo(f"resources: GPU shares fit ({summary(checked)}, measured on {measured[0].device})")
    return measured


def _measure_on_cluster(todo: Sequence[Probe], echo: Echo) -> list[Measurement] | None:
    """Run the measurements in a task that holds one whole GPU; None when none comes."""
    import ray
    from ray.exceptions import GetTimeoutError

    wait = float(os.environ.get(ENV_GPU_CHECK_TIMEOUT, DEFAULT_WAIT_S))
    if not ray.cluster_resources().get("GPU"):
        echo(f"resources: waiting up to {wait:.0f} s for a GPU node to measure GPU shares on")
    task = ray.remote(num_gpus=1, num_cpus=1)(measure_all).remote(list(todo))
    done = wait_for(
        lambda: bool(ray.wait([task], timeout=1.0)[0]),
        timeout_s=wait,
        echo=echo,
        waiting_for="a free GPU to measure GPU shares on",
        poll_s=0.0,
    )
    try:
        if not done:
            raise GetTimeoutError
        measured: list[Measurement] = ray.get(task)
        return measured
    except GetTimeoutError:
        ray.cancel(task, force=True)
        echo(
            f"resources: no GPU became free within {wait:.0f} s ({ENV_GPU_CHECK_TIMEOUT}); GPU shares not "
            "checked: trials whose batch does not fit will fail as out of memory"
        )
        return None

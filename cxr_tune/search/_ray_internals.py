"""Every use of Ray Tune's (and its TensorBoard writer's) private internals, in one place.

cxr_tune needs a few things Ray offers no public API for: its ASHA brackets and per-trial
bracket table (to keep one bracket set per cell and draw brackets from a seeded generator), the
controller's flag that saves the experiment state at the next step, a restored tuner's searcher,
scheduler and stopper (to hand them this run's study file and time budget), the autoscaler's
state (can the cluster add a GPU node?), and tensorboardX's file writer behind Ray's TBX callback.
They are reached only through the functions below, and ``problems()`` says, naming this module,
which of them the installed Ray no longer has: ``tests/search/test_internals.py`` runs it, so an
upgrade that moves one fails loudly there instead of somewhere in a search. pyproject.toml bounds
ray to the versions tested.
"""

from __future__ import annotations

import inspect
from typing import Any

MODULE = "cxr_tune/search/_ray_internals.py"


# --- ASHA -----------------------------------------------------------------------------------
def asha_brackets(scheduler: Any) -> list[Any]:
    """The brackets of a Ray ``AsyncHyperBandScheduler``."""
    return list(scheduler._brackets)


def bracket_rung_count(bracket: Any) -> int:
    """How many rungs a bracket of ASHA has."""
    return len(bracket._rungs)


def asha_trial_table(scheduler: Any) -> dict[str, Any]:
    """ASHA's trial id -> bracket table (the scheduler decides only for trials in it)."""
    table: dict[str, Any] = scheduler._trial_info
    return table


# --- The experiment state and a restored tuner ------------------------------------------------
def save_experiment_soon(tune_controller: Any) -> None:
    """Have Tune save the experiment state at its next step instead of up to 10 s later.

    ``--resume`` restores trials as the last saved state has them: a trial that ended after it
    would be restored as unfinished and train again (a trial ASHA stopped would even go past its
    stop), and a trial added after it would be lost (the searcher, restored from the same state,
    would deal a new one in its place). Tune saves at most every 10 s, and forced only every
    ``num_to_keep`` checkpoints of a trial, so each new trial and each end of a trial asks for a
    save. The flag is the experiment checkpoint manager's own.
    """
    manager = getattr(tune_controller, "_checkpoint_manager", None)
    if manager is not None and hasattr(manager, "_should_force_sync_up"):
        manager._should_force_sync_up = True


def restored_parts(tuner: Any) -> tuple[Any, Any, Any]:
    """A restored ``Tuner``'s search algorithm, scheduler and run config (None each where a Ray
    Client tuner keeps them remote)."""
    local = getattr(tuner, "_local_tuner", None)
    tune_config = getattr(local, "_tune_config", None)
    return (
        getattr(tune_config, "search_alg", None),
        getattr(tune_config, "scheduler", None),
        getattr(local, "_run_config", None),
    )


# --- The autoscaler ---------------------------------------------------------------------------
def autoscaler_v2_running() -> bool:
    """Whether the connected cluster runs autoscaler v2 (what ``ray up`` starts since 2.50)."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    return bool(is_autoscaler_v2(fetch_from_server=True))


def autoscaling_status() -> bytes | None:
    """Autoscaler v1's status report in the GCS (None when there is none)."""
    from ray.experimental.internal_kv import _internal_kv_get

    raw: bytes | None = _internal_kv_get("__autoscaling_status")  # DEBUG_AUTOSCALING_STATUS
    return raw


# --- tensorboardX, behind Ray's TBX logger callback -------------------------------------------
def add_summary(writer: Any, summary: Any) -> None:
    """Add a raw summary protocol buffer (the HParams plugin's) to a ``SummaryWriter``."""
    writer._get_file_writer().add_summary(summary)


# --- Is everything above still there? ---------------------------------------------------------
def problems() -> list[str]:
    """What the installed Ray (and tensorboardX) lack of the internals above, one line each,
    naming this module; empty when all are there."""
    import ray
    import tensorboardX
    from ray.tune import Tuner
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.schedulers import AsyncHyperBandScheduler

    found: list[str] = []

    def need(condition: bool, what: str) -> None:
        if not condition:
            found.append(
                f"{MODULE}: {what} is gone in ray {ray.__version__} (tensorboardX "
                f"{tensorboardX.__version__}); update this module and the bound in pyproject.toml."
            )

    asha = AsyncHyperBandScheduler(metric="m", mode="max", max_t=4, grace_period=1)
    need(hasattr(asha, "_brackets") and bool(asha._brackets), "AsyncHyperBandScheduler._brackets")
    need(hasattr(asha, "_trial_info"), "AsyncHyperBandScheduler._trial_info")
    if getattr(asha, "_brackets", None):
        need(hasattr(asha._brackets[0], "_rungs"), "ASHA's bracket._rungs")
    need(
        "_checkpoint_manager" in _source(TuneController.__init__),
        "TuneController._checkpoint_manager",
    )
    need(
        "_should_force_sync_up" in _source(_experiment_checkpoint_manager()),
        "the experiment checkpoint manager's _should_force_sync_up",
    )
    need("_local_tuner" in _source(Tuner.__init__), "Tuner._local_tuner")
    internal = _tuner_internal_source()
    need("_tune_config" in internal and "_run_config" in internal, "TunerInternal's configs")
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2  # noqa: F401
        from ray.experimental.internal_kv import _internal_kv_get  # noqa: F401
    except ImportError:
        found.append(f"{MODULE}: the autoscaler state readers are gone in ray {ray.__version__}.")
    need(
        hasattr(tensorboardX.SummaryWriter, "_get_file_writer"),
        "tensorboardX.SummaryWriter._get_file_writer",
    )
    return found


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _experiment_checkpoint_manager() -> Any:
    """The class of Tune's experiment checkpoint manager (None where it has moved)."""
    from ray.tune.execution import experiment_state

    return getattr(experiment_state, "_ExperimentCheckpointManager", None)


def _tuner_internal_source() -> str:
    from ray.tune.impl import tuner_internal

    return _source(tuner_internal.TunerInternal)

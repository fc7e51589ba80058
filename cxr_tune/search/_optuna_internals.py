"""Every use of Optuna's private internals, in one place.

The searcher tells Optuna about trials it did not ``ask`` for in this process (a search resumed
after the driver stopped), reads and writes trials by their storage id, and fails trials that
were lost with a stopped driver. Optuna's public ``Study`` works with live ``Trial`` objects and
trial numbers only, so these go through the study's storage and a trial's storage id. They are
reached only through the functions below, and ``problems()`` says, naming this module, which of
them the installed Optuna no longer has: ``tests/search/test_internals.py`` runs it, so an upgrade
that moves one fails loudly there. pyproject.toml bounds optuna to the versions tested.
"""

from __future__ import annotations

from typing import Any

MODULE = "cxr_tune/search/_optuna_internals.py"


def storage_of(study: Any) -> Any:
    """The storage behind a study (``BaseStorage``: get_trial, set_trial_user_attr, ...)."""
    return study._storage


def storage_id(trial: Any) -> int:
    """A trial's id in its storage (a live ``Trial`` or a ``FrozenTrial``)."""
    return int(trial._trial_id)


def problems() -> list[str]:
    """What the installed Optuna lacks of the internals above, one line each, naming this
    module; empty when all are there."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found: list[str] = []

    def need(condition: bool, what: str) -> None:
        if not condition:
            found.append(
                f"{MODULE}: {what} is gone in optuna {optuna.__version__}; update this module "
                "and the bound in pyproject.toml."
            )

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    need(hasattr(study, "_storage"), "Study._storage")
    need(hasattr(trial, "_trial_id"), "Trial._trial_id")
    if hasattr(study, "_storage") and hasattr(trial, "_trial_id"):
        storage = study._storage
        for method in ("get_trial", "set_trial_user_attr", "set_trial_state_values"):
            need(callable(getattr(storage, method, None)), f"BaseStorage.{method}")
        frozen = storage.get_trial(trial._trial_id)
        need(hasattr(frozen, "_trial_id"), "FrozenTrial._trial_id")
    return found

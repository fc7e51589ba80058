"""User-facing errors and the did-you-mean helper.

Every error a user can cause (a bad flag, a bad YAML key, a dataset folder that is not what it
claims to be) is one of these exceptions. The CLIs catch them, print the message on one line and
exit with code 2; nothing else in the package prints tracebacks for user mistakes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CxrTuneError(Exception):
    """Base class of the errors a user can fix by changing their input."""


class ConfigError(CxrTuneError):
    """A command-line flag, search-space file or config value is invalid."""


class DataError(CxrTuneError):
    """A dataset folder, file or cache is missing, unreadable or not in the expected layout."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name_message(kind: str, value: str, choices: Iterable[str]) -> str:
    """Format the standard message for an unknown registry name.

    >>> unknown_name_message("model", "resnet5", ["alexnet", "resnet50"])
    "Unknown model 'resnet5'. Did you mean 'resnet50'? Available: alexnet, resnet50."
    """
    names = sorted(str(c) for c in choices)
    return f"Unknown {kind} '{value}'.{did_you_mean(value, names)} Available: {', '.join(names)}."

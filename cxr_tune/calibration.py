"""Temperature scaling (Guo et al., 2017): calibrated probabilities from a trained model's logits.

A network trained with cross-entropy is often over-confident: the probability it gives its
answer is higher than the rate at which such answers are right. Temperature scaling divides the
logits by one scalar T, fitted on the validation split by minimising the negative log-likelihood
(NLL), and leaves the ranking of the classes, hence every thresholded metric at the argmax,
unchanged. T > 1 softens an over-confident model; T = 1 is the model as trained.

- Multi-class: one temperature for the model (softmax over the classes).
- Multi-label: one temperature per label (a sigmoid per label); entries whose target is neither
  0 nor 1 (the data layer's masked label) are left out, as ``cxr_tune.metrics`` leaves them out.

A temperature that the data cannot determine is 1.0, with the reason: no images, one outcome
only (every target the same), every image already predicted right (the NLL then falls without
bound as T shrinks), or an optimum at the edge of the searched range. Never NaN.

Pure numpy/scipy (no torch, no Ray); the model package applies the temperature inside its
TorchScript module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxr_tune.metrics import expected_calibration_error, known_entries, top_label_calibration
from cxr_tune.stats import interval

TASKS: tuple[str, ...] = ("multiclass", "multilabel")
# Temperatures are searched on a log scale within these bounds; an optimum at a bound means the
# NLL keeps falling past it (all wrong: T -> inf; all right: T -> 0), so no finite T is "the" fit.
MIN_TEMPERATURE = 1.0 / 64.0
MAX_TEMPERATURE = 64.0
# An optimum this close (in log T) to a bound counts as lying on it.
_BOUND_TOLERANCE = 1e-3

REASON_EMPTY = "no validation images with a known target"
REASON_ONE_OUTCOME = "the validation targets hold one outcome only"
REASON_SEPARABLE = "every validation image is already predicted right (the NLL falls as T -> 0)"
REASON_BOUND = "the NLL optimum lies at the edge of the searched range"
REASON_NOT_FINITE = "the logits hold NaN or infinite values"


@dataclass(frozen=True)
class TemperatureFit:
    """One fitted temperature.

    Attributes:
        temperature: the value to divide the logits by (1.0 when not determined).
        nll_before: mean NLL on the fitting images at T = 1.
        nll_after: mean NLL at ``temperature``.
        images: how many (known) entries it was fitted on.
        reason: why the temperature was left at 1.0, or None when it was fitted.
    """

    temperature: float
    nll_before: float
    nll_after: float
    images: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "nll_before": _finite_or_none(self.nll_before),
            "nll_after": _finite_or_none(self.nll_after),
            "images": self.images,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Calibration:
    """The temperatures of one model: one (multi-class) or one per label (multi-label)."""

    task: str
    fits: tuple[TemperatureFit, ...]

    @property
    def temperatures(self) -> tuple[float, ...]:
        return tuple(f.temperature for f in self.fits)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the model package's metadata stores it)."""
        return {
            "method": "temperature scaling (Guo et al. 2017), NLL on the validation split",
            "task": self.task,
            "temperatures": list(self.temperatures),
            "fits": [f.to_dict() for f in self.fits],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Calibration:
        """Read back what :meth:`to_dict` wrote."""
        task = _check_task(str(values["task"]))
        fits = tuple(
            TemperatureFit(
                temperature=float(f["temperature"]),
                nll_before=_float_or_nan(f.get("nll_before")),
                nll_after=_float_or_nan(f.get("nll_after")),
                images=int(f.get("images", 0)),
                reason=f.get("reason"),
            )
            for f in values["fits"]
        )
        return cls(task=task, fits=fits)

    @classmethod
    def identity(cls, task: str, num_outputs: int) -> Calibration:
        """No scaling (T = 1 everywhere), e.g. for a model without a validation split."""
        fit = TemperatureFit(1.0, math.nan, math.nan, 0, "not fitted")
        count = 1 if _check_task(task) == "multiclass" else num_outputs
        return cls(task=task, fits=(fit,) * count)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> TemperatureFit:
    """Fit one temperature for a multi-class model (softmax), minimising the validation NLL.

    Args:
        logits: (N, C) raw outputs.
        targets: (N,) class indices.

    Returns:
        The fit; its temperature is 1.0 (with a reason) when the data cannot determine it.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64).ravel()
    if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"logits of shape {logits.shape} do not match targets of shape {targets.shape}"
        )
    n = len(targets)
    if n == 0:
        return TemperatureFit(1.0, math.nan, math.nan, 0, REASON_EMPTY)
    if not np.isfinite(logits).all():
        return TemperatureFit(1.0, math.nan, math.nan, n, REASON_NOT_FINITE)
    rows = np.arange(n)

    def nll(temperature: float) -> float:
        scaled = logits / temperature
        top = scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
        return float((log_norm - scaled[rows, targets]).mean())

    before = nll(1.0)
    if len(np.unique(targets)) < 2:
        return TemperatureFit(1.0, before, before, n, REASON_ONE_OUTCOME)
    ordered = np.sort(logits, axis=1)
    right = (logits.argmax(axis=1) == targets) & (ordered[:, -1] > ordered[:, -2])
    if right.all():
        return TemperatureFit(1.0, before, before, n, REASON_SEPARABLE)
    return _minimise(nll, before, n)


def fit_label_temperatures(logits: np.ndarray, targets: np.ndarray) -> tuple[TemperatureFit, ...]:
    """Fit one temperature per label of a multi-label model (sigmoid per label).

    Args:
        logits: (N, L) raw outputs.
        targets: (N, L) 0/1 targets; any other value (masked) is left out of that label's fit.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ValueError(
            f"logits of shape {logits.shape} do not match targets of shape {targets.shape}"
        )
    known = known_entries(targets)
    return tuple(
        _fit_label(logits[known[:, j], j], targets[known[:, j], j] == 1)
        for j in range(logits.shape[1])
    )


def _fit_label(logits: np.ndarray, positive: np.ndarray) -> TemperatureFit:
    n = len(logits)
    if n == 0:
        return TemperatureFit(1.0, math.nan, math.nan, 0, REASON_EMPTY)
    if not np.isfinite(logits).all():
        return TemperatureFit(1.0, math.nan, math.nan, n, REASON_NOT_FINITE)
    sign = np.where(positive, 1.0, -1.0)

    def nll(temperature: float) -> float:
        # -log sigmoid(s * z / T) = softplus(-s * z / T), computed stably.
        return float(np.logaddexp(0.0, -sign * logits / temperature).mean())

    before = nll(1.0)
    if positive.all() or not positive.any():
        return TemperatureFit(1.0, before, before, n, REASON_ONE_OUTCOME)
    if (sign * logits > 0).all():
        return TemperatureFit(1.0, before, before, n, REASON_SEPARABLE)
    return _minimise(nll, before, n)


def _minimise(nll: Any, before: float, n: int) -> TemperatureFit:
    """Minimise ``nll(T)`` over log T within the bounds (the NLL is unimodal in log T)."""
    from scipy.optimize import minimize_scalar

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    found = minimize_scalar(
        lambda log_t: nll(math.exp(log_t)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    log_t = float(found.x)
    if not math.isfinite(log_t) or min(log_t - low, high - log_t) < _BOUND_TOLERANCE:
        return TemperatureFit(1.0, before, before, n, REASON_BOUND)
    after = nll(math.exp(log_t))
    if not math.isfinite(after) or after > before:
        # The bounded search is a local one; never hand back a temperature worse than none.
        return TemperatureFit(1.0, before, before, n, REASON_BOUND)
    return TemperatureFit(math.exp(log_t), before, after, n)


def fit_calibration(logits: np.ndarray, targets: np.ndarray, task: str) -> Calibration:
    """Temperature scaling fitted on a validation split's logits and targets.

    Args:
        logits: (N, C) raw model outputs on the validation split.
        targets: (N,) class indices (multi-class) or (N, C) 0/1 with masked entries
            (multi-label).
        task: ``multiclass`` or ``multilabel``.
    """
    if _check_task(task) == "multiclass":
        return Calibration(task, (fit_temperature(logits, targets),))
    return Calibration(task, fit_label_temperatures(logits, targets))


def apply_temperature(logits: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Logits divided by the temperature(s): one for every class, or one per label column."""
    logits = np.asarray(logits, dtype=np.float64)
    temperatures = np.asarray(calibration.temperatures, dtype=np.float64)
    if calibration.task == "multiclass":
        return logits / temperatures[0]
    if logits.shape[-1] != len(temperatures):
        raise ValueError(
            f"{len(temperatures)} label temperatures for logits with {logits.shape[-1]} columns"
        )
    return logits / temperatures


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multi-class) or sigmoid (multi-label) of logits, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    if _check_task(task) == "multilabel":
        return 0.5 * (1.0 + np.tanh(0.5 * logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def calibrated_probabilities(logits: np.ndarray, calibration: Calibration) -> np.ndarray:
    """The calibrated probabilities of raw logits."""
    return probabilities(apply_temperature(logits, calibration), calibration.task)


def calibration_error(probs: np.ndarray, targets: np.ndarray, task: str) -> float:
    """Expected calibration error as the report computes it: of the top class (multi-class), or
    of every known label entry (multi-label)."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if _check_task(task) == "multiclass":
        return expected_calibration_error(*top_label_calibration(probs, targets))
    known = known_entries(targets)
    return expected_calibration_error(probs[known], (targets[known] == 1).astype(float))


def ece_before_after(
    logits: np.ndarray,
    targets: np.ndarray,
    calibration: Calibration,
    indices: np.ndarray | None = None,
) -> dict[str, Any]:
    """ECE of the raw and of the calibrated probabilities on one split (the test split), with
    bootstrap 95% intervals over the images when ``indices`` is given.

    Args:
        indices: (rounds, N) resampled image indices (``cxr_tune.stats.bootstrap_indices``);
            the same resample serves before and after, so their difference is paired.

    Returns:
        ``before``, ``after`` and ``difference`` (after - before), each ``{"mean": point,
        "ci95": [low, high]}`` (the interval is NaN without ``indices``), and the temperatures.
    """
    task = calibration.task
    targets = np.asarray(targets)
    raw = probabilities(logits, task)
    scaled = calibrated_probabilities(logits, calibration)
    before = calibration_error(raw, targets, task)
    after = calibration_error(scaled, targets, task)
    boot_before: list[float] = []
    boot_after: list[float] = []
    for sample in indices if indices is not None else ():
        boot_before.append(calibration_error(raw[sample], targets[sample], task))
        boot_after.append(calibration_error(scaled[sample], targets[sample], task))
    differences = [a - b for a, b in zip(boot_after, boot_before, strict=True)]
    return {
        "task": task,
        "temperatures": list(calibration.temperatures),
        "before": interval(before, boot_before),
        "after": interval(after, boot_after),
        "difference": interval(after - before, differences),
    }


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"The value of `task` is {task!r}, but must be one of {', '.join(TASKS)}.")
    return task


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)

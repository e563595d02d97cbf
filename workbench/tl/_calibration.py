"""Probabilities that mean something: temperature scaling and the calibration error.

A classifier trained to minimise the cross-entropy of a few dozen slides soon puts most of its
probabilities at 0 or 1. *Temperature scaling* (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017) divides the slide logits by one scalar ``T`` fitted on held-out patients
by minimising their negative log-likelihood (NLL): ``T > 1`` softens an over-confident model,
``T < 1`` sharpens an under-confident one. A single scalar cannot change which class is
predicted, nor a binary AUC; it only moves the probabilities.

Everything here is NumPy/SciPy on arrays of logits, labels and probabilities (no torch).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from workbench._reliability import expected_calibration_error, reliability_table

logger = logging.getLogger(__name__)

#: The temperature is searched for in ``[T_MIN, T_MAX]`` (on the scale of ``1/T``).
T_MIN, T_MAX = 0.05, 100.0


def _as_logits(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be an (n, n_classes >= 2) array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    return z


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_with_temperature(logits, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``softmax(logits / T)``.

    Parameters
    ----------
    logits
        ``(n, n_classes)`` or ``(n_classes,)`` slide logits (log-probabilities work as well:
        they differ from the logits by a constant per row, which the softmax ignores).
    temperature
        ``T > 0``; 1 leaves the model's own probabilities.

    Returns
    -------
    numpy.ndarray
        Probabilities of the same shape, rows summing to 1.
    """
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64)
    one = z.ndim == 1
    z = np.atleast_2d(z) / t
    p = np.exp(_log_softmax(z))
    return p[0] if one else p


def nll_at_temperature(logits, y, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels ``y`` under ``softmax(logits / T)``.

    Parameters
    ----------
    logits
        ``(n, n_classes)`` logits.
    y
        ``(n,)`` class indices.
    temperature
        ``T > 0``.

    Returns
    -------
    float
        The mean NLL (natural log).
    """
    z = _as_logits(logits) / float(temperature)
    y = np.asarray(y, dtype=int)
    return float(-_log_softmax(z)[np.arange(len(y)), y].mean())


@dataclass(frozen=True)
class TemperatureFit:
    """What :func:`fit_temperature` found.

    Attributes
    ----------
    temperature
        The fitted ``T`` (1.0 when it could not be estimated, see ``status``).
    status
        ``"fitted"``; ``"separable"`` when every fitting slide is classified correctly, so the
        NLL keeps falling as ``T`` shrinks and no finite ``T`` minimises it (``T`` stays 1);
        ``"too_few"`` when fewer than two slides or a single class were given (``T`` stays 1).
    n
        Slides it was fitted on.
    nll_before, nll_after
        Mean NLL at ``T = 1`` and at the returned ``T``.
    """

    temperature: float
    status: str
    n: int
    nll_before: float | None
    nll_after: float | None

    def to_dict(self) -> dict:
        """A JSON-able record (``method``, ``temperature``, ``status``, ``n``, the NLLs)."""
        return {
            "method": "temperature",
            "temperature": float(self.temperature),
            "status": self.status,
            "n": int(self.n),
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
        }


def fit_temperature(logits, y) -> TemperatureFit:
    """Fit the temperature of slide logits on held-out labels (minimum NLL).

    The NLL is convex in ``1/T``; it is minimised by a bounded one-dimensional search
    (Brent's method in ``scipy.optimize.minimize_scalar``) over ``T`` in ``[0.05, 100]``.
    When every held-out slide is already classified correctly the NLL has no minimum (it falls
    for ever as ``T`` shrinks); then nothing is learnt about calibration and ``T`` stays 1
    (``status="separable"``), rather than sharpening the model further on a handful of slides.

    Parameters
    ----------
    logits
        ``(n, n_classes)`` logits (or log-probabilities) of held-out slides.
    y
        ``(n,)`` their class indices.

    Returns
    -------
    TemperatureFit
        ``temperature``, ``status``, ``n``, ``nll_before`` (at ``T = 1``) and ``nll_after``;
        ``nll_after <= nll_before`` always.
    """
    from scipy.optimize import minimize_scalar

    z = _as_logits(logits)
    y = np.asarray(y, dtype=int).ravel()
    if len(y) != len(z):
        raise ValueError(f"{len(z)} rows of logits but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {z.shape[1]})")
    if len(y) < 2 or len(set(y.tolist())) < 2:
        before = nll_at_temperature(z, y) if len(y) else None
        return TemperatureFit(1.0, "too_few", len(y), before, before)
    before = nll_at_temperature(z, y)
    pred = z.argmax(1)
    top2 = np.sort(z, axis=1)[:, -2:]
    if (pred == y).all() and (top2[:, 1] > top2[:, 0]).all():
        return TemperatureFit(1.0, "separable", len(y), before, before)

    def nll(beta: float) -> float:  # beta = 1/T, where the NLL is convex
        return nll_at_temperature(z, y, 1.0 / beta)

    res = minimize_scalar(
        nll, bounds=(1.0 / T_MAX, 1.0 / T_MIN), method="bounded", options={"xatol": 1e-6}
    )
    t = float(1.0 / res.x)
    after = nll_at_temperature(z, y, t)
    if after > before:  # never worse than leaving the model alone
        t, after = 1.0, before
    return TemperatureFit(t, "fitted", len(y), before, after)


def model_temperature(model) -> float:
    """The temperature a trained model carries (1.0 when it has none).

    Read from ``model.calibration_`` (set by :class:`~workbench.tl.SlideTrainer` and by
    :func:`~workbench.models.load_checkpoint` from the checkpoint's ``extra["calibration"]``);
    a model from a checkpoint saved before calibration existed gets 1.0.

    Parameters
    ----------
    model
        A slide model.

    Returns
    -------
    float
        ``T > 0``.
    """
    record = getattr(model, "calibration_", None)
    if record is None:
        record = (getattr(model, "checkpoint_extra_", None) or {}).get("calibration")
    if not isinstance(record, dict):
        return 1.0
    t = record.get("temperature", 1.0)
    try:
        t = float(t)
    except (TypeError, ValueError):
        return 1.0
    return t if math.isfinite(t) and t > 0 else 1.0


__all__ = [
    "TemperatureFit",
    "expected_calibration_error",
    "fit_temperature",
    "model_temperature",
    "nll_at_temperature",
    "reliability_table",
    "softmax_with_temperature",
]

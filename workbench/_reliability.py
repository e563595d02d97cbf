"""Reliability of probabilities: binned confidence against observed frequency, and the
expected calibration error (ECE). NumPy and pandas only, so that both ``tl`` (which computes)
and ``pl`` (which draws) use the one rule; the public names live in :mod:`workbench.tl`.
"""

from __future__ import annotations

import numpy as np


def _binary_or_top_label(y, p) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, outcome) pairs: the positive-class probability and whether the slide is
    positive for two classes, the top probability and whether it is right for more."""
    y = np.asarray(y, dtype=int).ravel()
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(y)} labels")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite and within [0, 1]")
    if p.shape[1] == 2:
        return p[:, 1], (y == 1).astype(float)
    return p.max(1), (p.argmax(1) == y).astype(float)


def reliability_table(y, p, *, n_bins: int = 10):
    """Binned confidence against observed frequency: the numbers of a reliability diagram.

    For two classes the binned quantity is the positive-class probability and the outcome
    whether the slide is positive (a calibration curve); for more classes it is the top
    probability and whether the predicted class is right (top-label calibration). Bins are
    ``n_bins`` equal widths of ``[0, 1]``, with the edges of
    ``sklearn.calibration.calibration_curve(strategy="uniform")``.

    Parameters
    ----------
    y
        ``(n,)`` class indices.
    p
        ``(n, n_classes)`` probabilities, or ``(n,)`` positive-class probabilities.
    n_bins
        Number of bins.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``lower``, ``upper``, ``count``, ``confidence`` (mean
        predicted), ``frequency`` (observed share), ``gap`` (``|frequency - confidence|``).
    """
    import pandas as pd

    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    conf, hit = _binary_or_top_label(y, p)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    ids = np.searchsorted(edges[1:-1], conf)  # as sklearn's calibration_curve
    rows = []
    for b in range(int(n_bins)):
        sel = ids == b
        if sel.any():
            c, f = float(conf[sel].mean()), float(hit[sel].mean())
            rows.append(
                {
                    "lower": edges[b],
                    "upper": edges[b + 1],
                    "count": int(sel.sum()),
                    "confidence": c,
                    "frequency": f,
                    "gap": abs(f - c),
                }
            )
    return pd.DataFrame(rows, columns=["lower", "upper", "count", "confidence", "frequency", "gap"])


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean gap of :func:`reliability_table`.

    ``ECE = sum_b (n_b / n) * |frequency_b - confidence_b|`` over ``n_bins`` equal-width bins
    (Naeini et al. 2015; Guo et al. 2017). For two classes the positive-class probability is
    binned, for more the top probability (top-label ECE). 0 is perfectly calibrated; a model
    that says 0.99 for slides that are positive half the time scores about 0.49.

    Parameters
    ----------
    y
        ``(n,)`` class indices.
    p
        ``(n, n_classes)`` probabilities, or ``(n,)`` positive-class probabilities.
    n_bins
        Number of equal-width bins.

    Returns
    -------
    float
        The ECE in ``[0, 1]`` (``nan`` for no slides).
    """
    table = reliability_table(y, p, n_bins=n_bins)
    n = int(table["count"].sum())
    if n == 0:
        return float("nan")
    return float((table["count"] * table["gap"]).sum() / n)


__all__ = ["expected_calibration_error", "reliability_table"]

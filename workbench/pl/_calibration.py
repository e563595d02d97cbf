"""Reliability diagram: do the probabilities mean what they say?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench._reliability import expected_calibration_error, reliability_table

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["reliability"]


def reliability(
    y,
    p,
    *,
    raw=None,
    n_bins: int = 10,
    ax: Axes | None = None,
    label: str = "calibrated",
    title: str | None = "reliability",
) -> Axes:
    """Reliability diagram of slide probabilities against what the slides were.

    For two classes: the mean predicted positive-class probability of each bin against the
    share of positive slides in it; for more classes: the top probability against the share
    predicted right (as :func:`workbench._reliability.reliability_table`). Points on the diagonal are
    calibrated; a curve flatter than the diagonal is over-confident. Marker area follows the
    number of slides in the bin; the legend gives each curve's ECE
    (:func:`workbench.tl.expected_calibration_error`).

    Parameters
    ----------
    y
        ``(n,)`` class indices of held-out slides (e.g. ``trainer.oof_``'s rows).
    p
        ``(n, n_classes)`` probabilities, or ``(n,)`` positive-class probabilities (e.g.
        ``uns["explain"]["probabilities"]`` of each slide, or the ``probability`` column of
        ``oof_predictions.csv``).
    raw
        The same slides' probabilities before temperature scaling, drawn dashed for
        comparison (``raw_probabilities`` / ``raw_probability``), or ``None``.
    n_bins
        Equal-width bins over ``[0, 1]``.
    ax
        Axes to draw on (default: a new figure).
    label
        Legend name of ``p``.
    title
        Axes title, or ``None``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, with the diagonal and one line per curve (``p`` first, then ``raw``).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="perfectly calibrated")
    curves = [(p, label, "-", "#3b2a55")]
    if raw is not None:
        curves.append((raw, "raw", "--", "#c0504d"))
    binary = None
    for probs, name, style, color in curves:
        table = reliability_table(y, probs, n_bins=n_bins)
        ece = expected_calibration_error(y, probs, n_bins=n_bins)
        arr = np.asarray(probs, dtype=float)
        binary = arr.ndim == 1 or arr.shape[1] == 2
        ax.plot(table["confidence"], table["frequency"], style, color=color, lw=1.5,
                label=f"{name} (ECE {ece:.3f})")  # fmt: skip
        sizes = 20 + 180 * table["count"] / max(1, int(table["count"].sum()))
        ax.scatter(table["confidence"], table["frequency"], s=sizes, color=color, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    if binary:
        ax.set_xlabel("predicted probability of the positive class")
        ax.set_ylabel("share of positive slides")
    else:
        ax.set_xlabel("top predicted probability")
        ax.set_ylabel("share predicted right")
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(f"{title} ({len(np.asarray(y))} slides)")
    return ax

"""Clicks as the click network sees them: the click, its input maps and the simulated user.

Plain NumPy (no torch): the network's guidance channels (:func:`click_maps`), the CGAM gate's
soft maps (:func:`soft_click_maps`) and the standard click simulator (:func:`next_click`,
f-BRS / RITM protocol) are shared by the click network's training
(:mod:`workbench.models._clicknet_train`) and the refinement UI (:mod:`workbench.interactive`,
which adds the click history of a view and the number-of-clicks metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["Click", "click_maps", "next_click", "soft_click_maps"]


@dataclass(frozen=True)
class Click:
    """One user click in view pixel coordinates.

    Parameters
    ----------
    x, y
        Column and row of the clicked pixel in the view (0-based, may be fractional).
    positive
        ``True`` for "this belongs to the lesion", ``False`` for "this does not".
    """

    x: float
    y: float
    positive: bool = True

    @property
    def rc(self) -> tuple[int, int]:
        """Nearest pixel as (row, col)."""
        return int(round(self.y)), int(round(self.x))


def click_maps(
    clicks: tuple[Click, ...] | list[Click],
    shape_rc: tuple[int, int],
    *,
    radius: float = 5.0,
    scale: float = 1.0,
) -> np.ndarray:
    """Binary disk maps of the clicks, shape ``(2, H, W)`` float32 (positive, negative).

    Parameters
    ----------
    clicks
        Clicks in the coordinates of a view; ``scale`` maps them to ``shape_rc`` (e.g. a view
        resized for the network by 0.5 has ``scale=0.5``).
    shape_rc
        Output shape (rows, cols).
    radius
        Disk radius in output pixels.
    scale
        Factor from click coordinates to output pixels.

    Returns
    -------
    numpy.ndarray
        ``(2, H, W)`` float32: 1 inside a positive click's disk (channel 0) or a negative
        click's disk (channel 1), 0 elsewhere.
    """
    h, w = shape_rc
    maps = np.zeros((2, h, w), dtype=np.float32)
    if not clicks:
        return maps
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    r2 = float(radius) ** 2
    for click in clicks:
        cx = (click.x + 0.5) * scale - 0.5
        cy = (click.y + 0.5) * scale - 0.5
        r0, r1 = max(int(cy - radius - 1), 0), min(int(cy + radius + 2), h)
        c0, c1 = max(int(cx - radius - 1), 0), min(int(cx + radius + 2), w)
        if r0 >= r1 or c0 >= c1:
            continue
        disk = (rows[r0:r1] - cy) ** 2 + (cols[:, c0:c1] - cx) ** 2 <= r2
        channel = 0 if click.positive else 1
        maps[channel, r0:r1, c0:c1][disk] = 1.0
    return maps


def soft_click_maps(
    clicks: tuple[Click, ...] | list[Click],
    shape_rc: tuple[int, int],
    *,
    radius: float,
    scale: float = 1.0,
) -> np.ndarray:
    """Soft click maps, shape ``(2, H, W)`` float32 (positive, negative), for the CGAM gate.

    Each click contributes ``exp(-(d / radius)^2)`` at distance ``d`` (output pixels) and a
    channel is the maximum over its clicks. Unlike the network's binary disks these maps
    reach over a click's neighbourhood, so an optimised gate can change the features there,
    and hardly anywhere else.

    Parameters
    ----------
    clicks
        Clicks in the coordinates of a view; ``scale`` maps them to ``shape_rc``.
    shape_rc
        Output shape (rows, cols).
    radius
        Length scale of the Gaussian in output pixels.
    scale
        Factor from click coordinates to output pixels.

    Returns
    -------
    numpy.ndarray
        ``(2, H, W)`` float32 in ``[0, 1]``: positive clicks in channel 0, negative in 1.
    """
    h, w = shape_rc
    maps = np.zeros((2, h, w), dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    for click in clicks:
        cx = (click.x + 0.5) * scale - 0.5
        cy = (click.y + 0.5) * scale - 0.5
        g = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / float(radius) ** 2)
        channel = 0 if click.positive else 1
        np.maximum(maps[channel], g, out=maps[channel])
    return maps


def _depth(error: np.ndarray) -> np.ndarray:
    # Pad with background so that the view border counts as the edge of an error region.
    padded = np.pad(error, 1, mode="constant", constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """Where a simulated user clicks next, or ``None`` when there is no error left.

    The click goes to the error pixel farthest from the boundary of its error region: a
    positive click in a false negative region or a negative click in a false positive
    region, whichever is deeper (ties go to the positive click).

    Parameters
    ----------
    pred
        The current mask, ``(H, W)`` (any dtype; non-zero is inside).
    gt
        The ground-truth mask, same shape.

    Returns
    -------
    Click or None
        The next click in view pixels, or ``None`` when ``pred`` equals ``gt``.

    Raises
    ------
    ValueError
        ``pred`` and ``gt`` differ in shape.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    fn_depth = _depth(gt & ~pred)
    fp_depth = _depth(pred & ~gt)
    fn_max, fp_max = float(fn_depth.max(initial=0.0)), float(fp_depth.max(initial=0.0))
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    positive = fn_max >= fp_max
    depth = fn_depth if positive else fp_depth
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return Click(x=float(c), y=float(r), positive=bool(positive))

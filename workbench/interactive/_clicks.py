"""Clicks, the click history of one view, and click maps for the network."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["Click", "ClickState", "click_maps", "soft_click_maps"]


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


class ClickState:
    """Ordered clicks on one view of shape ``shape_rc`` with add, undo and reset.

    Clicks outside the view are ignored with a :class:`UserWarning` (a stray click must not
    end a refinement session).
    """

    def __init__(self, shape_rc: tuple[int, int]) -> None:
        h, w = (int(v) for v in shape_rc)
        if h <= 0 or w <= 0:
            raise ValueError(f"view shape must be positive, got {shape_rc}")
        self.shape_rc = (h, w)
        self._clicks: list[Click] = []

    def contains(self, x: float, y: float) -> bool:
        """Whether ``(x, y)`` lies inside the view."""
        h, w = self.shape_rc
        return bool(
            np.isfinite(x) and np.isfinite(y) and -0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5
        )

    def add(self, click: Click) -> bool:
        """Append ``click``; return ``False`` (and warn) when it lies outside the view."""
        if not self.contains(click.x, click.y):
            h, w = self.shape_rc
            warnings.warn(
                f"click at (x={click.x}, y={click.y}) lies outside the {w}x{h} view; ignored",
                UserWarning,
                stacklevel=2,
            )
            return False
        self._clicks.append(click)
        return True

    def undo(self) -> Click | None:
        """Remove and return the newest click (``None`` when there is none)."""
        return self._clicks.pop() if self._clicks else None

    def reset(self) -> None:
        """Forget every click."""
        self._clicks.clear()

    @property
    def clicks(self) -> tuple[Click, ...]:
        return tuple(self._clicks)

    @property
    def last(self) -> Click | None:
        return self._clicks[-1] if self._clicks else None

    def __len__(self) -> int:
        return len(self._clicks)

    def __repr__(self) -> str:
        n_pos = sum(c.positive for c in self._clicks)
        return f"ClickState({self.shape_rc[1]}x{self.shape_rc[0]}, {n_pos} positive, {len(self) - n_pos} negative)"


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

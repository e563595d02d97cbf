"""The click history of one view (:class:`ClickState`); clicks and their maps come from
:mod:`workbench.models._clicks`."""

from __future__ import annotations

import warnings

import numpy as np

from workbench.models._clicks import Click

__all__ = ["ClickState"]


class ClickState:
    """Ordered clicks on one view of shape ``shape_rc`` with add, undo and reset.

    Clicks outside the view are ignored with a :class:`UserWarning` (a stray click must not
    end a refinement session).

    Parameters
    ----------
    shape_rc
        ``(rows, cols)`` of the view; both must be positive.

    Raises
    ------
    ValueError
        A dimension of ``shape_rc`` is not positive.
    """

    def __init__(self, shape_rc: tuple[int, int]) -> None:
        h, w = (int(v) for v in shape_rc)
        if h <= 0 or w <= 0:
            raise ValueError(f"view shape must be positive, got {shape_rc}")
        self.shape_rc = (h, w)
        self._clicks: list[Click] = []

    def contains(self, x: float, y: float) -> bool:
        """Whether ``(x, y)`` lies inside the view.

        Parameters
        ----------
        x, y
            Column and row in view pixels (pixel centres are integers).

        Returns
        -------
        bool
            ``True`` when both are finite and within half a pixel of the view.
        """
        h, w = self.shape_rc
        return bool(
            np.isfinite(x) and np.isfinite(y) and -0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5
        )

    def add(self, click: Click) -> bool:
        """Append ``click`` unless it lies outside the view.

        Parameters
        ----------
        click
            The click, in view coordinates.

        Returns
        -------
        bool
            ``True`` when it was added; ``False`` (with a :class:`UserWarning`) when it lies
            outside the view.
        """
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
        """Remove and return the newest click.

        Returns
        -------
        Click or None
            The click removed, or ``None`` when there was none.
        """
        return self._clicks.pop() if self._clicks else None

    def reset(self) -> None:
        """Forget every click."""
        self._clicks.clear()

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The clicks, oldest first (a copy)."""
        return tuple(self._clicks)

    @property
    def last(self) -> Click | None:
        """The newest click, or ``None`` when there is none."""
        return self._clicks[-1] if self._clicks else None

    def __len__(self) -> int:
        return len(self._clicks)

    def __repr__(self) -> str:
        n_pos = sum(c.positive for c in self._clicks)
        return f"ClickState({self.shape_rc[1]}x{self.shape_rc[0]}, {n_pos} positive, {len(self) - n_pos} negative)"

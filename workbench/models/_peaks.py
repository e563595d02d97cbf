"""Where a map of lesion evidence peaks inside each crop: the one rule behind the focus
peaks (``tl.focus_peaks``) and the evidence confirmation of the self-calibrated model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["evidence_peaks"]


def evidence_peaks(maps: torch.Tensor, *, window: int | None = None) -> dict:
    """The maximum of each evidence map after averaging over a square window, and where it is.

    Each map is averaged over a ``window`` × ``window`` square around every pixel (the edge
    pixels repeated beyond the border), so a single bright pixel does not decide; the peak is
    the first pixel (row-major) where that average is largest.

    Parameters
    ----------
    maps
        ``(B, H, W)`` evidence (higher = more lesion), e.g. a tile encoder's
        :meth:`~workbench.models.ModuleEncoder.evidence_maps` or lesion probabilities.
    window
        Side of the averaging window in pixels (made odd); by default a sixth of the map's
        width.

    Returns
    -------
    dict
        ``value`` ``(B,)`` float (the window-averaged evidence at the peak), ``row`` and
        ``col`` ``(B,)`` long (the peak's pixel in the map).

    Raises
    ------
    ValueError
        ``maps`` is not three-dimensional or ``window`` is below 1.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {tuple(maps.shape)}")
    b, h, w = maps.shape
    win = max(1, w // 6) if window is None else int(window)
    if win < 1:
        raise ValueError(f"window must be at least 1 pixel, got {window}")
    win |= 1  # odd, so the window is centred on its pixel
    x = maps.detach().float()[:, None]
    if b and win > 1:
        x = F.pad(x, (win // 2,) * 4, mode="replicate")
        x = F.avg_pool2d(x, win, stride=1)
    flat = x.reshape(b, h * w)
    if b == 0:
        empty = torch.zeros(0, dtype=torch.long, device=maps.device)
        return {"value": flat.new_zeros(0), "row": empty, "col": empty.clone()}
    at = torch.argmax(flat, dim=1)
    return {"value": flat.gather(1, at[:, None])[:, 0], "row": at // w, "col": at % w}

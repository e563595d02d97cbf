"""Mask operations around the network: local corrections and "all like this" proposals.

Pure functions on arrays (numpy, and torch for the feature maps); the engine calls them after
the network's step.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["local_region", "similar_regions", "standardised_features"]


def local_region(
    old: np.ndarray,
    new: np.ndarray,
    rc: tuple[int, int],
    *,
    pad: int = 4,
    reach: float = 0.1,
) -> tuple[slice, slice] | None:
    """Where a late click may change the mask (Clore, EMBC 2026): the bounding box, grown by
    ``pad`` pixels, of the connected region of change that contains the click, or the one
    nearest to it within ``reach`` times the view's longest side.

    Parameters
    ----------
    old, new
        The mask before the click and the network's new mask (bool, same shape).
    rc
        The click's pixel (row, col).
    pad
        Pixels added around the region's bounding box.
    reach
        How far (fraction of the longest side) the nearest change may lie from the click.

    Returns
    -------
    tuple of slice or None
        ``(rows, cols)`` of the box, or ``None`` when nothing changed near the click (the
        mask then stays as it was).
    """
    changed = np.asarray(old, bool) ^ np.asarray(new, bool)
    if not changed.any():
        return None
    h, w = changed.shape
    r = int(np.clip(rc[0], 0, h - 1))
    c = int(np.clip(rc[1], 0, w - 1))
    labels, _ = ndi.label(changed)
    k = int(labels[r, c])
    if k == 0:
        rows, cols = np.nonzero(changed)
        d2 = (rows - r) ** 2 + (cols - c) ** 2
        i = int(np.argmin(d2))
        if d2[i] > (reach * max(h, w)) ** 2:
            return None
        k = int(labels[rows[i], cols[i]])
    box = ndi.find_objects((labels == k).astype(np.int32))[0]
    r0 = max(box[0].start - pad, 0)
    r1 = min(box[0].stop + pad, h)
    c0 = max(box[1].start - pad, 0)
    c1 = min(box[1].stop + pad, w)
    return slice(r0, r1), slice(c0, c1)


def standardised_features(features):
    """Per-view standardised, unit-length feature vectors ``(C, h, w)`` (torch).

    Every channel is centred and scaled over the view before each pixel's vector is
    normalised: the network's features share a large common component (cosine similarity
    of any two pixels is near 1), which this removes.
    """
    import torch.nn.functional as F

    f = features[0] if features.ndim == 4 else features
    f = f - f.mean(dim=(1, 2), keepdim=True)
    f = f / (f.std(dim=(1, 2), keepdim=True) + 1e-6)
    return F.normalize(f, dim=0)


def _area_fraction(mask: np.ndarray, shape_rc: tuple[int, int]):
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=shape_rc, mode="area")[0, 0]


def similar_regions(
    unit_features,
    foreground,
    net_mask: np.ndarray,
    clicks,
    *,
    threshold: float,
    min_foreground: float = 0.0,
    min_area: float = 0.002,
) -> np.ndarray:
    """Regions like the positively clicked ones: the "all like this" proposals.

    A positive prototype is the mean feature over the connected component of ``net_mask``
    under each positive click (the click's own feature pixel when the mask misses it); a
    negative prototype is the feature under each negative click. A pixel is proposed where
    its cosine similarity to the nearest positive prototype reaches ``threshold``, beats
    its similarity to every negative prototype, and the network's click-free foreground
    probability reaches ``min_foreground``. Connected proposals smaller than ``min_area``
    of the view, or holding a negative click, are dropped; nothing in ``net_mask`` is
    touched (the result is only what to add).

    Parameters
    ----------
    unit_features
        :func:`standardised_features` of the view, ``(C, fh, fw)`` torch.
    foreground
        Click-free foreground probability ``(fh, fw)`` torch (or ``None``).
    net_mask
        The network's mask of the view (bool, view pixels).
    clicks
        The view's clicks (view pixels).
    threshold, min_foreground, min_area
        As above.

    Returns
    -------
    numpy.ndarray
        Bool mask (view pixels) of the proposed regions outside ``net_mask``.
    """
    import torch
    import torch.nn.functional as F

    h, w = net_mask.shape
    empty = np.zeros((h, w), dtype=bool)
    positives = [c for c in clicks if c.positive]
    if not positives:
        return empty
    c_, fh, fw = unit_features.shape
    flat = unit_features.reshape(c_, -1)
    labels, _ = ndi.label(net_mask)

    def feature_rc(click) -> int:
        fr = int(np.clip((click.y + 0.5) * fh / h - 0.5 + 0.5, 0, fh - 1))
        fc = int(np.clip((click.x + 0.5) * fw / w - 0.5 + 0.5, 0, fw - 1))
        return fr * fw + fc

    protos = []
    for click in positives:
        r, c = (int(np.clip(v, 0, s - 1)) for v, s in zip(click.rc, (h, w), strict=True))
        k = labels[r, c]
        vec = None
        if k:
            share = _area_fraction(labels == k, (fh, fw)).reshape(-1)
            inside = share >= 0.5
            if bool(inside.any()):
                vec = flat[:, inside].mean(dim=1)
        if vec is None:
            vec = flat[:, feature_rc(click)]
        protos.append(F.normalize(vec, dim=0))
    sim = (torch.stack(protos) @ flat).max(dim=0).values
    negatives = [c for c in clicks if not c.positive]
    keep = sim >= threshold
    if negatives:
        neg = torch.stack([flat[:, feature_rc(c)] for c in negatives])
        keep &= sim > (neg @ flat).max(dim=0).values
    if foreground is not None and min_foreground > 0:
        keep &= foreground.reshape(-1) >= min_foreground
    score = torch.where(keep, sim, torch.full_like(sim, -2.0)).reshape(1, 1, fh, fw)
    # Threshold the smooth, upsampled score: proposal edges follow the view's pixels, not
    # the feature grid's blocks.
    up = F.interpolate(score, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    proposed = up.numpy() >= threshold
    proposed &= ~net_mask
    if not proposed.any():
        return empty
    plabels, n = ndi.label(proposed)
    sizes = np.bincount(plabels.ravel(), minlength=n + 1)
    drop = sizes < max(min_area * h * w, 1.0)
    drop[0] = True
    for click in negatives:
        r, c = (int(np.clip(v, 0, s - 1)) for v, s in zip(click.rc, (h, w), strict=True))
        drop[plabels[r, c]] = True
    return ~drop[plabels]

"""Tissue detection on a low-resolution RGB image (pure kernel: array in, array out)."""

from __future__ import annotations

import numpy as np

from workbench._errors import NoTissueError

# Optical density below this is glass whatever Otsu says: a slide that is nearly all tissue
# has no background mode, and Otsu would then split the tissue itself.
_MIN_OD = 0.08
# Above this Otsu threshold is considered tissue anyway (pale slides, faint stain).
_MAX_OD = 0.35


# Optical density of every uint8 intensity: a table look-up instead of a log per pixel.
_OD_TABLE = (-np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density ``-log10((I + 1) / 256)`` of a uint8 RGB image.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` image (a fourth, alpha channel is ignored), uint8 or float on
        the 0-255 scale.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 3)`` optical density (0 for white, about 2.4 for black).

    Raises
    ------
    ValueError
        ``rgb`` is not an image with at least three channels.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB image of shape (rows, cols, 3), got {rgb.shape}")
    if rgb.dtype == np.uint8:
        return _OD_TABLE[rgb[..., :3]]
    return -np.log10((rgb[..., :3].astype(np.float32) + 1.0) / 256.0)


def _tissue_score(rgb: np.ndarray) -> np.ndarray:
    """Mean optical density weighted up where the colour is saturated (float32)."""
    rgb = np.asarray(rgb)[..., :3]
    if rgb.dtype != np.uint8:  # the plain formula (slower) for other dtypes
        rgbf = rgb.astype(np.float32)
        sat = (rgbf.max(axis=2) - rgbf.min(axis=2)) / 255.0
        return optical_density(rgbf).mean(axis=2) * (0.5 + sat)
    t = _OD_TABLE
    r, g, b = np.ascontiguousarray(rgb.transpose(2, 0, 1))  # contiguous planes: faster look-ups
    od = np.take(t, r)
    od += np.take(t, g)
    od += np.take(t, b)
    od *= np.float32(1.0 / 3.0)
    sat = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    sat *= np.float32(1.0 / 255.0)
    sat += np.float32(0.5)
    od *= sat
    return od


def _otsu(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold of ``values`` on ``nbins`` equal bins over their range.

    The same as :func:`skimage.filters.threshold_otsu` on the values, with the histogram
    counted by :func:`numpy.bincount` (several times faster than ``numpy.histogram``).
    """
    from skimage import filters

    lo, hi = float(values.min()), float(values.max())
    width = (hi - lo) / nbins
    idx = np.minimum(((values - lo) / width).astype(np.int64), nbins - 1)
    counts = np.bincount(idx, minlength=nbins)
    centres = lo + (np.arange(nbins) + 0.5) * width
    return float(filters.threshold_otsu(hist=(counts, centres)))


def _disk(radius: int) -> np.ndarray:
    """The disk footprint of :func:`skimage.morphology.disk` (``x² + y² <= r²``)."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def _binary_closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closing of a boolean mask with a disk, the borders mirrored.

    The same result as :func:`skimage.morphology.closing` with ``disk(radius)`` (whose
    default border mode mirrors the image): a dilation, then an erosion of the dilated mask,
    each an OR (AND) of the shifted copies of a mirrored, padded mask, one per pixel of the
    disk. Several times faster than the general grey-level operators on thumbnails.
    """
    r = int(radius)
    h, w = mask.shape
    offsets = np.argwhere(_disk(r))  # (dy + r, dx + r); the disk is symmetric
    out = mask
    for combine in (np.logical_or, np.logical_and):
        padded = np.pad(out, r, mode="symmetric")
        dy, dx = offsets[0]
        acc = padded[dy : dy + h, dx : dx + w].copy()
        for dy, dx in offsets[1:]:
            combine(acc, padded[dy : dy + h, dx : dx + w], out=acc)
        out = acc
    return out


def _drop_small_pieces(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` without its 4-connected pieces of at most ``max_size`` pixels.

    What :func:`skimage.morphology.remove_small_objects` (``max_size``, connectivity 1)
    does, without its argument checks and copies.
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    small = sizes <= max_size
    small[0] = False
    if not small.any():
        return mask.copy()
    return mask & ~small[labels]


def detect_tissue(
    rgb: np.ndarray,
    *,
    threshold: float | None = None,
    min_object_frac: float = 0.0005,
    close_radius: int = 2,
    raise_if_empty: bool = False,
) -> np.ndarray:
    """Boolean tissue mask of an H&E-like RGB image.

    Stained tissue absorbs light, glass does not: pixels are scored by their mean optical
    density, weighted up where the colour is saturated (pen-free H&E is pink/purple, dust
    and shadows are grey). The threshold is Otsu's on that score, held inside
    ``[0.08, 0.35]`` so an all-tissue or all-glass image is still handled; then small holes
    are closed and specks removed.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` uint8 image, typically a thumbnail at 8–32 µm/px.
    threshold
        Fixed optical-density threshold instead of Otsu's.
    min_object_frac
        Connected pieces smaller than this fraction of the image are dropped (as are
        holes smaller than it, which are filled).
    close_radius
        Radius in pixels of the morphological closing that joins nearby tissue.
    raise_if_empty
        Raise :class:`~workbench.NoTissueError` when nothing is found (else an empty mask).

    Returns
    -------
    Boolean array of shape ``(rows, cols)``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB image of shape (rows, cols, 3), got {rgb.shape}")
    score = _tissue_score(rgb)
    # Dark nuclei form a histogram mode of their own, strongest at fine resolution, and a
    # plain Otsu would then split nuclei from stroma instead of tissue from glass. A light
    # smoothing (scaled with the image) and Otsu on the log score fix that: in log space
    # glass lies far below both stroma and nuclei.
    sigma = max(shape / 512.0 for shape in score.shape[:2])
    if sigma > 1.0:
        from scipy import ndimage

        score = ndimage.gaussian_filter(score, sigma)
    if threshold is None:
        logs = np.log(np.maximum(score, 1e-4)).ravel()
        logs = logs[np.isfinite(logs)]
        t = float(np.exp(_otsu(logs))) if logs.size and np.ptp(logs) > 0 else _MIN_OD
        threshold = float(np.clip(t, _MIN_OD, _MAX_OD))
    mask = score > threshold
    if close_radius > 0:
        mask = _binary_closing(mask, int(close_radius))
    min_px = max(1, int(min_object_frac * mask.size))
    mask = _drop_small_pieces(mask, min_px)
    mask = ~_drop_small_pieces(~mask, min_px)  # fill the holes of at most min_px pixels
    if raise_if_empty and not mask.any():
        raise NoTissueError(
            "no tissue found in the image (everything looks like background glass); check the "
            "slide, or pass a lower threshold= (the mean optical density of tissue)"
        )
    return mask

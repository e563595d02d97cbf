"""A thumbnail montage of a synthetic cohort (pyplot is imported only when called)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from workbench.datasets._cohort import SyntheticCohort


def thumbnail(path, *, max_side: int = 512) -> tuple[np.ndarray, int]:
    """The smallest pyramid level whose long side is at least ``max_side`` (or the largest).

    Reads the TIFF pages directly with tifffile, so no OpenSlide is needed.

    Parameters
    ----------
    path
        A pyramidal TIFF written by :func:`make_slide` (one page per level).
    max_side
        The least long side wanted, in pixels.

    Returns
    -------
    image : numpy.ndarray
        ``(rows, cols, 3)`` uint8 RGB of that level.
    downsample : int
        Level-0 pixels per pixel of ``image``.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = [p for p in tif.pages if p.is_tiled]
        width0 = pages[0].imagewidth
        chosen = pages[0]
        for page in pages:
            if max(page.imagewidth, page.imagelength) >= max_side:
                chosen = page
        image = chosen.asarray()
        return image[..., :3], round(width0 / chosen.imagewidth)


def montage(
    cohort: SyntheticCohort,
    *,
    ncols: int = 4,
    max_side: int = 384,
    outline: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Show every slide's thumbnail in a grid, labelled with its id and grade.

    Parameters
    ----------
    cohort
        A cohort from :func:`make_cohort` or :func:`load_cohort`.
    ncols
        Thumbnails per row.
    max_side
        Long side of each thumbnail cell in pixels.
    outline
        Draw the ground-truth lesion outline (from the mask PNG) over each thumbnail.
    ax
        Axes to draw into; a new figure is made when ``None``.

    Returns
    -------
    Axes
        The axes holding the montage image (``ax.figure`` to save it).
    """
    import matplotlib.pyplot as plt
    from PIL import Image

    ids = cohort.slide_ids
    if not ids:
        raise ValueError("the cohort has no slides to show")
    ncols = max(1, min(int(ncols), len(ids)))
    nrows = math.ceil(len(ids) / ncols)
    w0, h0 = cohort.params["dimensions"]
    scale = max_side / max(w0, h0)
    cw, ch = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    gap = 6
    canvas = np.full((nrows * (ch + gap) + gap, ncols * (cw + gap) + gap, 3), 255, np.uint8)
    grades = dict(zip(cohort.truth["slide_id"], cohort.truth["grade"], strict=True))
    if ax is None:
        _, ax = plt.subplots(figsize=(2.6 * ncols, 2.6 * nrows * ch / cw + 0.3))
    labels = []
    for i, sid in enumerate(ids):
        image, _ = thumbnail(cohort.slide_path(sid), max_side=max(cw, ch))
        image = np.asarray(Image.fromarray(image).resize((cw, ch), Image.Resampling.BILINEAR))
        r, c = divmod(i, ncols)
        y, x = gap + r * (ch + gap), gap + c * (cw + gap)
        canvas[y : y + ch, x : x + cw] = image
        labels.append((x, y, sid, grades[sid]))
        if outline:
            mask, _ = cohort.lesion_mask(sid)
            small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((cw, ch)))
            ax.contour(
                np.arange(cw) + x, np.arange(ch) + y, small > 127, levels=[0.5],
                colors=["#00a0a0"], linewidths=0.6,
            )  # fmt: skip
    ax.imshow(canvas, interpolation="lanczos", zorder=0)
    for x, y, sid, grade in labels:
        ax.text(
            x + 4, y + 4, f"{sid} · grade {grade}", va="top", ha="left", fontsize=8,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )  # fmt: skip
    ax.set_axis_off()
    ax.set_title(f"Synthetic cohort ({len(ids)} slides; outline = lesion truth)", fontsize=9)
    return ax

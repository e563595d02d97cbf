"""A grid of tissue tiles at a chosen magnification (what exhaustive tile models read)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import SPATIAL, TILING
from workbench.pp._tissue import detect_tissue

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from workbench.io import Slide

logger = logging.getLogger(__name__)


#: The coarsest resolution (µm/px) at which a small slide's stored level is its tissue mask.
MASK_MPP = 8.0


def _mask_side(slide: Slide, step0: float, max_size: int = 2048, px_per_tile: int = 8) -> int:
    """Long side in pixels of the thumbnail ``tile_tissue`` detects tissue on by default.

    About ``px_per_tile`` mask pixels per tile side, within ``[256, max_size]`` and at most
    the slide's own size; when the 256-px floor is what sets it (a small slide) and a stored
    pyramid level of at most :data:`MASK_MPP` µm/px lies between the tiles' need and that
    floor, the coarsest such level instead: it is read as stored, without resizing a finer
    one (most of the time of a small slide's tiling).
    """
    W, H = slide.dimensions
    need = int(np.ceil(max(W, H) / step0 * max(1, int(px_per_tile))))
    side = min(int(np.clip(need, 256, max(256, int(max_size)))), max(W, H))
    mpp = slide.mpp
    if need >= side or not mpp:
        return side
    for lw, lh in reversed(slide.info.level_dimensions):  # coarsest first
        long_side = max(lw, lh)
        level_mpp = max(W, H) / long_side * float(mpp)
        if need <= long_side < side and level_mpp <= MASK_MPP * 1.01:
            return int(long_side)
    return side


def tile_tissue(
    slide: Slide,
    *,
    mpp: float | None = None,
    level: int | None = None,
    tile_size: int = 256,
    min_tissue: float = 0.5,
    tissue_mask: np.ndarray | None = None,
    mask_max_size: int = 2048,
    mask_px_per_tile: int = 8,
) -> anndata.AnnData:
    """Tiles of ``tile_size`` pixels at ``mpp`` (or pyramid ``level``) that cover tissue.

    Parameters
    ----------
    slide
        The slide.
    mpp
        Tile resolution in µm/px (needs the slide's mpp). Exclusive with ``level``.
    level
        Pyramid level to tile instead of ``mpp``.
    tile_size
        Tile side in output pixels.
    min_tissue
        Keep tiles whose tissue fraction is at least this (0 keeps every tile).
    tissue_mask
        Boolean tissue mask over the whole slide at any resolution; by default
        :func:`detect_tissue` on a thumbnail with about ``mask_px_per_tile`` pixels per tile
        side (at least 256 and at most ``mask_max_size`` pixels on its long side). That is
        fine enough to measure each tile's tissue fraction and, read from a coarse pyramid
        level, fast (the tile grid decides the resolution, not the slide size). On a slide
        too small for 256 px at 8 µm/px, a stored pyramid level of 8 µm/px or finer that
        still has ``mask_px_per_tile`` pixels per tile is used as it is instead (read
        without resizing; 8 µm/px is where tissue detection usually runs).
    mask_max_size, mask_px_per_tile
        Bounds of that thumbnail.

    Returns
    -------
    anndata.AnnData
        One obs per tile, without features (``X`` is empty): ``obs`` has ``x``, ``y``
        (level-0 top-left), ``col``, ``row`` (grid position), ``tissue_fraction``;
        ``obsm["spatial"]`` level-0 tile centres; ``uns["tiling"]`` has ``mpp``, ``level``,
        ``tile_size``, ``tile_size_level0``, ``grid_shape``, ``mask_shape`` (the tissue mask
        used) and ``slide``. Read a tile with
        ``slide.read_region((x, y), (tile_size, tile_size), mpp=mpp)`` (or ``level=level``).
    """
    import anndata as ad
    import pandas as pd

    if (mpp is None) == (level is None):
        raise ValueError("give exactly one of mpp= or level=")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
    if mpp is not None:
        scale = float(mpp) / slide.require_mpp()
    else:
        if not 0 <= level < slide.level_count:
            raise ValueError(f"level {level} does not exist (0..{slide.level_count - 1})")
        scale = slide.info.level_downsamples[level]
    step0 = tile_size * scale  # level-0 pixels per tile side
    W, H = slide.dimensions
    n_cols, n_rows = int(np.ceil(W / step0)), int(np.ceil(H / step0))

    if tissue_mask is None:
        side = _mask_side(slide, step0, mask_max_size, mask_px_per_tile)
        tissue_mask = detect_tissue(slide.thumbnail(max_size=side))
    mask = np.asarray(tissue_mask, dtype=bool)
    # Tissue fraction of each tile from an integral image of the mask.
    mh, mw = mask.shape
    # Integer sums (exact), as float64 only where read: the same values as a float table.
    integral = np.zeros((mh + 1, mw + 1), dtype=np.int64 if mask.size >= 2**31 else np.int32)
    np.cumsum(mask, axis=0, dtype=integral.dtype, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    cols, rows = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
    cols, rows = cols.ravel(), rows.ravel()
    x0, y0 = cols * step0, rows * step0
    x1, y1 = np.minimum(x0 + step0, W), np.minimum(y0 + step0, H)

    def to_mask(v, size, extent):
        return np.clip(np.round(v / extent * size).astype(np.int64), 0, size)

    mx0, mx1 = to_mask(x0, mw, W), to_mask(x1, mw, W)
    my0, my1 = to_mask(y0, mh, H), to_mask(y1, mh, H)
    mx1 = np.maximum(mx1, np.minimum(mx0 + 1, mw))
    my1 = np.maximum(my1, np.minimum(my0 + 1, mh))
    area = np.maximum((mx1 - mx0) * (my1 - my0), 1)
    tissue = (
        integral[my1, mx1].astype(np.float64)
        - integral[my0, mx1]
        - integral[my1, mx0]
        + integral[my0, mx0]
    ) / area
    # A partial tile at the right/bottom edge is measured against a full tile's area.
    tissue = tissue * ((x1 - x0) * (y1 - y0)) / (step0 * step0)
    keep = tissue >= min_tissue if min_tissue > 0 else np.ones_like(tissue, dtype=bool)

    x_kept = np.round(x0[keep]).astype(np.int64)
    y_kept = np.round(y0[keep]).astype(np.int64)
    c_kept, r_kept = cols[keep].astype(np.int32), rows[keep].astype(np.int32)
    names = [f"t{c}_{r}" for c, r in zip(c_kept.tolist(), r_kept.tolist(), strict=True)]
    obs = pd.DataFrame(
        {
            "x": x_kept,
            "y": y_kept,
            "col": c_kept,
            "row": r_kept,
            "tissue_fraction": tissue[keep].astype(np.float32),
        },
        index=pd.Index(names, dtype=object),
        copy=False,
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm[SPATIAL] = np.column_stack([x_kept + step0 / 2.0, y_kept + step0 / 2.0]).astype(
        np.float64
    )
    adata.uns[TILING] = {
        "mpp": None if mpp is None else float(mpp),
        "level": None if level is None else int(level),
        "tile_size": int(tile_size),
        "tile_size_level0": float(step0),
        "min_tissue": float(min_tissue),
        "grid_shape": [int(n_rows), int(n_cols)],
        "mask_shape": [int(mh), int(mw)],
        "slide": slide.info.to_dict(),
    }
    logger.info("tile_tissue: %d of %d tiles kept on %s", int(keep.sum()), keep.size, slide.path)
    return adata

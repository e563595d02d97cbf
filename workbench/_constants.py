"""Storage keys and option names shared across the package (one place to look them up)."""

from __future__ import annotations

# --- AnnData keys ------------------------------------------------------------------------
SPATIAL = "spatial"  # obsm: level-0 (x, y) pixel coordinates
ADJACENCY = "adjacency"  # obsp: symmetric 0/1 region adjacency
REGION_GRAPH = "region_graph"  # uns: labels, thumbnail, thumbnail_mpp, scale_xy, slide
TILING = "tiling"  # uns: tile grid parameters written by pp.tile_tissue

# --- GeoJSON / QuPath classifications --------------------------------------------------------
LESION_CLASS = "Tumor"
LESION_COLOR = (200, 0, 0)
FOCUS_CLASS = "Focus region"
FOCUS_COLOR = (255, 200, 0)

"""Preparing slides: tissue detection, tiling, the superpixel region graph, and stain tools."""

from __future__ import annotations

from workbench.pp._qc import BrightfieldCheck, check_brightfield
from workbench.pp._regions import feature_names, region_adjacency, region_features, region_graph
from workbench.pp._settings import Preprocessing
from workbench.pp._stain import StainNormalizer, augment_stain, normalize_stain
from workbench.pp._tiling import tile_tissue
from workbench.pp._tissue import detect_tissue, optical_density

__all__ = [
    "BrightfieldCheck",
    "Preprocessing",
    "StainNormalizer",
    "augment_stain",
    "check_brightfield",
    "detect_tissue",
    "feature_names",
    "normalize_stain",
    "optical_density",
    "region_adjacency",
    "region_features",
    "region_graph",
    "tile_tissue",
]

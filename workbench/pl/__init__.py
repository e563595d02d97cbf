"""Plots that read what ``workbench.tl`` stored (pyplot is imported inside each function)."""

from __future__ import annotations

from workbench.pl._calibration import reliability
from workbench.pl._explain import focus_gallery, slide_overlay
from workbench.pl._gallery import phenotype_gallery
from workbench.pl._markers import marker_families, marker_map, uniqueness
from workbench.pl._risk import risk_group_cuts, risk_groups
from workbench.pl._survival import forest, kaplan_meier

__all__ = [
    "focus_gallery",
    "forest",
    "kaplan_meier",
    "marker_families",
    "marker_map",
    "phenotype_gallery",
    "reliability",
    "risk_group_cuts",
    "risk_groups",
    "slide_overlay",
    "uniqueness",
]

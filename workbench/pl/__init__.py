"""Plots that read what ``workbench.tl`` stored (pyplot is imported inside each function)."""

from __future__ import annotations

from workbench.pl._explain import focus_gallery, slide_overlay

__all__ = [
    "focus_gallery",
    "slide_overlay",
]

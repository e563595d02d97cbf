"""Torch models: tensors in, dicts of tensors out (no AnnData, no OpenSlide)."""

from __future__ import annotations

from workbench.models._detail import DetailBranch

__all__ = [
    "DetailBranch",
]

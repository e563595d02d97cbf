"""Pathology Workbench: explain, refine and discover on whole-slide images.

The top-level import is deliberately light: torch, OpenSlide, squidpy, ipywidgets and
pyplot load on first use of the sub-packages that need them.
"""

from __future__ import annotations

from workbench._errors import (
    CheckpointError,
    ClinicalTableError,
    ClusterError,
    CohortError,
    EncoderError,
    GeoJSONError,
    GeoJSONRepairWarning,
    InvalidImageError,
    InvalidRegionError,
    MarkerError,
    MissingResolutionError,
    MosaicDataError,
    NonFiniteError,
    NotBrightfieldWarning,
    NoTissueError,
    OptionError,
    ResultFileError,
    SlideOpenError,
    SplitWarning,
    StainError,
    UnknownSlideError,
    UnmatchedSlidesError,
    WorkbenchError,
)

__version__ = "0.1.0"

_SUBPACKAGES = ("io", "pp", "models", "tl", "pl", "interactive", "datasets")


def __getattr__(name: str):
    # Sub-packages load on first attribute access, so `import workbench` stays light.
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"workbench.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ClinicalTableError",
    "ClusterError",
    "CohortError",
    "EncoderError",
    "GeoJSONError",
    "GeoJSONRepairWarning",
    "InvalidImageError",
    "InvalidRegionError",
    "MarkerError",
    "MissingResolutionError",
    "MosaicDataError",
    "NonFiniteError",
    "NoTissueError",
    "NotBrightfieldWarning",
    "OptionError",
    "ResultFileError",
    "SlideOpenError",
    "SplitWarning",
    "StainError",
    "UnknownSlideError",
    "UnmatchedSlidesError",
    "WorkbenchError",
    "__version__",
]

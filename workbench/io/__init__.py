"""Reading slides and writing results: :class:`Slide`, GeoJSON, atomic files.

Nothing here imports torch; OpenSlide loads when the first file is opened.
"""

from __future__ import annotations

from workbench.io._atomic import (
    PARTIAL_DIR,
    OutputWriteError,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    clean_partial,
    is_hidden,
    list_results,
    write_h5ad,
)
from workbench.io._clinical import read_clinical, tcga_site, validate_clinical
from workbench.io._cohort import SLIDE_SUFFIXES, Cohort, list_slides, slide_id
from workbench.io._fingerprint import canonical_json, fingerprint
from workbench.io._geojson import (
    MAX_COORDINATE,
    Annotation,
    annotations_to_mask,
    mask_to_annotations,
    read_geojson,
    write_geojson,
)
from workbench.io._slide import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MAX_DECODE_PIXELS,
    DEFAULT_MAX_REGION_PIXELS,
    Slide,
    SlideInfo,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MAX_DECODE_PIXELS",
    "DEFAULT_MAX_REGION_PIXELS",
    "MAX_COORDINATE",
    "PARTIAL_DIR",
    "SLIDE_SUFFIXES",
    "Annotation",
    "Cohort",
    "OutputWriteError",
    "Slide",
    "SlideInfo",
    "annotations_to_mask",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_json",
    "clean_partial",
    "fingerprint",
    "is_hidden",
    "list_results",
    "list_slides",
    "mask_to_annotations",
    "read_clinical",
    "read_geojson",
    "tcga_site",
    "slide_id",
    "write_geojson",
    "validate_clinical",
    "write_h5ad",
]

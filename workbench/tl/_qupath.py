"""QuPath export of an explained slide: focus boxes and lesion polygons as GeoJSON, and the
focus hit rate against a lesion mask."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import EXPLAIN, FOCUS_CLASS, FOCUS_COLOR, LESION_CLASS, LESION_COLOR
from workbench.tl._engine import mask_at

if TYPE_CHECKING:  # pragma: no cover
    import anndata

__all__ = ["export_geojson", "focus_annotations", "focus_in_mask"]

logger = logging.getLogger(__name__)

#: QuPath class of a survival model's focus regions (they mark what raises the risk, not lesion).
PROGNOSTIC_CLASS = "Prognostic focus"


def focus_in_mask(
    adata: anndata.AnnData, mask: np.ndarray, downsample: float, *, at: str = "center"
) -> np.ndarray:
    """Which focus regions of an explained slide are centred (or peak) inside ``mask``.

    Parameters
    ----------
    adata
        Output of :func:`extract` (reads ``uns["explain"]["focus"]["centers_xy"]``).
    mask
        Boolean whole-slide mask (e.g. the true lesion) drawn at ``downsample``.
    downsample
        Level-0 pixels per mask pixel.
    at
        ``"center"`` (the focus region's centre) or ``"peak"`` (the point of its magnified
        crop where the lesion evidence peaks, ``focus["peak_xy"]``).

    Returns
    -------
    numpy.ndarray
        Boolean, one entry per focus region; its mean is the *focus hit rate*.

    Raises
    ------
    OptionError
        ``at`` is neither, or the extraction predates ``peak_xy`` (extract it again).
    """
    from workbench._errors import OptionError

    if at not in ("center", "peak"):
        raise OptionError(f"at must be 'center' or 'peak', not {at!r}")
    focus = adata.uns[EXPLAIN]["focus"]
    key = "centers_xy" if at == "center" else "peak_xy"
    if key not in focus:
        raise OptionError(
            "this extraction has no focus peaks (made by an older version): run tl.extract again"
        )
    centres = np.asarray(focus[key], dtype=float).reshape(-1, 2)
    return mask_at(mask, downsample, centres[:, 0], centres[:, 1])


def _finite_measurements(**values: float) -> dict:
    """QuPath measurements without the NaN ones (a kind without a detail branch has no lesion
    probability, and GeoJSON has no NaN)."""
    return {k: v for k, v in values.items() if np.isfinite(v)}


def focus_annotations(adata: anndata.AnnData, *, threshold: float | None = None) -> list:
    """Focus boxes and lesion polygons of an extracted slide as :class:`~workbench.io.Annotation`.

    Parameters
    ----------
    adata
        Output of :func:`workbench.tl.extract` (any model kind).
    threshold
        Lesion-map probability above which a pixel is lesion (default: the extraction's
        ``lesion_threshold``).

    Returns
    -------
    list of Annotation
        One ``"Focus region"`` rectangle per focus region (measurements ``focus_score`` and,
        for kinds with a detail branch, ``lesion_prob``), then the ``"Tumor"`` polygons of its
        lesion map (none for kinds without a detail branch: their maps are NaN). For a
        survival model (``uns["explain"]["target"] == "survival"``) each focus region is a
        ``"Prognostic focus"`` rectangle whose measurement ``risk_contribution`` is its region
        score (what pushes the slide risk up), with no lesion polygons: a survival model's
        lesion maps were never trained on lesion.
    """
    from workbench.io import Annotation, mask_to_annotations

    if EXPLAIN not in adata.uns:
        raise KeyError("adata has no uns['explain']; run workbench.tl.extract first")
    ex = adata.uns[EXPLAIN]
    focus = ex["focus"]
    thr = float(ex.get("lesion_threshold", 0.5) if threshold is None else threshold)
    survival = ex.get("target") == "survival"
    anns = []
    maps = np.asarray(focus["lesion_maps"])
    for i, (x, y, w, h) in enumerate(np.asarray(focus["boxes_xywh"], dtype=float)):
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        if survival:
            anns.append(
                Annotation(
                    geometry={"type": "Polygon", "coordinates": [ring]},
                    classification=PROGNOSTIC_CLASS,
                    color=FOCUS_COLOR,
                    name=f"prognostic focus {i + 1}",
                    measurements=_finite_measurements(
                        risk_contribution=float(focus["focus_score"][i])
                    ),
                )
            )
            continue
        anns.append(
            Annotation(
                geometry={"type": "Polygon", "coordinates": [ring]},
                classification=FOCUS_CLASS,
                color=FOCUS_COLOR,
                name=f"focus {i + 1}",
                measurements=_finite_measurements(
                    focus_score=float(focus["focus_score"][i]),
                    lesion_prob=float(focus["lesion_prob"][i]),
                ),
            )
        )
        mask = maps[i] >= thr
        if mask.any():
            anns.extend(
                mask_to_annotations(
                    mask,
                    classification=LESION_CLASS,
                    color=LESION_COLOR,
                    scale_xy=(w / mask.shape[1], h / mask.shape[0]),
                    offset_xy=(x, y),
                    min_area_px=4,
                    tolerance=0.5,
                )
            )
    return anns


def export_geojson(
    adata: anndata.AnnData, path: str | os.PathLike, *, threshold: float | None = None
) -> Path:
    """Write the focus regions and their lesion polygons as QuPath GeoJSON (level-0 pixels).

    Focus regions become rectangles classified ``"Focus region"`` with ``focus_score`` and
    ``lesion_prob`` measurements; lesion-map pixels above ``threshold`` (default: the
    extraction's ``lesion_threshold``) become ``"Tumor"`` polygons. A survival model's focus
    regions become ``"Prognostic focus"`` rectangles with a ``risk_contribution``
    measurement instead (see :func:`focus_annotations`). Written atomically.

    Parameters
    ----------
    adata
        Output of :func:`workbench.tl.extract`.
    path
        The ``.geojson`` file to write.
    threshold
        As in :func:`focus_annotations`.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from workbench.io import write_geojson

    out = write_geojson(path, focus_annotations(adata, threshold=threshold))
    logger.info("export_geojson: wrote %s", out)
    return Path(out)

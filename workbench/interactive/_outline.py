"""Outline geometry: pure functions between view masks and a slide's lesion outline.

The outline of a slide is a shapely geometry in **level-0 pixels**. A *view* is a window of
the slide: its top-left corner ``origin_xy`` (level 0), its shape ``(rows, cols)`` in view
pixels and its ``downsample`` (level-0 pixels per view pixel). Everything here takes those
explicitly and returns new objects (no state, inputs never changed), so the session
(:class:`~workbench.interactive.RefinementSession`) only keeps the outline and the view and
calls these.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from workbench._constants import LESION_CLASS, LESION_COLOR
from workbench.interactive._index import clip_to_box

#: Class of the outlines the model predicted and nobody refined (the user's outlines keep
#: :data:`~workbench._constants.LESION_CLASS`, ``"Tumor"``, so training reads only them).
MODEL_CLASS = LESION_CLASS + " (model)"
#: Colour of :data:`MODEL_CLASS` in QuPath (orange, apart from the refined red).
MODEL_COLOR = (230, 140, 0)

__all__ = [
    "MODEL_CLASS",
    "MODEL_COLOR",
    "annotations_from_text",
    "saved_annotations",
    "smooth",
    "tidy",
    "focus_annotations",
    "lesion_annotations",
    "mask_in_view",
    "merge_view",
    "on_slide",
    "outline_from_annotations",
    "sample_mask",
    "view_box",
    "view_geometry",
]


def outline_from_annotations(anns) -> object | None:
    """The union of the lesion polygons among ``anns`` (level 0), or ``None``.

    Polygons and multipolygons classified ``"Tumor"``, ``"Tumor (model)"`` (:data:`MODEL_CLASS`)
    or unclassified are kept; invalid ones are repaired (``buffer(0)``).
    """
    from shapely.geometry import shape
    from shapely.ops import unary_union

    polys = []
    for ann in anns:
        if ann.geometry_type not in ("Polygon", "MultiPolygon"):
            continue
        if ann.classification not in (None, LESION_CLASS, MODEL_CLASS):
            continue
        geom = shape(ann.geometry)
        if not geom.is_valid:
            geom = geom.buffer(0)
        polys.append(geom)
    return unary_union(polys) if polys else None


def on_slide(geom, dimensions: tuple[int, int], source=None, *, stacklevel: int = 2):
    """The parts of ``geom`` that touch a slide of ``dimensions`` (level-0 ``(W, H)``).

    Parts wholly outside the slide (another slide's outline, or coordinates at another level)
    are dropped with a :class:`UserWarning` naming ``source``, so they are neither shown as an
    empty view nor saved back. Returns ``None`` when nothing is left.
    """
    from shapely.geometry import box
    from shapely.ops import unary_union

    W, H = dimensions
    parts = list(getattr(geom, "geoms", [geom]))
    on = [g.intersects(box(0, 0, W, H)) for g in parts]
    inside = [g for g, ok in zip(parts, on, strict=True) if ok]
    if len(inside) < len(parts):
        outside = [g for g, ok in zip(parts, on, strict=True) if not ok]
        x0, y0, x1, y1 = unary_union(outside).bounds
        warnings.warn(
            f"{len(parts) - len(inside)} of {len(parts)} outline polygon(s) from "
            f"{source or 'the AnnData'} lie wholly outside the slide ({W}x{H} level-0 "
            f"pixels; they span x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}): left out, and "
            "not saved back. Is it this slide's outline, in level-0 pixels?",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return unary_union(inside) if inside else None


def annotations_from_text(text: str) -> list:
    """Annotations of a GeoJSON document given as text (read with the one GeoJSON reader)."""
    from workbench.io import read_geojson

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lesion.geojson"
        path.write_text(text)
        return read_geojson(path)


def focus_annotations(explain: dict) -> list:
    """Lesion polygons (level 0) of the focus regions' lesion maps of ``uns["explain"]``.

    Each map is thresholded at ``explain["lesion_threshold"]`` (default 0.5) and placed in its
    focus box (``boxes_xywh``, level 0). No maps or boxes: an empty list.
    """
    from workbench.io import mask_to_annotations

    focus = explain.get("focus", {})
    thr = float(explain.get("lesion_threshold", 0.5))
    anns = []
    maps = focus.get("lesion_maps")
    boxes = focus.get("boxes_xywh")
    if maps is None or boxes is None:
        return anns
    for m, (x, y, w, h) in zip(np.asarray(maps), np.asarray(boxes, float), strict=False):
        mask = m >= thr
        if mask.any():
            anns.extend(
                mask_to_annotations(
                    mask,
                    classification=LESION_CLASS,
                    scale_xy=(w / mask.shape[1], h / mask.shape[0]),
                    offset_xy=(x, y),
                )
            )
    return anns


def view_box(origin_xy: tuple[float, float], shape_rc: tuple[int, int], downsample: float):
    """The view's rectangle in level-0 pixels (a shapely box)."""
    from shapely.geometry import box

    x0, y0 = origin_xy
    h, w = shape_rc[:2]
    return box(x0, y0, x0 + w * downsample, y0 + h * downsample)


def mask_in_view(
    geom, origin_xy: tuple[float, float], shape_rc: tuple[int, int], downsample: float
) -> np.ndarray:
    """Draw the level-0 outline ``geom`` into a view: a boolean mask of ``shape_rc``.

    Only the outline's polygons that meet the view are clipped (an ``STRtree`` kept per
    outline, :func:`~workbench.interactive._index.clip_to_box`).
    """
    from shapely.geometry import MultiPolygon, mapping

    from workbench.io import Annotation, annotations_to_mask

    h, w = shape_rc[:2]
    empty = np.zeros((h, w), dtype=bool)
    if geom is None or geom.is_empty:
        return empty
    clipped = clip_to_box(geom, view_box(origin_xy, (h, w), downsample))
    if clipped.is_empty:
        return empty
    if clipped.geom_type not in ("Polygon", "MultiPolygon"):
        polys = [g for g in getattr(clipped, "geoms", []) if g.geom_type == "Polygon"]
        if not polys:
            return empty
        clipped = MultiPolygon(polys)
    ann = Annotation(geometry=mapping(clipped), classification=LESION_CLASS)
    return annotations_to_mask(
        [ann], (h, w), scale_xy=(downsample, downsample), offset_xy=origin_xy
    )


def view_geometry(mask: np.ndarray, origin_xy: tuple[float, float], downsample: float):
    """A view mask as a level-0 outline (polygons of at least 4 view pixels, simplified by
    half a view pixel), or ``None`` when the mask is empty."""
    from shapely.geometry import shape
    from shapely.ops import unary_union

    from workbench.io import mask_to_annotations

    anns = mask_to_annotations(
        mask,
        classification=LESION_CLASS,
        scale_xy=(downsample, downsample),
        offset_xy=origin_xy,
        min_area_px=4,
        tolerance=0.5,
    )
    polys = [shape(a.geometry).buffer(0) for a in anns]
    return unary_union(polys) if polys else None


def merge_view(outline, view_outline, box):
    """``outline`` with what lies inside ``box`` replaced by ``view_outline`` (level 0)."""
    from shapely.ops import unary_union

    rest = outline.difference(box) if outline is not None else None
    parts = [g for g in (rest, view_outline) if g is not None and not g.is_empty]
    return unary_union(parts) if parts else None


def lesion_annotations(geom) -> list:
    """The polygons of a level-0 outline as lesion annotations (``"Tumor"``, with their area).

    Empty parts, points and lines are left out; ``None`` or an empty geometry gives ``[]``.
    """
    from shapely.geometry import mapping

    from workbench.io import Annotation

    if geom is None or geom.is_empty:
        return []
    polys = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    return [
        Annotation(
            geometry=mapping(p),
            classification=LESION_CLASS,
            color=LESION_COLOR,
            measurements={"area_px": float(p.area)},
        )
        for p in polys
        if p.geom_type == "Polygon" and p.area > 0
    ]


def sample_mask(
    mask: np.ndarray,
    mask_downsample: float,
    origin_xy: tuple[float, float],
    shape_rc: tuple[int, int],
    downsample: float,
) -> np.ndarray:
    """Sample a whole-slide mask drawn at ``mask_downsample`` onto a view's pixel centres."""
    mask = np.asarray(mask, dtype=bool)
    h, w = shape_rc[:2]
    x0, y0 = origin_xy
    rows = ((y0 + (np.arange(h) + 0.5) * downsample) / mask_downsample).astype(int)
    cols = ((x0 + (np.arange(w) + 0.5) * downsample) / mask_downsample).astype(int)
    rows = np.clip(rows, 0, mask.shape[0] - 1)
    cols = np.clip(cols, 0, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def smooth(geom, radius: float):
    """``geom`` with its corners rounded: an opening then a closing by ``radius`` (level 0).

    The opening (``buffer(-r).buffer(r)``) rounds the convex corners and drops parts thinner
    than ``2 r``; the closing (``buffer(r).buffer(-r)``) rounds the concave corners and fills
    gaps narrower than ``2 r``. A lesion map's pixel staircase and its focus box's corners are
    gone when ``radius`` is at least one map cell. The result is simplified by ``radius / 20``.
    ``None``, an empty geometry or ``radius <= 0`` give the input back; a geometry that the
    opening removes entirely gives ``None``.

    Parameters
    ----------
    geom
        A shapely (multi)polygon in level-0 pixels, or ``None``.
    radius
        The rounding radius in level-0 pixels.

    Returns
    -------
    shapely geometry or None
        The smoothed outline.
    """
    if geom is None or geom.is_empty or not radius > 0:
        return geom
    r = float(radius)
    out = geom.buffer(-r).buffer(r).buffer(r).buffer(-r).simplify(r / 20.0)
    return None if out.is_empty else out


def tidy(geom, dimensions: tuple[int, int], min_area: float):
    """``geom`` clipped to the slide and without polygons smaller than ``min_area``.

    Parameters
    ----------
    geom
        A shapely (multi)polygon in level-0 pixels, or ``None``.
    dimensions
        The slide's level-0 ``(W, H)``: every coordinate ends within ``0..W``, ``0..H``.
    min_area
        Polygons of a smaller area (level-0 square pixels, holes subtracted) are dropped.

    Returns
    -------
    shapely geometry or None
        The polygons left, or ``None`` when none is.
    """
    from shapely.geometry import box
    from shapely.ops import unary_union

    if geom is None or geom.is_empty:
        return None
    W, H = dimensions
    clipped = geom.intersection(box(0, 0, W, H))
    polys = [
        p
        for p in getattr(clipped, "geoms", [clipped])
        if p.geom_type == "Polygon" and p.area >= float(min_area) and p.area > 0
    ]
    return unary_union(polys) if polys else None


def saved_annotations(
    geom, refined_area, *, made_by_user: str, made_by_model: str, um_per_px: float | None
) -> list:
    """The polygons of an outline as annotations, the refined apart from the predicted.

    A polygon that meets ``refined_area`` (where the user clicked, or outlines the user saved
    before) is the user's: class ``"Tumor"``, ``properties.source = "refined"``,
    ``properties.made_by = made_by_user``. Any other polygon is the model's start outline:
    class :data:`MODEL_CLASS` (``"Tumor (model)"``), ``source = "model"``, ``made_by =
    made_by_model``. Each gets its area in level-0 pixels and, with ``um_per_px``, in µm².

    Parameters
    ----------
    geom
        The outline (shapely, level-0 pixels), or ``None``.
    refined_area
        Where the user refined (shapely, level 0), or ``None`` for nowhere.
    made_by_user, made_by_model
        Who made each kind, e.g. ``"user clicks (cgam)"`` and ``"model <fingerprint>"``.
    um_per_px
        The slide's µm per level-0 pixel, or ``None`` (no µm² area then).

    Returns
    -------
    list of Annotation
        Refined polygons first, then the model's.
    """
    from shapely.geometry import mapping

    from workbench.io import Annotation

    if geom is None or geom.is_empty:
        return []
    polys = [p for p in getattr(geom, "geoms", [geom]) if p.geom_type == "Polygon" and p.area > 0]
    refined, model = [], []
    for p in polys:
        mine = refined_area is not None and not refined_area.is_empty and p.intersects(refined_area)
        measurements = {"area_px": float(p.area)}
        if um_per_px:
            measurements["area_um2"] = float(p.area) * float(um_per_px) ** 2
        ann = Annotation(
            geometry=mapping(p),
            classification=LESION_CLASS if mine else MODEL_CLASS,
            color=LESION_COLOR if mine else MODEL_COLOR,
            measurements=measurements,
            properties={
                "source": "refined" if mine else "model",
                "made_by": made_by_user if mine else made_by_model,
            },
        )
        (refined if mine else model).append(ann)
    return refined + model

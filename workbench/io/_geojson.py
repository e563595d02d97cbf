"""QuPath-compatible GeoJSON: annotations in level-0 pixel coordinates.

QuPath (0.3 and later) exports a ``FeatureCollection`` whose features carry
``properties.objectType`` (``"annotation"`` or ``"detection"``), an optional ``name``, a
``classification`` of the form ``{"name": ..., "color": [r, g, b]}`` and ``measurements``
(a mapping, or a list of ``{"name", "value"}`` pairs in older versions). Geometries are
``Polygon`` or ``MultiPolygon`` with holes, in level-0 pixels with ``y`` pointing down.
Everything else in ``properties`` is kept verbatim, so a file read and written again is the
same file.
"""

from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench._errors import GeoJSONError
from workbench.io._atomic import atomic_write_text

_AREA_TYPES = ("Polygon", "MultiPolygon")
_KNOWN_TYPES = (*_AREA_TYPES, "Point", "MultiPoint", "LineString", "MultiLineString")


@dataclass
class Annotation:
    """One QuPath object: a geometry with its classification and measurements.

    Attributes
    ----------
    geometry
        A GeoJSON geometry mapping (``{"type": "Polygon", "coordinates": [...]}``) in
        level-0 pixel coordinates.
    classification
        Class name (QuPath's ``classification.name``), e.g. ``"Tumor"``.
    color
        Class colour as ``(r, g, b)``, 0–255.
    name
        The object's own name, if any.
    object_type
        ``"annotation"`` (default) or ``"detection"``.
    measurements
        Named numbers shown in QuPath's measurement table.
    properties
        Any other properties, kept as read.
    id
        Feature id (a UUID string in QuPath's exports).
    """

    geometry: dict
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    name: str | None = None
    object_type: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    id: str | None = None

    @property
    def geometry_type(self) -> str:
        return self.geometry.get("type", "")

    @property
    def area(self) -> float:
        """Area in level-0 square pixels (holes subtracted); 0 for points and lines."""
        return sum(
            abs(_ring_area(poly[0])) - sum(abs(_ring_area(h)) for h in poly[1:])
            for poly in _polygons(self.geometry)
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` in level-0 pixels."""
        pts = np.asarray(list(_all_points(self.geometry.get("coordinates", []))), dtype=float)
        if pts.size == 0:
            raise GeoJSONError("the annotation has no coordinates")
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
        )

    def to_feature(self) -> dict:
        props = dict(self.properties)
        props["objectType"] = self.object_type
        if self.name is not None:
            props["name"] = self.name
        if self.classification is not None:
            cls: dict = {"name": self.classification}
            if self.color is not None:
                cls["color"] = [int(c) for c in self.color]
            props["classification"] = cls
        if self.measurements:
            props["measurements"] = {k: _json_number(v) for k, v in self.measurements.items()}
        return {
            "type": "Feature",
            "id": self.id if self.id is not None else str(uuid.uuid4()),
            "geometry": self.geometry,
            "properties": props,
        }


def _json_number(v: object) -> float | int | None:
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    f = float(v)  # type: ignore[arg-type]
    return f if math.isfinite(f) else None  # JSON has no NaN; QuPath writes null


def _all_points(coords):
    if len(coords) and isinstance(coords[0], int | float):
        yield coords
        return
    for c in coords:
        yield from _all_points(c)


def _polygons(geometry: dict) -> list:
    gtype = geometry.get("type")
    if gtype == "Polygon":
        return [geometry["coordinates"]]
    if gtype == "MultiPolygon":
        return list(geometry["coordinates"])
    return []


def _ring_area(ring: Sequence[Sequence[float]]) -> float:
    pts = np.asarray(ring, dtype=float)
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _feature_to_annotation(feature: dict, where: str) -> Annotation:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise GeoJSONError(f"{where}: expected a GeoJSON Feature, got {str(feature)[:80]!r}")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in _KNOWN_TYPES:
        gtype = geometry.get("type") if isinstance(geometry, dict) else geometry
        raise GeoJSONError(
            f"{where}: unsupported geometry {gtype!r}; expected one of {', '.join(_KNOWN_TYPES)}"
        )
    if "coordinates" not in geometry:
        raise GeoJSONError(f"{where}: geometry has no coordinates")
    props = dict(feature.get("properties") or {})
    cls = props.pop("classification", None)
    classification, color = None, None
    if isinstance(cls, dict):
        classification = cls.get("name")
        if cls.get("color") is not None:
            color = tuple(int(c) for c in cls["color"][:3])
        elif cls.get("colorRGB") is not None:  # QuPath 0.2 packs colour into one int
            rgb = int(cls["colorRGB"]) & 0xFFFFFF
            color = ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255)
    elif isinstance(cls, str):
        classification = cls
    meas = props.pop("measurements", None) or {}
    if isinstance(meas, list):  # older QuPath: [{"name": ..., "value": ...}]
        meas = {m["name"]: m.get("value") for m in meas if isinstance(m, dict) and "name" in m}
    measurements = {k: (float("nan") if v is None else v) for k, v in dict(meas).items()}
    object_type = props.pop("objectType", None) or "annotation"
    name = props.pop("name", None)
    return Annotation(
        geometry=geometry,
        classification=classification,
        color=color,
        name=name,
        object_type=object_type,
        measurements=measurements,
        properties=props,
        id=feature.get("id"),
    )


def read_geojson(path: str | os.PathLike) -> list[Annotation]:
    """Read annotations from a GeoJSON file (ours or QuPath's own exports).

    Accepts a ``FeatureCollection``, a bare list of features, or a single ``Feature``.

    Raises
    ------
    GeoJSONError
        The file is missing, not JSON, or holds something other than features.
    """
    path = Path(path)
    if not path.is_file():
        raise GeoJSONError(f"no GeoJSON file at {str(path)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeoJSONError(f"{str(path)!r} is not valid JSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise GeoJSONError(
            f"{str(path)!r} is neither a FeatureCollection, a Feature nor a list of features"
        )
    return [_feature_to_annotation(f, f"{path.name} feature {i}") for i, f in enumerate(features)]


def write_geojson(path: str | os.PathLike, annotations: Iterable[Annotation]) -> Path:
    """Write annotations as a QuPath-compatible ``FeatureCollection``, atomically."""
    features = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, Annotation):
            raise TypeError(f"item {i} is a {type(ann).__name__}, not an Annotation")
        features.append(ann.to_feature())
    text = json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=False)
    return atomic_write_text(path, text)


def mask_to_annotations(
    mask: np.ndarray,
    *,
    classification: str | None = None,
    color: tuple[int, int, int] | None = None,
    scale_xy: tuple[float, float] = (1.0, 1.0),
    offset_xy: tuple[float, float] = (0.0, 0.0),
    min_area_px: int = 1,
    tolerance: float = 0.0,
    merge: bool = False,
    measurements: dict[str, float] | None = None,
) -> list[Annotation]:
    """Trace a boolean mask into polygons with holes, in level-0 pixel coordinates.

    Parameters
    ----------
    mask
        ``(rows, cols)`` boolean array.
    scale_xy
        Level-0 pixels per mask pixel along ``x`` and ``y`` (e.g. the downsample of the
        level the mask was drawn at).
    offset_xy
        Level-0 position of the mask's top-left corner.
    min_area_px
        Connected components smaller than this (in mask pixels) are dropped.
    tolerance
        Douglas–Peucker simplification tolerance in mask pixels (0 keeps every vertex).
    merge
        Return one ``MultiPolygon`` annotation instead of one ``Polygon`` per component.
    """
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    sx, sy = (float(v) for v in scale_xy)
    ox, oy = (float(v) for v in offset_xy)

    def ring(binary: np.ndarray, r0: int, c0: int) -> list[list[float]]:
        padded = np.pad(binary, 1).astype(np.uint8)
        contours = find_contours(padded, 0.5)
        contour = max(contours, key=len)
        if tolerance > 0:
            contour = approximate_polygon(contour, tolerance)
        rows = contour[:, 0] - 1 + r0
        cols = contour[:, 1] - 1 + c0
        pts = [[(c + 0.5) * sx + ox, (r + 0.5) * sy + oy] for r, c in zip(rows, cols, strict=True)]
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        if _ring_area(pts) > 0:  # GeoJSON (RFC 7946): exterior rings counter-clockwise
            pts.reverse()  # in y-down pixel space a positive shoelace sum is clockwise on screen
        return pts

    labels, n = ndimage.label(mask)
    polygons = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == i
        if comp.sum() < min_area_px:
            continue
        filled = ndimage.binary_fill_holes(comp)
        rings = [ring(filled, sl[0].start, sl[1].start)]
        holes, n_holes = ndimage.label(filled & ~comp)
        for j, hsl in enumerate(ndimage.find_objects(holes), start=1):
            hole = holes[hsl] == j
            hr = ring(hole, sl[0].start + hsl[0].start, sl[1].start + hsl[1].start)
            rings.append(hr[::-1])
        polygons.append(rings)
    meas = dict(measurements or {})
    if merge:
        if not polygons:
            return []
        geometry = (
            {"type": "Polygon", "coordinates": polygons[0]}
            if len(polygons) == 1
            else {"type": "MultiPolygon", "coordinates": polygons}
        )
        return [Annotation(geometry, classification, color, measurements=meas)]
    return [
        Annotation(
            {"type": "Polygon", "coordinates": p}, classification, color, measurements=dict(meas)
        )
        for p in polygons
    ]


def annotations_to_mask(
    annotations: Iterable[Annotation],
    shape_rc: tuple[int, int],
    *,
    scale_xy: tuple[float, float] = (1.0, 1.0),
    offset_xy: tuple[float, float] = (0.0, 0.0),
    classification: str | Sequence[str] | None = None,
) -> np.ndarray:
    """Rasterise polygon annotations into a boolean mask of ``shape_rc``.

    The mask's pixel ``(r, c)`` covers level-0 ``x`` from ``offset_x + c * scale_x``; a pixel
    is inside when its centre is. Holes are cut out. Points and lines are skipped with a
    warning. ``classification`` keeps only annotations of that class (or classes).
    """
    from skimage.draw import polygon as draw_polygon

    rows, cols = (int(v) for v in shape_rc)
    out = np.zeros((rows, cols), dtype=bool)
    sx, sy = (float(v) for v in scale_xy)
    ox, oy = (float(v) for v in offset_xy)
    if isinstance(classification, str):
        classification = [classification]
    skipped = 0
    for ann in annotations:
        if classification is not None and ann.classification not in classification:
            continue
        if ann.geometry_type not in _AREA_TYPES:
            skipped += 1
            continue
        for poly in _polygons(ann.geometry):
            for k, ring_pts in enumerate(poly):
                pts = np.asarray(ring_pts, dtype=float)
                if len(pts) < 3:
                    continue
                c = (pts[:, 0] - ox) / sx - 0.5
                r = (pts[:, 1] - oy) / sy - 0.5
                rr, cc = draw_polygon(r, c, shape=(rows, cols))
                out[rr, cc] = k == 0  # exterior fills, holes clear
    if skipped:
        warnings.warn(
            f"{skipped} point/line annotation(s) have no area and were not drawn", stacklevel=2
        )
    return out

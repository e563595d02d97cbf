"""QuPath-compatible GeoJSON: annotations in level-0 pixel coordinates.

QuPath (0.3 and later) exports a ``FeatureCollection`` whose features carry
``properties.objectType`` (``"annotation"`` or ``"detection"``), an optional ``name``, a
``classification`` of the form ``{"name": ..., "color": [r, g, b]}`` and ``measurements``
(a mapping, or a list of ``{"name", "value"}`` pairs in older versions). Geometries are
``Polygon`` or ``MultiPolygon`` with holes, in level-0 pixels with ``y`` pointing down.
Everything else in ``properties`` is kept verbatim, so a file read and written again is the
same file.

Geometry is checked on the way in and out: every coordinate a finite number within
:data:`MAX_COORDINATE` pixels, rings closed with at least four positions, polygons valid (no
self-intersection). A problem raises :class:`~workbench.GeoJSONError` naming the feature and
what to fix; ``read_geojson(..., repair=True)`` repairs what can be repaired and says what it
changed (a :class:`~workbench.GeoJSONRepairWarning`), so an outline never changes silently.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import os
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench._errors import GeoJSONError, GeoJSONRepairWarning
from workbench.io._atomic import atomic_write_text

logger = logging.getLogger(__name__)

_AREA_TYPES = ("Polygon", "MultiPolygon")
_KNOWN_TYPES = (*_AREA_TYPES, "Point", "MultiPoint", "LineString", "MultiLineString")

MAX_COORDINATE = 1e7
"""Largest accepted ``|x|`` or ``|y|`` in level-0 pixels (real slides stay below ~300,000)."""

# How many array levels each geometry's coordinates have, and what they look like.
_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2}
_DEPTH["MultiPolygon"] = 3
_SHAPE = {
    "Point": "[x, y]",
    "MultiPoint": "[[x, y], ...]",
    "LineString": "[[x, y], [x, y], ...]",
    "MultiLineString": "[[[x, y], ...], ...]",
    "Polygon": "[[[x, y], ...], ...] (closed rings: the outline, then any holes)",
    "MultiPolygon": "[[[[x, y], ...], ...], ...] (a list of polygons)",
}


@dataclass
class Annotation:
    """One QuPath object: a geometry with its classification and measurements.

    Each parameter is kept as the attribute of the same name.

    Parameters
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
    repairs
        What ``read_geojson(..., repair=True)`` changed in this geometry (empty when nothing
        was changed). Not written to files and not part of equality.
    """

    geometry: dict
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    name: str | None = None
    object_type: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    id: str | None = None
    repairs: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def geometry_type(self) -> str:
        """The GeoJSON geometry type (``"Polygon"``, ``"MultiPolygon"``, ``"Point"`` …)."""
        return self.geometry.get("type", "")

    @property
    def area(self) -> float:
        """Area in level-0 square pixels (holes subtracted); 0 for points and lines."""
        return sum(
            abs(_ring_area(poly[0])) - sum(abs(_ring_area(h)) for h in poly[1:])
            for poly in _polygons(self.geometry)
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """The bounding box of every coordinate.

        Returns
        -------
        tuple of float
            ``(x_min, y_min, x_max, y_max)`` in level-0 pixels.

        Raises
        ------
        GeoJSONError
            The geometry has no coordinates.
        """
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
        """The GeoJSON ``Feature`` QuPath reads (what :func:`write_geojson` writes).

        Returns
        -------
        dict
            ``type``, ``id`` (a new UUID when the annotation has none), ``geometry`` and
            ``properties`` (``objectType``, ``name``, ``classification`` with ``color``,
            ``measurements`` and the other properties).
        """
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


# ----------------------------------------------------------------------------- checking
def _short(value: object, n: int = 60) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _loc(path: tuple[int, ...]) -> str:
    return "coordinates" + "".join(f"[{i}]" for i in path)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _positions(seq: object, where: str, path: tuple[int, ...], gtype: str) -> np.ndarray:
    """``seq`` (a list of positions) as an ``(n, 2)`` float array, or a precise error."""
    if not isinstance(seq, list):
        raise GeoJSONError(
            f"{where}: {_loc(path)} must be a list of [x, y] positions, got {_short(seq)}; "
            f"a {gtype}'s coordinates look like {_SHAPE[gtype]}"
        )
    try:  # fast path: a million vertices in a fraction of a second
        lengths = set(map(len, seq))
        if len(lengths) == 1 and lengths <= {2, 3}:
            flat = itertools.chain.from_iterable(seq)
            if set(map(type, flat)) <= {int, float}:
                k = lengths.pop()
                arr = np.fromiter(itertools.chain.from_iterable(seq), float, count=len(seq) * k)
                return arr.reshape(len(seq), k)[:, :2]
        elif not seq:
            return np.zeros((0, 2))
    except (TypeError, OverflowError):
        pass
    for k, pos in enumerate(seq):  # slow path: find the first bad position and say why
        here = _loc((*path, k))
        if isinstance(pos, list) and pos and isinstance(pos[0], list):
            raise GeoJSONError(
                f"{where}: {here} is nested too deeply; a {gtype}'s coordinates look like "
                f"{_SHAPE[gtype]}"
            )
        if not isinstance(pos, list) or len(pos) not in (2, 3):
            raise GeoJSONError(
                f"{where}: {here} must be a position [x, y], got {_short(pos)}; a {gtype}'s "
                f"coordinates look like {_SHAPE[gtype]}"
            )
        if not all(_is_number(v) for v in pos):
            raise GeoJSONError(
                f"{where}: {here} = {_short(pos)} holds something other than numbers; "
                "coordinates must be numbers of level-0 pixels"
            )
        try:
            [float(v) for v in pos]
        except OverflowError:
            raise GeoJSONError(
                f"{where}: {here} = {_short(pos)} lies beyond ±{MAX_COORDINATE:,.0f} pixels; "
                "coordinates must be level-0 pixels of the slide"
            ) from None
    raise GeoJSONError(
        f"{where}: {_loc(path)} is not a list of [x, y] positions"
    )  # pragma: no cover


def _check_values(arr: np.ndarray, where: str, path: tuple[int, ...]) -> None:
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise GeoJSONError(
            f"{where}: {_loc((*path, k))} = {arr[k].tolist()} is not finite (NaN or Infinity); "
            "every coordinate must be a real number of level-0 pixels"
        )
    far = (np.abs(arr) > MAX_COORDINATE).any(axis=1)
    if far.any():
        k = int(np.argmax(far))
        raise GeoJSONError(
            f"{where}: {_loc((*path, k))} = {arr[k].tolist()} lies beyond ±{MAX_COORDINATE:,.0f} "
            "pixels; coordinates must be level-0 pixels of the slide (real slides are below "
            "about 300,000 px a side; was the file written in other units?)"
        )


def _nested_list(value: object, where: str, path: tuple[int, ...], gtype: str, what: str):
    if not isinstance(value, list):
        raise GeoJSONError(
            f"{where}: {_loc(path)} must be a list of {what}, got {_short(value)}; a {gtype}'s "
            f"coordinates look like {_SHAPE[gtype]}"
        )
    if not value:
        raise GeoJSONError(
            f"{where}: {_loc(path)} is empty; a {gtype} needs at least one {what[:-1]}"
        )
    return value


class _Checked:
    """The arrays of a checked geometry and the notes of what a repair changed."""

    def __init__(self) -> None:
        self.polygons: list[list[np.ndarray]] = []  # area types: rings per polygon
        self.notes: list[str] = []


def _check_ring(
    ring: list, where: str, path: tuple[int, ...], gtype: str, repair: bool, out: _Checked
) -> tuple[np.ndarray, list]:
    arr = _positions(ring, where, path, gtype)
    _check_values(arr, where, path)
    if len(arr) and not np.array_equal(arr[0], arr[-1]):
        if not repair:
            raise GeoJSONError(
                f"{where}: the ring {_loc(path)} is not closed (it starts at {arr[0].tolist()} "
                f"and ends at {arr[-1].tolist()}); a ring must end where it starts — close it, "
                "or read with repair=True"
            )
        ring = [*ring, list(ring[0])]
        arr = np.vstack([arr, arr[:1]])
        out.notes.append(f"closed the ring {_loc(path)}")
    if len(arr) < 4:
        raise GeoJSONError(
            f"{where}: the ring {_loc(path)} has {len(arr)} position(s); a ring needs at least "
            "4 (three corners and the closing point)"
        )
    return arr, ring


def _check_coordinates(geometry: dict, where: str, repair: bool) -> tuple[dict, _Checked]:
    """Check a geometry's nesting and numbers; returns it (closed rings when repairing)."""
    gtype = geometry["type"]
    coords = geometry["coordinates"]
    out = _Checked()
    if gtype == "Point":
        if not isinstance(coords, list) or len(coords) not in (2, 3):
            raise GeoJSONError(
                f"{where}: a Point's coordinates must be [x, y], got {_short(coords)}"
            )
        _check_values(_positions([coords], where, (), gtype), where, ())
        return geometry, out
    if gtype in ("MultiPoint", "LineString"):
        arr = _positions(coords, where, (), gtype)
        _check_values(arr, where, ())
        if gtype == "LineString" and len(arr) < 2:
            raise GeoJSONError(f"{where}: a LineString needs at least 2 positions, got {len(arr)}")
        return geometry, out
    if gtype == "MultiLineString":
        for i, line in enumerate(_nested_list(coords, where, (), gtype, "lines")):
            _check_values(_positions(line, where, (i,), gtype), where, (i,))
        return geometry, out
    polys = [coords] if gtype == "Polygon" else _nested_list(coords, where, (), gtype, "polygons")
    new_polys = []
    for p, poly in enumerate(polys):
        base = () if gtype == "Polygon" else (p,)
        rings = _nested_list(poly, where, base, gtype, "rings")
        arrays, new_rings = [], []
        for r, ring in enumerate(rings):
            arr, ring = _check_ring(ring, where, (*base, r), gtype, repair, out)
            arrays.append(arr)
            new_rings.append(ring)
        out.polygons.append(arrays)
        new_polys.append(new_rings)
    if out.notes:  # rings were closed
        new_coords = new_polys[0] if gtype == "Polygon" else new_polys
        geometry = {**geometry, "coordinates": new_coords}
    return geometry, out


def _shapely_geometry(polygons: list[list[np.ndarray]]):
    import shapely

    parts = [shapely.Polygon(rings[0], rings[1:]) for rings in polygons]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _as_lists(value):
    if isinstance(value, tuple | list):
        return [_as_lists(v) for v in value]
    return float(value)


def _repaired(geom, where: str, reason: str):
    """A valid polygonal version of ``geom`` and a sentence saying what changed."""
    import shapely
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    fixed = shapely.make_valid(geom)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in _AREA_TYPES]
    polys = []
    for g in parts:
        polys.extend(getattr(g, "geoms", [g]) if g.geom_type == "MultiPolygon" else [g])
    polys = [orient(p, sign=-1.0) for p in polys if not p.is_empty and p.area > 0]
    if not polys:
        raise GeoJSONError(
            f"{where}: the outline is invalid ({reason}) and nothing with an area is left after "
            "repairing it; redraw it"
        )
    new = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    before = sum(
        abs(_ring_area(np.asarray(p.exterior.coords))) for p in getattr(geom, "geoms", [geom])
    )
    geometry = {"type": new.geom_type, "coordinates": _as_lists(mapping(new)["coordinates"])}
    note = (
        f"repaired an invalid outline ({reason}): now {len(polys)} polygon(s) of area "
        f"{new.area:,.1f} px² (the drawn outline enclosed {before:,.1f} px² by the shoelace rule)"
    )
    return geometry, note


def _check_valid(ann: Annotation, checked: _Checked, where: str, repair: bool) -> None:
    if not checked.polygons:
        return
    import shapely

    geom = _shapely_geometry(checked.polygons)
    reason = shapely.is_valid_reason(geom)
    if reason == "Valid Geometry":
        return
    if not repair:
        raise GeoJSONError(
            f"{where}: the outline is not a valid polygon ({reason}); fix or redraw it, or read "
            "the file with read_geojson(..., repair=True), which repairs it and reports the change"
        )
    ann.geometry, note = _repaired(geom, where, reason)
    ann.repairs.append(note)


def _feature_where(name: str, i: int, feature: object) -> str:
    where = f"{name} feature {i}"
    if isinstance(feature, dict):
        props = feature.get("properties")
        label = props.get("name") if isinstance(props, dict) else None
        if feature.get("id") is not None:
            where += f" (id {_short(feature['id'], 40)}"
            where += f", name {_short(label, 40)})" if label is not None else ")"
        elif label is not None:
            where += f" (name {_short(label, 40)})"
    return where


def _color(value: object, where: str) -> tuple[int, int, int]:
    if (
        isinstance(value, list | tuple)
        and len(value) >= 3
        and all(_is_number(c) and 0 <= c <= 255 for c in value[:3])
    ):
        return tuple(int(c) for c in value[:3])
    raise GeoJSONError(
        f"{where}: classification color must be [r, g, b] with numbers 0-255, got {_short(value)}"
    )


def _measurements(meas: object, where: str) -> dict:
    if meas is None:
        return {}
    if isinstance(meas, list):  # older QuPath: [{"name": ..., "value": ...}]
        meas = {m["name"]: m.get("value") for m in meas if isinstance(m, dict) and "name" in m}
    if not isinstance(meas, dict):
        raise GeoJSONError(
            f"{where}: measurements must be a mapping of names to numbers, got {_short(meas)}"
        )
    out = {}
    for k, v in meas.items():
        if v is None:
            out[k] = float("nan")
        elif _is_number(v):
            out[k] = v
        else:
            raise GeoJSONError(
                f"{where}: measurement {k!r} is {_short(v)}; measurements must be numbers (or null)"
            )
    return out


def _feature_to_annotation(
    feature: dict, where: str, repair: bool = False, pending: list | None = None
) -> Annotation:
    """One checked annotation; with ``pending``, the polygon validity check is left to
    :func:`_check_valid_many` (one vectorised call for a whole file)."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise GeoJSONError(f"{where}: expected a GeoJSON Feature, got {str(feature)[:80]!r}")
    geometry = feature.get("geometry")
    if geometry is None:
        raise GeoJSONError(
            f"{where}: the feature has no geometry (null); only features with a geometry "
            "can be read — remove it or give it one"
        )
    if not isinstance(geometry, dict) or geometry.get("type") not in _KNOWN_TYPES:
        gtype = geometry.get("type") if isinstance(geometry, dict) else geometry
        raise GeoJSONError(
            f"{where}: unsupported geometry {_short(gtype)}; expected one of {', '.join(_KNOWN_TYPES)}"
        )
    if "coordinates" not in geometry:
        raise GeoJSONError(f"{where}: geometry has no coordinates")
    geometry, checked = _check_coordinates(geometry, where, repair)
    props = feature.get("properties")
    if props is not None and not isinstance(props, dict):
        raise GeoJSONError(f"{where}: properties must be an object, got {_short(props)}")
    props = dict(props or {})
    cls = props.pop("classification", None)
    classification, color = None, None
    if isinstance(cls, dict):
        classification = cls.get("name")
        if classification is not None and not isinstance(classification, str):
            raise GeoJSONError(
                f"{where}: classification name must be text, got {_short(classification)}"
            )
        if cls.get("color") is not None:
            color = _color(cls["color"], where)
        elif cls.get("colorRGB") is not None:  # QuPath 0.2 packs colour into one int
            if not _is_number(cls["colorRGB"]):
                raise GeoJSONError(f"{where}: colorRGB must be an integer, got {cls['colorRGB']!r}")
            rgb = int(cls["colorRGB"]) & 0xFFFFFF
            color = ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255)
    elif isinstance(cls, str):
        classification = cls
    elif cls is not None:
        raise GeoJSONError(
            f"{where}: classification must be {{'name': ..., 'color': [r, g, b]}} or a class "
            f"name, got {_short(cls)}"
        )
    measurements = _measurements(props.pop("measurements", None), where)
    object_type = props.pop("objectType", None) or "annotation"
    if not isinstance(object_type, str):
        raise GeoJSONError(f"{where}: objectType must be text, got {_short(object_type)}")
    name = props.pop("name", None)
    ann = Annotation(
        geometry=geometry,
        classification=classification,
        color=color,
        name=name,
        object_type=object_type,
        measurements=measurements,
        properties=props,
        id=feature.get("id"),
    )
    ann.repairs.extend(checked.notes)
    if pending is None:
        _check_valid(ann, checked, where, repair)
    elif checked.polygons:
        pending.append((ann, checked, where))
    return ann


def _check_valid_many(pending: list, repair: bool) -> None:
    """:func:`_check_valid` for many annotations: single polygons are built and tested in one
    vectorised shapely call; the invalid ones (and multipolygons) get the full check, in order."""
    import shapely

    single = [i for i, (_, c, _) in enumerate(pending) if len(c.polygons) == 1]
    valid = np.zeros(len(pending), dtype=bool)
    if single:
        rings = [c.polygons[0] for _, c, _ in (pending[i] for i in single)]
        coords = np.concatenate([r[:, :2] for poly in rings for r in poly]).astype(float)
        ring_ends = np.cumsum([0] + [len(r) for poly in rings for r in poly])
        poly_ends = np.cumsum([0] + [len(poly) for poly in rings])
        geoms = shapely.from_ragged_array(
            shapely.GeometryType.POLYGON, coords, (ring_ends, poly_ends)
        )
        valid[single] = shapely.is_valid(geoms)
    for ok, (ann, checked, where) in zip(valid, pending, strict=True):
        if not ok:
            _check_valid(ann, checked, where, repair)


def _object_type_of(feature: object) -> object:
    """A feature's ``objectType`` as written (``"annotation"`` when absent), read cheaply."""
    if isinstance(feature, dict):
        props = feature.get("properties")
        if isinstance(props, dict):
            return props.get("objectType") or "annotation"
    return "annotation"


def _parse_json(text: str):
    """``json.loads`` with the cyclic garbage collector paused: parsing a large export makes
    millions of lists, and the collector's passes over them took ~4x the parse itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    finally:
        if was_enabled:
            gc.enable()


def read_geojson(
    path: str | os.PathLike,
    *,
    repair: bool = False,
    object_types: str | Sequence[str] | None = ("annotation",),
) -> list[Annotation]:
    """Read annotations from a GeoJSON file (ours or QuPath's own exports).

    Accepts a ``FeatureCollection``, a bare list of features, or a single ``Feature``. Every
    geometry is checked: finite coordinates within ±:data:`MAX_COORDINATE` pixels, the nesting
    its type requires, closed rings of at least four positions, and valid polygons.

    Parameters
    ----------
    path
        The ``.geojson`` (or ``.json``) file.
    repair
        Repair what can be repaired instead of raising: close open rings, and make
        self-intersecting or otherwise invalid polygons valid (``shapely.make_valid``, which
        keeps every lobe). Each change is listed in the annotation's ``repairs`` and in one
        :class:`~workbench.GeoJSONRepairWarning`.
    object_types
        QuPath ``objectType`` values to read (a feature without one is an annotation). By
        default only ``"annotation"``: lesion outlines, not the hundreds of thousands of cell
        ``"detection"`` objects a full QuPath export can hold, which are skipped unchecked (and
        counted in the log). ``"detection"`` or ``("annotation", "detection")`` reads them too;
        ``None`` reads every feature.

    Returns
    -------
    list of Annotation
        One per feature read, in file order.

    Raises
    ------
    GeoJSONError
        The file is missing, not JSON, holds something other than features, or a feature's
        geometry fails a check; the message names the feature (index, id, name) and what to fix.
    """
    path = Path(path)
    if not path.is_file():
        raise GeoJSONError(f"no GeoJSON file at {str(path)!r}")
    try:
        data = _parse_json(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeoJSONError(f"{str(path)!r} is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise GeoJSONError(
            f"{str(path)!r} is nested too deeply to read (over a thousand levels of brackets); "
            "GeoJSON coordinates need at most four levels — the file is damaged or not GeoJSON"
        ) from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise GeoJSONError(
                f"{str(path)!r}: the FeatureCollection's 'features' is {_short(features)}; it "
                "must be a list of Feature objects (an empty list for no annotations)"
            )
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise GeoJSONError(
            f"{str(path)!r} is neither a FeatureCollection, a Feature nor a list of features"
        )
    wanted = _wanted_types(object_types)
    anns, pending, skipped = [], [], {}
    for i, f in enumerate(features):
        kind = _object_type_of(f)
        if wanted is not None and isinstance(kind, str) and kind not in wanted:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        anns.append(_feature_to_annotation(f, _feature_where(path.name, i, f), repair, pending))
    _check_valid_many(pending, repair)
    if skipped:
        logger.info(
            "read_geojson: %s: skipped %s (objectType); pass object_types= to read them",
            path.name,
            ", ".join(f"{n:,} {k}(s)" for k, n in sorted(skipped.items())),
        )
    changed = [(i, a) for i, a in enumerate(anns) if a.repairs]
    if changed:
        lines = [f"feature {i}: " + "; ".join(a.repairs) for i, a in changed]
        message = f"{path.name}: repaired {len(changed)} feature(s): " + " | ".join(lines)
        logger.info(message)
        warnings.warn(GeoJSONRepairWarning(message), stacklevel=2)
    return anns


def _wanted_types(object_types) -> set[str] | None:
    if object_types is None:
        return None
    if isinstance(object_types, str):
        object_types = (object_types,)
    wanted = set(object_types)
    if not wanted or not all(isinstance(t, str) for t in wanted):
        raise ValueError(
            f"object_types must be None or QuPath objectType names (e.g. 'annotation', "
            f"'detection'), got {object_types!r}"
        )
    return wanted


def write_geojson(path: str | os.PathLike, annotations: Iterable[Annotation]) -> Path:
    """Write annotations as a QuPath-compatible ``FeatureCollection``, atomically.

    Every geometry gets the same checks as on reading (finite coordinates, closed rings,
    valid polygons); a failing one raises :class:`~workbench.GeoJSONError` naming the
    annotation, and nothing is written.

    Parameters
    ----------
    path
        The ``.geojson`` file. Missing folders above it are created.
    annotations
        The objects to write, in order.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    GeoJSONError
        A geometry fails the checks; the message names the annotation.
    OutputWriteError
        The file cannot be written; an older file of that name is left as it was.
    """
    features = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, Annotation):
            raise TypeError(f"item {i} is a {type(ann).__name__}, not an Annotation")
        feature = ann.to_feature()
        where = _feature_where("annotation", i, {**feature, "id": ann.id})
        where = where.replace(" feature ", " ", 1)
        _feature_to_annotation(json.loads(json.dumps(feature, default=_json_default)), where)
        features.append(feature)
    text = json.dumps(
        {"type": "FeatureCollection", "features": features},
        allow_nan=False,
        default=_json_default,
    )
    return atomic_write_text(path, text)


def _json_default(value: object):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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

    Every polygon returned is valid (shapely's sense): where simplification would make one
    cross itself, that component keeps its unsimplified outline.

    Parameters
    ----------
    mask
        ``(rows, cols)`` boolean array.
    classification
        Class name given to every annotation (e.g. ``"Tumor"``).
    color
        Class colour ``(r, g, b)``, 0–255, given to every annotation.
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
    measurements
        Named numbers attached to every annotation.

    Returns
    -------
    list of Annotation
        One ``Polygon`` annotation per connected component (in label order: top to bottom),
        or with ``merge=True`` a single annotation (a ``MultiPolygon`` when there are several
        components); empty when no component is left.
    """
    import shapely
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    sx, sy = (float(v) for v in scale_xy)
    ox, oy = (float(v) for v in offset_xy)

    def ring(binary: np.ndarray, r0: int, c0: int, tol: float) -> list[list[float]]:
        padded = np.pad(binary, 1).astype(np.uint8)
        contours = find_contours(padded, 0.5)
        contour = max(contours, key=len)
        if tol > 0:
            contour = approximate_polygon(contour, tol)
        rows = contour[:, 0] - 1 + r0
        cols = contour[:, 1] - 1 + c0
        pts = [[(c + 0.5) * sx + ox, (r + 0.5) * sy + oy] for r, c in zip(rows, cols, strict=True)]
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        if _ring_area(pts) > 0:  # GeoJSON (RFC 7946): exterior rings counter-clockwise
            pts.reverse()  # in y-down pixel space a positive shoelace sum is clockwise on screen
        return pts

    def component_rings(comp: np.ndarray, r0: int, c0: int, tol: float) -> list:
        filled = ndimage.binary_fill_holes(comp)
        rings = [ring(filled, r0, c0, tol)]
        holes, _ = ndimage.label(filled & ~comp)
        for j, hsl in enumerate(ndimage.find_objects(holes), start=1):
            hole = holes[hsl] == j
            hr = ring(hole, r0 + hsl[0].start, c0 + hsl[1].start, tol)
            rings.append(hr[::-1])
        return rings

    labels, n = ndimage.label(mask)
    polygons = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == i
        if comp.sum() < min_area_px:
            continue
        rings = component_rings(comp, sl[0].start, sl[1].start, tolerance)
        if tolerance > 0 and not (
            all(len(r) >= 4 for r in rings) and shapely.Polygon(rings[0], rings[1:]).is_valid
        ):
            rings = component_rings(comp, sl[0].start, sl[1].start, 0.0)
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


# ----------------------------------------------------------------------------- rasterising
_CROSSINGS_PER_CHUNK = 2**22


def _ring_array(ring) -> np.ndarray:
    if isinstance(ring, np.ndarray):
        arr = ring.astype(float, copy=False)
    else:
        try:
            k = len(ring[0])
            arr = np.fromiter(
                itertools.chain.from_iterable(ring), float, count=len(ring) * k
            ).reshape(len(ring), k)
        except (TypeError, ValueError, IndexError):
            arr = np.asarray(ring, dtype=float)
    return arr[:, :2]


def _fill_polygon(out: np.ndarray, rings: list[np.ndarray]) -> None:
    """OR the even-odd interior of ``rings`` (mask-pixel ``(x=col, y=row)``) into ``out``.

    A scanline fill: every edge is intersected with the rows whose pixel centres it spans,
    each crossing toggles the pixels from its column onwards, and a running XOR along each
    row gives inside/outside. Work grows with the vertices plus the crossings plus the
    bounding box, not with vertices × pixels, so a million-vertex outline takes well under
    a second.
    """
    rows, cols = out.shape
    pts = np.vstack(rings)
    r_lo = max(0, math.ceil(pts[:, 1].min()))
    r_hi = min(rows - 1, math.ceil(pts[:, 1].max()) - 1)
    c_lo = max(0, math.ceil(pts[:, 0].min()))
    c_hi = min(cols - 1, math.floor(pts[:, 0].max()))
    if r_hi < r_lo or c_hi < c_lo:
        return
    bw = c_hi - c_lo + 1
    parity = np.zeros((r_hi - r_lo + 1, bw + 1), dtype=np.uint8)
    for arr in rings:
        if len(arr) < 3:
            continue
        if not np.array_equal(arr[0], arr[-1]):
            arr = np.vstack([arr, arr[:1]])
        x0, y0, x1, y1 = arr[:-1, 0], arr[:-1, 1], arr[1:, 0], arr[1:, 1]
        ymin, ymax = np.minimum(y0, y1), np.maximum(y0, y1)
        lo = np.maximum(np.ceil(ymin), r_lo).astype(np.int64)
        hi = np.minimum(np.ceil(ymax) - 1, r_hi).astype(np.int64)  # rows r with ymin <= r < ymax
        n = np.maximum(hi - lo + 1, 0)
        keep = n > 0
        x0, y0, x1, y1, lo, n = x0[keep], y0[keep], x1[keep], y1[keep], lo[keep], n[keep]
        slope = (x1 - x0) / (y1 - y0)
        ends = np.cumsum(n)
        start = 0
        while start < len(n):
            stop = int(
                np.searchsorted(ends, ends[start] - n[start] + _CROSSINGS_PER_CHUNK, "right")
            )
            stop = max(stop, start + 1)
            cn = n[start:stop]
            idx = np.repeat(np.arange(start, stop), cn)
            first = np.cumsum(cn) - cn
            r = lo[idx] + (np.arange(int(cn.sum())) - np.repeat(first, cn))
            x = x0[idx] + (r - y0[idx]) * slope[idx]
            c = np.clip(np.ceil(x), c_lo, c_hi + 1).astype(np.int64) - c_lo
            flat = (r - r_lo) * (bw + 1) + c
            uniq, counts = np.unique(flat, return_counts=True)
            parity.reshape(-1)[uniq[counts % 2 == 1]] ^= 1
            start = stop
    inside = np.bitwise_xor.accumulate(parity, axis=1)[:, :bw].astype(bool)
    out[r_lo : r_hi + 1, c_lo : c_hi + 1] |= inside


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
    is inside when its centre is. Holes are cut out of their own polygon. Points and lines
    are skipped with a warning. ``classification`` keeps only annotations of that class (or
    classes). A scanline fill: time grows with the vertices and the mask, not their product.

    Parameters
    ----------
    annotations
        The objects to draw (``Polygon`` and ``MultiPolygon`` geometries).
    shape_rc
        ``(rows, cols)`` of the mask.
    scale_xy
        Level-0 pixels per mask pixel along ``x`` and ``y``.
    offset_xy
        Level-0 position of the mask's top-left corner.
    classification
        Keep only annotations of this class (or these classes); ``None`` keeps all.

    Returns
    -------
    numpy.ndarray
        ``shape_rc`` boolean mask, True inside any kept polygon.
    """
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
            rings = []
            for ring_pts in poly:
                pts = _ring_array(ring_pts)
                if len(pts) < 3:
                    continue
                if not np.isfinite(pts).all():
                    raise GeoJSONError(
                        f"annotation {ann.name or ann.id or ''!s} has a NaN or infinite "
                        "coordinate; check its geometry (read_geojson rejects such files)"
                    )
                # level-0 -> mask pixel coordinates in which pixel centres are integers
                rings.append(
                    np.column_stack([(pts[:, 0] - ox) / sx - 0.5, (pts[:, 1] - oy) / sy - 0.5])
                )
            if rings and rows and cols:
                _fill_polygon(out, rings)
    if skipped:
        warnings.warn(
            f"{skipped} point/line annotation(s) have no area and were not drawn", stacklevel=2
        )
    return out

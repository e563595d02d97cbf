from __future__ import annotations

import json

import numpy as np
import pytest

from workbench import GeoJSONError
from workbench.io import (
    Annotation,
    annotations_to_mask,
    mask_to_annotations,
    read_geojson,
    write_geojson,
)

# Shaped like a QuPath 0.4 "Export objects as GeoJSON" file (one feature per line shortened).
QUPATH_EXPORT = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "1d3b2c9e-6c1f-4a59-9a53-0f3c2b6c7a11",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[100, 100], [300, 100], [300, 300], [100, 300], [100, 100]],
                    [[150, 150], [150, 200], [200, 200], [200, 150], [150, 150]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "name": "lesion A",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "isLocked": False,
                "measurements": {"Area µm^2": 9375.0},
            },
        },
        {
            "type": "Feature",
            "id": "5e0f4a6b-0000-4000-8000-000000000002",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[400, 400], [420, 400], [420, 420], [400, 420], [400, 400]]],
                    [[[500, 500], [540, 500], [540, 540], [500, 540], [500, 500]]],
                ],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Stroma", "colorRGB": -6895466},
                "measurements": [{"name": "score", "value": 0.5}],
            },
        },
        {
            "type": "Feature",
            "id": "p1",
            "geometry": {"type": "Point", "coordinates": [10, 10]},
            "properties": {"objectType": "annotation"},
        },
    ],
}


@pytest.fixture
def qupath_file(tmp_path):
    p = tmp_path / "qupath.geojson"
    p.write_text(json.dumps(QUPATH_EXPORT))
    return p


def test_reads_qupath_export(qupath_file):
    anns = read_geojson(qupath_file)
    assert [a.geometry_type for a in anns] == ["Polygon", "MultiPolygon", "Point"]
    a = anns[0]
    assert a.classification == "Tumor" and a.color == (200, 0, 0) and a.name == "lesion A"
    assert a.measurements == {"Area µm^2": 9375.0}
    assert a.properties == {"isLocked": False}
    assert a.area == pytest.approx(200 * 200 - 50 * 50)
    assert a.bounds() == (100, 100, 300, 300)
    b = anns[1]
    rgb = -6895466 & 0xFFFFFF
    assert b.color == ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255)
    assert b.measurements == {"score": 0.5}
    assert b.area == pytest.approx(400 + 1600)


def test_round_trip_is_exact(qupath_file, tmp_path):
    anns = read_geojson(qupath_file)
    out = tmp_path / "out.geojson"
    write_geojson(out, anns)
    again = read_geojson(out)
    assert again == anns
    text = json.loads(out.read_text())
    f = text["features"][0]
    assert f["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert f["properties"]["objectType"] == "annotation"
    assert f["id"] == QUPATH_EXPORT["features"][0]["id"]


def test_mask_polygons_with_holes_round_trip_to_mask():
    m = np.zeros((60, 80), bool)
    m[10:40, 10:50] = True
    m[20:25, 20:30] = False  # a hole
    m[50:55, 60:70] = True  # a second component
    anns = mask_to_annotations(
        m, classification="Tumor", color=(200, 0, 0), scale_xy=(4, 4), offset_xy=(100, 200)
    )
    assert len(anns) == 2
    assert len(anns[0].geometry["coordinates"]) == 2  # exterior + hole
    x0, y0, x1, y1 = anns[0].bounds()
    assert (x0, y0) == (100 + 10 * 4, 200 + 10 * 4) and (x1, y1) == (100 + 50 * 4, 200 + 40 * 4)
    back = annotations_to_mask(anns, m.shape, scale_xy=(4, 4), offset_xy=(100, 200))
    np.testing.assert_array_equal(back, m)
    merged = mask_to_annotations(m, merge=True)
    assert len(merged) == 1 and merged[0].geometry_type == "MultiPolygon"
    np.testing.assert_array_equal(annotations_to_mask(merged, m.shape), m)


def test_mask_to_annotations_random_blobs_round_trip():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    m = ndimage.gaussian_filter(rng.random((120, 150)), 4) > 0.52
    anns = mask_to_annotations(m)
    back = annotations_to_mask(anns, m.shape)
    assert (back != m).mean() < 0.002


def test_exterior_rings_are_counter_clockwise_in_geojson_sense():
    m = np.zeros((10, 10), bool)
    m[2:6, 2:6] = True
    ring = np.asarray(mask_to_annotations(m)[0].geometry["coordinates"][0])
    x, y = ring[:, 0], ring[:, 1]
    shoelace = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    assert shoelace < 0  # counter-clockwise on screen (y down) == negative in pixel space


def test_mask_classification_filter_and_points_warn(qupath_file):
    anns = read_geojson(qupath_file)
    with pytest.warns(UserWarning, match="no area"):
        m = annotations_to_mask(anns, (600, 600))
    assert m[120, 120] and not m[175, 175] and m[410, 410]
    only = annotations_to_mask(anns, (600, 600), classification="Stroma")
    assert not only[120, 120] and only[410, 410]


def test_measurements_written_and_nan_becomes_null(tmp_path):
    ann = Annotation(
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
        classification="Tumor",
        measurements={"a": 1.5, "b": float("nan")},
    )
    out = write_geojson(tmp_path / "m.geojson", [ann])
    props = json.loads(out.read_text())["features"][0]["properties"]
    assert props["measurements"] == {"a": 1.5, "b": None}
    back = read_geojson(out)[0]
    assert back.measurements["a"] == 1.5 and np.isnan(back.measurements["b"])


@pytest.mark.parametrize(
    "content,match",
    [
        ("not json", "not valid JSON"),
        ('{"type": "Polygon"}', "neither"),
        ('[{"type": "Feature", "geometry": {"type": "Circle"}}]', "unsupported geometry"),
        ('[{"type": "Nope"}]', "expected a GeoJSON Feature"),
    ],
)
def test_bad_geojson_raises(tmp_path, content, match):
    p = tmp_path / "bad.geojson"
    p.write_text(content)
    with pytest.raises(GeoJSONError, match=match):
        read_geojson(p)


def test_missing_file_raises(tmp_path):
    with pytest.raises(GeoJSONError, match="no GeoJSON file"):
        read_geojson(tmp_path / "none.geojson")


def test_write_rejects_non_annotations(tmp_path):
    with pytest.raises(TypeError, match="not an Annotation"):
        write_geojson(tmp_path / "x.geojson", [{"type": "Feature"}])
    assert not (tmp_path / "x.geojson").exists()


# ---------------------------------------------------------------- geometry checks
def _feature(coords, gtype="Polygon", **props):
    return {
        "type": "Feature",
        "id": "a1",
        "geometry": {"type": gtype, "coordinates": coords},
        "properties": {"name": "lesion A", **props},
    }


def _write(tmp_path, obj) -> object:
    p = tmp_path / "in.geojson"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


BOW_TIE = [[[0, 0], [20, 20], [20, 0], [0, 20], [0, 0]]]  # a square's corners in the wrong order


def test_self_intersection_raises_naming_the_feature(tmp_path):
    ok = _feature([[[0, 0], [5, 0], [5, 5], [0, 0]]])
    path = _write(tmp_path, {"type": "FeatureCollection", "features": [ok, _feature(BOW_TIE)]})
    with pytest.raises(GeoJSONError, match="Self-intersection") as info:
        read_geojson(path)
    msg = str(info.value)
    assert "feature 1 (id 'a1', name 'lesion A')" in msg and "repair=True" in msg


def test_repair_keeps_both_lobes_and_reports_the_change(tmp_path):
    from workbench import GeoJSONRepairWarning

    path = _write(tmp_path, [_feature(BOW_TIE)])
    with pytest.warns(GeoJSONRepairWarning, match="feature 0: repaired an invalid outline"):
        (ann,) = read_geojson(path, repair=True)
    assert ann.geometry_type == "MultiPolygon" and len(ann.geometry["coordinates"]) == 2
    assert ann.area == pytest.approx(200.0)  # two triangles of 100 px², none lost
    assert ann.repairs and "Self-intersection" in ann.repairs[0] and "200.0 px²" in ann.repairs[0]
    import shapely
    from shapely.geometry import shape

    assert shapely.is_valid(shape(ann.geometry))
    # the repaired outline is written and read back unchanged, without a warning
    out = write_geojson(tmp_path / "fixed.geojson", [ann])
    (again,) = read_geojson(out)
    assert again.geometry == ann.geometry and again.repairs == []


def test_open_ring_raises_or_is_closed_when_repairing(tmp_path):
    from workbench import GeoJSONRepairWarning

    path = _write(tmp_path, [_feature([[[0, 0], [9, 0], [9, 9], [0, 9]]])])
    with pytest.raises(GeoJSONError, match="is not closed"):
        read_geojson(path)
    with pytest.warns(GeoJSONRepairWarning, match="closed the ring coordinates\\[0\\]"):
        (ann,) = read_geojson(path, repair=True)
    assert ann.geometry["coordinates"][0][-1] == [0, 0] and ann.area == pytest.approx(81)


def test_valid_files_are_not_changed_by_reading(qupath_file):
    anns = read_geojson(qupath_file, repair=True)
    assert all(a.repairs == [] for a in anns)
    assert anns[0].geometry == QUPATH_EXPORT["features"][0]["geometry"]


def test_write_refuses_a_non_finite_or_invalid_geometry_and_writes_nothing(tmp_path):
    nan = Annotation(
        {"type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")], [1, 1], [0, 0]]]}
    )
    with pytest.raises(GeoJSONError, match="annotation 0: coordinates\\[0\\]\\[1\\]"):
        write_geojson(tmp_path / "a.geojson", [nan])
    bow = Annotation({"type": "Polygon", "coordinates": BOW_TIE}, name="bow")
    with pytest.raises(GeoJSONError, match="annotation 0 \\(name 'bow'\\).*Self-intersection"):
        write_geojson(tmp_path / "a.geojson", [bow])
    assert not (tmp_path / "a.geojson").exists()


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 1.5])
def test_traced_polygons_are_always_valid(tolerance):
    import shapely
    from scipy import ndimage
    from shapely.geometry import shape

    rng = np.random.default_rng(11)
    for _ in range(12):
        m = ndimage.gaussian_filter(rng.random((50, 60)), rng.uniform(0.7, 2.5)) > 0.5
        for ann in mask_to_annotations(m, tolerance=tolerance):
            assert shapely.is_valid(shape(ann.geometry))


# ---------------------------------------------------------------- rasterising
def test_rasteriser_matches_pixel_centre_rule_of_skimage_on_random_polygons():
    from skimage.draw import polygon as draw_polygon

    rng = np.random.default_rng(5)
    for _ in range(40):
        n = int(rng.integers(3, 25))
        centre = rng.uniform(-10, 90, 2)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(3, 50, n)
        pts = np.c_[centre[0] + rad * np.cos(ang), centre[1] + rad * np.sin(ang)]
        pts = np.vstack([pts, pts[:1]])
        ann = Annotation({"type": "Polygon", "coordinates": [pts.tolist()]})
        got = annotations_to_mask([ann], (80, 90))
        want = np.zeros((80, 90), bool)
        rr, cc = draw_polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape=want.shape)
        want[rr, cc] = True
        np.testing.assert_array_equal(got, want)


def test_million_vertex_outline_rasterises_to_its_area():
    n = 1_000_000
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.c_[2048 + 1600 * np.cos(theta), 2048 + 1600 * np.sin(theta)]
    ring = np.vstack([ring, ring[:1]]).tolist()
    mask = annotations_to_mask(
        [Annotation({"type": "Polygon", "coordinates": [ring]})], (256, 256), scale_xy=(16, 16)
    )
    assert mask.sum() == pytest.approx(np.pi * 100**2, rel=0.01)  # radius 1600 / 16 = 100 px
    assert mask[128, 128] and not mask[5, 5]


def test_a_hole_cuts_only_its_own_polygon():
    big = Annotation(
        {"type": "Polygon", "coordinates": [[[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]]]}
    )
    donut = Annotation(
        {
            "type": "Polygon",
            "coordinates": [
                [[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]],
                [[15, 15], [15, 25], [25, 25], [25, 15], [15, 15]],
            ],
        }
    )
    mask = annotations_to_mask([big, donut], (40, 40))
    assert mask.all()  # the donut's hole lies inside the big square, which stays filled
    assert not annotations_to_mask([donut], (40, 40))[20, 20]


# ------------------------------------------------------------- full QuPath exports (issue 24)
def _export(n_detections: int, *, bad_detection: bool = False) -> dict:
    """A QuPath 'export all objects': one lesion annotation and many Tumor cell detections."""
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    feats = [
        _feature(
            [[[0, 0], [400, 0], [400, 300], [0, 300], [0, 0]]],
            objectType="annotation",
            classification={"name": "Tumor", "color": [200, 0, 0]},
        )  # fmt: skip
    ]
    for i in range(n_detections):
        cx, cy = 500 + 20 * (i % 50), 20 * (i // 50)
        ring = np.c_[cx + 5 * np.cos(t), cy + 4 * np.sin(t)].tolist()
        feats.append(_feature([[*ring, ring[0]]], objectType="detection",
                              classification={"name": "Tumor"}))  # fmt: skip
    if bad_detection:
        feats[-1]["geometry"]["coordinates"] = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
    return {"type": "FeatureCollection", "features": feats}


def test_detections_are_skipped_unless_asked_for(tmp_path, caplog):
    import logging

    path = _write(tmp_path, _export(500, bad_detection=True))
    with caplog.at_level(logging.INFO, logger="workbench"):
        anns = read_geojson(path)
    assert [a.object_type for a in anns] == ["annotation"]
    assert "skipped 500 detection(s)" in caplog.text
    # asked for, detections are read and checked like any feature (the bow tie is named)
    with pytest.raises(GeoJSONError, match=r"feature 500.*not a valid polygon"):
        read_geojson(path, object_types="detection")
    good = _write(tmp_path, _export(300))
    assert len(read_geojson(good, object_types="detection")) == 300
    assert len(read_geojson(good, object_types=None)) == 301
    assert len(read_geojson(good, object_types=("annotation", "detection"))) == 301
    with pytest.raises(ValueError, match="object_types must be None or QuPath objectType"):
        read_geojson(good, object_types=[3])


def test_many_polygons_are_checked_at_once_and_the_bad_one_is_named(tmp_path):
    obj = _export(400)
    for f in obj["features"]:
        f["properties"]["objectType"] = "annotation"
    obj["features"][123]["geometry"]["coordinates"] = BOW_TIE
    with pytest.raises(GeoJSONError, match=r"feature 123 .*Self-intersection"):
        read_geojson(_write(tmp_path, obj))
    with pytest.warns(Warning, match="feature 123: repaired"):
        anns = read_geojson(_write(tmp_path, obj), repair=True)
    assert len(anns) == 401
    out = write_geojson(tmp_path / "out.geojson", anns)
    back = read_geojson(out)
    assert [a.geometry for a in back] == [json.loads(json.dumps(a.geometry)) for a in anns]
    anns[200] = Annotation(
        {"type": "Polygon", "coordinates": [[[0, 0], [4, 4], [4, 0], [0, 4], [0, 0]]]}
    )
    with pytest.raises(GeoJSONError, match=r"annotation 200: the outline is not a valid"):
        write_geojson(tmp_path / "bad.geojson", anns)
    assert not (tmp_path / "bad.geojson").exists()

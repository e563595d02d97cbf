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

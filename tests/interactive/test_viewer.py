"""The viewer's craft (issue 25): what a save keeps apart and leaves out, undo across views,
powers-of-two zoom, drag, the scale bar. Headless, on the session and the widget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import shape

from workbench.datasets import lesion_view
from workbench.interactive import RefinementEngine, RefinementSession, RegionRefiner, _render
from workbench.interactive._outline import MODEL_CLASS, smooth, tidy
from workbench.io import Slide
from workbench.models import load_click_segmenter

LESION_CENTRE = (334.0, 375.0)  # of lesion_view(512, seed=7): x 244..424, y 293..458


@pytest.fixture(scope="module")
def model():
    return load_click_segmenter()


@pytest.fixture(scope="module")
def slide_and_truth():
    image, mask = lesion_view(512, seed=7)
    return Slide.from_array(image, mpp=0.5, name="lesion"), mask


def _session(slide, model, tmp_path, **kw):
    kw.setdefault("output", tmp_path / "out" / "lesion.geojson")
    kw.setdefault("view_size", 192)
    kw.setdefault("view_downsample", 1.0)
    return RefinementSession(slide, engine=RefinementEngine(model), overview_size=128, **kw)


def _refine(session, truth, n=3):
    from workbench.interactive import next_click

    for _ in range(n):
        c = next_click(session.mask, session.view_mask_of(truth, 1.0))
        if c is None:
            break
        session.click(c.x, c.y, c.positive)


def _adata_with_a_boxy_prediction():
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    adata = anndata.AnnData(X=np.zeros((1, 1), np.float32), obs=pd.DataFrame(index=["0"]))
    lesion_map = np.zeros((1, 8, 8), np.float32)
    lesion_map[0, :, :] = 0.9  # the whole focus box is "lesion": a square, box edges
    adata.uns["explain"] = {
        "model": "DemoModel",
        "lesion_threshold": 0.5,
        "focus": {
            "centers_xy": np.array([[104.0, 104.0]]),
            "boxes_xywh": np.array([[40.0, 40.0, 128.0, 128.0]]),
            "lesion_maps": lesion_map,
            "focus_score": np.array([0.9]),
            "lesion_prob": np.array([0.8]),
        },
    }
    adata.uns["extract_fingerprint"] = {"model": "ab12" * 16}
    return adata


def _features(path):
    return json.loads(path.read_text())["features"]


def test_save_keeps_refined_and_model_outlines_apart_and_smooths_the_model(
    slide_and_truth, model, tmp_path
):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path, adata=_adata_with_a_boxy_prediction(), learn=False)
    assert s.view_centre_xy == pytest.approx((104.0, 104.0), abs=1)  # the focus region
    s.go_to(LESION_CENTRE)
    _refine(s, truth)
    feats = _features(s.save())
    classes = {f["properties"]["classification"]["name"] for f in feats}
    assert classes == {"Tumor", MODEL_CLASS}
    for f in feats:
        props = f["properties"]
        if props["classification"]["name"] == "Tumor":
            assert props["source"] == "refined" and props["made_by"] == "user clicks (cgam)"
        else:
            assert props["source"] == "model" and props["made_by"] == "model " + "ab12" * 4
    model_polys = [shape(f["geometry"]) for f in feats if f["properties"]["source"] == "model"]
    assert len(model_polys) == 1
    poly = model_polys[0]
    # The 128 x 128 box is smoothed (20 µm = 40 px: rounded corners), not kept as a rectangle.
    assert len(poly.exterior.coords) - 1 > 12
    assert 0.85 < poly.area / 128**2 < 0.97
    corners = [(40, 40), (168, 40), (40, 168), (168, 168)]
    assert all(min(np.hypot(x - cx, y - cy) for x, y in poly.exterior.coords) > 8
               for cx, cy in corners)  # fmt: skip
    refined = [shape(f["geometry"]) for f in feats if f["properties"]["source"] == "refined"]
    lesion = shape(
        {"type": "Polygon", "coordinates": [[(244, 293), (424, 293), (424, 458), (244, 458)]]}
    )
    assert sum(p.intersection(lesion).area for p in refined) > 0.8 * sum(p.area for p in refined)


def test_save_drops_specks_and_clips_to_the_slide(slide_and_truth, model, tmp_path):
    slide, _ = slide_and_truth
    speck = [[10, 10], [12, 10], [12, 17], [10, 17], [10, 10]]  # 14 px² = 3.5 µm²
    small = [[100, 10], [120, 10], [120, 25], [100, 25], [100, 10]]  # 300 px² = 75 µm²
    across = [[480, 300], [560, 300], [560, 380], [480, 380], [480, 300]]  # half off the slide
    feats = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name},
                **({"made_by": "model abc"} if name == MODEL_CLASS else {}),
            },
        }
        for ring, name in ((speck, "Tumor"), (small, "Tumor"), (across, MODEL_CLASS))
    ]
    start = tmp_path / "start.geojson"
    start.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    s = _session(slide, model, tmp_path, geojson=start, learn=False)
    saved = _features(s.save(tmp_path / "saved.geojson"))
    areas_um2 = [shape(f["geometry"]).area * 0.25 for f in saved]
    assert len(saved) == 2 and min(areas_um2) >= s.min_area_um2 == 50.0
    for f in saved:
        xs, ys = np.asarray(shape(f["geometry"]).exterior.coords).T
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= 512 and ys.max() <= 512
    by_source = {f["properties"]["source"]: f["properties"] for f in saved}
    assert by_source["model"]["made_by"] == "model abc"  # kept from the file
    assert by_source["refined"]["classification"]["name"] == "Tumor"
    assert by_source["model"]["measurements"]["area_um2"] == pytest.approx(32 * 80 * 0.25)
    # A larger minimum drops the 75 µm² polygon too.
    s.min_area_um2 = 100.0
    assert len(s.lesion_annotations()) == 1


def test_outline_helpers_smooth_and_tidy():
    from shapely.geometry import box

    square = box(0, 0, 100, 100)
    rounded = smooth(square, 10)
    assert len(rounded.exterior.coords) > 12 and 0.9 < rounded.area / 1e4 < 1.0
    notch = box(0, 0, 100, 100).difference(box(40, 0, 60, 50))  # a concave notch, 20 wide
    assert smooth(notch, 15).area > notch.area  # the closing fills it
    assert smooth(box(0, 0, 5, 100), 10) is None  # thinner than 2 r: opened away
    assert smooth(square, 0) is square and smooth(None, 3) is None
    kept = tidy(box(-10, -10, 50, 50).union(box(80, 80, 82, 82)), (60, 60), 10)
    assert kept.bounds == (0, 0, 50, 50)
    assert tidy(box(0, 0, 1, 1), (60, 60), 10) is None


def test_undo_after_a_pan_restores_the_previous_outline(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path, learn=False)
    s.go_to(LESION_CENTRE)
    _refine(s, truth, n=2)
    assert len(s.clicks) == 2
    s.undo()
    one_click = s.lesion
    one_mask = s.mask.copy()
    _refine(s, truth, n=1)
    origin = s.view_origin_xy
    assert s.lesion.symmetric_difference(one_click).area > 0
    s.pan("right")
    s.zoom_out()
    assert len(s.clicks) == 0 and s.can_undo
    s.undo()  # back to the view with the clicks, without its newest click
    assert s.view_origin_xy == origin and s.view_downsample == 1.0
    assert len(s.clicks) == 1
    np.testing.assert_array_equal(s.mask, one_mask)
    assert s.lesion.symmetric_difference(one_click).area < 1e-6 * one_click.area
    s.undo()
    s.undo()  # nothing left: no error
    assert len(s.clicks) == 0 and not s.can_undo
    assert s.lesion is None or s.lesion.area < 0.05 * one_click.area
    # A new click after the undo is recorded as usual.
    _refine(s, truth, n=1)
    assert len(s.clicks) == 1


def test_zoom_is_in_powers_of_two_and_around_the_pointer(slide_and_truth, model, tmp_path):
    slide, _ = slide_and_truth
    s = _session(slide, model, tmp_path, view_size=128, view_downsample=1.0, learn=False)
    s.go_to((256.0, 256.0))
    assert "0.5 µm/px" in s.status and "px/px" not in s.status
    s.zoom_out()
    assert s.view_downsample == 2.0 and s.view_um_per_px == 1.0
    assert "1 µm/px" in s.status
    s.zoom(3.0)  # not a power of two: the power at or below
    assert s.view_downsample == 0.5 or s.view_downsample == s.min_downsample == 1.0
    s.go_to((256.0, 256.0), downsample=2.0)
    point = (100.0, 40.0)  # a view pixel: level 0 is origin + 2 * point
    x0, y0 = s.view_origin_xy
    under = (x0 + 2 * point[0], y0 + 2 * point[1])
    s.zoom(2.0, at_xy=point)
    assert s.view_downsample == 1.0
    x1, y1 = s.view_origin_xy
    assert (x1 + point[0], y1 + point[1]) == pytest.approx(under, abs=1.0)  # stayed put
    s.go_to((256.0, 256.0), downsample=1.0)
    cx, cy = s.view_centre_xy
    s.drag(30, -20)  # the slide follows the pointer: the view moves the other way
    assert s.view_centre_xy == pytest.approx((cx - 30, cy + 20))


def test_scale_bar_is_a_round_length_drawn_on_the_view(slide_and_truth, model, tmp_path):
    assert _render.scale_bar_length(0.5, 512) == 50.0
    assert _render.scale_bar_length(2.0, 512) == 200.0
    assert _render.scale_bar_length(0.25, 256) == 10.0
    slide, _ = slide_and_truth
    s = _session(slide, model, tmp_path, view_size=128, learn=False)
    plain = _render.render_view(s.view_image, s.mask, [])
    drawn = s.render_view()
    changed = np.any(drawn != plain, axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.min() > 128 - 40 and cols.max() < 128 * 0.45  # bottom left, small
    # The bar: black pixels, 10 µm (the round length within a quarter of the 64 µm view) =
    # 20 view pixels at 0.5 µm/px.
    black = np.all(drawn < 30, axis=2) & changed
    widest = max(np.count_nonzero(r) for r in black)
    assert widest == 20
    nompp = Slide.from_array(slide.read_region((0, 0), (256, 256), level=0), name="nompp")
    s2 = _session(nompp, model, tmp_path, view_size=128, learn=False)
    np.testing.assert_array_equal(s2.render_view(), _render.render_view(s2.view_image, s2.mask, []))


def test_widget_redraws_the_overview_after_every_change(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    r = RegionRefiner(session=_session(slide, model, tmp_path, learn=False))
    calls = []
    r.session._listeners.append(lambda *, overview: calls.append(overview))
    r.session.go_to(LESION_CENTRE)
    _refine(r.session, truth, n=1)
    r.handle_key("z")
    r.session.reset()
    assert calls and all(calls)


def test_widget_drag_wheel_and_exact_image_size(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, truth = slide_and_truth
    r = RegionRefiner(session=_session(slide, model, tmp_path, view_size=128, learn=False))
    r.widget()
    s = r.session
    s.go_to(LESION_CENTRE, downsample=1.0)
    layout = r._view_widget.layout
    assert (layout.width, layout.height) == ("128px", "128px")
    assert r._scale_widget.value == "0.5 µm/px"
    cx, cy = s.view_centre_xy
    # A drag: press, move, release, then the browser's click, which is not a click.
    r._on_view_event({"type": "mousedown", "button": 0, "dataX": 60, "dataY": 60})
    r._on_view_event({"type": "mouseup", "button": 0, "dataX": 90, "dataY": 50})
    r._on_view_event({"type": "click", "button": 0, "dataX": 90, "dataY": 50})
    assert s.view_centre_xy == pytest.approx((cx - 30, cy + 10))
    assert len(s.clicks) == 0
    # A press and release in place is a click.
    inside = np.argwhere(s.view_mask_of(truth, 1.0)[10:-10, 10:-10]) + 10
    y, x = (float(v) for v in inside[len(inside) // 2])
    r._on_view_event({"type": "mousedown", "button": 0, "dataX": x, "dataY": y})
    r._on_view_event({"type": "mouseup", "button": 0, "dataX": x + 1, "dataY": y})
    r._on_view_event({"type": "click", "button": 0, "dataX": x + 1, "dataY": y})
    assert len(s.clicks) == 1
    # The wheel: away from the user zooms in, towards zooms out, in powers of two.
    r._on_view_event({"type": "wheel", "deltaY": -100, "dataX": 64, "dataY": 64})
    assert s.view_downsample == 1.0  # the finest already
    r._on_view_event({"type": "wheel", "deltaY": 100, "dataX": 64, "dataY": 64})
    r._on_view_event({"type": "wheel", "deltaY": 100, "dataX": 64, "dataY": 64})
    assert s.view_downsample == 4.0 and r._scale_widget.value == "2 µm/px"
    # Undo, after all that navigation, removes the click made two views ago.
    r.handle_key("z")
    assert len(s.clicks) == 0 and not s.can_undo
    # Zoomed out to the whole slide, a 192 px view box shows a 128 px image at its own size;
    # the box keeps its size (no layout jump).
    big = RegionRefiner(session=_session(slide, model, tmp_path, view_size=192, learn=False))
    ui = big.widget()
    big.session.zoom_out()
    big.session.zoom_out()
    assert big.session.view_downsample == 4.0
    assert (big._view_widget.layout.width, big._view_widget.layout.height) == ("128px", "128px")
    box = ui.children[2].children[0]
    assert (box.layout.width, box.layout.height) == ("192px", "192px")

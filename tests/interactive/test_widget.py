"""The widget as a binding over RefinementSession, driven without a browser."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.datasets import lesion_view
from workbench.interactive import (
    RefinementEngine,
    RefinementSession,
    RegionRefiner,
    iou,
)
from workbench.io import Slide, annotations_to_mask, read_geojson
from workbench.models import load_click_segmenter


@pytest.fixture(scope="module")
def model():
    return load_click_segmenter()


@pytest.fixture(scope="module")
def slide_and_truth():
    image, mask = lesion_view(512, seed=7)
    return Slide.from_array(image, mpp=0.5, name="lesion"), mask


def _refiner(slide, model, tmp_path, view_size=192, **kw):
    return RegionRefiner(
        slide,
        engine=RefinementEngine(model),
        output=tmp_path / "out" / "lesion.geojson",
        view_size=view_size,
        view_downsample=2.0,
        overview_size=128,
        **kw,
    )


def _lesion_point(refiner, truth):
    from scipy.ndimage import distance_transform_edt

    sub = refiner.view_mask_of(truth, 1.0)
    depth = distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(c), float(r), sub


def test_the_demo_api_works_through_the_binding(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path)
    assert isinstance(ref.session, RefinementSession) and ref.engine is ref.session.engine
    assert not ref.mask.any()  # nothing predicted or saved: an empty start
    ref.go_to((256.0, 256.0))
    x, y, sub = _lesion_point(ref, truth)
    mask = ref.handle_click(x, y, positive=True)
    assert mask[int(y), int(x)] and "ms" in ref.status
    assert iou(mask, sub) > 0.6
    assert ref.view_image.shape[:2] == mask.shape and ref.view_downsample == 2.0
    assert ref.view_origin_xy == ref.session.view_origin_xy
    ref.handle_click(2, 2, positive=False)
    assert len(ref.engine.clicks) == 2
    assert np.array_equal(ref.undo(), mask)
    path = ref.save()
    saved = annotations_to_mask(read_geojson(path), truth.shape)
    assert iou(saved, truth) > 0.5
    assert ref.saved_path == path and ref.output == path
    with pytest.raises(WorkbenchError, match="no focus regions"):
        ref.select_focus(0)


def test_widget_builds_and_events_drive_the_session(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path, view_size=160)
    ui = ref.widget()
    assert ui is ref.widget()
    first = ref._view_widget.value
    x, y, _ = _lesion_point(ref, truth)
    ref._on_view_event({"type": "click", "dataX": x, "dataY": y, "button": 0, "shiftKey": False})
    assert ref.engine.clicks.last.positive and ref._view_widget.value != first
    ref._on_view_event({"type": "contextmenu", "dataX": 3, "dataY": 3, "button": 2})
    assert not ref.engine.clicks.last.positive
    ref._on_view_event({"type": "click", "dataX": 5, "dataY": 9, "button": 0, "shiftKey": True})
    assert not ref.engine.clicks.last.positive
    ref.set_negative_mode(True)
    assert ref._mode_widget.value == "negative"
    ref._on_view_event({"type": "click", "dataX": 4, "dataY": 150, "button": 0})
    assert not ref.engine.clicks.last.positive
    ref.undo()
    assert len(ref.engine.clicks) == 3
    ref.set_opacity(0.9)
    origin = ref.view_origin_xy
    ref._on_overview_event({"type": "click", "dataX": 5 if origin[0] > 100 else 120, "dataY": 64})
    assert ref.view_origin_xy != origin and len(ref.engine.clicks) == 0
    assert ref.lesion_annotations()  # leaving a view folded its edits into the outline
    assert "RegionRefiner" in repr(ref)


def test_keys_and_buttons_zoom_and_pan(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, _ = slide_and_truth
    ref = _refiner(slide, model, tmp_path, view_size=128)
    ui = ref.widget()
    ds = ref.view_downsample
    ref._on_view_event({"type": "keydown", "key": "+"})
    assert ref.view_downsample == ds / 2
    ref._on_view_event({"type": "keydown", "key": "-"})
    assert ref.view_downsample == ds
    x0 = ref.view_origin_xy[0]
    ref._on_view_event({"type": "keydown", "key": "ArrowLeft"})
    assert ref.view_origin_xy[0] < x0
    ref._on_view_event({"type": "keydown", "key": "n"})
    assert ref.negative_mode
    ref._on_view_event({"type": "keydown", "key": "q"})  # unbound: nothing happens
    buttons = {
        cls: w
        for box in ui.children[:2]
        for w in box.children
        for cls in getattr(w, "_dom_classes", ())
        if cls.startswith("wb-refiner-")
    }
    assert {"wb-refiner-zoom-in", "wb-refiner-zoom-out", "wb-refiner-pan-right"} <= set(buttons)
    buttons["wb-refiner-zoom-out"].click()
    assert ref.view_downsample == 2 * ds
    y0 = ref.view_origin_xy[1]
    buttons["wb-refiner-pan-down"].click()
    assert ref.view_origin_xy[1] >= y0


def test_button_errors_go_to_the_status_line(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    ref = _refiner(slide, model, tmp_path)
    x, y, _ = _lesion_point(ref, truth)
    before = ref.handle_click(x, y, positive=True)
    ref.output = blocker / "lesion.geojson"
    ref._on_save()  # the Save button reports instead of raising
    assert ref.status.startswith("not saved") and "is a file" in ref.status
    assert np.array_equal(ref.mask, before)
    ref._guarded(ref.select_focus, 3)
    assert ref.status.startswith("not done")


def test_binding_takes_a_session_or_a_slide(slide_and_truth, model, tmp_path):
    slide, _ = slide_and_truth
    session = RefinementSession(
        slide, engine=RefinementEngine(model), view_size=128, output=tmp_path / "l.geojson"
    )
    assert RegionRefiner(session=session).session is session
    with pytest.raises(WorkbenchError, match="either"):
        RegionRefiner(slide, session=session)
    with pytest.raises(WorkbenchError, match="give a slide"):
        RegionRefiner()


def test_this_one_all_like_this_toggle_is_bound_to_the_engine(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path, view_size=160)
    assert ref.propagate == ref.engine.propagate == "one"
    ui = ref.widget()
    toggle = next(
        w
        for box in ui.children[:1]
        for w in box.children
        if "wb-refiner-propagate" in getattr(w, "_dom_classes", ())
    )
    assert toggle.options == ("this one", "all like this") and toggle.value == "this one"
    toggle.value = "all like this"  # the browser's toggle reaches the engine
    assert ref.engine.propagate == "all" and "all like this" in ref.status
    x, y, _ = _lesion_point(ref, truth)
    ref.handle_click(x, y, positive=True)
    assert ref.engine.clicks.last.positive
    ref._on_view_event({"type": "keydown", "key": "a"})  # the key toggles back
    assert ref.engine.propagate == "one" and toggle.value == "this one"
    ref.set_propagate("all")  # and the method moves the toggle
    assert toggle.value == "all like this"
    ref._guarded(ref.set_propagate, "many")
    assert ref.status.startswith("not done") and ref.engine.propagate == "all"


def test_the_toggle_is_absent_for_the_random_walker(slide_and_truth, tmp_path):
    pytest.importorskip("ipyevents")
    slide, _ = slide_and_truth
    ref = RegionRefiner(
        slide,
        engine=RefinementEngine(method="random_walker"),
        output=tmp_path / "l.geojson",
        view_size=128,
        overview_size=128,
    )
    ui = ref.widget()
    classes = {c for box in ui.children[:1] for w in box.children for c in w._dom_classes}
    assert "wb-refiner-propagate" not in classes and "wb-refiner-undo" in classes

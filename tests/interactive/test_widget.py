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

    sub = refiner.session.view_mask_of(truth, 1.0)
    depth = distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(c), float(r), sub


MIRRORED = (
    "engine", "slide", "adata", "output", "status", "saved_path", "mask", "view_image",
    "view_origin_xy", "view_downsample", "view_mask_of", "lesion_annotations", "go_to",
    "select_focus", "zoom_in", "zoom_out", "pan", "undo", "reset", "save", "propagate",
)  # fmt: skip


def test_the_session_is_reached_through_the_binding_not_mirrored(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path)
    assert isinstance(ref.session, RefinementSession)
    assert [name for name in MIRRORED if hasattr(ref, name)] == []
    assert not ref.session.mask.any()  # nothing predicted or saved: an empty start
    ref.session.go_to((256.0, 256.0))
    x, y, sub = _lesion_point(ref, truth)
    mask = ref.handle_click(x, y, positive=True)
    assert mask[int(y), int(x)] and "ms" in ref.session.status
    assert iou(mask, sub) > 0.6
    assert ref.session.view_image.shape[:2] == mask.shape and ref.session.view_downsample == 2.0
    ref.handle_click(2, 2, positive=False)
    assert len(ref.session.engine.clicks) == 2
    assert np.array_equal(ref.session.undo(), mask)
    path = ref.session.save()
    saved = annotations_to_mask(read_geojson(path), truth.shape)
    assert iou(saved, truth) > 0.5
    assert ref.session.saved_path == path and ref.session.output == path
    with pytest.raises(WorkbenchError, match="no focus regions"):
        ref.session.select_focus(0)


def test_widget_builds_and_events_drive_the_session(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path, view_size=160)
    ui = ref.widget()
    assert ui is ref.widget()
    first = ref._view_widget.value
    x, y, _ = _lesion_point(ref, truth)
    ref._on_view_event({"type": "click", "dataX": x, "dataY": y, "button": 0, "shiftKey": False})
    assert ref.session.engine.clicks.last.positive and ref._view_widget.value != first
    ref._on_view_event({"type": "contextmenu", "dataX": 3, "dataY": 3, "button": 2})
    assert not ref.session.engine.clicks.last.positive
    ref._on_view_event({"type": "click", "dataX": 5, "dataY": 9, "button": 0, "shiftKey": True})
    assert not ref.session.engine.clicks.last.positive
    ref.set_negative_mode(True)
    assert ref._mode_widget.value == "negative"
    ref._on_view_event({"type": "click", "dataX": 4, "dataY": 150, "button": 0})
    assert not ref.session.engine.clicks.last.positive
    ref.session.undo()
    assert len(ref.session.engine.clicks) == 3
    ref.set_opacity(0.9)
    origin = ref.session.view_origin_xy
    ref._on_overview_event({"type": "click", "dataX": 5 if origin[0] > 100 else 120, "dataY": 64})
    assert ref.session.view_origin_xy != origin and len(ref.session.engine.clicks) == 0
    assert ref.session.lesion_annotations()  # leaving a view folded its edits into the outline
    assert "RegionRefiner" in repr(ref)


def test_the_widget_redraws_when_the_session_changes(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path, view_size=160)
    ref.widget()
    view, overview = ref._view_widget.value, ref._overview_widget.value
    x, y, _ = _lesion_point(ref, truth)
    ref.session.click(x, y, True)  # called on the session, as a notebook cell would
    # the view and the overview both show the new outline
    assert ref._view_widget.value != view and ref._overview_widget.value != overview
    assert ref._status_widget.value == ref.session.status and "ms" in ref.session.status
    overview = ref._overview_widget.value
    ref.session.zoom_out()  # a new place: the overview's box moves too
    assert ref._overview_widget.value != overview
    assert ref._status_widget.value.startswith("view at")


def test_keys_and_buttons_zoom_and_pan(slide_and_truth, model, tmp_path):
    pytest.importorskip("ipyevents")
    slide, _ = slide_and_truth
    ref = _refiner(slide, model, tmp_path, view_size=128)
    ui = ref.widget()
    ds = ref.session.view_downsample
    ref._on_view_event({"type": "keydown", "key": "+"})
    assert ref.session.view_downsample == ds / 2
    ref._on_view_event({"type": "keydown", "key": "-"})
    assert ref.session.view_downsample == ds
    x0 = ref.session.view_origin_xy[0]
    ref._on_view_event({"type": "keydown", "key": "ArrowLeft"})
    assert ref.session.view_origin_xy[0] < x0
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
    assert ref.session.view_downsample == 2 * ds
    y0 = ref.session.view_origin_xy[1]
    buttons["wb-refiner-pan-down"].click()
    assert ref.session.view_origin_xy[1] >= y0


def test_button_errors_go_to_the_status_line(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    ref = _refiner(slide, model, tmp_path)
    x, y, _ = _lesion_point(ref, truth)
    before = ref.handle_click(x, y, positive=True)
    ref.session.output = blocker / "lesion.geojson"
    ref._on_save()  # the Save button reports instead of raising
    assert ref.session.status.startswith("not saved") and "is a file" in ref.session.status
    assert np.array_equal(ref.session.mask, before)
    ref._guarded(ref.session.select_focus, 3)
    assert ref.session.status.startswith("not done")


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
    assert ref.session.engine.propagate == ref.session.engine.propagate == "one"
    ui = ref.widget()
    toggle = next(
        w
        for box in ui.children[:1]
        for w in box.children
        if "wb-refiner-propagate" in getattr(w, "_dom_classes", ())
    )
    assert toggle.options == ("this one", "all like this") and toggle.value == "this one"
    toggle.value = "all like this"  # the browser's toggle reaches the engine
    assert ref.session.engine.propagate == "all" and "all like this" in ref.session.status
    x, y, _ = _lesion_point(ref, truth)
    ref.handle_click(x, y, positive=True)
    assert ref.session.engine.clicks.last.positive
    ref._on_view_event({"type": "keydown", "key": "a"})  # the key toggles back
    assert ref.session.engine.propagate == "one" and toggle.value == "this one"
    ref.set_propagate("all")  # and the method moves the toggle
    assert toggle.value == "all like this"
    ref._guarded(ref.set_propagate, "many")
    assert ref.session.status.startswith("not done") and ref.session.engine.propagate == "all"


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

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from workbench.datasets import lesion_view
from workbench.interactive import (
    InvalidViewError,
    RefinementEngine,
    RefinementError,
    RefinementSession,
    iou,
)
from workbench.io import OutputWriteError, Slide, annotations_to_mask, read_geojson
from workbench.models import load_click_segmenter


@pytest.fixture(scope="module")
def model():
    return load_click_segmenter()


@pytest.fixture(scope="module")
def slide_and_truth():
    image, mask = lesion_view(512, seed=7)
    return Slide.from_array(image, mpp=0.5, name="lesion"), mask


def _session(slide, model, tmp_path, view_size=192, **kw):
    kw.setdefault("output", tmp_path / "out" / "lesion.geojson")
    return RefinementSession(
        slide,
        engine=RefinementEngine(model),
        view_size=view_size,
        view_downsample=2.0,
        overview_size=128,
        **kw,
    )


def _deepest(mask: np.ndarray) -> tuple[float, float]:
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(c), float(r)


def _refine(session, truth, n=4):
    from workbench.interactive import next_click

    for _ in range(n):
        c = next_click(session.mask, session.view_mask_of(truth, 1.0))
        if c is None:
            break
        session.click(c.x, c.y, c.positive)


def test_session_needs_no_ipywidgets(slide_and_truth, model, tmp_path):
    import sys

    slide, _ = slide_and_truth
    before = {m for m in sys.modules if m.startswith("ipywidgets")}
    s = _session(slide, model, tmp_path)
    s.click(*_deepest(s.view_mask_of(slide_and_truth[1], 1.0)))
    assert {m for m in sys.modules if m.startswith("ipywidgets")} == before
    assert "RefinementSession" in repr(s)


def test_outline_survives_pan_and_return(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path, view_size=128)
    s.go_to((256.0, 256.0))
    _refine(s, truth)
    refined = s.mask.copy()
    assert refined.any()
    origin = s.view_origin_xy
    s.pan("right")
    assert s.view_origin_xy[0] > origin[0] and len(s.clicks) == 0
    s.pan(-0.5, 0.0)
    assert s.view_origin_xy == origin
    assert iou(s.mask, refined) > 0.95  # the outline was kept in level-0 coordinates


def test_zoom_changes_magnification_and_keeps_the_outline(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path)
    s.go_to((256.0, 256.0))
    _refine(s, truth)
    centre = s.view_centre_xy
    outline = s.lesion
    s.zoom_in()
    assert s.view_downsample == 1.0
    assert np.allclose(s.view_centre_xy, centre, atol=2.0)
    # The view's starting mask is the same outline drawn at the new magnification.
    x0, y0 = s.view_origin_xy
    h, w = s.mask.shape
    from shapely.geometry import box

    clipped = outline.intersection(box(x0, y0, x0 + w, y0 + h))
    assert clipped.area > 0
    assert abs(s.mask.sum() - clipped.area) / clipped.area < 0.05
    s.zoom_in()  # already at the finest magnification
    assert s.view_downsample == 1.0
    s.zoom_out()
    s.zoom_out()
    # the whole slide in one view, at the next power of two (512 / 192 -> 4)
    assert s.view_downsample == 4.0
    assert s.view_image.shape[:2] == (128, 128)
    s.zoom_out()  # already the whole slide
    assert s.view_downsample == 4.0
    full = annotations_to_mask(s.lesion_annotations(), truth.shape)
    assert iou(full, annotations_to_mask(_as_anns(outline), truth.shape)) > 0.97


def _as_anns(geom):
    from shapely.geometry import mapping

    from workbench.io import Annotation

    polys = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    return [Annotation(geometry=mapping(p), classification="Tumor") for p in polys]


def test_refinement_at_two_magnifications_adds_up(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path, view_size=160)
    s.go_to((256.0, 256.0), downsample=3.2)  # the whole lesion in view
    _refine(s, truth, n=3)
    s.zoom_in()
    _refine(s, truth, n=3)  # finer edits at twice the magnification
    saved = annotations_to_mask(s.lesion_annotations(), truth.shape)
    assert iou(saved, truth) > 0.7


def test_navigation_errors(slide_and_truth, model, tmp_path):
    slide, _ = slide_and_truth
    s = _session(slide, model, tmp_path)
    with pytest.raises(InvalidViewError, match="finite"):
        s.go_to((float("nan"), 3.0))
    with pytest.raises(InvalidViewError, match="choose one of left, right, up, down"):
        s.pan("sideways")
    with pytest.raises(InvalidViewError, match="zoom factor"):
        s.zoom(0)
    with pytest.raises(RefinementError, match="no focus regions"):
        s.select_focus(0)
    with pytest.warns(UserWarning, match="outside"):
        s.go_to_overview(1e6, 3)


def test_degenerate_views_raise_clear_errors(model, tmp_path):
    tiny = Slide.from_array(np.full((5, 5, 3), 200, np.uint8), mpp=0.5, name="tiny")
    with pytest.raises(InvalidViewError, match="too small"):
        RefinementSession(tiny, engine=RefinementEngine(model), output=tmp_path / "x.geojson")
    image, _ = lesion_view(64, seed=1)
    slide = Slide.from_array(image, mpp=0.5, name="small")
    with pytest.raises(InvalidViewError, match="view_size"):
        RefinementSession(slide, engine=RefinementEngine(model), view_size=0)
    with pytest.raises(RefinementError, match="view_downsample"):
        RefinementSession(slide, engine=RefinementEngine(model), view_downsample=float("inf"))


def test_clicks_outside_the_view_warn_and_are_ignored(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path)
    before = s.click(*_deepest(s.view_mask_of(truth, 1.0)))
    with pytest.warns(UserWarning, match="outside"):
        same = s.click(10_000, 5)
    assert np.array_equal(before, same) and "ignored" in s.status and len(s.clicks) == 1


def test_undo_and_reset_are_exact_within_a_view(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path)
    m0 = s.mask
    m1 = s.click(*_deepest(s.view_mask_of(truth, 1.0)))
    s.click(3, 3, positive=False)
    assert np.array_equal(s.undo(), m1)
    assert np.array_equal(s.reset(), m0)


def test_save_geojson_then_reopen(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path)
    s.go_to((256.0, 256.0))
    _refine(s, truth)
    path = s.save()
    anns = read_geojson(path)
    assert anns and all(a.classification == "Tumor" for a in anns)
    data = json.loads(path.read_text())
    assert data["features"][0]["properties"]["objectType"] == "annotation"
    again = RefinementSession(slide, engine=RefinementEngine(model), geojson=path, view_size=192)
    again.go_to(s.view_centre_xy)
    assert iou(again.mask, s.mask) > 0.9


def _adata(n=16):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    labels = (np.arange(64)[:, None] // 16) * 4 + (np.arange(64)[None, :] // 16) + 1
    adata = anndata.AnnData(
        X=np.zeros((n, 1), np.float32),
        obs=pd.DataFrame({"region_id": np.arange(1, n + 1)}, index=[str(i) for i in range(n)]),
    )
    adata.uns["region_graph"] = {
        "labels": labels.astype(np.int32),
        "scale_xy": np.array([8.0, 8.0]),
    }
    return adata


def test_save_writes_geojson_and_anndata_together(slide_and_truth, model, tmp_path):
    anndata = pytest.importorskip("anndata")
    slide, truth = slide_and_truth
    adata = _adata()
    s = _session(slide, model, tmp_path, adata=adata, adata_path=tmp_path / "slide.h5ad")
    s.go_to((256.0, 256.0))
    _refine(s, truth)
    s.save()
    out = s.adata
    frac = out.obs["lesion_refined_fraction"].to_numpy()
    expected = truth.reshape(4, 128, 4, 128).mean(axis=(1, 3)).ravel()
    assert np.corrcoef(frac, expected)[0, 1] > 0.8
    assert out.obs["lesion_refined"].dtype == bool
    back = anndata.read_h5ad(tmp_path / "slide.h5ad")
    assert back.uns["lesion_refined"]["n_polygons"] >= 1
    assert "lesion_refined" not in adata.obs  # the object passed in was not touched


def test_save_without_adata_path_updates_the_anndata_in_place(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    adata = _adata()
    s = _session(slide, model, tmp_path, adata=adata)
    _refine(s, truth, n=2)
    s.save()
    assert s.adata is adata and "lesion_refined" in adata.obs


@pytest.mark.parametrize(
    "case, error, phrase",
    [
        ("adata_path is a folder", OutputWriteError, "is a folder"),
        ("adata_path under a file", OutputWriteError, "is a file, not a folder"),
        ("adata_path not h5ad", RefinementError, ".h5ad"),
        ("adata_path without adata", RefinementError, "no AnnData"),
        ("same path twice", RefinementError, "different names"),
        ("geojson under a file", OutputWriteError, "is a file, not a folder"),
        ("read-only folder", OutputWriteError, "not writable"),
    ],
)
def test_save_is_all_or_nothing(slide_and_truth, model, tmp_path, monkeypatch, case, error, phrase):
    """Every output path is checked before anything is written: the old refiner wrote the
    GeoJSON and then failed on a bad adata_path (half a save)."""
    slide, truth = slide_and_truth
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "folder.h5ad").mkdir()
    geo = tmp_path / "out" / "lesion.geojson"
    adata = None if case == "adata_path without adata" else _adata()
    kwargs = {
        "adata_path is a folder": {"adata_path": tmp_path / "folder.h5ad"},
        "adata_path under a file": {"adata_path": blocker / "slide.h5ad"},
        "adata_path not h5ad": {"adata_path": tmp_path / "slide.csv"},
        "adata_path without adata": {"adata_path": tmp_path / "slide.h5ad"},
        "same path twice": {"adata_path": tmp_path / "same.h5ad"},
        "geojson under a file": {"adata_path": tmp_path / "slide.h5ad"},
        "read-only folder": {"adata_path": tmp_path / "slide.h5ad"},
    }[case]
    path = {
        "same path twice": tmp_path / "same.h5ad",
        "geojson under a file": blocker / "lesion.geojson",
    }.get(case, geo)
    if case == "read-only folder":
        ro = tmp_path / "ro"
        ro.mkdir()
        path = ro / "lesion.geojson"
        # Root may write anywhere, so the folder is made read-only for the check itself.
        real_access = os.access
        monkeypatch.setattr(
            "workbench.interactive._session.os.access",
            lambda p, mode: False if Path(p) == ro else real_access(p, mode),
        )
    s = _session(slide, model, tmp_path, adata=adata)
    _refine(s, truth, n=2)
    mask_before = s.mask
    with pytest.raises(error, match=phrase):
        s.save(path, **kwargs)
    assert not geo.exists() and not (tmp_path / "slide.h5ad").exists()
    assert not path.exists() or path.is_dir() or case == "same path twice"
    assert s.saved_path is None and np.array_equal(s.mask, mask_before)
    if adata is not None:
        assert "lesion_refined" not in adata.obs


def test_failed_save_keeps_the_previous_files(slide_and_truth, model, tmp_path, monkeypatch):
    import errno

    import anndata

    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path, adata=_adata(), adata_path=tmp_path / "slide.h5ad")
    _refine(s, truth, n=2)
    first = s.save()
    old_geo, old_h5 = first.read_bytes(), (tmp_path / "slide.h5ad").read_bytes()
    s.click(3, 3, positive=True)
    (tmp_path / "x.h5ad").mkdir()
    with pytest.raises(OutputWriteError, match="is a folder"):  # caught before writing
        s.save(adata_path=tmp_path / "x.h5ad")

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", disk_full)
    with pytest.raises(OutputWriteError, match="full"):  # fails while writing
        s.save()
    assert first.read_bytes() == old_geo and (tmp_path / "slide.h5ad").read_bytes() == old_h5
    assert not list(tmp_path.rglob("*.partial-*"))


def test_qupath_export_is_the_starting_outline(slide_and_truth, model, tmp_path):
    slide, _ = slide_and_truth
    ring = [[100.0, 120.0], [300.0, 120.0], [300.0, 260.0], [100.0, 260.0], [100.0, 120.0]]
    qupath = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "0b3c1a52-7a35-4f0d-9d56-6a6d3c1c7e11",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "isLocked": False,
                },
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]],
                },
                "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
            },
        ],
    }
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath))
    s = RefinementSession(
        slide, engine=RefinementEngine(model), geojson=path, view_size=192, overview_size=128
    )
    s.go_to((200, 190))
    x0, y0 = s.view_origin_xy
    assert s.mask[int((190 - y0) / 2), int((200 - x0) / 2)]
    s.go_to((0, 0))
    assert not s.mask[5, 5]  # the stroma polygon is not a lesion


def test_slide_without_resolution_zooms_by_resampling(model, tmp_path):
    image, truth = lesion_view(384, seed=3)
    slide = Slide.from_array(image, name="nompp")
    s = RefinementSession(slide, engine=RefinementEngine(model), view_size=128, view_downsample=3.0)
    assert s.view_image.shape == (128, 128, 3)
    s.zoom_in()
    # powers of two from a start that is none: 3 -> 1
    assert s.view_downsample == 1.0 and s.view_image.shape == (128, 128, 3)
    s.zoom_out()
    s.zoom_out()  # level 0 resampled to 4 px per px: the whole slide, 96 x 96
    assert s.view_downsample == 4.0 and s.view_image.shape == (96, 96, 3)
    assert "no µm/px" in s.status


def test_a_full_qupath_export_opens_with_its_annotations_not_its_detections(
    slide_and_truth, model, tmp_path
):
    """Cell detections classified Tumor are not the lesion outline (issue 24)."""
    slide, _ = slide_and_truth
    ring = [[100.0, 120.0], [300.0, 120.0], [300.0, 260.0], [100.0, 260.0], [100.0, 120.0]]
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
              "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}}]  # fmt: skip
    t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    for i in range(2000):
        cx, cy = 350 + 3 * (i % 50), 300 + 4 * (i // 50)
        cell = np.c_[cx + 1.2 * np.cos(t), cy + 1.2 * np.sin(t)].tolist()
        feats.append({"type": "Feature",
                      "geometry": {"type": "Polygon", "coordinates": [[*cell, cell[0]]]},
                      "properties": {"objectType": "detection",
                                     "classification": {"name": "Tumor"}}})  # fmt: skip
    path = tmp_path / "export.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    s = RefinementSession(
        slide, engine=RefinementEngine(model), geojson=path, view_size=192, overview_size=128
    )
    assert s.lesion.geom_type == "Polygon" and s.lesion.area == 200 * 140


def test_leaving_or_saving_a_view_teaches_the_engine_and_the_state_travels(
    slide_and_truth, model, tmp_path
):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path)
    # The packaged network already outlines this synthetic lesion, which adapt's held-out
    # check would rightly refuse to learn; here every outline is learnt (mechanics only).
    s.engine.adapt = functools.partial(s.engine.adapt, holdout=False)
    assert not s.engine.adapted
    s.go_to((300.0, 300.0))
    assert not s.engine.adapted  # a view without clicks teaches nothing
    _refine(s, truth, n=2)
    s.pan("right")  # leaving an edited view adapts the engine to its outline
    assert s.engine.adapted and s.engine.adapted_images == 1
    _refine(s, truth, n=2)
    path = s.save()
    assert s.engine.adapted_images == 2
    assert s.adaptation_path == path.with_name("lesion.adaptation.safetensors")
    assert s.adaptation_path.is_file()
    s.pan("left")  # the saved outline was learnt already: not learnt twice
    assert s.engine.adapted_images == 2
    state = s.engine.adaptation_state()

    again = _session(slide, model, tmp_path)  # same output: picks the adaptation up
    assert again.engine.adapted and again.engine.adapted_images == 2
    for k, v in again.engine.adaptation_state()["parameters"].items():
        assert np.array_equal(v, state["parameters"][k])


def test_learning_can_be_turned_off_and_a_damaged_state_is_ignored(
    slide_and_truth, model, tmp_path
):
    slide, truth = slide_and_truth
    s = _session(slide, model, tmp_path, learn=False)
    _refine(s, truth, n=2)
    s.pan("right")
    path = s.save()
    assert not s.engine.adapted and not s.adaptation_path.exists()
    s.adaptation_path.write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="adaptation not loaded"):
        fresh = _session(slide, model, tmp_path)
    assert not fresh.engine.adapted
    fresh.engine.adapt = functools.partial(fresh.engine.adapt, holdout=False)  # as above
    _refine(fresh, truth, n=2)
    assert fresh.save() == path
    assert fresh.engine.adapted  # a save replaces the damaged file with a good one
    assert _session(slide, model, tmp_path).engine.adapted

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.interactive import RefinementEngine, RegionRefiner, iou, load_base_model
from workbench.interactive._data import lesion_view
from workbench.io import Slide, annotations_to_mask, read_geojson


@pytest.fixture(scope="module")
def model():
    return load_base_model()


@pytest.fixture(scope="module")
def slide_and_truth():
    image, mask = lesion_view(512, seed=7)
    return Slide.from_array(image, mpp=0.5, name="lesion"), mask


def _refiner(slide, model, tmp_path, view_size=256, **kw):
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
    """A view pixel deep inside the lesion."""
    from scipy.ndimage import distance_transform_edt

    x0, y0 = refiner.view_origin_xy
    ds = refiner.view_downsample
    h, w = refiner.mask.shape
    sub = truth[int(y0) : int(y0 + h * ds) : int(ds), int(x0) : int(x0 + w * ds) : int(ds)]
    depth = distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(c), float(r), sub


def test_clicks_save_geojson_and_reload(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path)
    assert not ref.mask.any()  # no prediction: empty start
    x, y, sub = _lesion_point(ref, truth)
    mask = ref.handle_click(x, y, positive=True)
    assert mask[int(y), int(x)] and "ms" in ref.status
    assert iou(mask, sub) > 0.6
    ref.handle_click(2, 2, positive=False)
    assert len(ref.engine.clicks) == 2

    path = ref.save()
    assert path.exists()
    anns = read_geojson(path)
    assert anns and all(a.classification == "Tumor" for a in anns)
    # Level-0 coordinates: the saved outline matches the truth on the level-0 grid.
    saved = annotations_to_mask(anns, truth.shape)
    assert iou(saved, truth) > 0.6

    again = RegionRefiner(
        slide, engine=RefinementEngine(model), geojson=path, view_size=256, overview_size=128
    )
    assert again.output == path
    assert iou(again.mask, mask) > 0.9


def test_loads_qupath_export(slide_and_truth, model, tmp_path):
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
                    "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 0]]],
                },
                "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
            },
        ],
    }
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath))
    ref = RegionRefiner(
        slide, engine=RefinementEngine(model), geojson=path, view_size=256, overview_size=128
    )
    ref.go_to((200, 190))
    mask = ref.mask
    x0, y0 = ref._view_origin
    # (200, 190) level-0 is inside the tumour box; (10, 10) is only in the stroma polygon.
    assert mask[int((190 - y0) / 2), int((200 - x0) / 2)]
    ref.go_to((0, 0))
    assert not ref.mask[5, 5]


def test_outside_click_and_readonly_save_keep_state(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    ref = _refiner(slide, model, tmp_path)
    x, y, _ = _lesion_point(ref, truth)
    before = ref.handle_click(x, y, positive=True)
    with pytest.warns(UserWarning, match="outside"):
        same = ref.handle_click(10_000, 5, positive=True)
    assert np.array_equal(before, same) and "ignored" in ref.status
    with pytest.raises(WorkbenchError, match="writable|cannot create"):
        ref.save(blocker / "lesion.geojson")
    assert np.array_equal(ref.mask, before) and len(ref.engine.clicks) == 1
    ref.output = blocker / "lesion.geojson"
    ref._on_save()  # the button handler reports instead of raising
    assert ref.status.startswith("not saved")
    assert np.array_equal(ref.mask, before)


def test_writes_refined_lesion_into_anndata(slide_and_truth, model, tmp_path):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    slide, truth = slide_and_truth
    # Region labels: a 4x4 grid of square regions on a 64x64 label image (8 px per label px).
    labels = (np.arange(64)[:, None] // 16) * 4 + (np.arange(64)[None, :] // 16) + 1
    adata = anndata.AnnData(
        X=np.zeros((16, 1), np.float32),
        obs=pd.DataFrame({"region_id": np.arange(1, 17)}, index=[str(i) for i in range(16)]),
    )
    adata.uns["region_graph"] = {
        "labels": labels.astype(np.int32),
        "scale_xy": np.array([8.0, 8.0]),
    }
    ref = _refiner(slide, model, tmp_path, adata=adata, adata_path=tmp_path / "slide.h5ad")
    x, y, _ = _lesion_point(ref, truth)
    ref.handle_click(x, y, positive=True)
    ref.save()
    out = ref.adata
    assert out.obs["lesion_refined"].dtype == bool
    frac = out.obs["lesion_refined_fraction"].to_numpy()
    # Reference: the truth's share of each 128x128 level-0 block.
    expected = truth.reshape(4, 128, 4, 128).mean(axis=(1, 3)).ravel()
    assert np.corrcoef(frac, expected)[0, 1] > 0.8
    rec = out.uns["lesion_refined"]
    assert rec["mask"].shape == labels.shape and rec["n_polygons"] >= 1
    assert json.loads(rec["geojson"])["type"] == "FeatureCollection"
    back = anndata.read_h5ad(tmp_path / "slide.h5ad")
    assert back.obs["lesion_refined"].sum() == out.obs["lesion_refined"].sum()
    # The original object was not touched (written through a copy).
    assert "lesion_refined" not in adata.obs


def test_widget_builds_and_events_drive_it(slide_and_truth, model, tmp_path):
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
    ref.set_negative_mode(True)
    ref._on_view_event({"type": "click", "dataX": 4, "dataY": 150, "button": 0})
    assert not ref.engine.clicks.last.positive
    ref.undo()
    assert len(ref.engine.clicks) == 2
    ref.set_opacity(0.9)
    origin = ref._view_origin
    ref._on_overview_event({"type": "click", "dataX": 5 if origin[0] > 100 else 120, "dataY": 64})
    assert ref._view_origin != origin and len(ref.engine.clicks) == 0
    # Leaving a view folds its edits into the slide outline.
    assert ref.lesion_annotations()
    assert "RegionRefiner" in repr(ref)


def test_view_geometry_is_public_and_samples_a_slide_mask(slide_and_truth, model, tmp_path):
    slide, truth = slide_and_truth
    ref = _refiner(slide, model, tmp_path)
    ref.go_to((300.0, 260.0))
    x0, y0 = ref.view_origin_xy
    assert ref.view_downsample == 2.0 and ref.view_image.shape == (256, 256, 3)
    assert x0 <= 300.0 <= x0 + 256 * 2.0 and y0 <= 260.0 <= y0 + 256 * 2.0
    _, _, sub = _lesion_point(ref, truth)
    sampled = ref.view_mask_of(truth, 1.0)
    assert sampled.shape == ref.mask.shape
    assert iou(sampled, sub) > 0.95
    # The same mask drawn at downsample 4 samples to (almost) the same view mask.
    coarse = truth[::4, ::4]
    assert iou(ref.view_mask_of(coarse, 4.0), sampled) > 0.9

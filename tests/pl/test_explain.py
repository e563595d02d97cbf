from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.io import Slide  # noqa: E402
from workbench.models import SelfCalibratedModel  # noqa: E402
from workbench.pl import focus_gallery, slide_overlay  # noqa: E402
from workbench.pp import feature_names  # noqa: E402
from workbench.tl import extract  # noqa: E402


@pytest.fixture(scope="module")
def explained():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:256, 0:320]
    img = np.full((256, 320, 3), 245.0)
    img[(rows - 128) ** 2 + (cols - 150) ** 2 < 100**2] = (220, 140, 190)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    torch.manual_seed(0)
    model = SelfCalibratedModel(
        in_features=len(feature_names()),
        hidden=16,
        detail_width=8,
        embed_dim=16,
        top_k=2,
        preprocessing={"thumbnail_mpp": 4.0, "n_segments": 60, "crop_size": 32},
    ).eval()
    adata = extract(Slide.from_array(img, mpp=2.0), model)
    maps = adata.uns["explain"]["focus"]["lesion_maps"]
    maps[:] = 0.0
    maps[0, 8:24, 8:24] = 1.0  # a known lesion in the first focus region
    return adata


def test_slide_overlay_draws_heat_map_boxes_and_outlines(explained):
    ax = slide_overlay(explained)
    images = ax.get_images()
    assert len(images) == 2  # thumbnail + heat map
    heat = images[1].get_array()
    fs = explained.obs["focus_score"].to_numpy()
    assert np.isclose(heat.max(), fs.max(), atol=1e-6) and heat.mask.any()  # background masked
    boxes = [p for p in ax.patches if p.get_label().startswith("focus")]
    assert len(boxes) == 2
    sx, _ = explained.uns["region_graph"]["scale_xy"]
    w0 = explained.uns["explain"]["focus"]["boxes_xywh"][0, 2]
    assert np.isclose(boxes[0].get_width(), w0 / sx)
    assert len(ax.collections) >= 1  # the lesion outline of focus region 1
    assert "p = " in ax.get_title()
    plt.close(ax.figure)


def test_slide_overlay_uses_given_axes(explained):
    fig, ax = plt.subplots()
    assert slide_overlay(explained, ax=ax, key="lesion_prob", lesions=False) is ax
    assert len(ax.collections) == 0
    plt.close(fig)


def test_focus_gallery_panels(explained):
    fig = focus_gallery(explained)
    axes = fig.get_axes()
    assert len(axes) == 4  # 2 rows x 2 focus regions
    crop = axes[0].get_images()[0].get_array()
    assert np.array_equal(np.asarray(crop), explained.uns["explain"]["focus"]["crops"][0])
    plt.close(fig)


def test_plots_need_extract_output(explained):
    bare = explained.copy()
    del bare.uns["explain"]
    with pytest.raises(KeyError, match="tl.extract"):
        slide_overlay(bare)


def _survival_adata(explained):
    adata = explained.copy()
    ex = adata.uns["explain"]
    ex["target"] = "survival"
    ex["risk"], ex["global_risk"] = 1.23, 0.8
    for key in ("probabilities", "raw_probabilities", "temperature", "global_probabilities",
                "predicted_class", "predicted_label"):  # fmt: skip
        ex.pop(key, None)  # what tl.extract leaves out for a survival model
    scores = np.linspace(0.1, 0.9, adata.n_obs).astype(np.float32)
    adata.obs["focus_score"] = scores
    ex["focus"]["focus_score"] = np.array([0.9, 0.2], dtype=np.float32)
    return adata


def test_survival_overlay_is_diverging_around_the_median_region_score(explained):
    from matplotlib.colors import TwoSlopeNorm

    adata = _survival_adata(explained)
    ax = slide_overlay(adata)
    heat = ax.get_images()[1]
    assert heat.get_cmap().name == "RdBu_r"
    assert isinstance(heat.norm, TwoSlopeNorm)
    assert np.isclose(heat.norm.vcenter, np.median(adata.obs["focus_score"]))
    assert ax.get_title() == "risk 1.23 (higher = shorter survival)"
    assert len(ax.collections) == 0  # no lesion outlines for a survival model
    plt.close(ax.figure)
    adata.uns["explain"]["risk"] = float("nan")  # not graded (not brightfield H&E)
    ax = slide_overlay(adata)
    assert ax.get_title() == "not graded (not brightfield H&E)"
    plt.close(ax.figure)
    ax = slide_overlay(adata, center=0.5, cmap="PuOr")
    heat = ax.get_images()[1]
    assert heat.get_cmap().name == "PuOr" and np.isclose(heat.norm.vcenter, 0.5)
    plt.close(ax.figure)


def test_classification_overlay_keeps_its_sequential_map(explained):
    ax = slide_overlay(explained)
    heat = ax.get_images()[1]
    assert heat.get_cmap().name == "magma" and heat.norm.vmin == 0.0
    plt.close(ax.figure)


def test_survival_gallery_titles_say_risk_contribution(explained):
    adata = _survival_adata(explained)
    fig = focus_gallery(adata)
    axes = fig.get_axes()
    assert len(axes) == 2  # one row: no lesion maps for a survival model
    titles = [a.get_title() for a in axes]
    assert titles == ["1: risk contribution 0.90", "2: risk contribution 0.20"]
    assert not any("lesion" in t for t in titles)
    red, blue = (np.asarray(a.title.get_color()) for a in axes)
    assert red[0] > red[2] and blue[2] > blue[0]  # above the median red, below it blue
    assert "prognostic" in fig._suptitle.get_text()
    plt.close(fig)
    classic = focus_gallery(explained)
    assert any("lesion" in a.get_title() for a in classic.get_axes())
    plt.close(classic)


def test_a_real_survival_extract_is_drawn_and_exported_as_risk(tmp_path):
    from workbench.io import read_geojson
    from workbench.tl import export_geojson

    rows, cols = np.mgrid[0:256, 0:320]
    img = np.full((256, 320, 3), 245, dtype=np.uint8)
    img[(rows - 128) ** 2 + (cols - 150) ** 2 < 100**2] = (220, 140, 190)
    torch.manual_seed(1)
    model = SelfCalibratedModel(
        in_features=len(feature_names()),
        n_classes=1,  # a survival (risk) model
        hidden=16,
        detail_width=8,
        embed_dim=16,
        top_k=2,
        preprocessing={"thumbnail_mpp": 4.0, "n_segments": 60, "crop_size": 32},
    ).eval()
    adata = extract(Slide.from_array(img, mpp=2.0), model)
    assert adata.uns["explain"]["target"] == "survival"
    ax = slide_overlay(adata)
    assert ax.get_images()[1].get_cmap().name == "RdBu_r"
    assert ax.get_title().startswith("risk ") and "shorter survival" in ax.get_title()
    plt.close(ax.figure)
    fig = focus_gallery(adata)
    assert all(a.get_title().split(": ")[1].startswith("risk contribution") for a in fig.axes)
    plt.close(fig)
    anns = read_geojson(export_geojson(adata, tmp_path / "risk.geojson"))
    assert {a.classification for a in anns} == {"Prognostic focus"}
    scores = adata.uns["explain"]["focus"]["focus_score"]
    assert np.allclose([a.measurements["risk_contribution"] for a in anns], scores, atol=1e-6)


def test_slide_overlay_marks_where_the_lesion_peaks_in_each_focus_region(explained):
    focus = explained.uns["explain"]["focus"]
    assert focus["peak_source"] == "lesion_map"  # the built-in detail network draws maps
    ax = slide_overlay(explained)
    (line,) = [ln for ln in ax.lines if ln.get_label() == "lesion peak"]
    sx, sy = explained.uns["region_graph"]["scale_xy"]
    x, y, w, h = focus["boxes_xywh"][0]
    px, py = line.get_xdata()[0] + 0.5, line.get_ydata()[0] + 0.5
    assert x / sx <= px <= (x + w) / sx and y / sy <= py <= (y + h) / sy
    assert len(line.get_xdata()) == 2
    plt.close(ax.figure)

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

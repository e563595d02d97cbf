from __future__ import annotations

import numpy as np
import pytest

from workbench import MissingResolutionError, NoTissueError
from workbench.io import Slide
from workbench.pp import feature_names, region_adjacency, region_features, region_graph


def test_region_adjacency_hand_checked():
    labels = np.array(
        [
            [1, 1, 2, 2],
            [1, 1, 2, 2],
            [0, 3, 3, 0],
            [4, 4, 0, 0],
        ]
    )
    adj = region_adjacency(labels).toarray()
    expected = np.zeros((4, 4))
    for a, b in [(1, 2), (1, 3), (2, 3), (3, 4)]:
        expected[a - 1, b - 1] = expected[b - 1, a - 1] = 1
    np.testing.assert_array_equal(adj, expected)


def test_region_features_separate_purple_from_pink():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (120, 60, 150)  # haematoxylin-rich
    img[:, 20:] = (235, 150, 190)  # eosin-rich
    labels = np.zeros((20, 40), np.int32)
    labels[:, :20], labels[:, 20:] = 1, 2
    f = region_features(img, labels)
    names = feature_names()
    assert f.shape == (2, len(names))
    h = names.index("h_mean")
    light = names.index("lightness_mean")
    assert f[0, h] > f[1, h]
    assert f[1, light] > f[0, light]
    hist = [names.index(f"lbp_{i}") for i in range(10)]
    np.testing.assert_allclose(f[:, hist].sum(axis=1), 1.0, rtol=1e-5)


def test_region_graph_keys_and_coordinates(he_like_image):
    slide = Slide.from_array(np.kron(he_like_image, np.ones((4, 4, 1), np.uint8)), mpp=2.0)
    a = region_graph(slide, thumbnail_mpp=8.0, n_segments=150)
    g = a.uns["region_graph"]
    assert g["labels"].shape == g["thumbnail"].shape[:2] == (384, 512)
    assert a.n_obs == g["labels"].max() > 50
    assert list(a.var_names) == feature_names()
    assert a.X.dtype == np.float32 and np.isfinite(a.X).all()
    adj = a.obsp["adjacency"]
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert np.asarray(adj.sum(1)).ravel().min() >= 1  # one connected tissue disc
    # Level-0 centroids: every region centre lies on tissue of the full-resolution image.
    xy = a.obsm["spatial"]
    rows, cols = np.mgrid[0:384, 0:512]
    disc = (rows - 192) ** 2 + (cols - 200) ** 2 < 152**2
    assert disc[(xy[:, 1] / 4).astype(int), (xy[:, 0] / 4).astype(int)].all()
    assert g["scale_xy"] == [4.0, 4.0] and g["thumbnail_mpp"] == 8.0
    assert a.obs["area_um2"].sum() == pytest.approx(a.obs["area_px"].sum() * 64.0)
    # purple core regions have more haematoxylin than the pink rim
    core = (xy[:, 0] / 4 - 230) ** 2 + (xy[:, 1] / 4 - 180) ** 2 < 35**2
    h = a.X[:, feature_names().index("h_mean")]
    assert h[core].mean() > h[~core].mean()


def test_region_graph_needs_mpp_or_max_size(he_like_image):
    slide = Slide.from_array(he_like_image)
    with pytest.raises(MissingResolutionError):
        region_graph(slide, thumbnail_mpp=8.0)
    a = region_graph(slide, thumbnail_mpp=None, thumbnail_max_size=256, n_segments=80)
    assert a.uns["region_graph"]["thumbnail_mpp"] is None
    assert np.isnan(a.obs["area_um2"]).all()


def test_region_graph_on_glass_raises():
    slide = Slide.from_array(np.full((256, 256, 3), 243, np.uint8), mpp=8.0)
    with pytest.raises(NoTissueError, match="no tissue"):
        region_graph(slide)


def test_region_graph_writes_to_h5ad(tmp_path, he_like_image):
    import anndata as ad

    from workbench.io import write_h5ad

    a = region_graph(Slide.from_array(he_like_image, mpp=8.0), n_segments=60)
    write_h5ad(a, tmp_path / "r.h5ad")
    b = ad.read_h5ad(tmp_path / "r.h5ad")
    np.testing.assert_array_equal(b.uns["region_graph"]["labels"], a.uns["region_graph"]["labels"])
    assert (b.obsp["adjacency"] != a.obsp["adjacency"]).nnz == 0


@pytest.mark.realdata
def test_real_cmu_and_tcga_superpixels(real_data):
    cmu = Slide(real_data / "slides" / "CMU-1-Small-Region.svs")
    a = region_graph(cmu, thumbnail_mpp=4.0, n_segments=600)
    assert 300 < a.n_obs < 1200 and np.isfinite(a.X).all()
    assert a.obs["area_um2"].notna().all()
    tcga = Slide(real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs")
    with pytest.raises(MissingResolutionError):
        region_graph(tcga)
    b = region_graph(tcga, thumbnail_mpp=None, thumbnail_max_size=768, n_segments=800)
    assert 400 < b.n_obs < 1600
    W, H = tcga.dimensions
    assert (b.obsm["spatial"][:, 0] < W).all() and (b.obsm["spatial"][:, 1] < H).all()


def test_superpixels_stay_on_tissue_are_connected_and_near_the_asked_count(he_like_image):
    from scipy import ndimage

    from workbench.pp import detect_tissue

    a = region_graph(Slide.from_array(he_like_image, mpp=8.0), n_segments=300)
    labels = a.uns["region_graph"]["labels"]
    tissue = detect_tissue(he_like_image)
    assert not (labels[~tissue] > 0).any()  # glass is never part of a region
    assert (labels[tissue] > 0).mean() > 0.97  # and tissue is (bar regions under 4 px)
    assert 0.75 * 300 < a.n_obs < 1.35 * 300
    for k in range(1, a.n_obs + 1, 7):  # every region is one piece
        assert ndimage.label(labels == k)[1] == 1

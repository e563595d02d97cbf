"""pl.phenotype_gallery draws what tl.phenotype_exemplars / tl.discover stored."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from workbench import pl, tl


@pytest.fixture(scope="module")
def assigned():
    """Synthetic slides whose regions carry a phenotype (their true tissue type)."""
    from workbench.datasets import simulate_region_cohort

    adatas, _ = simulate_region_cohort(6, seed=3, n_regions=120, n_features=6, with_images=True)
    for a in adatas:
        a.obs["phenotype"] = a.obs["true_type"].astype(str).astype("category")
    return adatas


def test_exemplars_come_from_several_slides_and_match_the_thumbnail(assigned):
    ex = tl.phenotype_exemplars(assigned, n_per_phenotype=4, size_um=300.0, out_px=32)
    names = set().union(*(set(a.obs["phenotype"].astype(str)) for a in assigned))
    assert set(ex["phenotypes"]) == names
    for name, entry in ex["phenotypes"].items():
        n = sum(int((a.obs["phenotype"] == name).sum()) for a in assigned)
        assert entry["n_regions"] == n
        assert entry["crops"].shape == (min(4, n), 32, 32, 3)
        assert entry["crops"].dtype == np.uint8
        # one slide before a second from the same slide
        k = min(4, entry["n_slides"])
        assert len(set(entry["slides"][:k])) == k
        assert set(entry["source"]) == {"thumbnail"}  # no slide file: the stored thumbnail
    # the crop's centre is the region's colour in the thumbnail
    entry = (
        ex["phenotypes"]["tumour"]
        if "tumour" in ex["phenotypes"]
        else next(iter(ex["phenotypes"].values()))
    )
    sid, (x, y) = entry["slides"][0], entry["xy"][0]
    a = next(a for a in assigned if a.uns["slide_id"] == sid)
    rg = a.uns["region_graph"]
    sx, sy = rg["scale_xy"]
    expected = np.asarray(rg["thumbnail"])[int(y / sy), int(x / sx)]
    assert np.abs(entry["crops"][0][16, 16].astype(int) - expected.astype(int)).max() <= 60


def test_gallery_has_one_row_per_phenotype(assigned):
    import anndata as ad
    import matplotlib.pyplot as plt

    ex = tl.phenotype_exemplars(assigned, n_per_phenotype=3, out_px=24)
    holder = ad.AnnData(uns={"phenotype_exemplars": ex})
    fig = pl.phenotype_gallery(holder)
    names = list(ex["phenotypes"])
    axes = np.asarray(fig.axes).reshape(len(names), 3)
    for row, name in zip(axes, names, strict=True):
        assert row[0].get_ylabel().startswith(f"{name}\n")
        shown = sum(len(ax.get_images()) for ax in row)
        assert shown == len(ex["phenotypes"][name]["crops"])
    plt.close(fig)
    fig = pl.phenotype_gallery(holder, phenotypes=names[:1])
    assert len(fig.axes) == 3
    plt.close(fig)
    with pytest.raises(KeyError, match="stored"):
        pl.phenotype_gallery(holder, phenotypes=["nope"])
    with pytest.raises(KeyError, match="tl.discover"):
        pl.phenotype_gallery(ad.AnnData())


def test_exemplars_need_assigned_phenotypes(assigned):
    from workbench import WorkbenchError

    bare = assigned[0].copy()
    del bare.obs["phenotype"]
    with pytest.raises(WorkbenchError, match="tl.markers"):
        tl.phenotype_exemplars([bare])
    with pytest.raises(ValueError, match="n_per_phenotype"):
        tl.phenotype_exemplars(assigned, n_per_phenotype=0)

"""pl.marker_map / pl.uniqueness read what tl.markers wrote."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from workbench import pl, tl
from workbench.datasets import simulate_region_cohort


@pytest.fixture(scope="module")
def slides():
    adatas, _ = simulate_region_cohort(10, seed=4, n_regions=80, with_images=True)
    groups = ["high" if a.uns["simulation"]["infiltration"] > 0 else "low" for a in adatas]
    tl.markers(adatas, groups, n_phenotypes=2, k_range=(2, 4), max_regions_per_slide=40)
    return adatas


def test_marker_map_paints_phenotypes_over_the_thumbnail(slides):
    import matplotlib.pyplot as plt

    a = slides[0]
    fig, ax = plt.subplots()
    assert pl.marker_map(a, ax=ax) is ax
    images = ax.get_images()
    assert len(images) == 2
    overlay = images[1].get_array()
    labels = a.uns["region_graph"]["labels"]
    assert overlay.shape[:2] == labels.shape
    # Background and "other" regions are transparent; phenotype regions are not.
    pheno = a.obs["phenotype"].astype(str).to_numpy()
    rid = a.obs["region_id"].to_numpy()
    some = rid[pheno != "other"][0]
    other = rid[pheno == "other"]
    assert np.all(overlay[labels == some][:, 3] > 0)
    if len(other):
        assert np.all(overlay[labels == other[0]][:, 3] == 0)
    assert np.all(overlay[labels == 0][:, 3] == 0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [c for c in a.obs["phenotype"].cat.categories if c != "other"]
    plt.close(fig)


def test_uniqueness_shows_regions_and_annotated_centroids(slides):
    import matplotlib.pyplot as plt

    ax = pl.uniqueness(slides, max_points=300)
    n_points = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets()) > 1)
    assert n_points == 300
    table = slides[0].uns["feature_uniqueness"]["clusters"]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(table)
    assert any("phenotype_1" in t for t in texts)
    plt.close(ax.figure)


def test_plots_need_tl_markers_first(slides):
    bare = slides[0].copy()
    del bare.obs["phenotype"]
    with pytest.raises(KeyError, match="tl.markers"):
        pl.marker_map(bare)
    del bare.uns["feature_uniqueness"]
    with pytest.raises(KeyError, match="tl.markers"):
        pl.uniqueness(bare)


def test_marker_families_heatmap_orders_and_outlines_families():
    import matplotlib.pyplot as plt
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    values = pd.DataFrame(
        {"a": x, "b": -x + rng.normal(0, 0.05, 50), "c": rng.normal(size=50),
         "d": 2 * x + rng.normal(0, 0.05, 50)},
        index=[f"P{i}" for i in range(50)],
    )  # fmt: skip
    clin = pd.DataFrame({"patient_id": values.index, "time": rng.exponential(5, 50), "event": 1})
    co = tl.aggregate(values, clin, slide_key=None)
    tl.marker_families(co)
    ax = pl.marker_families(co)
    order = [t.get_text() for t in ax.get_xticklabels()]
    assert order[-1] == "c" and set(order[:3]) == {"a", "b", "d"}  # the family of three first
    image = ax.get_images()[0].get_array()
    assert image.shape == (4, 4) and np.allclose(np.diag(image), 1)
    assert len(ax.patches) == 1  # one outline: singletons are not boxed
    plt.close(ax.figure)
    with pytest.raises(KeyError, match="tl.marker_families"):
        pl.marker_families(tl.aggregate(values, clin, slide_key=None))

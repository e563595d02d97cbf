"""tl.spatial on a hand-checkable grid, plus the NaN-with-a-reason paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from workbench import MarkerError, MissingResolutionError, tl


def grid_slide(n_side: int = 10, *, spacing: float = 100.0) -> AnnData:
    """10 x 10 grid, 100 um apart (mpp 1). Lesion: columns 0-4. Phenotype A fills column 5
    (the first column outside the lesion, touching it); B fills column 9 (the far edge)."""
    cols, rows = np.meshgrid(np.arange(n_side), np.arange(n_side))
    cols, rows = cols.ravel(), rows.ravel()
    xy = np.column_stack([cols * spacing, rows * spacing]).astype(float)
    pheno = np.where(cols == 5, "A", np.where(cols == 9, "B", "other"))
    n = len(xy)
    # 4-neighbour adjacency.
    idx = np.arange(n).reshape(n_side, n_side)
    pairs = np.vstack(
        [
            np.column_stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()]),
            np.column_stack([idx[:-1, :].ravel(), idx[1:, :].ravel()]),
        ]
    )
    adj = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    adj = ((adj + adj.T) > 0).astype(np.float32).tocsr()
    obs = pd.DataFrame(
        {
            "phenotype": pd.Categorical(pheno, categories=["A", "B", "other"]),
            "lesion_prob": np.where(cols <= 4, 0.9, 0.1),
        },
        index=[f"r{i}" for i in range(n)],
    )
    return AnnData(
        obs=obs,
        obsm={"spatial": xy},
        obsp={"adjacency": adj},
        uns={"slide_id": "grid", "region_graph": {"slide": {"mpp": 1.0}}},
    )


def test_direct_markers_on_a_hand_checkable_grid():
    s = tl.spatial(grid_slide(), families=("direct",))
    assert s.name == "grid"
    assert s["abundance:A"] == pytest.approx(0.1)
    assert s["lesion_share:A"] == 0.0
    # The margin = column 4 (lesion side) + column 5 (outside): 20 regions, 10 of them A.
    assert s["boundary_share:A"] == 1.0
    assert s["boundary_density:A"] == pytest.approx(0.5)
    assert s["boundary_share:B"] == 0.0 and s["boundary_density:B"] == 0.0
    # The distance-based band agrees: half the distance to the other side is 50 um there.
    d = tl.spatial(grid_slide(), families=("direct",), band_um=60.0)
    assert d["boundary_density:A"] == pytest.approx(0.5)


@pytest.mark.slow  # first squidpy import + numba compilation, ~10 s on 2 cores
def test_squidpy_markers_on_a_hand_checkable_grid():
    a = grid_slide()
    s = tl.spatial(a, n_perms=50, distances_um=(100.0, 300.0))
    # A has 10 of its 38 edge ends on the lesion; with half the slide lesion, shuffled labels
    # give about 19, so even A is below chance. B never touches it: far below, and below A.
    assert s["nhood_z:B|lesion"] < -3
    assert s["nhood_z:A|lesion"] > s["nhood_z:B|lesion"] + 1
    # Pairs within 100 um are the 180 grid edges (360 ends); lesion ends: 85 lesion-lesion
    # edges * 2 + 10 lesion-A = 180, so p(lesion) = 0.5. A's 38 ends include 10 lesion ones:
    # ratio (10 / 38) / 0.5 = 10 / 19. B never meets the lesion.
    assert s["cooc:A|lesion@100um"] == pytest.approx(10 / 19)
    assert s["cooc:B|lesion@100um"] == 0
    # A column is spatially autocorrelated (Moran's I > 0).
    assert s["moran:A"] > 0.2 and s["moran:B"] > 0.2
    assert np.isfinite(s["ripley_L:A"])
    table = a.uns["spatial_markers"]
    assert list(table.columns) == ["value", "family", "phenotype", "reason"]
    assert (table["reason"] == "").all()
    assert table.loc["nhood_z:A|lesion", "family"] == "nhood_z"
    assert table.loc["cooc:A|lesion@300um", "phenotype"] == "A"


def test_too_few_regions_give_nan_with_a_reason():
    a = grid_slide(4)
    s = tl.spatial(a)
    assert s.isna().all()
    assert a.uns["spatial_markers"]["reason"].str.contains("only 16 regions").all()


def test_no_lesion_and_rare_phenotypes_give_nan_with_reasons():
    a = grid_slide()
    a.obs["lesion_prob"] = 0.0
    s = tl.spatial(a, families=("direct", "nhood"), n_perms=20)
    reasons = a.uns["spatial_markers"]["reason"]
    assert s["abundance:A"] == pytest.approx(0.1)
    assert np.isnan(s["boundary_density:A"]) and "no lesion border" in reasons["boundary_density:A"]
    assert np.isnan(s["nhood_z:A|lesion"]) and "lesion regions" in reasons["nhood_z:A|lesion"]
    b = grid_slide()
    b.obs["phenotype"] = b.obs["phenotype"].astype(str)
    b.obs.loc[b.obs_names[:3], "phenotype"] = "rare"
    tl.spatial(b, families=("direct", "moran"))
    r = b.uns["spatial_markers"]["reason"]
    assert "min_phenotype_regions" in r["moran:rare"]


def test_refined_lesion_wins_over_probability():
    a = grid_slide()
    a.obs["lesion_refined"] = False  # clicks removed the lesion
    s = tl.spatial(a, families=("direct",))
    assert np.isnan(s["boundary_density:A"])


def test_spatial_bad_input():
    a = grid_slide()
    with pytest.raises(ValueError, match="valid"):
        tl.spatial(a, families=("direct", "voronoi"))
    b = grid_slide()
    b.uns["region_graph"] = {}
    with pytest.raises(MissingResolutionError, match="mpp="):
        tl.spatial(b, families=("direct",))
    assert tl.spatial(b, families=("direct",), mpp=1.0)["abundance:A"] == pytest.approx(0.1)
    c = grid_slide()
    del c.obs["phenotype"]
    with pytest.raises(MarkerError, match="tl.markers"):
        tl.spatial(c)


def test_spatial_many_gives_slides_by_markers():
    a, b = grid_slide(), grid_slide()
    b.uns["slide_id"] = "grid2"
    df = tl.spatial_many([a, b], families=("direct",))
    assert list(df.index) == ["grid", "grid2"]
    assert "boundary_density:A" in df.columns

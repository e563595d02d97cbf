"""datasets.simulate_region_cohort: region clouds with the keys tl.extract writes, a hidden
truth kept out of the clinical table, and sites that shift stain but not tissue."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from workbench._constants import ADJACENCY, LESION_PROB, REGION_GRAPH, SLIDE_ID, SPATIAL, X_FOCUS
from workbench.datasets import simulate_region_cohort


def test_region_cohort_has_the_extract_keys_and_hides_the_truth():
    adatas, clin = simulate_region_cohort(6, seed=3, n_regions=80, n_features=12)
    assert list(clin.columns) == ["patient_id", "slide", "grade", "age", "time", "event"]
    assert clin["slide"].tolist() == [a.uns[SLIDE_ID] for a in adatas]
    for a in adatas:
        assert a.obsm[SPATIAL].shape == (a.n_obs, 2) and a.obsm[X_FOCUS].shape == (a.n_obs, 12)
        assert a.obsp[ADJACENCY].shape == (a.n_obs, a.n_obs)
        assert (a.obsp[ADJACENCY] != a.obsp[ADJACENCY].T).nnz == 0  # symmetric
        assert a.obs[LESION_PROB].between(0, 1).all() and a.obs["is_focus"].sum() == 4
        assert REGION_GRAPH in a.uns and "labels" not in a.uns[REGION_GRAPH]  # no images asked
        assert set(a.obs["true_type"].cat.categories) >= {"stroma", "tumour", "immune"}
        assert "infiltration" in a.uns["simulation"]
    assert "infiltration" not in clin


def test_region_cohort_is_reproducible_from_its_seed():
    a, clin_a = simulate_region_cohort(4, seed=5, n_regions=60)
    b, clin_b = simulate_region_cohort(4, seed=5, n_regions=60)
    c, _ = simulate_region_cohort(4, seed=6, n_regions=60)
    pd.testing.assert_frame_equal(clin_a, clin_b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.obsm[X_FOCUS], y.obsm[X_FOCUS])
    assert not np.array_equal(a[0].obsm[X_FOCUS], c[0].obsm[X_FOCUS][: a[0].n_obs])


def test_importing_datasets_loads_neither_torch_nor_anndata():
    code = "import sys, workbench.datasets; print('torch' in sys.modules, 'anndata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_simulated_sites_shift_stain_and_hazard_but_keep_tissue():
    adatas, clin = simulate_region_cohort(40, seed=2, n_regions=60, sites=4)
    assert sorted(clin["site"].unique()) == ["A", "B", "C", "D"]
    assert all(a.uns["simulation"]["site"] == s for a, s in zip(adatas, clin["site"], strict=True))
    obs = pd.concat(
        [pd.DataFrame(a.obsm["X_focus"]).assign(t=a.obs["true_type"].to_numpy(), s=s)
         for a, s in zip(adatas, clin["site"], strict=True)]
    )  # fmt: skip
    stroma = obs[obs["t"] == "stroma"].groupby("s").mean(numeric_only=True)
    # The stain moves only the colour half of the features, by site.
    colour = stroma.iloc[:, :16].std(axis=0).mean()
    texture = stroma.iloc[:, 16:].std(axis=0).mean()
    assert colour > 5 * texture
    # The same seed without sites is the cohort of before (sites draw from their own streams).
    plain, plain_clin = simulate_region_cohort(40, seed=2, n_regions=60)
    assert "site" not in plain_clin
    np.testing.assert_array_equal(plain_clin["grade"], clin["grade"])
    with pytest.raises(ValueError, match="sites must be"):
        simulate_region_cohort(4, sites=1)

"""site_association / tl.center_by_site: the site guard's pieces, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import MarkerError, tl
from workbench.datasets import simulate_region_cohort
from workbench.tl._site import site_association
from workbench.tl._stats import benjamini_hochberg, kruskal_eta2


def test_site_association_matches_scipy_and_flags_site_detectors():
    from scipy.stats import kruskal

    rng = np.random.default_rng(0)
    sites = np.repeat(["a", "b", "c", "d"], 25)
    detector = np.select([sites == "a", sites == "b", sites == "c"], [0, 1, 2], 3) + rng.normal(
        0, 0.1, 100
    )
    weak = rng.normal(size=100) + 0.4 * (sites == "a")
    X = np.column_stack([detector, weak, rng.normal(size=100)])
    X[:5, 2] = np.nan
    table = site_association(X, ["detector", "weak", "noise"], sites)
    ref = kruskal(*[X[sites == s, 2][np.isfinite(X[sites == s, 2])] for s in "abcd"])
    assert table.loc["noise", "p_site"] == pytest.approx(ref.pvalue)
    assert table.loc["detector", "site_eta2"] > 0.9 and table.loc["detector", "mostly_site"]
    assert not table.loc["weak", "mostly_site"] and not table.loc["noise", "mostly_site"]
    assert table["n_sites"].tolist() == [4, 4, 4]
    np.testing.assert_allclose(table["q_site"], benjamini_hochberg(table["p_site"]))


def test_kruskal_needs_two_sites_with_values():
    p, eta2, k = kruskal_eta2(np.array([1.0, 2.0, np.nan, np.nan]), np.array(list("aabb")))
    assert np.isnan(p) and np.isnan(eta2) and k == 1
    p, _, _ = kruskal_eta2(np.ones(6), np.array(list("aabbcc")))
    assert np.isnan(p)  # all tied


def test_center_by_site_removes_each_sites_average_shift():
    adatas, clin = simulate_region_cohort(8, seed=1, n_regions=60, sites=2)
    sites = clin["site"].tolist()
    key = tl.center_by_site(adatas, sites)
    assert key == "X_focus_site"
    for site in set(sites):
        pooled = np.vstack([a.obsm[key] for a, s in zip(adatas, sites, strict=True) if s == site])
        np.testing.assert_allclose(pooled.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(pooled.std(axis=0), 1, atol=1e-4)
    mapping = dict(zip(clin["slide"], sites, strict=True))
    tl.center_by_site(adatas, mapping, key_added="again", scale=False)
    first = [a for a, s in zip(adatas, sites, strict=True) if s == sites[0]]
    raw = np.vstack([a.obsm["X_focus"] for a in first])
    centred = np.vstack([a.obsm["again"] for a in first])
    np.testing.assert_allclose(centred, raw - raw.mean(axis=0), atol=1e-4)  # shift, no scale
    with pytest.raises(MarkerError, match="no site for slide"):
        tl.center_by_site(adatas, {"S0000": "site1"})
    with pytest.raises(MarkerError, match="got 1 sites for 8 slides"):
        tl.center_by_site(adatas, ["site1"])

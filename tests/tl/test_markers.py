"""tl.markers / FeatureUniqueness on simulated region clouds with known tissue types."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import MarkerError, tl
from workbench.datasets import simulate_region_cohort


@pytest.fixture(scope="module")
def slides():
    adatas, clinical = simulate_region_cohort(24, seed=11, n_regions=120)
    # Outcome groups straight from the latent infiltration: the immune type is planted to be
    # more frequent in the "high" group, everything else is shared.
    groups = ["high" if a.uns["simulation"]["infiltration"] > 0 else "low" for a in adatas]
    return adatas, groups


def test_feature_uniqueness_recovers_the_planted_immune_type(slides):
    adatas, groups = slides
    model = tl.FeatureUniqueness(n_phenotypes=3, k_range=(3, 6), max_regions_per_slide=60).fit(
        adatas, groups
    )
    obs = pd.concat([model.transform(a, copy=True).obs for a in adatas])
    tab = pd.crosstab(obs["true_type"], obs["phenotype"])
    immune_pheno = tab.loc["immune"].drop("other").idxmax()
    # Most immune regions land in one phenotype, and that phenotype is mostly immune.
    assert tab.loc["immune", immune_pheno] / tab.loc["immune"].sum() > 0.85
    assert tab.loc["immune", immune_pheno] / tab[immune_pheno].sum() > 0.85
    row = model.clusters_[model.clusters_["phenotype"] == immune_pheno].iloc[0]
    assert row["group"] == "high" and row["share_own"] > row["share_other"]
    assert row["uniqueness"] > 0


def test_fitted_model_applies_to_a_new_slide_and_explains_itself(slides):
    adatas, groups = slides
    model = tl.FeatureUniqueness(
        n_phenotypes=2, k_range=(3, 5), max_regions_per_slide=60, random_state=1
    ).fit(adatas[:20], groups[:20])
    assert "fitted on 20 slides" in repr(model) and "phenotypes=" in repr(model)
    new = adatas[22].copy()
    for key in ("phenotype", "phenotype_cluster"):
        new.obs.pop(key) if key in new.obs else None
    model.transform(new)
    expected = model.assign(new.obsm["X_focus"])
    assert (new.obs["phenotype"].astype(str).to_numpy() == expected).all()
    assert list(new.obs["phenotype"].cat.categories) == [*model.phenotypes_, "other"]
    assert new.obsm["X_uniqueness"].shape == (new.n_obs, model.n_components_)
    # 95% of the variance is kept by the PCA.
    assert model.pca_.explained_variance_ratio_.sum() >= 0.95
    assert new.uns["feature_uniqueness"]["params"]["fit_slides"] == model.slide_ids_fit_


def test_markers_writes_every_slide_and_logs(slides, caplog):
    adatas, groups = slides
    extra = [a.copy() for a in adatas[:2]]
    mapping = {a.uns["slide_id"]: g for a, g in zip(adatas, groups, strict=True)}
    with caplog.at_level(logging.INFO, logger="workbench"):
        model = tl.markers(
            adatas[2:],
            mapping,
            n_phenotypes=2,
            k_range=(3, 5),
            max_regions_per_slide=60,
            apply_to=extra,
        )
    assert "added obs['phenotype']" in caplog.text
    assert all("phenotype" in a.obs for a in extra)
    assert len(model.slide_ids_fit_) == len(adatas) - 2


def test_markers_bad_input_raises(slides):
    adatas, groups = slides
    with pytest.raises(MarkerError, match="two outcome groups"):
        tl.FeatureUniqueness().fit(adatas[:5], ["a"] * 5)
    with pytest.raises(MarkerError, match="groups for"):
        tl.FeatureUniqueness().fit(adatas[:5], ["a", "b"])
    with pytest.raises(MarkerError, match="not fitted"):
        tl.FeatureUniqueness().transform(adatas[0])
    bare = adatas[0].copy()
    del bare.obsm["X_focus"]
    with pytest.raises(MarkerError, match="X_focus"):
        tl.FeatureUniqueness().fit([bare, adatas[1]], ["a", "b"])
    with pytest.raises(ValueError, match="k_range"):
        tl.FeatureUniqueness(k_range=(1, 3))


def test_slides_without_a_group_are_left_out_and_logged(slides, caplog):
    adatas, groups = slides
    partial = list(groups[:12])
    partial[0] = None
    partial[1] = np.nan
    with caplog.at_level(logging.INFO, logger="workbench"):
        model = tl.FeatureUniqueness(n_phenotypes=2, k_range=(2, 4), max_regions_per_slide=60).fit(
            adatas[:12], partial
        )
    assert model.n_slides_fit_ == 10
    assert "2 of 12 slides have no group" in caplog.text


def test_slide_id_of_a_path_follows_the_one_rule():
    import anndata as ad

    from workbench.tl._markers import slide_id_of

    a = ad.AnnData(np.zeros((2, 1), np.float32))
    a.uns["region_graph"] = {"slide": {"path": "cohort/slides/TCGA-AB-1234.DX1.ome.tiff"}}
    assert slide_id_of(a) == "TCGA-AB-1234.DX1"

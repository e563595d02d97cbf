"""tl.discover: single split and cross-fitting keep tested patients away from the fit."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError, UnmatchedSlidesError, tl
from workbench.datasets import simulate_region_cohort
from workbench.tl._discover import fold_patients, split_patients

FAST = {
    "marker_kwargs": {"n_phenotypes": 2, "k_range": (2, 4), "max_regions_per_slide": 40},
    "spatial_kwargs": {"families": ("direct",)},
    "survival_kwargs": {"cv_top": 0},
}


@pytest.fixture(scope="module")
def sim():
    return simulate_region_cohort(40, seed=5, n_regions=80)


def test_discover_fits_on_discovery_and_tests_on_validation(sim):
    adatas, clin = sim
    co = tl.discover(adatas, clin, **{**FAST, "survival_kwargs": {"cv_top": 1, "cv_folds": 3}})
    info = co.uns["discovery"]
    assert info["mode"] == "split"
    disc, val = set(info["discovery_patients"]), set(info["validation_patients"])
    assert not disc & val and len(disc | val) == 40
    slide_to_patient = dict(zip(clin["slide"], clin["patient_id"], strict=True))
    assert {slide_to_patient[s] for s in info["fit_slides"]} <= disc
    assert set(co.uns["survival_screen_params"]["tested_patients"]) == val
    assert (co.obs.loc[list(val), "discovery_split"] == "validation").all()
    table = co.uns["survival_screen"]
    assert {"hr", "p_cox", "q_cox", "p_logrank", "q_logrank", "hr_adj", "called",
            "marker_family", "family_called"} <= set(table.columns)  # fmt: skip
    fams = co.uns["survival_families"]
    assert fams["n_members"].sum() == table["p_cox"].notna().sum() + table["p_cox"].isna().sum()
    assert co.uns["marker_families"]["params"]["patients"] == "discovery"
    assert all("phenotype" in a.obs and "spatial_markers" in a.uns for a in adatas)


def test_crossfitting_tests_everyone_with_phenotypes_that_never_saw_them(sim):
    adatas, clin = sim
    co, models = tl.discover(adatas, clin, folds=4, return_model=True, **FAST)
    info = co.uns["discovery"]
    assert info["mode"] == "crossfit" and len(models) == 4
    assert len(co.uns["survival_screen_params"]["tested_patients"]) == 40
    fold = co.obs["crossfit_fold"]
    assert sorted(fold.value_counts().tolist()) == [10, 10, 10, 10]
    patient_of = dict(zip(clin["slide"], clin["patient_id"], strict=True))
    for a in adatas:
        p = patient_of[a.uns["slide_id"]]
        fitted_on = {patient_of[s] for s in a.uns["feature_uniqueness"]["params"]["fit_slides"]}
        assert p not in fitted_on  # scored by a model that never saw this patient
        assert not fitted_on & set(fold.index[fold == fold[p]])  # ... nor its fold
    # The same name means the same tissue in every fold (hidden types of the simulation).
    obs = pd.concat(
        [a.obs[["phenotype", "true_type"]].assign(fold=fold[patient_of[a.uns["slide_id"]]])
         for a in adatas]
    )  # fmt: skip
    obs = obs[obs["phenotype"].astype(str) != "other"]
    majority = obs.groupby(["phenotype", "fold"], observed=True)["true_type"].agg(
        lambda t: t.value_counts().index[0]
    )
    assert majority.groupby(level=0).nunique().eq(1).all()
    matching = info["matching"]
    assert set(matching["phenotype"]) == set(info["phenotypes"])
    assert "discovery_split" in co.obs and (co.obs["discovery_split"] == "validation").all()
    assert co.uns["marker_families"]["params"]["patients"] == "all"


def test_match_phenotypes_pairs_the_same_pattern_across_models(sim):
    adatas, clin = sim
    groups = ["high" if a.uns["simulation"]["infiltration"] > 0 else "low" for a in adatas]
    kw = {"n_phenotypes": 3, "k_range": (3, 5), "max_regions_per_slide": 40}
    a = tl.FeatureUniqueness(**kw).fit(adatas[:20], groups[:20])
    b = tl.FeatureUniqueness(**kw, random_state=3).fit(adatas[20:], groups[20:])
    names, table = tl.match_phenotypes([a, b])
    assert set(names[0].values()) | set(names[1].values()) == set(table.index)
    for old_a, new in names[0].items():
        partner = [old for old, n in names[1].items() if n == new]
        if partner:
            ca = a.feature_centroids()[a.phenotypes_.index(old_a)]
            cb = b.feature_centroids()[b.phenotypes_.index(partner[0])]
            others = [
                np.linalg.norm(ca - c) for i, c in enumerate(b.feature_centroids())
                if b.phenotypes_[i] != partner[0]
            ]  # fmt: skip
            assert all(np.linalg.norm(ca - cb) < d for d in others)
    assert table["n_folds"].max() == 2
    b.rename_phenotypes(names[1])
    assert set(b.phenotypes_) <= set(table.index)


def test_discover_does_not_silently_drop_patients_without_slides(sim, caplog):
    adatas, clin = sim
    with pytest.raises(ClinicalTableError, match="no row in the clinical table"):
        tl.discover(adatas, clin.iloc[:-1], **FAST)
    with pytest.raises(UnmatchedSlidesError, match=r"1 clinical row\(s\) have no slide among "
                       r"the slides given \('S0039' \(row 40, patient P0039\)\).*"
                       r"on_unmatched='drop'"):  # fmt: skip
        tl.discover(adatas[:-1], clin, **FAST)
    with caplog.at_level(logging.WARNING, logger="workbench"):
        co = tl.discover(adatas[:-1], clin, on_unmatched="drop", **FAST)
    assert co.n_obs == 39 and "dropped 1 clinical row(s) without a slide" in caplog.text


def test_discover_checks_covariates_before_fitting_anything(sim):
    adatas, clin = sim
    bad = clin.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[3, "age"] = "unknown"
    with pytest.raises(ClinicalTableError, match=r"'unknown' \(patient P0003\)"):
        tl.discover(adatas, bad, **FAST)
    nan = clin.copy()
    nan["age"] = nan["age"].astype(float)
    nan.loc[3, "age"] = np.nan
    with pytest.raises(ClinicalTableError, match=r"'age' is missing.*P0003.*dropna=True"):
        tl.discover(adatas, nan, **FAST)
    co = tl.discover(adatas, nan, dropna=True, **FAST)
    assert "P0003" not in co.obs_names and co.n_obs == 39
    assert "hr_adj" in co.uns["survival_screen"]


def test_site_guard_in_discover(sim):
    adatas, clin = simulate_region_cohort(40, seed=6, n_regions=80, sites=2)
    co = tl.discover(adatas, clin, site_key="site", folds=4, center_features_by_site=True, **FAST)
    screen = co.uns["survival_screen"]
    assert {"p_strat", "q_strat", "p_site", "q_site", "site_eta2", "mostly_site"} <= set(screen)
    assert co.uns["survival_screen_params"]["decided_by"] == "q_strat"
    assert "mostly_site" in co.uns["survival_families"]
    assert co.uns["discovery"]["center_features_by_site"]
    assert "X_focus_site" in adatas[0].obsm
    # Folds are stratified by site as well as by event.
    per = pd.crosstab(co.obs["crossfit_fold"], co.obs["site"])
    assert (per.max(axis=0) - per.min(axis=0)).max() <= 2
    with pytest.raises(ValueError, match="needs site_key"):
        tl.discover(adatas, clin, center_features_by_site=True, **FAST)


def test_discover_accepts_a_cohort_object(sim):
    from workbench.io import Cohort

    adatas, clin = sim
    table = clin.rename(columns={"patient_id": "case", "time": "months"})
    cohort = Cohort.from_clinical(table, patient_key="case", duration_key="months")
    co = tl.discover(adatas, cohort, **FAST)
    assert co.uns["cohort"]["duration_key"] == "months" and co.n_obs == 40
    assert co.uns["cohort"]["patient_key"] == "case"


def test_discover_needs_survival_columns(sim):
    adatas, clin = sim
    with pytest.raises(ClinicalTableError, match="needs survival.*duration_key=/event_key="):
        tl.discover(adatas, clin.drop(columns=["time", "event"]), **FAST)


def test_bad_options():
    adatas, clin = simulate_region_cohort(12, seed=1, n_regions=60)
    with pytest.raises(ValueError, match="folds must be"):
        tl.discover(adatas, clin, folds=1)
    with pytest.raises(ClinicalTableError, match="too few for 5 cross-fitting folds"):
        tl.discover(adatas[:8], clin.iloc[:8], folds=5)
    with pytest.raises(ValueError, match="on_unmatched"):
        tl.discover(adatas, clin, on_unmatched="ignore")


def test_outcome_groups_within_site_and_fold_assignment():
    time = pd.Series([1.0, 2, 3, 4, 10, 20, 30, 40])
    event = pd.Series([1] * 8)
    site = pd.Series(list("aaaabbbb"))
    overall = tl.outcome_groups(time, event)
    within = tl.outcome_groups(time, event, within=site)
    assert overall.tolist() == ["short"] * 4 + ["long"] * 4
    assert within.tolist() == ["short", "short", "long", "long"] * 2
    folds = fold_patients([f"P{i}" for i in range(20)], [1, 0] * 10, folds=5, seed=1)
    assert sorted(pd.Series(folds).value_counts().tolist()) == [4] * 5
    assert folds == fold_patients([f"P{i}" for i in range(20)], [1, 0] * 10, folds=5, seed=1)


def test_split_patients_is_stratified_and_seeded():
    ids = [f"P{i}" for i in range(20)]
    events = [1] * 10 + [0] * 10
    a = split_patients(ids, events, seed=3)
    assert a == split_patients(ids, events, seed=3)
    val = [p for p, v in a.items() if v == "validation"]
    assert len(val) == 10 and sum(events[ids.index(p)] for p in val) == 5


def test_results_survive_an_h5ad_round_trip(sim, tmp_path):
    import anndata

    from workbench.io import write_h5ad

    adatas, clin = sim
    for folds in (None, 4):
        co = tl.discover(adatas, clin, folds=folds, **FAST)
        write_h5ad(co, tmp_path / "discovery.h5ad")
        back = anndata.read_h5ad(tmp_path / "discovery.h5ad")
        pd.testing.assert_frame_equal(
            back.uns["survival_families"], co.uns["survival_families"], check_dtype=False
        )
        assert back.uns["discovery"]["mode"] == co.uns["discovery"]["mode"]
        members = back.uns["marker_families"]["members"]
        assert list(members["family"]) == list(co.uns["marker_families"]["members"]["family"])


def test_discover_from_a_csv_keeps_zero_padded_ids(sim, tmp_path):
    """Patients 007 and 7 stay two patients; slide 001 matches the AnnData of slide 001."""
    import copy

    adatas, clin = sim
    adatas = [copy.copy(a) for a in adatas]
    new_slide = {s: f"{i + 1:03d}" for i, s in enumerate(clin["slide"])}
    new_patient = {p: (f"{i:03d}" if i % 2 else str(i)) for i, p in enumerate(clin["patient_id"])}
    new_patient[clin["patient_id"].iloc[7]] = "007"
    new_patient[clin["patient_id"].iloc[8]] = "7"
    for a in adatas:
        a.uns = {**a.uns, "slide_id": new_slide[a.uns["slide_id"]]}
    table = clin.assign(
        slide=clin["slide"].map(new_slide), patient_id=clin["patient_id"].map(new_patient)
    )
    path = tmp_path / "clinical.csv"
    table.to_csv(path, index=False)
    co = tl.discover(adatas, path, **FAST)
    assert co.n_obs == 40
    assert {"007", "7"} <= set(co.obs_names)
    assert co.obs.loc["007", "slides"] == "008"

"""tl.survival / tl.discover: numbers against direct lifelines calls, honesty, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError, MarkerError, tl

GBSG2_MARKERS = ["age", "tsize", "pnodes", "progrec", "estrec"]


@pytest.fixture(scope="module")
def gbsg2():
    from lifelines.datasets import load_gbsg2

    df = load_gbsg2()
    df.index = [f"G{i}" for i in range(len(df))]
    clinical = pd.DataFrame(
        {
            "patient_id": df.index,
            "time": df["time"].astype(float),
            "event": df["cens"].astype(int),
            "horTh": df["horTh"],
            "tgrade": df["tgrade"],
        }
    )
    co = tl.cohort(df[GBSG2_MARKERS], clinical, slide_key=None)
    return df, co


def test_screen_matches_direct_lifelines_on_gbsg2(gbsg2):
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    df, co = gbsg2
    table = tl.survival(co, cv_top=0)
    assert set(table.index) == set(GBSG2_MARKERS)
    for m in GBSG2_MARKERS:
        x = df[m].astype(float)
        d = pd.DataFrame({"time": df["time"], "cens": df["cens"], m: (x - x.mean()) / x.std()})
        s = CoxPHFitter().fit(d, "time", "cens").summary.loc[m]
        assert table.loc[m, "hr"] == pytest.approx(s["exp(coef)"], rel=1e-6)
        assert table.loc[m, "se"] == pytest.approx(s["se(coef)"], rel=1e-6)
        assert table.loc[m, "p_cox"] == pytest.approx(s["p"], rel=1e-5)
        high = x > x.median()
        lr = logrank_test(
            df["time"][high],
            df["time"][~high],
            event_observed_A=df["cens"][high],
            event_observed_B=df["cens"][~high],
        )
        assert table.loc[m, "logrank_stat"] == pytest.approx(lr.test_statistic, rel=1e-9)
        assert table.loc[m, "p_logrank"] == pytest.approx(lr.p_value, rel=1e-9)
    # BH against statsmodels' implementation.
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    q = multipletests(table["p_cox"], method="fdr_bh")[1]
    np.testing.assert_allclose(table["q_cox"], q, rtol=1e-12)
    assert table.loc["pnodes", "called"]  # nodal status is the classic GBSG2 prognostic factor


def test_multivariable_cox_and_fitters_are_lifelines_own(gbsg2):
    from lifelines import CoxPHFitter

    df, co = gbsg2
    table, fits = tl.survival(
        co, covariates=["horTh", "tgrade"], cv_top=2, cv_folds=3, return_fitters=True
    )
    assert isinstance(fits["univariable"]["pnodes"], CoxPHFitter)
    multi = fits["multivariable"]["pnodes"]
    assert isinstance(multi, CoxPHFitter)
    assert {"pnodes", "horTh_yes", "tgrade_II", "tgrade_III"} <= set(multi.summary.index)
    assert table.loc["pnodes", "hr_adj"] == pytest.approx(multi.summary.loc["pnodes", "exp(coef)"])
    cv = co.uns["survival_cv"]
    assert list(cv["model"])[:3] == ["clinical", "marker", "clinical + marker"]
    assert ((cv["c_index"] > 0.5) & (cv["c_index"] < 1)).all()


def test_benjamini_hochberg_by_hand():
    q = tl.benjamini_hochberg([0.01, 0.04, 0.03, np.nan, 0.5])
    # m = 4 tested: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.0533, 0.0533, 0.5
    np.testing.assert_allclose(q[[0, 2, 1, 4]], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert np.isnan(q[3])


def small_cohort(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    clin = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "time": rng.exponential(10, n),
            "event": rng.integers(0, 2, n),
        }
    )
    clin.loc[0, "event"] = 1
    values = pd.DataFrame(
        {"good": rng.normal(size=n), "constant": 1.0, "holes": rng.normal(size=n)},
        index=clin["patient_id"],
    )
    values.iloc[:4, 2] = np.nan
    return tl.cohort(values, clin, slide_key=None)


def test_constant_and_missing_values_get_nan_or_a_count(caplog):
    co = small_cohort()
    with caplog.at_level(logging.INFO, logger="workbench"):
        table = tl.survival(co, cv_top=0)
    assert (
        np.isnan(table.loc["constant", "p_cox"])
        and table.loc["constant", "reason"] == "constant marker"
    )
    assert not table.loc["constant", "called"]
    assert table.loc["holes", "n_dropped_nan"] == 4 and table.loc["holes", "n"] == 26
    assert "holes (4)" in caplog.text
    assert "added adata.uns['survival_screen']" in caplog.text
    # The constant marker is not counted in the FDR family.
    assert table["q_cox"].notna().sum() == 2


def test_survival_bad_input():
    co = small_cohort()
    with pytest.raises(ClinicalTableError, match="only 1 patient"):
        tl.survival(co, patients=["P0"])
    with pytest.raises(MarkerError, match="unknown marker"):
        tl.survival(co, markers=["nope"])
    none = co.copy()
    none.obs["event"] = 0
    with pytest.raises(ClinicalTableError, match="no events"):
        tl.survival(none)
    table = tl.survival(co, min_patients=28, cv_top=0)
    assert "min_patients" in table.loc["holes", "reason"]


def test_validation_patients_only_by_default(caplog):
    co = small_cohort()
    co.obs["discovery_split"] = pd.Categorical(
        ["discovery"] * 12 + ["validation"] * 18, categories=["discovery", "validation"]
    )
    tl.survival(co, cv_top=0)
    params = co.uns["survival_screen_params"]
    assert params["patients"] == "validation"
    assert params["tested_patients"] == [f"P{i}" for i in range(12, 30)]
    with caplog.at_level(logging.WARNING, logger="workbench"):
        tl.survival(co, patients="all", cv_top=0)
    assert "double dipping" in caplog.text


def test_split_patients_is_stratified_and_seeded():
    ids = [f"P{i}" for i in range(20)]
    events = [1] * 10 + [0] * 10
    a = tl.split_patients(ids, events, seed=3)
    assert a == tl.split_patients(ids, events, seed=3)
    val = [p for p, v in a.items() if v == "validation"]
    assert len(val) == 10 and sum(events[ids.index(p)] for p in val) == 5


def test_discover_fits_on_discovery_and_tests_on_validation():
    from workbench.tl._simulate import simulate_region_cohort

    adatas, clin = simulate_region_cohort(40, seed=5, n_regions=80)
    co = tl.discover(
        adatas,
        clin,
        marker_kwargs={"n_phenotypes": 2, "k_range": (2, 4), "max_regions_per_slide": 40},
        spatial_kwargs={"families": ("direct",)},
        survival_kwargs={"cv_top": 1, "cv_folds": 3},
    )
    info = co.uns["discovery"]
    disc, val = set(info["discovery_patients"]), set(info["validation_patients"])
    assert not disc & val and len(disc | val) == 40
    slide_to_patient = dict(zip(clin["slide"], clin["patient_id"], strict=True))
    assert {slide_to_patient[s] for s in info["fit_slides"]} <= disc
    assert set(co.uns["survival_screen_params"]["tested_patients"]) == val
    assert (co.obs.loc[list(val), "discovery_split"] == "validation").all()
    table = co.uns["survival_screen"]
    assert {"hr", "p_cox", "q_cox", "p_logrank", "q_logrank", "hr_adj", "called"} <= set(
        table.columns
    )
    assert all("phenotype" in a.obs and "spatial_markers" in a.uns for a in adatas)
    with pytest.raises(ClinicalTableError, match="no row in the clinical table"):
        tl.discover(adatas, clin.iloc[:-1])


def test_cross_validated_concordance_is_nan_when_a_fold_cannot_be_scored(caplog):
    co = small_cohort(n=12, seed=0)  # 12 patients in 5 folds: some fold has no comparable pair
    with caplog.at_level(logging.WARNING, logger="workbench"):
        tl.survival(co, markers=["good"])
    cv = co.uns["survival_cv"]
    assert cv["c_index"].isna().any()
    assert "concordance is NaN" in caplog.text

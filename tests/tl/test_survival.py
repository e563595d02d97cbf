"""tl.survival: numbers against direct lifelines/scipy calls, honesty, the site guard, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError, MarkerError, tl
from workbench.tl._stats import benjamini_hochberg

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
    co = tl.aggregate(df[GBSG2_MARKERS], clinical, slide_key=None)
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
        co,
        covariates=["horTh", "tgrade"],
        categorical=["horTh", "tgrade"],
        cv_top=2,
        cv_folds=3,
        return_fitters=True,
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
    q = benjamini_hochberg([0.01, 0.04, 0.03, np.nan, 0.5])
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
    return tl.aggregate(values, clin, slide_key=None)


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


def test_cross_validated_concordance_is_nan_when_a_fold_cannot_be_scored(caplog):
    co = small_cohort(n=12, seed=0)  # 12 patients in 5 folds: some fold has no comparable pair
    with caplog.at_level(logging.WARNING, logger="workbench"):
        tl.survival(co, markers=["good"])
    cv = co.uns["survival_cv"]
    assert cv["c_index"].isna().any()
    assert "concordance is NaN" in caplog.text


def test_site_stratified_cox_and_site_test_match_lifelines_and_scipy_on_gbsg2(gbsg2):
    from lifelines import CoxPHFitter
    from scipy.stats import kruskal

    df, _ = gbsg2
    clinical = pd.DataFrame(
        {"patient_id": df.index, "time": df["time"].astype(float), "event": df["cens"],
         "tgrade": df["tgrade"].astype(str)}
    )  # fmt: skip
    co = tl.aggregate(df[GBSG2_MARKERS], clinical, slide_key=None, site_key="tgrade")
    table, fits = tl.survival(co, cv_top=0, return_fitters=True)  # site from uns["cohort"]
    assert co.uns["survival_screen_params"]["decided_by"] == "q_strat"
    for m in GBSG2_MARKERS:
        x = df[m].astype(float)
        d = pd.DataFrame({"time": df["time"], "cens": df["cens"], m: (x - x.mean()) / x.std(),
                          "g": df["tgrade"].astype(str)})  # fmt: skip
        s = CoxPHFitter().fit(d, "time", "cens", strata=["g"]).summary.loc[m]
        assert table.loc[m, "hr_strat"] == pytest.approx(s["exp(coef)"], rel=1e-6)
        assert table.loc[m, "p_strat"] == pytest.approx(s["p"], rel=1e-5)
        kw = kruskal(*[x[df["tgrade"] == g] for g in ("I", "II", "III")])
        assert table.loc[m, "p_site"] == pytest.approx(kw.pvalue, rel=1e-9)
        n, k = len(x), 3
        assert table.loc[m, "site_eta2"] == pytest.approx(max((kw.statistic - k + 1) / (n - k), 0))
    assert fits["stratified"]["pnodes"].strata == "tgrade"  # lifelines' own fitter
    np.testing.assert_array_equal(table["called"], table["q_strat"] < 0.05)
    # Progesterone receptor level differs by grade (a real biological association) but far
    # from "mostly": the flag needs more than half of the rank variance between sites.
    assert table.loc["progrec", "q_site"] < 0.05 and not table["mostly_site"].any()
    plain = tl.survival(co, cv_top=0, stratify_site=False, key_added="plain")
    assert "p_strat" not in plain and "p_site" in plain
    np.testing.assert_array_equal(plain["called"], plain["q_cox"] < 0.05)


def test_a_marker_that_is_mostly_site_is_flagged():
    rng = np.random.default_rng(1)
    n = 90
    site = np.repeat(["a", "b", "c"], 30)
    hazard = np.select([site == "a", site == "b"], [0.05, 0.1], 0.2)  # sites differ in outcome
    time = rng.exponential(1 / hazard)
    clin = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "time": time, "event": 1,
                         "site": site})  # fmt: skip
    values = pd.DataFrame(
        {"stain": np.select([site == "a", site == "b"], [0.0, 1.0], 2.0) + rng.normal(0, 0.2, n),
         "tissue": rng.normal(size=n)},
        index=clin["patient_id"],
    )  # fmt: skip
    co = tl.aggregate(values, clin, slide_key=None, site_key="site")
    naive = tl.survival(co, cv_top=0, stratify_site=False, key_added="naive")
    assert naive.loc["stain", "called"]  # a site detector looks prognostic without the guard
    table = tl.survival(co, cv_top=0)
    assert table.loc["stain", "mostly_site"] and table.loc["stain", "site_eta2"] > 0.8
    assert not table.loc["tissue", "mostly_site"]
    assert not table.loc["stain", "called"]  # within each site it carries nothing


def test_covariates_must_be_numeric_and_complete_unless_told():
    co = small_cohort(n=30, seed=2)
    co.obs["age"] = np.linspace(40, 80, 30)
    co.obs.loc["P3", "age"] = np.nan
    with pytest.raises(ClinicalTableError, match=r"'age' is missing for 1 patient\(s\) \(P3\)"):
        tl.survival(co, covariates=["age"], cv_top=0)
    table = tl.survival(co, covariates=["age"], dropna=True, cv_top=2, cv_folds=3)
    params = co.uns["survival_screen_params"]
    assert params["dropped_missing_covariates"] == ["P3"] and "P3" not in params["tested_patients"]
    assert np.isfinite(table.loc["good", "p_adj"])
    text = co.copy()
    text.obs["age"] = text.obs["age"].astype(object)
    text.obs.loc["P3", "age"] = "sixty"
    with pytest.raises(ClinicalTableError, match=r"'sixty' \(patient P3\).*categorical"):
        tl.survival(text, covariates=["age"], cv_top=0)


def test_screen_reports_families_when_the_cohort_has_them():
    co = small_cohort(n=40, seed=4)
    co.X[:, 1] = -2 * co.X[:, 0] + 0.01 * np.arange(40)  # "constant" becomes a complement
    co.var_names = ["good", "mirror", "holes"]
    tl.marker_families(co, threshold=0.7)
    table = tl.survival(co, cv_top=0)
    fams = co.uns["survival_families"]
    assert table.loc["mirror", "marker_family"] == table.loc["good", "marker_family"]
    assert len(fams) == 2 and fams["n_members"].sum() == 3
    both = fams.loc[table.loc["good", "marker_family"]]
    assert set(both["members"].split("; ")) == {"good", "mirror"}
    assert co.uns["survival_screen_params"]["families"] is True
    none = tl.survival(co, cv_top=0, families=False, key_added="no_families")
    assert "marker_family" not in none

"""tl.aggregate: patients x markers with the clinical table checked (rules: tests/io/test_clinical.py)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError, UnmatchedSlidesError, tl


def clinical(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "slide": [f"S{i}" for i in range(n)],
            "grade": [1, 2, 3, 1, 2, 3][:n],
            "time": [5.0, 10.0, 3.0, 8.0, 12.0, 1.0][:n],
            "event": [1, 0, 1, 1, 0, 1][:n],
        }
    )


def markers_by_slide(ids) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(len(ids), 3)), index=list(ids), columns=["m1", "m2", "m3"])


def test_cohort_aggregates_slides_per_patient():
    clin = clinical(4)
    extra = pd.DataFrame(
        {"patient_id": ["P0"], "slide": ["S9"], "grade": [1], "time": [5.0], "event": [1]}
    )
    clin = pd.concat([clin, extra], ignore_index=True)
    values = markers_by_slide(["S0", "S1", "S2", "S3", "S9"])
    co = tl.aggregate(values, clin)
    assert co.n_obs == 4 and list(co.var_names) == ["m1", "m2", "m3"]
    assert co.obs.loc["P0", "n_slides"] == 2 and co.obs.loc["P0", "slides"] == "S0;S9"
    np.testing.assert_allclose(co["P0"].X.ravel(), values.loc[["S0", "S9"]].mean().to_numpy())
    assert co.uns["cohort"]["n_slides"] == 5


def test_unmatched_ids_raise_by_count_and_name_or_drop_with_a_log(caplog):
    values = markers_by_slide(
        ["S0", "S1", "S2", "S3", "X1"]
    )  # X1 has no patient; S4, S5 no markers
    with pytest.raises(
        UnmatchedSlidesError,
        match=r"1 slide\(s\) of the slides given have no row.*X1.*2 clinical row\(s\) have no "
        r"slide among the slides given \('S4' \(row 5, patient P4\), 'S5' \(row 6, patient P5\)",
    ):
        tl.aggregate(values, clinical())
    with caplog.at_level(logging.WARNING, logger="workbench"):
        co = tl.aggregate(values, clinical(), on_unmatched="drop")
    assert co.n_obs == 4
    assert "left out 1 slide(s)" in caplog.text and "dropped 2 clinical row(s)" in caplog.text
    assert co.uns["cohort"]["dropped_slides"] == ["X1"]
    assert co.uns["cohort"]["dropped_rows"] == ["S4", "S5"]
    assert co.uns["cohort"]["dropped_patients"] == ["P4", "P5"]


def test_cohort_from_slides_reads_markers_and_marks_discovery_patients():
    from workbench.datasets import simulate_region_cohort

    adatas, clin = simulate_region_cohort(12, seed=2, n_regions=80)
    groups = ["a" if i % 2 else "b" for i in range(6)]
    tl.markers(
        adatas[:6],
        groups,
        n_phenotypes=2,
        k_range=(2, 3),
        apply_to=adatas[6:],
        max_regions_per_slide=40,
    )
    for a in adatas:
        tl.spatial(a, families=("direct",))
    co = tl.aggregate(adatas, clin)
    assert co.n_obs == 12
    assert set(co.var["family"]) == {
        "abundance",
        "lesion_share",
        "boundary_share",
        "boundary_density",
    }
    split = co.obs["discovery_split"]
    assert (split.iloc[:6] == "discovery").all() and (split.iloc[6:] == "validation").all()
    missing = [a.copy() for a in adatas[:2]]
    del missing[1].uns["spatial_markers"]
    with pytest.raises(ClinicalTableError, match="run tl.spatial"):
        tl.aggregate(missing, clin, on_unmatched="drop")


def test_cohort_records_site_and_categorical_and_drops_rows_left_out_by_dropna(caplog):
    clin = clinical().assign(
        site=["a", "a", "b", "b", "c", "c"], age=[50.0, np.nan, 60, 70, 55, 65]
    )
    values = markers_by_slide([f"S{i}" for i in range(6)])
    with pytest.raises(ClinicalTableError, match=r"'age' is missing for 1 patient\(s\) \(P1\)"):
        tl.aggregate(values, clin, covariates=["age"])
    with caplog.at_level(logging.WARNING, logger="workbench"):
        co = tl.aggregate(values, clin, covariates=["age", "grade"], categorical=["grade"],
                       dropna=True, site_key="site")  # fmt: skip
    assert co.n_obs == 5 and "P1" not in co.obs_names  # S1 went with its row, no unmatched error
    assert co.uns["cohort"]["site_key"] == "site"
    assert co.uns["cohort"]["categorical"] == ["grade"]
    assert co.obs["site"].tolist() == ["a", "b", "b", "c", "c"]
    assert "left out 1 patient(s)" in caplog.text


def test_auto_split_marks_only_slides_their_own_model_was_fitted_on():
    """With cross-fitted phenotypes (each slide scored by a model fitted on other slides)
    nobody is a discovery patient, although every slide took part in some fit."""
    from workbench.datasets import simulate_region_cohort

    adatas, clin = simulate_region_cohort(8, seed=3, n_regions=60)
    groups = ["a", "b"] * 2
    first = tl.FeatureUniqueness(n_phenotypes=2, k_range=(2, 3)).fit(adatas[:4], groups)
    second = tl.FeatureUniqueness(n_phenotypes=2, k_range=(2, 3)).fit(adatas[4:], groups)
    for a in adatas[:4]:
        second.transform(a)
    for a in adatas[4:]:
        first.transform(a)
    for a in adatas:
        tl.spatial(a, families=("direct",), min_regions=10)
    co = tl.aggregate(adatas, clin)
    assert "discovery_split" not in co.obs
    for a in adatas[:2]:
        first.transform(a)
        tl.spatial(a, families=("direct",), min_regions=10)
    co = tl.aggregate(adatas, clin)
    assert (co.obs["discovery_split"] == "discovery").sum() == 2


def test_cohort_from_a_csv_keeps_zero_padded_ids(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("patient_id,slide,time,event\n007,001,5,1\n7,002,8,0\n7,003,8,0\n")
    co = tl.aggregate(markers_by_slide(["001", "002", "003"]), path)
    assert sorted(co.obs_names) == ["007", "7"]
    assert co.obs.loc["7", "n_slides"] == 2 and co.obs.loc["007", "slides"] == "001"


def test_survival_names_infinite_and_all_zero_times():
    co = tl.aggregate(markers_by_slide(["S0", "S1", "S2", "S3", "S4", "S5"]), clinical())
    co.obs["time"] = [np.inf, 5.0, 3.0, 8.0, 12.0, 1.0]
    with pytest.raises(ClinicalTableError, match=r"has infinite times \(1 patient") as info:
        tl.survival(co)
    assert "NaN" not in str(info.value)
    co.obs["time"] = 0.0
    with pytest.raises(ClinicalTableError, match=r"every obs\['time'\] is 0: no follow-up"):
        tl.survival(co)


def test_cohort_is_the_old_name_of_aggregate_and_warns():
    values = markers_by_slide([f"S{i}" for i in range(6)])
    with pytest.warns(FutureWarning, match="tl.cohort is now tl.aggregate"):
        old = tl.cohort(values, clinical(), aggregate="max")
    new = tl.aggregate(values, clinical(), how="max")
    np.testing.assert_array_equal(old.X, new.X)
    assert old.uns["cohort"]["aggregate"] == "max"
    with pytest.raises(ValueError, match="how must be"):
        tl.aggregate(values, clinical(), how="sum")


def test_aggregate_takes_a_cohort_with_its_own_column_names(tmp_path):
    from workbench.io import Cohort

    table = clinical().rename(columns={"patient_id": "case", "slide": "image", "time": "months"})
    table["image"] = [f"slides/{s}.svs" for s in table["image"]]  # paths: ids by the one rule
    path = tmp_path / "c.csv"
    table.to_csv(path, index=False)
    keys = {"patient_key": "case", "slide_key": "image", "duration_key": "months"}
    cohort = Cohort.from_clinical(path, **keys)
    values = markers_by_slide([f"S{i}" for i in range(6)])
    co = tl.aggregate(values, cohort)
    assert co.obs_names.tolist() == [f"P{i}" for i in range(6)]
    assert co.uns["cohort"]["duration_key"] == "months" and co.obs["slides"].iloc[0] == "S0"
    same = tl.aggregate(values, path, **keys)  # a path with the same names: the same result
    np.testing.assert_array_equal(co.X, same.X)
    with pytest.raises(ClinicalTableError, match="no 'slide' column.*--slide-key"):
        tl.aggregate(values, path)


def test_a_table_without_survival_is_named():
    with pytest.raises(ClinicalTableError, match=r"misses column\(s\) \['time', 'event'\]"):
        tl.aggregate(markers_by_slide(["S0", "S1"]), clinical(2).drop(columns=["time", "event"]))

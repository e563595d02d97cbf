"""tl.validate_clinical / tl.cohort: every bad table gets a ClinicalTableError naming the rows."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError, tl


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


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns=["time"]), r"misses column\(s\) \['time'\]"),
        (lambda d: d.assign(time=[5.0, np.nan, 3.0, 8.0, 12.0, 1.0]), r"1 missing 'time'.*P1"),
        (lambda d: d.assign(time=[5.0, -1.0, 3.0, 8.0, -2.0, 1.0]), r"2 negative 'time'.*P1, P4"),
        (lambda d: d.assign(time=["5", "x", 3, 8, 12, 1]), r"non-numeric 'time'.*P1"),
        (lambda d: d.assign(event=[1, 2, 0, 0, 0, 0]), r"not 0/1.*P1"),
        (lambda d: d.assign(event=0), "no events"),
        (
            lambda d: d.assign(slide=["S0", "S0", "S2", "S3", "S4", "S5"]),
            r"slide\(s\) listed more than once \(S0\)",
        ),
        (
            lambda d: d.assign(patient_id=["P0", "P0", "P2", "P3", "P4", "P5"]),
            r"disagree on 'time'/'event' \(P0\)",
        ),
    ],
)
def test_validate_clinical_names_the_problem(edit, message):
    with pytest.raises(ClinicalTableError, match=message):
        tl.validate_clinical(edit(clinical()))


def test_validate_clinical_reads_csv_and_cleans_types(tmp_path):
    path = tmp_path / "clinical.csv"
    clinical().assign(event=[True, False, True, True, False, True]).to_csv(path, index=False)
    df = tl.validate_clinical(path)
    assert df["event"].tolist() == [1, 0, 1, 1, 0, 1]
    assert df["time"].dtype == float
    with pytest.raises(ClinicalTableError, match="cannot read"):
        tl.validate_clinical(tmp_path / "missing.csv")


def test_cohort_aggregates_slides_per_patient():
    clin = clinical(4)
    extra = pd.DataFrame(
        {"patient_id": ["P0"], "slide": ["S9"], "grade": [1], "time": [5.0], "event": [1]}
    )
    clin = pd.concat([clin, extra], ignore_index=True)
    values = markers_by_slide(["S0", "S1", "S2", "S3", "S9"])
    co = tl.cohort(values, clin)
    assert co.n_obs == 4 and list(co.var_names) == ["m1", "m2", "m3"]
    assert co.obs.loc["P0", "n_slides"] == 2 and co.obs.loc["P0", "slides"] == "S0;S9"
    np.testing.assert_allclose(co["P0"].X.ravel(), values.loc[["S0", "S9"]].mean().to_numpy())
    assert co.uns["cohort"]["n_slides"] == 5


def test_unmatched_ids_raise_by_count_and_name_or_drop_with_a_log(caplog):
    values = markers_by_slide(
        ["S0", "S1", "S2", "S3", "X1"]
    )  # X1 has no patient; S4, S5 no markers
    with pytest.raises(
        ClinicalTableError,
        match=r"1 slide\(s\) have no row.*X1.*2 patient\(s\) have no slide.*P4, P5",
    ):
        tl.cohort(values, clinical())
    with caplog.at_level(logging.WARNING, logger="workbench"):
        co = tl.cohort(values, clinical(), on_unmatched="drop")
    assert co.n_obs == 4
    assert "dropped 1 slide(s)" in caplog.text and "dropped 2 patient(s)" in caplog.text
    assert co.uns["cohort"]["dropped_slides"] == ["X1"]
    assert co.uns["cohort"]["dropped_patients"] == ["P4", "P5"]


def test_cohort_from_slides_reads_markers_and_marks_discovery_patients():
    from workbench.tl._simulate import simulate_region_cohort

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
    co = tl.cohort(adatas, clin)
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
        tl.cohort(missing, clin, on_unmatched="drop")

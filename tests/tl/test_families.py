"""tl.marker_families / family_screen: synonyms grouped, named, and tested once."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import tl
from workbench.tl._families import family_screen
from workbench.tl._stats import benjamini_hochberg, simes


def cohort_of(values: pd.DataFrame, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(values)
    clin = pd.DataFrame(
        {"patient_id": values.index, "time": rng.exponential(10, n), "event": rng.integers(0, 2, n)}
    )
    clin.loc[0, "event"] = 1
    return tl.aggregate(values, clin, slide_key=None)


@pytest.fixture
def markers() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 60
    immune = rng.uniform(0, 0.4, n)
    adipose = rng.uniform(0, 0.1, n)
    other = rng.normal(size=n)
    return pd.DataFrame(
        {
            # The same signal seen three ways: the immune share of the margin, its
            # compositional complement (stroma) and a co-occurrence ratio that follows it.
            "cooc:phenotype_2|lesion@250um": 1 + 2 * immune + rng.normal(0, 0.02, n),
            "boundary_density:phenotype_1": 1 - immune - adipose,
            "boundary_density:phenotype_2": immune,
            # Unrelated markers.
            "moran:phenotype_3": other,
            "ripley_L:phenotype_4": rng.normal(size=n),
            "abundance:phenotype_4": np.full(n, 0.3),  # constant: a family of its own
        },
        index=[f"P{i}" for i in range(n)],
    )


def test_complements_and_synonyms_form_one_family_named_by_the_plainest_member(markers, caplog):
    co = cohort_of(markers)
    with caplog.at_level(logging.INFO, logger="workbench"):
        table = tl.marker_families(co, threshold=0.7)
    fam = table["family"]
    planted = ["cooc:phenotype_2|lesion@250um", "boundary_density:phenotype_1",
               "boundary_density:phenotype_2"]  # fmt: skip
    assert fam[planted].nunique() == 1
    # Two margin densities tie on kind; the one more central in the family names it.
    assert fam[planted[0]] in ("boundary_density:phenotype_1", "boundary_density:phenotype_2")
    assert table.loc[fam[planted[0]], "representative"]
    assert (
        table.loc["boundary_density:phenotype_1", "rho"]
        * table.loc["boundary_density:phenotype_2", "rho"]
        < 0
    )  # complements: opposite signs with the representative
    for m in ("moran:phenotype_3", "ripley_L:phenotype_4", "abundance:phenotype_4"):
        assert fam[m] == m and table.loc[m, "n_members"] == 1
    assert co.var.loc[planted, "marker_family"].nunique() == 1
    stored = co.uns["marker_families"]
    assert stored["params"]["patients"] == "all" and stored["params"]["threshold"] == 0.7
    assert stored["correlation"].shape == (5, 5)  # the constant marker is not correlated
    assert "6 markers in 4 families" in caplog.text


def test_threshold_one_keeps_every_marker_alone_and_discovery_patients_are_used(markers):
    co = cohort_of(markers)
    assert tl.marker_families(co, threshold=1.0)["n_members"].eq(1).all()
    co.obs["discovery_split"] = pd.Categorical(
        ["discovery"] * 30 + ["validation"] * 30, categories=["discovery", "validation"]
    )
    tl.marker_families(co)
    assert co.uns["marker_families"]["params"]["patients"] == "discovery"
    assert co.uns["marker_families"]["params"]["n_patients"] == 30
    with pytest.raises(ValueError, match="threshold"):
        tl.marker_families(co, threshold=0)
    with pytest.raises(KeyError, match="unknown marker"):
        tl.marker_families(co, markers=["nope"])


def test_kind_order_names_the_family():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    values = pd.DataFrame(
        {"ripley_L:p": x + rng.normal(0, 0.05, 40), "abundance:p": x, "moran:p": 2 * x},
        index=[f"P{i}" for i in range(40)],
    )
    table = tl.marker_families(cohort_of(values))
    assert set(table["family"]) == {"abundance:p"}


def test_simes_by_hand():
    assert simes([0.01, 0.04, 0.03, np.nan]) == pytest.approx(min(3 * 0.01, 1.5 * 0.03, 0.04))
    assert simes([0.2, 0.2, 0.2]) == pytest.approx(0.2)  # agreeing members: no penalty
    assert simes([0.001, 0.9, 0.9, 0.9]) == pytest.approx(0.004)  # one standing out: Bonferroni
    assert np.isnan(simes([np.nan]))


def test_family_screen_one_row_per_family_with_bh_across_families():
    screen = pd.DataFrame(
        {"p_cox": [0.001, 0.004, 0.2, 0.03, np.nan], "hr": [0.5, 1.8, 1.1, 0.7, np.nan],
         "hr_lower": 0.1, "hr_upper": 2.0},
        index=["a", "b", "c", "d", "e"],
    )  # fmt: skip
    members = pd.DataFrame({"family": ["a", "a", "c", "d", "e"]}, index=list("abcde"))
    fams = family_screen(screen, members, fdr=0.05)
    assert list(fams.index) == ["a", "d", "c", "e"]
    assert fams.loc["a", "best"] == "a" and fams.loc["a", "members"] == "a; b"
    assert fams.loc["a", "p_family"] == pytest.approx(min(2 * 0.001, 0.004))
    p = [0.002, 0.03, 0.2]
    np.testing.assert_allclose(fams["q_family"].iloc[:3], benjamini_hochberg(p))
    assert fams.loc["e", "n_tested"] == 0 and np.isnan(fams.loc["e", "p_family"])
    assert list(fams["called"]) == [True, True, False, False]

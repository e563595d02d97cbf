"""pl.kaplan_meier / pl.forest read what tl.survival wrote."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from workbench import pl, tl


@pytest.fixture(scope="module")
def screened():
    rng = np.random.default_rng(0)
    n = 60
    risk = rng.normal(size=n)
    time = rng.exponential(10 * np.exp(-risk))
    clin = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "time": time, "event": 1})
    values = pd.DataFrame({"risk": risk, "noise": rng.normal(size=n)}, index=clin["patient_id"])
    co = tl.aggregate(values, clin, slide_key=None)
    co.obs["discovery_split"] = pd.Categorical(["discovery"] * 20 + ["validation"] * 40)
    tl.survival(co, cv_top=0)
    return co


def test_kaplan_meier_uses_the_screened_patients(screened):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert pl.kaplan_meier(screened, "risk", ax=ax) is ax
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["above median (n=20)", "at or below median (n=20)"]  # 40 validation
    q = screened.uns["survival_screen"].loc["risk", "q_logrank"]
    assert f"q={q:.2g}" in ax.get_title()
    plt.close(fig)
    ax = pl.kaplan_meier(screened)  # default: the top marker
    assert ax.get_title().startswith("risk")
    plt.close(ax.figure)


def test_kaplan_meier_shows_numbers_at_risk_and_the_time_unit(screened):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    pl.kaplan_meier(screened, "risk", ax=ax, time_unit="months")
    assert ax.get_xlabel() == "time (months)"
    extra = [a for a in fig.axes if a is not ax]
    assert len(extra) == 1  # lifelines' at-risk table: the tick labels of a twin x axis
    first = extra[0].get_xticklabels()[0].get_text()
    assert "At risk" in first and "above median" in first and "at or below median" in first
    counts = [int(v) for v in first.split() if v.isdigit()]
    assert counts == [20, 20]  # everyone is at risk at time 0 (40 validation patients)
    plt.close(fig)
    fig, ax = plt.subplots()
    pl.kaplan_meier(screened, "risk", ax=ax, at_risk=False)
    assert fig.axes == [ax] and ax.get_xlabel() == "time"  # no unit recorded: none invented
    plt.close(fig)


def test_forest_draws_one_interval_per_marker(screened):
    import matplotlib.pyplot as plt

    ax = pl.forest(screened)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == 2 and ticks[0].startswith("risk")  # top of the plot = smallest p
    assert ax.get_xscale() == "log"
    plt.close(ax.figure)
    with pytest.raises(KeyError, match="tl.survival"):
        pl.forest(
            tl.aggregate(
                pd.DataFrame({"m": [1.0, 2.0]}, index=["a", "b"]),
                pd.DataFrame({"patient_id": ["a", "b"], "time": [1.0, 2.0], "event": [1, 0]}),
                slide_key=None,
            )
        )


@pytest.fixture(scope="module")
def screened_sites():
    rng = np.random.default_rng(2)
    n = 90
    site = np.repeat(["a", "b", "c"], 30)
    risk = rng.normal(size=n)
    time = rng.exponential(10 * np.exp(-risk - np.select([site == "a"], [1.0], 0.0)))
    clin = pd.DataFrame(
        {"patient_id": [f"P{i}" for i in range(n)], "time": time, "event": 1, "site": site}
    )
    values = pd.DataFrame(
        {
            "risk": risk,
            "risk_mirror": -risk + rng.normal(0, 0.05, n),
            "stain": (site == "a") + rng.normal(0, 0.05, n),
            "noise": rng.normal(size=n),
        },
        index=clin["patient_id"],
    )
    co = tl.aggregate(values, clin, slide_key=None, site_key="site")
    tl.marker_families(co, threshold=0.7)
    tl.survival(co, cv_top=0)
    return co


def test_forest_draws_one_row_per_family_and_marks_site_markers(screened_sites):
    import matplotlib.pyplot as plt

    co = screened_sites
    fams = co.uns["survival_families"]
    ax = pl.forest(co)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == len(fams) == 3
    top = fams.index[0]
    assert ticks[0].startswith(f"{top} +1") and f"q={fams['q_family'].iloc[0]:.2g}" in ticks[0]
    site_row = [t for t in ticks if t.startswith("stain")]
    assert site_row and "[site]" in site_row[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mostly site" in legend and "called" in legend
    assert "stratified by site" in ax.get_xlabel()
    # The stratified hazard ratio of the best member is what is drawn.
    best = fams.loc[top, "best"]
    xs = [float(line.get_xdata()[0]) for line in ax.lines if len(line.get_xdata()) == 1]
    assert any(np.isclose(x, co.uns["survival_screen"].loc[best, "hr_strat"]) for x in xs)
    plt.close(ax.figure)
    ax = pl.forest(co, families=False)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == 4 and any("[site]" in t for t in ticks)
    plt.close(ax.figure)


def test_kaplan_meier_defaults_to_the_best_member_of_the_top_family(screened_sites):
    import matplotlib.pyplot as plt

    ax = pl.kaplan_meier(screened_sites)
    best = screened_sites.uns["survival_families"]["best"].iloc[0]
    assert ax.get_title().startswith(best)
    plt.close(ax.figure)
    plain = screened_sites.copy()
    tl.survival(plain, cv_top=0, families=False, key_added="plain")
    with pytest.raises(KeyError, match="marker_families"):
        pl.forest(plain, key="plain", families=True)
    assert pl.kaplan_meier(plain, key="plain").get_title().startswith(plain.uns["plain"].index[0])

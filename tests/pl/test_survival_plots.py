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
    co = tl.cohort(values, clin, slide_key=None)
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


def test_forest_draws_one_interval_per_marker(screened):
    import matplotlib.pyplot as plt

    ax = pl.forest(screened)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == 2 and ticks[0].startswith("risk")  # top of the plot = smallest p
    assert ax.get_xscale() == "log"
    plt.close(ax.figure)
    with pytest.raises(KeyError, match="tl.survival"):
        pl.forest(
            tl.cohort(
                pd.DataFrame({"m": [1.0, 2.0]}, index=["a", "b"]),
                pd.DataFrame({"patient_id": ["a", "b"], "time": [1.0, 2.0], "event": [1, 0]}),
                slide_key=None,
            )
        )

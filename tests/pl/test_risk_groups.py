from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from workbench import ClinicalTableError, OptionError  # noqa: E402
from workbench.pl import risk_group_cuts, risk_groups  # noqa: E402


def _at_risk(ax) -> dict[str, int]:
    """Numbers at risk at time 0 per group, read off lifelines' at-risk table."""
    others = [a for a in ax.figure.axes if a is not ax]
    assert others, "no at-risk table drawn"
    first = [t.get_text() for t in others[0].get_xticklabels() if "At risk" in t.get_text()]
    assert first
    return {m[0].strip(): int(m[1]) for m in re.findall(r"([a-z ]+risk)\s+(\d+)", first[0])}


@pytest.fixture
def held_out():
    risk = np.arange(10.0)  # held-out median 4.5 would split 5 / 5
    time = np.arange(10.0, 0.0, -1.0)  # higher risk, shorter survival
    event = np.ones(10)
    return risk, time, event


def test_cut_points_come_from_the_training_risks(held_out):
    train = np.arange(4.0, 12.0)  # training median 7.5: only risks 8 and 9 are high
    assert np.allclose(risk_group_cuts(train), [7.5])
    ax = risk_groups(*held_out, train_risk=train, time_unit="months")
    assert _at_risk(ax) == {"low risk": 8, "high risk": 2}  # not the held-out 5 / 5
    assert [ln.get_label() for ln in ax.get_lines()] == ["low risk", "high risk"]
    assert "log-rank p = " in ax.get_title() and "training risks" in ax.get_title()
    assert ax.get_xlabel() == "time (months)"
    plt.close(ax.figure)


def test_high_risk_curve_is_the_higher_risk_group(held_out):
    risk, time, event = held_out
    ax = risk_groups(risk, time, event, train_risk=risk + 0.0)
    high = next(ln for ln in ax.get_lines() if ln.get_label() == "high risk")
    low = next(ln for ln in ax.get_lines() if ln.get_label() == "low risk")
    # The high-risk patients (risk 5..9) die at times 1..5: their curve reaches 0 by t = 5.
    assert np.asarray(high.get_xdata())[np.asarray(high.get_ydata()) == 0].min() <= 5
    assert np.asarray(low.get_ydata())[np.asarray(low.get_xdata()) <= 5].min() == 1.0
    plt.close(ax.figure)


def test_tertiles_give_three_groups(held_out):
    ax = risk_groups(*held_out, train_risk=np.arange(12.0), groups=3)
    counts = _at_risk(ax)
    # Training tertiles 3.67 and 7.33: 0..3 low, 4..7 intermediate, 8..9 high.
    assert counts == {"low risk": 4, "intermediate risk": 4, "high risk": 2}
    plt.close(ax.figure)


def test_oof_table_cuts_each_fold_on_the_other_folds():
    oof = pd.DataFrame(
        {
            "patient": [f"P{i}" for i in range(8)],
            "time": [8, 7, 6, 5, 4, 3, 2, 1],
            "event": [1, 0, 1, 1, 1, 1, 0, 1],
            # fold 0 scores high overall; fold 1 low: fold-own medians would split each 2 / 2
            "risk": [10.0, 11.0, 12.0, 13.0, 0.0, 1.0, 2.0, 3.0],
            "fold": [0, 0, 0, 0, 1, 1, 1, 1],
        }
    )
    ax = risk_groups(data=oof)
    # Fold 0 cut at fold 1's median (1.5): all high; fold 1 cut at 11.5: all low.
    assert _at_risk(ax) == {"low risk": 4, "high risk": 4}
    assert "other folds" in ax.get_title()
    plt.close(ax.figure)
    per_fold = {0: [12.0, 12.5, 13.0], 1: [2.0, 2.5, 3.0]}  # medians 12.5 and 2.5
    ax = risk_groups(data=oof, train_risk=per_fold)
    assert _at_risk(ax) == {"low risk": 6, "high risk": 2}  # 3 + 1 in each fold
    plt.close(ax.figure)


def test_no_training_risks_and_no_folds_is_refused(held_out):
    with pytest.raises(OptionError, match="never cuts on the held-out"):
        risk_groups(*held_out)


def test_bad_input_raises_specific_errors(held_out):
    risk, time, event = held_out
    with pytest.raises(OptionError, match="groups"):
        risk_groups(risk, time, event, train_risk=risk, groups=4)
    with pytest.raises(OptionError, match="length"):
        risk_groups(risk[:5], time, event, train_risk=risk)
    with pytest.raises(ClinicalTableError, match="0 \\(censored\\)"):
        risk_groups(risk, time, event * 2, train_risk=risk)
    with pytest.raises(ClinicalTableError, match="non-negative"):
        risk_groups(risk, -time, event, train_risk=risk)
    with pytest.raises(OptionError, match="column"):
        risk_groups(data=pd.DataFrame({"risk": risk}), train_risk=risk)
    with pytest.raises(OptionError, match="fold 1"):
        frame = pd.DataFrame({"risk": risk, "time": time, "event": event, "fold": [0, 1] * 5})
        risk_groups(data=frame, train_risk={0: risk})


def test_uses_given_axes(held_out):
    fig, ax = plt.subplots()
    assert risk_groups(*held_out, train_risk=held_out[0], ax=ax, at_risk=False) is ax
    assert len(fig.axes) == 1  # no at-risk table asked for
    plt.close(fig)

"""The planted hazard model: lifelines recovers it, and finds nothing under the null."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.datasets import HazardModel, simulate_patients, simulate_survival

lifelines = pytest.importorskip("lifelines")


def _fit(table):
    frame = table[["time", "event", "grade", "infiltration", "age"]].copy()
    frame["infiltration_sd"] = (frame.pop("infiltration") - 0.5) / (0.9 / math.sqrt(12))
    return lifelines.CoxPHFitter().fit(frame, "time", "event").summary


def test_lifelines_cox_recovers_planted_infiltration_and_grade_effects():
    model = HazardModel()
    summary = _fit(simulate_patients(800, seed=1))
    inf = summary.loc["infiltration_sd"]
    assert inf["coef"] < 0 and inf["coef upper 95%"] < 0  # protective, clearly
    assert inf["coef"] == pytest.approx(model.log_hr_infiltration, abs=0.15)
    grade = summary.loc["grade"]
    assert grade["coef lower 95%"] > 0
    assert grade["coef"] == pytest.approx(model.log_hr_grade, abs=0.2)


def test_lifelines_cox_finds_no_image_effect_under_the_null():
    summary = _fit(simulate_patients(800, seed=1, null=True))
    for name in ("infiltration_sd", "grade"):
        row = summary.loc[name]
        assert row["p"] > 0.05, name
        assert abs(row["coef"]) < 0.15, name


def test_event_rate_and_censoring():
    table = simulate_patients(2000, seed=3)
    assert 0.5 <= table["event"].mean() <= 0.7
    assert table["time"].max() <= HazardModel().admin_time
    assert (table["time"] > 0).all()


def test_grades_are_balanced_and_draws_are_deterministic():
    a = simulate_patients(30, seed=9)
    b = simulate_patients(30, seed=9)
    assert a.equals(b)
    assert a["grade"].value_counts().to_dict() == {1: 10, 2: 10, 3: 10}
    assert not a.equals(simulate_patients(30, seed=10))


def test_simulate_survival_uses_the_documented_linear_predictor():
    out = simulate_survival([1, 2, 3], [0.5, 0.5, 0.95], [60, 60, 60], seed=0)
    z = (0.95 - 0.5) / (0.9 / math.sqrt(12))
    expected = [-math.log(2), 0.0, math.log(2) + math.log(0.55) * z]
    np.testing.assert_allclose(out["linear_predictor"], expected, atol=1e-12)
    null = simulate_survival([1, 3], [0.1, 0.9], [60, 60], seed=0, null=True)
    np.testing.assert_allclose(null["linear_predictor"], [0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="same length"):
        simulate_survival([1, 2], [0.5], [60, 60])

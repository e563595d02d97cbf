"""benchmarks/ebhi_calibration.py: log-odds figures, the seed ensemble and the val-only choice."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ebhi_calibration")


def test_nll_and_temperature_agree_with_the_package_on_moderate_log_odds(bench):
    from workbench.tl import fit_temperature
    from workbench.tl._calibration import nll_at_temperature

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    m = (2 * y - 1) * rng.gamma(2.0, 3.0, 40) + rng.normal(0, 3, 40)
    z = np.column_stack([np.zeros_like(m), m])
    assert bench.nll(y, m) == pytest.approx(nll_at_temperature(z, y))
    assert bench.temperature(y, m)["temperature"] == fit_temperature(z, y).temperature
    # a saturated slide stays exact: log-odds 800 for a negative costs 800 nats, not log(1e-12)
    assert bench.nll([0], [800.0]) == pytest.approx(800.0)


def test_ensemble_is_the_mean_probability_even_for_saturated_members(bench):
    from scipy.special import expit, logit

    M = np.array([[2.0, -1.0, 0.3], [-0.5, -3.0, 4.0]])
    np.testing.assert_allclose(
        bench.ensemble_logodds(M), logit(expit(M).mean(0)), rtol=1e-10, atol=1e-12
    )
    # members at log-odds 60 and 80: the mean probability is 1 - (e^-60 + e^-80)/2 in float64
    # terms 1.0, but its log-odds are finite, ~ 60 + log 2
    big = bench.ensemble_logodds(np.array([[60.0], [80.0]]))[0]
    assert big == pytest.approx(60 + np.log(2), abs=1e-6)


def _model_rows(eps: float, seed: int, rng) -> dict:
    y_val = [0, 1] * 5
    y_test = [0, 1] * 8
    scale = 12.0 if eps == 0 else 3.0  # the unsmoothed model is the over-confident one
    return {
        "section": "calibration_v2",
        "kind": "model",
        "encoder": "crc_biopsy",
        "epochs": 20,
        "seed": seed,
        "label_smoothing": eps,
        "val_labels": y_val,
        "val_logodds": [scale * ((2 * v - 1) * 0.5 + rng.normal(0, 0.6)) for v in y_val],
        "test_labels": y_test,
        "test_logodds": [scale * ((2 * v - 1) * 0.3 + rng.normal(0, 0.6)) for v in y_test],
    }


def test_summary_chooses_the_smoothing_on_val_and_scores_the_ensemble(bench, tmp_path):
    rng = np.random.default_rng(1)
    out = tmp_path / "cal.jsonl"
    rows = [_model_rows(e, s, rng) for e in (0.0, 0.2) for s in (0, 1)]
    rows.append({**_model_rows(0.3, 0, rng)})  # one seed only: not a candidate
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Args:
        encoder, epochs, seeds, n_boot = "crc_biopsy", 20, [0, 1], 100

    Args.out = str(out)
    lines = bench.summarise(Args)
    assert {(x["label_smoothing"], x["what"].split(":")[0]) for x in lines} == {
        (0.0, "single models (one per seed)"),
        (0.0, "ensemble"),
        (0.2, "single models (one per seed)"),
        (0.2, "ensemble"),
    }
    val_nll = {
        e: np.mean([bench.nll(r["val_labels"], r["val_logodds"]) for r in rows[:4]
                    if r["label_smoothing"] == e])
        for e in (0.0, 0.2)
    }  # fmt: skip
    best = min(val_nll, key=val_nll.get)
    for x in lines:
        assert x["val_chose_this_smoothing"] == (x["label_smoothing"] == best)
        assert x["val_nll_mean"] == pytest.approx(val_nll[x["label_smoothing"]])
    single = next(x for x in lines if x["label_smoothing"] == 0.0 and x["what"].startswith("s"))
    ys = rows[0]["test_labels"]
    assert single["ece_raw_mean"] == pytest.approx(
        np.mean([bench.figures(ys, r["test_logodds"])["ece"] for r in rows[:2]])
    )
    lo, hi = single["auc_ci95"]
    assert 0 <= lo <= hi <= 1
    # the val temperature softens the over-confident model: T > 1 and a lower test NLL
    assert all(t > 1 for t in single["val_temperatures"])
    assert single["nll_val_T_mean"] < single["nll_raw_mean"]
    ens = next(x for x in lines if x["label_smoothing"] == 0.0 and x["what"].startswith("e"))
    expected = bench.figures(ys, bench.ensemble_logodds([r["test_logodds"] for r in rows[:2]]))[
        "ece"
    ]
    assert ens["ece_raw"] == pytest.approx(expected)
    # written to the file as well
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["section"] == "calibration_v2_summary" for r in written) == 4


def test_cv_summary_applies_each_seeds_out_of_fold_temperature(bench, tmp_path):
    rng = np.random.default_rng(2)
    y = [0, 1] * 8
    rows = []
    for seed, t in ((0, 4.0), (1, 2.0)):
        rows.append({"section": "calibration_v2", "kind": "cv", "encoder": "crc_biopsy",
                     "epochs": 20, "folds": 5, "seed": seed, "label_smoothing": 0.0,
                     "n_cases": 95, "temperature_oof": t, "temperature_oof_train_cases": 1.0,
                     "temperature_oof_val_cases": 3.0, "oof_auc_train_cases": 1.0,
                     "oof_auc_val_cases": 0.9, "cv_summary": {"auc": 0.95},
                     "final_model": {"epochs": 12}, "test_labels": y,
                     "test_logodds": [10 * (v - 0.5) + rng.normal(0, 6) for v in y]})  # fmt: skip
    out = tmp_path / "cv.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Args:
        encoder, epochs, seeds, n_boot = "crc_biopsy", 20, [0, 1], 50

    line, ens = bench._cv_summary(out, Args)
    expected = np.mean(
        [bench.figures(y, np.asarray(r["test_logodds"]) / r["temperature_oof"])["ece"]
         for r in rows]
    )  # fmt: skip
    assert line["ece_oof_T_mean"] == pytest.approx(expected)
    assert line["ece_oof_T_mean"] != pytest.approx(line["ece_raw_mean"])
    assert line["temperatures_oof"] == [4.0, 2.0] and line["final_epochs"] == [12, 12]
    # the seeds' final models averaged, each divided by its own temperature
    m = bench.ensemble_logodds([np.asarray(r["test_logodds"]) / r["temperature_oof"] for r in rows])
    assert ens["what"].startswith("ensemble") and ens["ece"] == pytest.approx(
        bench.figures(y, m)["ece"]
    )

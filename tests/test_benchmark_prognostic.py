"""benchmarks/prognostic.py: a tiny run end to end, and the focus bookkeeping it reports."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def prognostic(load_benchmark):
    return load_benchmark("prognostic")


def test_points_are_placed_on_the_planted_band_and_decoy(prognostic):
    """A point inside the layout's boundary band counts as boundary, one in the necrosis as
    decoy; the shares are pooled over slides by region count."""
    from workbench.datasets._layout import build_layout

    lay = build_layout(2048, 1536, grade=3, infiltration=0.8, seed=21)
    ds = lay.downsample
    band = np.argwhere(lay.band_mask & ~lay.necrosis_mask)[0]
    outside = np.argwhere(~lay.band_mask & ~lay.necrosis_mask)[0]
    xy = np.array([[band[1] * ds + 1, band[0] * ds + 1], [outside[1] * ds + 1, outside[0] * ds]])
    on_band, on_decoy = prognostic.where_points(lay, xy)
    assert on_band.tolist() == [True, False] and on_decoy.tolist() == [False, False]
    if lay.necrosis_mask.any():
        nec = np.argwhere(lay.necrosis_mask)[0]
        _, d = prognostic.where_points(lay, [[nec[1] * ds, nec[0] * ds]])
        assert d.tolist() == [True]
    counts = [
        {"focus": 4, "focus_band": 4, "focus_decoy": 0, "regions": 10, "regions_band": 2,
         "regions_decoy": 1, "has_decoy": True},
        {"focus": 4, "focus_band": 2, "focus_decoy": 1, "regions": 30, "regions_band": 3,
         "regions_decoy": 0, "has_decoy": False},
    ]  # fmt: skip
    rec = prognostic.focus_record(counts)
    assert rec["focus_on_boundary"] == 0.75 and rec["focus_on_decoy"] == 0.125
    assert rec["chance_on_boundary"] == 0.125 and rec["chance_on_decoy"] == 0.025
    assert rec["n_slides_with_decoy"] == 1 and rec["focus_on_decoy_slides_with_decoy"] == 0.0


@pytest.mark.slow
def test_tiny_run_writes_every_model_and_the_summary(prognostic, tmp_path):
    """Smoke configuration: 30 small slides (1536 x 1152), one seed, two folds, one epoch, one null cohort.
    Every model gets a line on the same folds; the oracle Cox on the true covariates is well
    above chance on the planted cohort; the summary lines read the file back."""
    out = tmp_path / "prognostic.jsonl"
    lines = prognostic.main(
        ["--work", str(tmp_path / "work"), "--n-patients", "30", "--size", "1536,1152",
         "--seeds", "0", "--folds", "2", "--epochs", "1", "--validation", "0.34",
         "--null-seeds", "0", "--focus-slides", "2", "--time-slides", "1", "--n-boot", "20",
         "--out", str(out)]
    )  # fmt: skip
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert written[0]["event"] == "cohort" and written[0]["n_patients"] == 30
    planted = {r["model"]: r for r in written if r.get("cohort") == "planted"}
    assert set(planted) == {"oracle", "clinical", "sew", "global", "abmil"}
    for r in planted.values():
        lo, hi = r["harrell_c_ci"]
        assert 0 <= lo <= r["harrell_c"] <= hi <= 1 and len(r["fold_harrell_c"]) == 2
    assert planted["oracle"]["harrell_c"] > 0.6
    for kind in ("sew", "global", "abmil"):
        r = planted[kind]
        assert r["extract_seconds_per_slide"] > 0 and r["epochs"] == [1, 1]
        assert 0 <= r["focus"]["focus_on_boundary"] <= 1 and r["focus"]["n_focus"] >= 1
    assert planted["sew"]["focus"]["n_slides"] == 2
    null = [r for r in written if r.get("cohort") == "null"]
    assert {r["model"] for r in null} == {"clinical", "sew"}
    summary = {r["summary"]: r for r in lines if "summary" in r}
    assert {"planted", "targets", "null"} <= set(summary)
    assert summary["null"]["n_null_seeds"] == 1 and summary["null"]["covers_half"] in (0, 1)
    assert "c_at_least_oracle_minus_0.05" in summary["targets"]


@pytest.mark.slow
def test_tiny_mosaic_run_trains_on_one_side_and_tests_on_the_other(prognostic, real_data, tmp_path):
    """The real-tissue part: 10 survival mosaics per side (split by source image), SEW and
    ABMIL trained on the train side for one epoch, scored on the test side, timed."""
    import os

    os.environ.setdefault("WORKBENCH_REAL_DATA", str(real_data))
    out = tmp_path / "prognostic.jsonl"
    prognostic.main(
        ["--work", str(tmp_path / "work"), "--parts", "mosaic", "summary", "--mosaic-n", "10",
         "--seeds", "0", "--epochs", "1", "--validation", "0.34", "--time-slides", "1",
         "--n-boot", "20", "--out", str(out)]
    )  # fmt: skip
    written = [json.loads(x) for x in out.read_text().splitlines()]
    lines = {r["model"]: r for r in written if r.get("cohort") == "mosaic"}
    assert set(lines) == {"oracle", "clinical", "sew", "abmil"}
    for r in lines.values():
        assert r["n_train"] == r["n_test"] == 10 and 0 <= r["harrell_c"] <= 1
    assert lines["sew"]["extract_seconds_per_slide"] > 0 and lines["abmil"]["epochs"] >= 1
    targets = [r for r in written if r.get("summary") == "mosaic_targets"]
    assert len(targets) == 1 and "abmil_over_sew_extract_time" in targets[0]


def _focus(boundary, decoy, n=8):
    return {"n_slides": 2, "n_focus": n, "focus_on_boundary": boundary, "focus_on_decoy": decoy,
            "chance_on_boundary": 0.2, "chance_on_decoy": 0.03}  # fmt: skip


def test_risk_focus_rule_is_chosen_on_validation_focus_and_null_focus_is_summarised(
    prognostic, tmp_path
):
    """The summary chooses the ``risk_focus`` rule by the validation patients' focus (boundary
    minus decoy), never by the test folds' (here the test figures would pick the other rule),
    and reports where each network's focus lands on the null cohorts."""
    rows = []
    for seed in (0, 1):
        for model, val, test in (("sew_raise", (0.3, 0.0), (0.9, 0.0)),
                                 ("sew_two_sided", (0.7, 0.1), (0.5, 0.0))):  # fmt: skip
            rows.append({"bench": "prognostic", "cohort": "planted", "model": model, "seed": seed,
                         "harrell_c": 0.6, "harrell_c_ci": [0.5, 0.7],
                         "harrell_c_mean_of_folds": 0.65, "uno_c_mean_of_folds": 0.64,
                         "focus": _focus(*test), "focus_validation": _focus(*val),
                         "validation_harrell_c": [0.6, 0.7]})  # fmt: skip
        rows.append({"bench": "prognostic", "cohort": "null", "model": "sew_two_sided",
                     "seed": seed, "harrell_c": 0.5, "harrell_c_ci": [0.4, 0.6],
                     "covers_half": seed == 0, "focus": _focus(0.6, 0.0, n=4)})  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = prognostic.summary(path, None)
    choice = [x for x in lines if x.get("summary") == "risk_focus_choice"]
    assert len(choice) == 1 and choice[0]["chosen"] == "two-sided"
    assert choice[0]["best_focus"] == "two-sided" and choice[0]["best_c"] in ("raise", "two-sided")
    assert choice[0]["validation"]["raise"]["focus_on_boundary"] == 0.3
    assert choice[0]["test"]["raise"]["focus_on_boundary"] == 0.9
    assert choice[0]["validation"]["two-sided"]["harrell_c"] == 0.65
    null = [x for x in lines if x.get("summary") == "null"]
    assert [x["model"] for x in null] == ["sew_two_sided"]
    assert null[0]["covers_half"] == 1 and null[0]["focus"]["n_focus"] == 8
    assert null[0]["focus"]["focus_on_boundary"] == 0.6
    targets = {x["model"]: x for x in lines if x.get("summary") == "targets"}
    assert set(targets) == {"sew_raise", "sew_two_sided"}
    assert targets["sew_raise"]["focus_on_boundary_at_least_0.8"]  # 0.9 on the test folds
    # a rule whose validation C is more than 0.02 below the best is not chosen for its focus
    for r in rows:
        if r.get("model") == "sew_two_sided" and r["cohort"] == "planted":
            r["validation_harrell_c"] = [0.6, 0.62]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    choice = [x for x in prognostic.summary(path, None) if x.get("summary") == "risk_focus_choice"]
    assert choice[0]["best_focus"] == "two-sided" and choice[0]["best_c"] == "raise"
    assert choice[0]["chosen"] == "raise"

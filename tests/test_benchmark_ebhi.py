"""benchmarks/ebhi_cohort.py: the calibration error, intervals and summary it reports."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ebhi_cohort")


def test_ece_matches_a_hand_computation(bench):
    from workbench.tl import expected_calibration_error

    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.2, 0.6, 0.4])
    # positive-class probabilities in ten bins of width 0.1, one slide each:
    # 0.9 (positive): |1 - 0.9|, 0.2 (negative): |0 - 0.2|, 0.6: |1 - 0.6|, 0.4: |1 - 0.4|
    expected = 0.25 * (0.1 + 0.2 + 0.4 + 0.6)
    assert bench.ece(y, p) == pytest.approx(expected)
    assert bench.ece(y, p) == expected_calibration_error(y, p)  # the project's one definition
    assert bench.ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_summary_pools_seeds_with_intervals(bench):
    y = np.array([0, 0, 1, 1, 1, 0])
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        p = np.clip(np.array([0.1, 0.3, 0.8, 0.7, 0.4, 0.2]) + shift, 0, 1)
        rows.append({"seed": seed, "epochs": 2, "probabilities": p.tolist(),
                     **bench._metrics(y, p), "infer_seconds_per_slide_median": 1.0,
                     "train_seconds": 3.0, "focus_hits": {"a": [1, 0], "b": [1, 1]},
                     "focus_chance": 0.4, "focus_node_auc": 0.6})  # fmt: skip

    class Args:
        encoder, annotations = "texture", False

    s = bench.summarise("sew", rows, y, Args)
    assert s["auc_mean"] == pytest.approx(np.mean([r["auc"] for r in rows]))
    lo, hi = s["auc_ci95"]
    assert 0.0 <= lo <= s["auc_mean"] <= hi <= 1.0
    assert s["focus_in_lesion_mean"] == pytest.approx(0.75)
    assert s["focus_chance"] == 0.4 and s["seeds"] == [0, 1]


def test_summary_pools_the_confirmed_focus_at_centres_peaks_and_darkest_spots(bench):
    y = np.array([0, 1, 1])
    rows = []
    for seed in (0, 1):
        p = np.array([0.2, 0.7, 0.9])
        rows.append({"seed": seed, "epochs": 2, "probabilities": p.tolist(),
                     **bench._metrics(y, p), "infer_seconds_per_slide_median": 1.0,
                     "train_seconds": 3.0, "focus_hits": {"a": [0, 0], "b": [0, 1]},
                     "focus_chance": 0.5, "confirm_by": "evidence",
                     "focus_hits_confirm24": {"a": [1, 0], "b": [1, 1]}, "confirm24_auc": 1.0,
                     "val_focus_in_lesion_confirm24": 0.5,
                     "focus_hits_confirm24_peak": {"a": [1, 1], "b": [1, seed]},
                     "val_focus_in_lesion_confirm24_peak": 0.25 + 0.5 * seed,
                     "focus_hits_confirm24_darkest": {"a": [1, 1], "b": [1, 1]}})  # fmt: skip

    class Args:
        encoder, annotations = "crc_biopsy", False

    s = bench.summarise("sew", rows, y, Args)
    assert s["confirm_by"] == "evidence"
    assert s["focus_in_lesion_mean"] == pytest.approx(0.25)
    assert s["focus_in_lesion_confirm24_mean"] == pytest.approx(0.75)
    assert s["focus_in_lesion_confirm24_peak_mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert s["val_focus_in_lesion_confirm24_peak_mean"] == pytest.approx(0.5)
    assert s["focus_in_lesion_confirm24_darkest_mean"] == 1.0
    assert "confirm24_peak_auc_mean" not in s


def test_darkest_points_find_the_dark_spot_of_each_crop_in_level0(bench):
    import anndata as ad

    crops = np.full((2, 60, 60, 3), 230, np.uint8)
    crops[0, 40:50, 5:15] = 40  # a dark 10-px square, rows 40-49, cols 5-14
    crops[1, 0:8, 50:60] = 40
    a = ad.AnnData(np.zeros((2, 1), np.float32))
    boxes = np.array([[100.0, 200.0, 120.0, 120.0], [0.0, 0.0, 60.0, 60.0]])
    a.uns["explain"] = {"focus": {"crops": crops, "boxes_xywh": boxes}}
    xy = bench.darkest_points(a)
    # inside the square, at 2 level-0 px per crop px from (100, 200)
    assert 100 + 5 * 2 <= xy[0, 0] <= 100 + 15 * 2 and 200 + 40 * 2 <= xy[0, 1] <= 200 + 50 * 2
    assert 50 <= xy[1, 0] <= 60 and 0 <= xy[1, 1] <= 8


def test_rule_hits_keep_the_focus_top_k_or_the_best_of_the_first_m_proposals(bench):
    p = {
        "center": np.array([0, 0, 0, 0, 1, 1, 0, 1]),
        "peak": np.array([1, 0, 0, 0, 1, 1, 1, 1]),
        "darkest": np.ones(8, int),
        "lesion": np.array([0.9, 0.8, 0.1, 0.1, 0.2, 0.3, 0.0, 0.95]),
        "evidence": np.array([1.0, 0.0, 0.0, 0.0, 5.0, 4.0, 3.0, 9.0]),
    }
    assert bench.rule_hits(p, "focus", 4, k=2) == {"center": 0.0, "peak": 0.5, "darkest": 1.0}
    # the best two of the first six by evidence: proposals 4 and 5 (7 lies beyond M)
    assert bench.rule_hits(p, "evidence", 6, k=2) == {"center": 1.0, "peak": 1.0, "darkest": 1.0}
    # by the lesion answer among all eight: proposals 7 and 0
    assert bench.rule_hits(p, "lesion", 8, k=2)["center"] == 0.5

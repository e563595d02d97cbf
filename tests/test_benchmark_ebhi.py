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

"""models.evidence_peaks: the window-averaged maximum of each evidence map and where it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from workbench.models import evidence_peaks


def test_a_wide_patch_beats_a_brighter_single_pixel():
    maps = torch.zeros(1, 30, 30)
    maps[0, 2, 25] = 10.0  # one bright pixel: averaged over 5x5 it is 0.4
    maps[0, 19:24, 5:10] = 1.0  # a 5x5 patch of 1.0 centred at (21, 7)
    peak = evidence_peaks(maps)  # window = 30 // 6 = 5
    assert (int(peak["row"][0]), int(peak["col"][0])) == (21, 7)
    assert float(peak["value"][0]) == pytest.approx(1.0)
    # without averaging the single pixel wins
    raw = evidence_peaks(maps, window=1)
    assert (int(raw["row"][0]), int(raw["col"][0])) == (2, 25)


def test_matches_scipy_uniform_filter_with_repeated_edges_independent_reference():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 24, 36)).cumsum(axis=2)
    peak = evidence_peaks(torch.from_numpy(maps))
    for i, m in enumerate(maps):
        f = uniform_filter(m, 7, mode="nearest")  # 36 // 6 = 6 -> made odd: 7
        r, c = np.unravel_index(np.argmax(f), f.shape)
        assert (int(peak["row"][i]), int(peak["col"][i])) == (r, c)
        assert float(peak["value"][i]) == pytest.approx(f[r, c], abs=1e-5)


def test_empty_and_bad_input():
    out = evidence_peaks(torch.zeros(0, 8, 8))
    assert out["value"].shape == out["row"].shape == (0,)
    with pytest.raises(ValueError, match="B, H, W"):
        evidence_peaks(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="at least 1"):
        evidence_peaks(torch.zeros(1, 8, 8), window=0)

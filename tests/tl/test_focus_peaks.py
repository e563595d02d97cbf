"""tl.focus_peaks and focus_in_mask(at="peak"): where in each focus crop the lesion is."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from workbench import OptionError
from workbench.tl import focus_in_mask, focus_peaks


class _Encoder:
    """Evidence that peaks in a 10-px square at a known place of each crop."""

    def __init__(self, where):
        self.where = where

    def evidence_maps(self, images):
        b, _, h, w = images.shape
        out = torch.zeros(b, h, w)
        for i, (r, c) in enumerate(self.where):
            out[i, r : r + 10, c : c + 10] = 5.0
        return out


def test_the_peak_lands_where_the_evidence_is_in_level0_coordinates():
    crops = np.zeros((2, 60, 60, 3), np.uint8)
    boxes = np.array([[100.0, 200.0, 120.0, 120.0], [0.0, 0.0, 60.0, 60.0]])  # 2x and 1x
    peaks, source = focus_peaks(_Encoder([(40, 5), (0, 50)]), crops, boxes)
    assert source == "encoder"
    # crop 0: square rows 40-49, cols 5-14 at 2 level-0 px per crop px, from (100, 200)
    np.testing.assert_allclose(peaks[0], [100 + 10 * 2, 200 + 45 * 2], atol=2 * 2)
    # crop 1: square rows 0-9, cols 50-59 at the crop's edge: a point inside it
    assert 50 <= peaks[1, 0] <= 60 and 0 <= peaks[1, 1] <= 10


def test_lesion_maps_serve_when_the_encoder_has_no_evidence_and_none_without_either():
    crops = np.zeros((1, 30, 30, 3), np.uint8)
    boxes = np.array([[0.0, 0.0, 30.0, 30.0]])
    maps = np.zeros((1, 30, 30))
    maps[0, 20:30, 0:10] = 1.0
    peaks, source = focus_peaks(None, crops, boxes, maps)
    assert source == "lesion_map" and peaks[0, 0] < 10 and peaks[0, 1] > 20
    assert focus_peaks(None, crops, boxes, np.full((1, 1, 1), np.nan)) is None
    assert focus_peaks(None, crops[:0], boxes[:0]) is None


def _explained(centers, peaks=None):
    a = ad.AnnData(np.zeros((2, 1), np.float32))
    focus = {"centers_xy": np.asarray(centers, float)}
    if peaks is not None:
        focus["peak_xy"] = np.asarray(peaks, float)
    a.uns["explain"] = {"focus": focus}
    return a


def test_focus_in_mask_reads_centres_or_peaks():
    mask = np.zeros((10, 10), bool)
    mask[:5, :5] = True  # level-0 [0, 50) at downsample 10
    a = _explained([[70, 70], [20, 20]], peaks=[[20, 30], [80, 80]])
    assert focus_in_mask(a, mask, 10).tolist() == [False, True]
    assert focus_in_mask(a, mask, 10, at="peak").tolist() == [True, False]
    with pytest.raises(OptionError, match="'center' or 'peak'"):
        focus_in_mask(a, mask, 10, at="middle")
    with pytest.raises(OptionError, match="run tl.extract again"):
        focus_in_mask(_explained([[0, 0], [1, 1]]), mask, 10, at="peak")

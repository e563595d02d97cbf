from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from workbench import OptionError
from workbench.pp import Preprocessing, StainNormalizer


def test_defaults_are_the_settings_models_were_trained_with():
    # the defaults checkpoints recorded before the dataclass (tl._engine's former dict)
    pre = Preprocessing().to_dict()
    assert pre == {
        "thumbnail_mpp": 8.0,
        "thumbnail_max_px": 1280,
        "n_segments": 1500,
        "detail_mpp": 0.5,
        "crop_size": 256,
        "min_tissue": 0.5,
        "stain": None,
    }


def test_frozen_and_round_trips_through_json():
    pre = Preprocessing(n_segments=300, thumbnail_max_px=None, detail_mpp=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pre.n_segments = 10  # type: ignore[misc]
    back = Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre and back.thumbnail_max_px is None
    assert isinstance(back.detail_mpp, float) and back.detail_mpp == 2.0


def test_numbers_are_normalised_to_the_field_type():
    pre = Preprocessing(crop_size=np.int64(64), n_segments=60.0, min_tissue=np.float32(0.25))
    assert type(pre.crop_size) is int and type(pre.n_segments) is int
    assert type(pre.min_tissue) is float and pre.min_tissue == 0.25


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_segments": 1}, r"n_segments must be a whole number from 2 to 1000000"),
        ({"n_segments": 30.5}, r"n_segments must be a whole number"),
        ({"crop_size": True}, r"crop_size must be a whole number from 8 to 8192.*got True"),
        ({"thumbnail_mpp": 0}, r"thumbnail_mpp must be a number in \(0.001, 1000\]"),
        ({"thumbnail_mpp": float("nan")}, r"thumbnail_mpp must be"),
        ({"detail_mpp": "0.5"}, r"detail_mpp must be a number in \(0.001, 1000\].*got '0.5'"),
        ({"min_tissue": 1.5}, r"min_tissue must be a number in \[0, 1\]"),
        ({"thumbnail_max_px": 10}, r"thumbnail_max_px must be a whole number from 64 to 65536 or None"),
        ({"crop_size": None}, r"crop_size must be a whole number from 8 to 8192 \("),
        ({"stain": "macenko"}, r"stain must be None, a fitted pp.StainNormalizer or its to_dict"),
    ],
)  # fmt: skip
def test_out_of_range_values_are_refused_naming_the_field_and_range(changes, message):
    with pytest.raises(OptionError, match=message):
        Preprocessing(**changes)


def test_edges_of_the_ranges_are_accepted():
    pre = Preprocessing(n_segments=2, crop_size=8, min_tissue=0.0, thumbnail_max_px=64)
    assert (pre.n_segments, pre.crop_size, pre.min_tissue) == (2, 8, 0.0)
    assert Preprocessing(min_tissue=1, thumbnail_mpp=1000).thumbnail_mpp == 1000.0


def test_unknown_keys_are_refused_listing_the_valid_names():
    with pytest.raises(OptionError, match=r"unknown preprocessing setting\(s\) 'n_segment'.*"
                       r"thumbnail_mpp, thumbnail_max_px, n_segments, detail_mpp, crop_size, "
                       r"min_tissue, stain"):  # fmt: skip
        Preprocessing.from_dict({"n_segment": 10})
    with pytest.raises(OptionError, match="must be a dict"):
        Preprocessing.from_dict([("n_segments", 10)])


def test_stain_keeps_a_fitted_normaliser_as_its_dict(he_like_image):
    norm = StainNormalizer("reinhard").fit(he_like_image)
    pre = Preprocessing(stain=norm)
    assert pre.stain == norm.to_dict()
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    back = StainNormalizer.from_dict(pre.to_dict()["stain"])
    np.testing.assert_allclose(back.transform(he_like_image), norm.transform(he_like_image))
    # to_dict hands out a copy: the frozen settings cannot be changed through it
    pre.to_dict()["stain"]["method"] = "macenko"
    assert pre.stain["method"] == "reinhard"


def test_describe_gives_meaning_range_and_default():
    assert Preprocessing.describe("n_segments") == (
        "SLIC superpixels over the tissue (region-graph nodes); a whole number from 2 to "
        "1000000; default 1500"
    )
    with pytest.raises(OptionError, match="unknown preprocessing setting 'x'; the settings are"):
        Preprocessing.describe("x")
    assert Preprocessing.names()[0] == "thumbnail_mpp" and "stain" in Preprocessing.names()

from __future__ import annotations

import warnings

import numpy as np
import pytest

from workbench import InvalidImageError, NotBrightfieldWarning, WorkbenchError
from workbench.io import Slide
from workbench.pp import BrightfieldCheck, check_brightfield


def _fluorescence(rng, channel: int = 2) -> np.ndarray:
    """Black background with bright nuclei in one channel, as a DAPI thumbnail looks."""
    img = np.zeros((200, 240, 3), np.uint8)
    rows, cols = np.mgrid[0:200, 0:240]
    for r, c in rng.uniform(10, 190, (60, 2)):
        img[(rows - r) ** 2 + (cols - c) ** 2 < 25, channel] = 220
    return img


def test_he_like_thumbnail_passes(he_like_image):
    result = check_brightfield(he_like_image)
    assert isinstance(result, BrightfieldCheck) and result and result.looks_like_he
    assert result.reasons == () and result.reason == "looks like brightfield H&E"
    assert result.green_lowest_fraction > 0.9 and 0.2 < result.tissue_fraction < 0.8


def test_synthetic_fluorescence_fails_on_two_counts_and_warns_when_asked():
    rng = np.random.default_rng(0)
    img = _fluorescence(rng)
    result = check_brightfield(img)
    assert not result and len(result.reasons) == 2
    assert "black" in result.reasons[0] and "blue channel carries" in result.reasons[1]
    assert result.dominant_channel == "blue" and result.dominant_share > 0.9
    with pytest.warns(NotBrightfieldWarning, match="S7 does not look like brightfield H&E"):
        check_brightfield(img, name="S7", warn=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_brightfield(img)  # no warning unless asked


def test_dark_but_coloured_brightfield_is_not_mistaken_for_fluorescence():
    # dense purple tissue filling the whole view: dark, yet every pixel lets light through
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal((70, 35, 95), 12, (128, 128, 3)), 0, 255).astype(np.uint8)
    assert check_brightfield(img).looks_like_he


def test_greyscale_and_brown_tissue_are_flagged(he_like_image):
    grey = np.repeat(he_like_image.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert "no colour" in check_brightfield(grey).reason
    dab = he_like_image.copy()
    tissue = he_like_image.mean(axis=2) < 220
    dab[tissue] = (150, 100, 60)  # brown: blue, not green, is the weakest channel
    assert "IHC/DAB" in check_brightfield(dab).reason


def test_a_slide_can_be_passed_directly(he_like_image):
    assert check_brightfield(Slide.from_array(he_like_image, mpp=8.0)).looks_like_he


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10), np.uint8), "shape"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_raise(bad, match):
    with pytest.raises(InvalidImageError, match=match) as info:
        check_brightfield(bad)
    assert isinstance(info.value, WorkbenchError)


@pytest.mark.realdata
def test_shared_dapi_slide_is_flagged_and_he_slides_pass(real_data):
    slides = real_data / "slides"
    with Slide(slides / "hamamatsu-dapi-7-levels.ndpi") as s:
        dapi = check_brightfield(s.thumbnail(max_size=512))
    assert not dapi and dapi.dominant_channel == "blue" and dapi.black_fraction > 0.6
    for name in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):
        with Slide(slides / name) as s:
            result = check_brightfield(s)
        assert result.looks_like_he, (name, result.reason)


@pytest.mark.realdata
def test_every_shared_he_tile_passes(real_data):
    from PIL import Image

    paths = sorted((real_data / "tiles").glob("*/*/*.*"))
    paths = [p for p in paths if p.suffix.lower() in (".tif", ".png", ".jpg")]
    assert paths
    failed = []
    for p in paths:
        result = check_brightfield(np.asarray(Image.open(p).convert("RGB")))
        if not result:
            failed.append((p.name, result.reason))
    assert failed == []

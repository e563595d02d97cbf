from __future__ import annotations

import numpy as np
import pytest

from workbench.pp import augment_stain


def _he_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((32, 32, 3), 255, np.uint8)
    img[8:24, 8:24] = (180, 90, 160)  # pink-purple tissue
    img[12:16, 12:16] = (60, 40, 120)  # a dark nucleus
    return np.clip(img + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)


def test_augment_stain_without_jitter_is_the_identity_within_rounding():
    img = _he_like()
    out = augment_stain(img, sigma=0.0, bias=0.0, rng=0)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.abs(out.astype(int) - img).max() <= 1


def test_augment_stain_changes_tissue_keeps_glass_and_input():
    img = _he_like()
    before = img.copy()
    out = augment_stain(img, sigma=0.2, bias=0.05, rng=3)
    assert np.array_equal(img, before)  # input untouched
    assert np.abs(out[8:24, 8:24].astype(int) - img[8:24, 8:24]).mean() > 2
    # near-white glass stays near white
    assert np.abs(out[:4, :4].astype(int) - img[:4, :4]).max() <= 3
    assert np.array_equal(out, augment_stain(img, sigma=0.2, bias=0.05, rng=3))  # seeded


def test_augment_stain_rejects_bad_input():
    with pytest.raises(ValueError, match="RGB"):
        augment_stain(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="sigma"):
        augment_stain(_he_like(), sigma=-1)

from __future__ import annotations

import numpy as np
import pytest

from workbench import NoTissueError
from workbench.pp import detect_tissue, optical_density


def test_detects_the_tissue_disc(he_like_image):
    mask = detect_tissue(he_like_image)
    rows, cols = np.mgrid[0:384, 0:512]
    truth = (rows - 192) ** 2 + (cols - 200) ** 2 < 150**2
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95
    assert he_like_image.flags.writeable and he_like_image[0, 0, 0] > 200  # input untouched


def test_blank_glass_gives_empty_mask_or_error():
    glass = np.full((100, 100, 3), 242, np.uint8)
    assert not detect_tissue(glass).any()
    with pytest.raises(NoTissueError, match="no tissue"):
        detect_tissue(glass, raise_if_empty=True)


def test_all_tissue_image_is_not_split_in_two():
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal((200, 120, 170), 20, (80, 80, 3)), 0, 255).astype(np.uint8)
    assert detect_tissue(img).mean() > 0.95


def test_grey_dust_is_not_tissue(he_like_image):
    img = he_like_image.copy()
    img[20:40, 420:440] = 200  # grey, unsaturated smudge on glass
    assert not detect_tissue(img)[20:40, 420:440].any()


def test_optical_density_bounds():
    od = optical_density(np.array([[[255, 0, 128]]], np.uint8))
    assert od[0, 0, 0] == pytest.approx(0.0) and od[0, 0, 1] == pytest.approx(np.log10(256))
    with pytest.raises(ValueError, match="RGB"):
        optical_density(np.zeros((4, 4)))


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name,lo,hi",
    [("CMU-1-Small-Region.svs", 0.25, 0.6), ("tcga-cr-7395-01a-01-ts1.svs", 0.5, 0.8)],
)
def test_real_slides_tissue_fraction(real_data, name, lo, hi):
    from workbench.io import Slide

    mask = detect_tissue(Slide(real_data / "slides" / name).thumbnail(max_size=512))
    assert lo < mask.mean() < hi


def test_fine_resolution_with_many_dark_nuclei_is_still_all_tissue():
    # At ~1 µm/px nuclei are blobs of their own colour; the threshold must still separate
    # tissue from glass rather than nuclei from stroma.
    rng = np.random.default_rng(2)
    img = np.full((1024, 1024, 3), 244, np.float64)
    img[:, 400:] = (222, 156, 192)  # stroma on the right
    rows, cols = np.mgrid[0:1024, 0:1024]
    for r, c in zip(rng.integers(0, 1024, 2500), rng.integers(400, 1024, 2500), strict=True):
        img[(rows - r) ** 2 + (cols - c) ** 2 < 49] = (70, 30, 110)  # dark nuclei
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    mask = detect_tissue(img)
    assert mask[:, 440:].mean() > 0.95
    assert mask[:, :360].mean() < 0.02


def test_optical_density_table_matches_the_formula():
    rgb = np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, axis=2)
    expected = -np.log10((rgb.astype(np.float64) + 1.0) / 256.0)
    np.testing.assert_allclose(optical_density(rgb), expected, rtol=1e-6)
    np.testing.assert_allclose(optical_density(rgb.astype(np.float32)), expected, rtol=1e-6)


def test_fast_morphology_matches_scikit_image():
    """The closing and the removal of small pieces/holes are skimage's, done faster."""
    from scipy import ndimage
    from skimage import morphology

    from workbench.pp._tissue import _binary_closing, _drop_small_pieces

    rng = np.random.default_rng(0)
    for i in range(120):
        h, w = rng.integers(1, 8, 2) if i < 40 else rng.integers(8, 90, 2)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        if i % 2:  # blobs with holes rather than salt and pepper
            m = ndimage.gaussian_filter(m.astype(float), rng.uniform(0.5, 3.0)) > 0.5
        r, k = int(rng.integers(1, 5)), int(rng.integers(1, 40))
        assert np.array_equal(_binary_closing(m, r), morphology.closing(m, morphology.disk(r)))
        assert np.array_equal(
            _drop_small_pieces(m, k), morphology.remove_small_objects(m, max_size=k)
        )
        assert np.array_equal(
            ~_drop_small_pieces(~m, k), morphology.remove_small_holes(m, max_size=k)
        )

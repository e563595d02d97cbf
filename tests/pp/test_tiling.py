from __future__ import annotations

import numpy as np
import pytest

from workbench import MissingResolutionError
from workbench.io import Slide
from workbench.pp import tile_tissue


@pytest.fixture
def half_tissue() -> Slide:
    img = np.full((1024, 1024, 3), 245, np.uint8)
    img[:, :512] = (200, 110, 170)  # left half is tissue
    return Slide.from_array(img, mpp=0.5)


def test_tiles_cover_tissue_only(half_tissue):
    a = tile_tissue(half_tissue, mpp=1.0, tile_size=128, min_tissue=0.5)
    # 1024 level-0 px at 0.5 µm = 512 µm; tiles of 128 px at 1 µm = 256 level-0 px: 4x4 grid
    assert a.uns["tiling"]["grid_shape"] == [4, 4]
    assert a.n_obs == 8
    assert set(a.obs["col"]) == {0, 1}
    np.testing.assert_allclose(a.obs["tissue_fraction"], 1.0, atol=0.02)
    np.testing.assert_allclose(a.obsm["spatial"][:, 0] - a.obs["x"], 128.0)
    tile = half_tissue.read_region((a.obs["x"].iloc[0], a.obs["y"].iloc[0]), (128, 128), mpp=1.0)
    assert tile.shape == (128, 128, 3) and tile.mean() < 200


def test_min_tissue_zero_keeps_every_tile_and_level_mode(half_tissue):
    assert tile_tissue(half_tissue, mpp=1.0, tile_size=128, min_tissue=0).n_obs == 16
    a = tile_tissue(half_tissue, level=1, tile_size=128)
    assert a.uns["tiling"]["tile_size_level0"] == 256.0 and a.n_obs == 8


def test_tiling_errors(half_tissue):
    with pytest.raises(ValueError, match="exactly one"):
        tile_tissue(half_tissue)
    with pytest.raises(ValueError, match="min_tissue"):
        tile_tissue(half_tissue, mpp=1.0, min_tissue=2)
    no_mpp = Slide.from_array(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(MissingResolutionError):
        tile_tissue(no_mpp, mpp=1.0)


def test_default_mask_follows_the_tile_grid_and_agrees_with_a_fine_one():
    rng = np.random.default_rng(3)
    img = np.full((4096, 3072, 3), 244, np.uint8)
    rows, cols = np.mgrid[0:4096, 0:3072]
    blob = (rows - 1900) ** 2 / 1500**2 + (cols - 1400) ** 2 / 1100**2 < 1
    img[blob] = np.clip(rng.normal((205, 120, 175), 12, (int(blob.sum()), 3)), 0, 255)
    slide = Slide.from_array(img, mpp=0.5)
    quick = tile_tissue(slide, mpp=0.5, tile_size=256)
    # 16 x 12 tiles, 8 mask pixels per tile side, but never under 256 on the long side
    assert quick.uns["tiling"]["mask_shape"] == [256, 192]
    fine = tile_tissue(slide, mpp=0.5, tile_size=256, mask_px_per_tile=64)
    assert fine.uns["tiling"]["mask_shape"] == [1024, 768]
    a = quick.obs.set_index(["col", "row"])["tissue_fraction"]
    b = fine.obs.set_index(["col", "row"])["tissue_fraction"]
    assert abs(len(a) - len(b)) <= 2
    common = a.index.intersection(b.index)
    assert len(common) >= 0.95 * len(b)
    np.testing.assert_allclose(a[common], b[common], atol=0.1)


def test_a_small_pyramidal_slide_uses_its_8_um_level_as_the_mask(tmp_path, write_pyramid_tiff):
    rng = np.random.default_rng(5)
    img = np.full((2304, 3072, 3), 244, np.uint8)
    rows, cols = np.mgrid[0:2304, 0:3072]
    blob = (rows - 1100) ** 2 / 800**2 + (cols - 1500) ** 2 / 1200**2 < 1
    img[blob] = np.clip(rng.normal((205, 120, 175), 12, (int(blob.sum()), 3)), 0, 255)
    with Slide(write_pyramid_tiff(tmp_path / "s.tif", img, mpp=0.5)) as slide:
        assert (192, 144) in slide.info.level_dimensions  # 16x: 8 µm/px
        quick = tile_tissue(slide, mpp=0.5, tile_size=256)
        # 12 x 9 tiles need 96 px; the stored 192-px level (8 µm/px) is used, not 256 px
        assert quick.uns["tiling"]["mask_shape"] == [144, 192]
        fine = tile_tissue(slide, mpp=0.5, tile_size=256, mask_px_per_tile=64)
        a = quick.obs.set_index(["col", "row"])["tissue_fraction"]
        b = fine.obs.set_index(["col", "row"])["tissue_fraction"]
        assert abs(len(a) - len(b)) <= 1 and len(b) > 20
        common = a.index.intersection(b.index)
        np.testing.assert_allclose(a[common], b[common], atol=0.15)
        # more mask pixels per tile than the level has: the usual size
        assert tile_tissue(slide, mpp=0.5, mask_px_per_tile=32).uns["tiling"]["mask_shape"] == [
            288,
            384,
        ]
    # the same pixels at 1 µm/px: the 192-px level is 16 µm/px, too coarse; 256 px as before
    with Slide(write_pyramid_tiff(tmp_path / "t.tif", img, mpp=1.0)) as slide:
        assert tile_tissue(slide, mpp=0.5).uns["tiling"]["mask_shape"] == [192, 256]

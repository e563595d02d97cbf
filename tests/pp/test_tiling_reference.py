"""The tile grid stays the same when tissue detection and tiling get faster.

The expected grids were computed with the code before the speed-up (issue #26) and are stored
here: (col, row) of every kept tile on deterministic synthetic slides written as lossless
(zlib) TIFFs, one pyramidal and one single-level, and the level-0 corners on the real
CMU-1-Small-Region slide (skipped without the shared data).
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.io import Slide
from workbench.io._slide import _resize
from workbench.pp import detect_tissue, tile_tissue

#: (slide, tile size) -> (sum of tissue fractions, "col:row ..." of the kept tiles)
EXPECTED = {
    ("pyramid", 256): (
        60.262,
        "5:1 6:1 3:2 4:2 5:2 6:2 7:2 8:2 2:3 3:3 4:3 5:3 6:3 7:3 8:3 9:3 2:4 3:4 4:4 5:4 6:4 "
        "7:4 8:4 9:4 2:5 3:5 4:5 5:5 7:5 8:5 9:5 10:5 2:6 3:6 4:6 5:6 6:6 7:6 8:6 9:6 12:6 "
        "2:7 3:7 4:7 5:7 6:7 7:7 8:7 9:7 11:7 12:7 13:7 3:8 4:8 5:8 6:8 7:8 8:8 11:8 12:8 "
        "13:8 11:9 12:9 13:9 12:10 ",
    ),
    ("pyramid", 224): (
        80.878,
        "4:2 5:2 6:2 7:2 8:2 9:2 3:3 4:3 5:3 6:3 7:3 8:3 9:3 10:3 2:4 3:4 4:4 5:4 6:4 7:4 8:4 "
        "9:4 10:4 11:4 2:5 3:5 4:5 5:5 6:5 8:5 9:5 10:5 11:5 2:6 3:6 4:6 5:6 6:6 8:6 9:6 10:6 "
        "11:6 2:7 3:7 4:7 5:7 6:7 7:7 8:7 9:7 10:7 11:7 13:7 14:7 3:8 4:8 5:8 6:8 7:8 8:8 9:8 "
        "10:8 12:8 13:8 14:8 15:8 4:9 5:9 6:9 7:9 8:9 9:9 12:9 13:9 14:9 15:9 5:10 6:10 7:10 "
        "12:10 13:10 14:10 15:10 13:11 14:11 15:11 ",
    ),
    ("single", 256): (
        15.001,
        "1:1 2:1 3:1 4:1 1:2 2:2 3:2 4:2 1:3 2:3 3:3 4:3 5:3 6:3 2:4 3:4 5:4 6:4 ",
    ),
    ("single", 224): (
        18.57,
        "2:1 3:1 4:1 1:2 2:2 3:2 4:2 5:2 1:3 2:3 3:3 4:3 5:3 2:4 3:4 4:4 6:4 7:4 6:5 7:5 ",
    ),
}

#: tile size -> "x:y ..." level-0 corners of the kept tiles on CMU-1-Small-Region.svs
EXPECTED_CMU1 = {
    256: (
        "1026:257 1026:513 1283:513 770:770 1026:770 1283:770 770:1026 1026:1026 1283:1026 "
        "1539:1026 770:1283 1026:1283 1283:1283 1539:1283 770:1539 1026:1539 1283:1539 "
        "770:1796 1026:1796 1283:1796 1539:1796 770:2052 1026:2052 1283:2052 1539:2052 "
        "770:2309 1026:2309 1283:2309 1539:2309 513:2565 770:2565 1026:2565 1283:2565 "
        "1539:2565 513:2822 770:2822 1026:2822 1283:2822 "
    ),
    224: (
        "898:224 1122:224 898:449 1347:449 898:673 1122:673 1347:673 898:898 1122:898 "
        "1347:898 1571:898 898:1122 1122:1122 1347:1122 1571:1122 898:1347 1122:1347 "
        "1347:1347 1571:1347 898:1571 1122:1571 1347:1571 673:1796 898:1796 1122:1796 "
        "1347:1796 1571:1796 673:2020 898:2020 1122:2020 1347:2020 1571:2020 673:2244 "
        "898:2244 1122:2244 1347:2244 1571:2244 673:2469 898:2469 1122:2469 1347:2469 "
        "1571:2469 449:2693 673:2693 898:2693 1122:2693 1347:2693 1571:2693 "
    ),
}


def _pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in p.split(":")) for p in text.split()]


def synthetic_rgb(w: int, h: int, seed: int) -> np.ndarray:
    """An H&E-like test image: two tissue blobs, a hole, darker bands and small specks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w, 3), 243, np.uint8)
    blob = ((yy - 0.45 * h) / (0.33 * h)) ** 2 + ((xx - 0.38 * w) / (0.28 * w)) ** 2 < 1
    blob |= ((yy - 0.7 * h) / (0.18 * h)) ** 2 + ((xx - 0.78 * w) / (0.12 * w)) ** 2 < 1
    blob &= ~(((yy - 0.45 * h) / (0.06 * h)) ** 2 + ((xx - 0.4 * w) / (0.05 * w)) ** 2 < 1)
    wave = np.sin(xx / 37.0) * np.cos(yy / 53.0) > 0.6
    n = int(blob.sum())
    img[blob] = np.clip(rng.normal((200, 115, 172), 14, (n, 3)), 0, 255).astype(np.uint8)
    img[blob & wave] = (150, 70, 150)
    for _ in range(40):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y : y + 6, x : x + 6] = (190, 120, 170)
    return img


def write_tiff(path, img: np.ndarray, mpp: float, levels: int) -> None:
    """A tiled, lossless TIFF; levels after the first halve the previous one (2x2 mean)."""
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        lvl = img
        for i in range(levels):
            res = 1e4 / mpp / 2**i
            kw = {"tile": (256, 256), "compression": "zlib", "photometric": "rgb",
                  "resolution": (res, res), "resolutionunit": "CENTIMETER"}  # fmt: skip
            if i:
                kw["subfiletype"] = 1
            tw.write(lvl, **kw)
            h2, w2 = lvl.shape[0] // 2, lvl.shape[1] // 2
            a = lvl[: 2 * h2, : 2 * w2].astype(np.uint16)
            lvl = ((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4).astype(
                np.uint8
            )


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("grid")
    out = {}
    for name, (w, h), levels in (("pyramid", (4096, 3072), 4), ("single", (2048, 1536), 1)):
        out[name] = root / f"{name}.tif"
        write_tiff(out[name], synthetic_rgb(w, h, 5), 0.5, levels)
    return out


@pytest.mark.parametrize("name,tile", sorted(EXPECTED))
def test_tile_grid_is_unchanged(slides, name, tile):
    total, expected = EXPECTED[(name, tile)]
    with Slide(slides[name]) as s:
        assert s.level_count == (4 if name == "pyramid" else 1)
        grid = tile_tissue(s, mpp=0.5, tile_size=tile)
    got = list(zip(grid.obs["col"].tolist(), grid.obs["row"].tolist(), strict=True))
    assert got == _pairs(expected)
    assert grid.uns["tiling"]["mask_shape"] == [192, 256]
    assert float(grid.obs["tissue_fraction"].astype(np.float64).sum()) == pytest.approx(
        total, abs=1e-3
    )
    assert list(grid.obs_names[:1]) == [f"t{got[0][0]}_{got[0][1]}"]


@pytest.mark.parametrize("name", ["pyramid", "single"])
def test_thumbnail_is_the_resized_level(slides, name):
    """The thumbnail's direct Pillow path gives the pixels of reading the level and resizing."""
    with Slide(slides[name]) as s:
        thumb = s.thumbnail(max_size=256)
        level = s.best_level_for_downsample(max(s.dimensions) / 256)
        lw, lh = s.info.level_dimensions[level]
        slow = _resize(s._raw_read((0, 0), level, (lw, lh)), (thumb.shape[1], thumb.shape[0]))
    assert thumb.dtype == np.uint8 and np.array_equal(thumb, slow)
    assert detect_tissue(thumb).any()


@pytest.mark.parametrize("tile", sorted(EXPECTED_CMU1))
def test_real_slide_tile_grid_is_unchanged(real_data, tile):
    path = real_data / "slides" / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip(f"{path.name} is not in the shared data")
    with Slide(path) as s:
        grid = tile_tissue(s, mpp=0.5, tile_size=tile)
    got = list(zip(grid.obs["x"].tolist(), grid.obs["y"].tolist(), strict=True))
    assert got == _pairs(EXPECTED_CMU1[tile])


def test_thumbnail_without_the_raw_call_and_with_transparent_pixels(slides, monkeypatch):
    """The fallbacks of the direct path: no raw OpenSlide call, and a level that is not opaque
    (premultiplied ARGB with alpha < 255 is composited onto white, as ``read_region`` is)."""
    from workbench.io import _slide

    with Slide(slides["single"]) as s:
        fast = s.thumbnail(max_size=256)
        monkeypatch.setattr(_slide, "_read_argb", lambda *a: None)
        assert np.array_equal(s.thumbnail(max_size=256), fast)
        monkeypatch.undo()
        real = _slide._read_argb

        def holed(osr, level, size_xy):
            argb = real(osr, level, size_xy)
            argb[:64, :64] = 0  # fully transparent corner (premultiplied: all zero)
            return argb

        monkeypatch.setattr(_slide, "_read_argb", holed)
        thumb = s.thumbnail(max_size=1024)
        level0 = np.array(s.read_region((0, 0), s.dimensions))
    level0[:64, :64] = 255  # transparent -> white
    assert thumb.shape == (768, 1024, 3)
    assert np.array_equal(thumb, _resize(level0, (1024, 768)))

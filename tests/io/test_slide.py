from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from workbench import InvalidRegionError, MissingResolutionError, SlideOpenError, WorkbenchError
from workbench.io import Slide, SlideInfo

# What ../shared/data/README.md lists for each real slide.
REAL_SLIDES = {
    "CMU-1-Small-Region.svs": dict(levels=1, dims=(2220, 2967), mpp=0.499, vendor="aperio"),
    "tcga-cr-7395-01a-01-ts1.svs": dict(
        levels=2, dims=(4443, 3567), mpp=None, vendor="aperio", level1=(2221, 1783)
    ),
    "hamamatsu-dapi-7-levels.ndpi": dict(levels=7, dims=None, mpp=0.228, vendor="hamamatsu"),
}


@pytest.fixture
def gradient() -> np.ndarray:
    rows, cols = np.mgrid[0:600, 0:800]
    img = np.stack([cols % 256, rows % 256, (rows + cols) % 256], axis=-1)
    return img.astype(np.uint8)


def write_pyramid(path, image, *, mpp=0.5, levels=3):
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        lv = image
        for i in range(levels):
            res = 1e4 / (mpp * 2**i)
            tif.write(
                lv,
                tile=(64, 64),
                compression="jpeg",
                photometric="rgb",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
            )
            lv = lv[::2, ::2]


def test_from_array_info_and_pyramid(gradient):
    s = Slide.from_array(gradient, mpp=0.5, name="grad")
    assert isinstance(s.info, SlideInfo)
    assert s.dimensions == (800, 600)
    assert s.level_count == 2  # 800 -> 400 (<= 512 stops)
    assert s.info.level_dimensions == ((800, 600), (400, 300))
    assert s.info.level_downsamples == (1.0, 2.0)
    assert s.mpp == 0.5 and s.info.vendor == "array"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.info.mpp = 1.0  # type: ignore[misc]


def test_read_region_level0_is_exact_crop(gradient):
    s = Slide.from_array(gradient, mpp=0.5)
    out = s.read_region((10, 20), (30, 40))
    np.testing.assert_array_equal(out, gradient[20:60, 10:40])
    assert out.dtype == np.uint8 and out.shape == (40, 30, 3)


def test_read_region_at_mpp_resamples_and_uses_the_pyramid(gradient):
    s = Slide.from_array(gradient, mpp=0.5)
    out = s.read_region((0, 0), (100, 50), mpp=2.0)  # 4x coarser: covers 400x200 level-0
    assert out.shape == (50, 100, 3)
    expected = gradient[:200, :400].reshape(50, 4, 100, 4, 3).mean(axis=(1, 3))
    assert np.abs(out.astype(float) - expected).mean() < 3.0
    assert s.best_level_for_downsample(4.0) == 1


def test_read_region_partly_outside_is_padded_white(gradient):
    s = Slide.from_array(gradient, mpp=0.5)
    out = s.read_region((780, 590), (40, 20))
    np.testing.assert_array_equal(out[:10, :20], gradient[590:600, 780:800])
    assert (out[10:, :] == 255).all() and (out[:, 20:] == 255).all()


@pytest.mark.parametrize(
    "location,size",
    [((900, 0), (10, 10)), ((0, 700), (10, 10)), ((-50, -50), (20, 20))],
)
def test_region_outside_slide_raises(gradient, location, size):
    s = Slide.from_array(gradient, mpp=0.5)
    with pytest.raises(InvalidRegionError, match="outside the slide"):
        s.read_region(location, size)


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (-5, 5)])
def test_zero_size_region_raises(gradient, size):
    s = Slide.from_array(gradient, mpp=0.5)
    with pytest.raises(InvalidRegionError, match="positive"):
        s.read_region((0, 0), size)


def test_mpp_request_without_mpp_raises_and_override_works(gradient):
    s = Slide.from_array(gradient)
    with pytest.raises(MissingResolutionError, match="mpp="):
        s.read_region((0, 0), (10, 10), mpp=1.0)
    with pytest.raises(MissingResolutionError):
        s.thumbnail(mpp=8.0)
    assert s.thumbnail(max_size=100).shape == (75, 100, 3)
    assert isinstance(MissingResolutionError("x"), WorkbenchError)


def test_thumbnail_by_mpp_and_max_size(gradient):
    s = Slide.from_array(gradient, mpp=0.5)
    assert s.thumbnail(mpp=4.0).shape == (75, 100, 3)
    assert s.thumbnail(max_size=200).shape == (150, 200, 3)
    with pytest.raises(ValueError, match="exactly one"):
        s.thumbnail()
    with pytest.raises(ValueError):
        s.read_region((0, 0), (4, 4), mpp=1.0, level=0)


def test_level_read_and_bad_level(gradient):
    s = Slide.from_array(gradient, mpp=0.5)
    out = s.read_region((0, 0), (50, 50), level=1)
    assert out.shape == (50, 50, 3)
    with pytest.raises(InvalidRegionError, match="level 5"):
        s.read_region((0, 0), (5, 5), level=5)


def test_array_slide_pickles(gradient):
    s = Slide.from_array(gradient, mpp=0.5)
    s2 = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(s2.read_region((5, 5), (8, 8)), s.read_region((5, 5), (8, 8)))
    assert s2.info == s.info


def test_from_array_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        Slide.from_array(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        Slide.from_array(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="mpp"):
        Slide.from_array(np.zeros((10, 10, 3), np.uint8), mpp=-1)


def test_pyramidal_tiff_file(tmp_path, gradient):
    path = tmp_path / "p.tif"
    write_pyramid(path, gradient, mpp=0.5, levels=3)
    with Slide(path) as s:
        assert s.level_count == 3
        assert s.info.vendor == "generic-tiff"
        assert s.mpp == pytest.approx(0.5)
        out = s.read_region((64, 64), (128, 128))
        assert np.abs(out.astype(float) - gradient[64:192, 64:192]).mean() < 8  # JPEG
        t = s.thumbnail(mpp=2.0)
        assert t.shape == (150, 200, 3)
        s2 = pickle.loads(pickle.dumps(s))
        np.testing.assert_array_equal(
            s2.read_region((0, 0), (16, 16)), s.read_region((0, 0), (16, 16))
        )
    assert s._osr is None  # closed by the context manager


def test_mpp_override_on_file(tmp_path, gradient):
    path = tmp_path / "p.tif"
    write_pyramid(path, gradient, mpp=0.5, levels=2)
    assert Slide(path, mpp=0.25).mpp == 0.25


def test_missing_file_raises_named_error(tmp_path):
    with pytest.raises(SlideOpenError, match="no such file") as info:
        Slide(tmp_path / "nope.svs")
    assert "nope.svs" in str(info.value)


def test_text_file_named_svs_raises(tmp_path):
    p = tmp_path / "notes.svs"
    p.write_text("this is not a slide\n")
    with pytest.raises(SlideOpenError, match="not a TIFF-based slide"):
        Slide(p)


def test_empty_file_and_unknown_format(tmp_path):
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(SlideOpenError, match="empty"):
        Slide(tmp_path / "empty.svs")
    (tmp_path / "x.xyz").write_bytes(b"\x00" * 100)
    with pytest.raises(SlideOpenError, match="unsupported"):
        Slide(tmp_path / "x.xyz")


def test_truncated_synthetic_tiff_raises(tmp_path, gradient):
    path = tmp_path / "p.tif"
    write_pyramid(path, gradient, levels=3)
    data = path.read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideOpenError, match="truncated|damaged"):
        s = Slide(bad)
        s.read_region((0, 0), (800, 600))


# ---------------------------------------------------------------- real shared slides
@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL_SLIDES))
def test_real_slides_open_with_listed_metadata(real_data, name):
    expect = REAL_SLIDES[name]
    with Slide(real_data / "slides" / name) as s:
        assert s.level_count == expect["levels"]
        assert s.info.vendor == expect["vendor"]
        if expect["dims"]:
            assert s.dimensions == expect["dims"]
        if "level1" in expect:
            assert s.info.level_dimensions[1] == expect["level1"]
        if expect["mpp"] is None:
            assert s.mpp is None
        else:
            assert s.mpp == pytest.approx(expect["mpp"], abs=1e-3)
        thumb = s.thumbnail(max_size=256)
        assert max(thumb.shape[:2]) == 256
        assert thumb.std() > 1  # not blank


@pytest.mark.realdata
def test_real_read_region_matches_raw_openslide(real_data):
    import openslide

    path = real_data / "slides" / "CMU-1-Small-Region.svs"
    raw = openslide.OpenSlide(str(path))
    ours = Slide(path)
    expected = np.asarray(raw.read_region((300, 400), 0, (256, 256)))[..., :3]
    np.testing.assert_array_equal(ours.read_region((300, 400), (256, 256)), expected)
    assert ours.read_region((300, 400), (128, 128), mpp=ours.mpp * 2).shape == (128, 128, 3)


@pytest.mark.realdata
def test_real_tcga_mpp_request_raises_unless_given(real_data):
    path = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(MissingResolutionError, match="Slide\\(path, mpp="):
        Slide(path).read_region((0, 0), (64, 64), mpp=2.0)
    assert Slide(path, mpp=0.5).read_region((0, 0), (64, 64), mpp=2.0).shape == (64, 64, 3)


@pytest.mark.realdata
@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.05])
def test_real_truncated_copy_raises(real_data, tmp_path, fraction):
    data = (real_data / "slides" / "CMU-1-Small-Region.svs").read_bytes()
    bad = tmp_path / "cut.svs"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideOpenError, match="truncated"):
        Slide(bad)


# ---------------------------------------------------------------- bounded reads
class _ReadSpy:
    """Records the size of every raw (single OpenSlide call) read of a slide."""

    def __init__(self, monkeypatch):
        import workbench.io._slide as slide_mod

        self.sizes: list[tuple[int, int]] = []
        original = slide_mod.Slide._raw_read

        def spy(slide, location_xy, level, size_xy):
            self.sizes.append((int(size_xy[0]), int(size_xy[1])))
            return original(slide, location_xy, level, size_xy)

        monkeypatch.setattr(slide_mod.Slide, "_raw_read", spy)

    @property
    def pixels(self) -> int:
        return sum(w * h for w, h in self.sizes)

    @property
    def largest(self) -> int:
        return max((w * h for w, h in self.sizes), default=0)


def test_region_above_the_pixel_limit_is_refused_with_tiling_advice(gradient, monkeypatch):
    s = Slide.from_array(gradient, mpp=0.5)
    with pytest.raises(InvalidRegionError, match="read it in tiles") as info:
        s.read_region((0, 0), (100_000, 100_000))
    assert "10,000,000,000 pixels" in str(info.value) and "max_pixels=" in str(info.value)
    # per call, per slide, and for every slide
    assert s.read_region((0, 0), (100, 100), max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(InvalidRegionError, match="limit of 9,999 pixels"):
        s.read_region((0, 0), (100, 100), max_pixels=9_999)
    small = Slide.from_array(gradient, mpp=0.5, max_region_pixels=400)
    with pytest.raises(InvalidRegionError, match="limit of 400"):
        small.read_region((0, 0), (21, 20))
    assert small.read_region((0, 0), (20, 20)).shape == (20, 20, 3)
    assert pickle.loads(pickle.dumps(small)).max_region_pixels == 400
    monkeypatch.setattr(Slide, "max_region_pixels", 99)
    with pytest.raises(InvalidRegionError, match="limit of 99 pixels"):
        s.read_region((0, 0), (10, 10))
    with pytest.raises(InvalidRegionError, match="coarser mpp"):
        s.thumbnail(mpp=0.5)


@pytest.mark.parametrize(
    "location", [(float("nan"), 0), (0, float("inf")), ("a", 0), (1, 2, 3)], ids=str
)
def test_non_finite_or_malformed_location_raises(gradient, location):
    s = Slide.from_array(gradient, mpp=0.5)
    with pytest.raises(InvalidRegionError, match="location_xy must be two"):
        s.read_region(location, (10, 10))


def test_file_region_partly_outside_decodes_only_the_inside(tmp_path, gradient, monkeypatch):
    path = tmp_path / "p.tif"
    write_pyramid(path, gradient, mpp=0.5, levels=3)
    with Slide(path) as s:
        whole = s.read_region((0, 0), (800, 600))
        spy = _ReadSpy(monkeypatch)
        out = s.read_region((700, -100), (300, 250))  # 100 x 150 of 300 x 250 on the slide
    assert spy.pixels == 100 * 150
    expected = np.full((250, 300, 3), 255, np.uint8)
    expected[100:, :100] = whole[:150, 700:]
    np.testing.assert_array_equal(out, expected)


def test_large_reads_go_in_bounded_blocks_with_the_same_pixels(tmp_path, gradient, monkeypatch):
    import workbench.io._slide as slide_mod

    path = tmp_path / "p.tif"
    write_pyramid(path, gradient, mpp=0.5, levels=3)
    with Slide(path) as s:
        cases = [
            dict(location_xy=(-50, 20), size_xy=(700, 500)),
            dict(location_xy=(-50, 20), size_xy=(300, 200), mpp=1.3),
            dict(location_xy=(10, -40), size_xy=(200, 150), level=1),
        ]
        one_block = [s.read_region(**c) for c in cases]
        thumb = s.thumbnail(mpp=0.9)
        monkeypatch.setattr(slide_mod, "_BLOCK_PIXELS", 2_000)
        spy = _ReadSpy(monkeypatch)
        blocks = [s.read_region(**c) for c in cases]
        thumb_blocks = s.thumbnail(mpp=0.9)
    assert spy.largest <= 2_000
    np.testing.assert_array_equal(blocks[0], one_block[0])
    np.testing.assert_array_equal(blocks[2], one_block[2])
    # Resampled blocks join without seams; Pillow's box filter takes a source pixel whole or
    # not at all, and block offsets can tip a tie at a few output pixels (this image wraps
    # from 255 to 0, which makes such a pixel stand out).
    for got, want in ((blocks[1], one_block[1]), (thumb_blocks, thumb)):
        diff = np.abs(got.astype(int) - want)
        assert diff.mean() < 0.5 and (diff > 2).mean() < 0.01


def _write_single_level(path, image, *, mpp=0.5):
    import tifffile

    res = 1e4 / mpp
    tifffile.imwrite(
        path,
        image,
        tile=(128, 128),
        compression="jpeg",
        photometric="rgb",
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )


def test_coarse_read_of_a_single_level_slide_is_blockwise_and_area_averaged(tmp_path, monkeypatch):
    import workbench.io._slide as slide_mod

    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), 64, 0), 64, 1)
    path = tmp_path / "single.tif"
    _write_single_level(path, img)  # 1024 x 1024, one level
    monkeypatch.setattr(slide_mod, "_BLOCK_PIXELS", 2**15)
    with Slide(path) as s:
        assert s.level_count == 1
        spy = _ReadSpy(monkeypatch)
        # mpp 32 = 64 level-0 px per output px; 100 x 100 output, only 16 x 16 on the slide
        out = s.read_region((0, 0), (100, 100), mpp=32.0)
    assert spy.largest <= 2**15 and spy.pixels < 1.2 * 1024 * 1024
    assert (out[16:] == 255).all() and (out[:, 16:] == 255).all()
    assert np.abs(out[:16, :16].astype(int) - rng_blocks(img)).mean() < 3  # JPEG


def rng_blocks(img: np.ndarray) -> np.ndarray:
    return img.reshape(16, 64, 16, 64, 3).mean(axis=(1, 3))


def test_reading_a_closed_slide_raises_slide_open_error(tmp_path, gradient):
    path = tmp_path / "p.tif"
    write_pyramid(path, gradient, levels=1)
    s = Slide(path)
    s.close()
    with pytest.raises(SlideOpenError, match="closed"):
        s.read_region((0, 0), (8, 8))


@pytest.mark.realdata
def test_real_coarse_read_without_coarse_level_uses_associated_thumbnail(real_data, monkeypatch):
    import workbench.io._slide as slide_mod

    path = real_data / "slides" / "CMU-1-Small-Region.svs"  # one level, 574 x 768 thumbnail
    with Slide(path) as s:
        mpp = s.mpp * 8  # coarser than the associated thumbnail (about 3.9 px per px)
        from_level0 = s.read_region((0, 0), (277, 370), mpp=mpp)
        thumb_from_level0 = s.thumbnail(max_size=256)
        monkeypatch.setattr(slide_mod, "_ASSOCIATED_THUMBNAIL_PIXELS", 10_000)
        spy = _ReadSpy(monkeypatch)
        from_thumb = s.read_region((0, 0), (277, 370), mpp=mpp)
        thumb = s.thumbnail(max_size=256)
        finer = s.read_region((0, 0), (100, 100), mpp=s.mpp * 2)  # finer than the thumbnail
    assert len(spy.sizes) == 1  # only the finer read decoded slide tiles
    assert from_thumb.shape == from_level0.shape and thumb.shape == thumb_from_level0.shape
    assert np.abs(from_thumb.astype(float) - from_level0).mean() < 6
    assert np.abs(thumb.astype(float) - thumb_from_level0).mean() < 6
    assert finer.shape == (100, 100, 3)


def test_a_large_slide_without_a_pyramid_is_refused_before_decoding(
    tmp_path, gradient, monkeypatch
):
    """The 200,000² single-level case, shrunk: the decode limit is lowered, not the file grown."""
    flat, pyramid = tmp_path / "flat.tif", tmp_path / "pyr.tif"
    _write_single_level(flat, gradient)  # 800 x 600, one level
    write_pyramid(pyramid, gradient)  # the same with levels 1/2 and 1/4
    monkeypatch.setattr(Slide, "max_decode_pixels", 100_000)
    with Slide(flat) as s:
        spy = _ReadSpy(monkeypatch)
        with pytest.raises(InvalidRegionError, match=r"64 × 48 px thumbnail would decode 480,000 "
                           r"pixels of flat.tif because the file has no pyramid.*--pyramid"):  # fmt: skip
            s.thumbnail(max_size=64)
        with pytest.raises(InvalidRegionError, match="vips tiffsave flat.tif flat_pyramid.tif"):
            s.read_region((0, 0), (40, 40), mpp=10.0)
        assert spy.sizes == []  # refused before a single tile was decoded
        # reads at level-0 resolution stay bounded by their size and are allowed
        assert s.read_region((100, 100), (256, 256)).shape == (256, 256, 3)
        s.max_decode_pixels = 10**6  # one slide may be allowed more
        assert s.thumbnail(max_size=64).shape == (48, 64, 3)
    with Slide(pyramid) as s:  # with a pyramid the coarse level is read: within the limit
        assert s.thumbnail(max_size=64).shape == (48, 64, 3)
        assert s.read_region((0, 0), (40, 40), mpp=10.0).shape == (40, 40, 3)

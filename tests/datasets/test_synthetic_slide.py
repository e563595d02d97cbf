"""Synthetic slides: OpenSlide reads them, they are deterministic and look like H&E."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from workbench.datasets import SIZES, make_slide, slide_truth
from workbench.io import annotations_to_mask, read_geojson

openslide = pytest.importorskip("openslide")

SMALL = (1024, 768)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_openslide_reads_levels_mpp_and_aperio_vendor(tiny_cohort):
    path = tiny_cohort.slide_paths[0]
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.dimensions == SIZES["tiny"]
        assert slide.level_count >= 3
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)
        assert float(slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER]) == 20
        downsamples = slide.level_downsamples
        assert all(
            b == pytest.approx(2 * a)
            for a, b in zip(downsamples[:-1], downsamples[1:], strict=True)
        )


def test_generic_tiff_vendor_and_odd_size_pyramid(tmp_path):
    path = tmp_path / "odd.tif"
    truth = make_slide(
        path, size=(1000, 700), grade=2, infiltration=0.5, seed=3, vendor="generic-tiff"
    )
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert slide.level_dimensions == ((1000, 700), (500, 350), (250, 175))
        assert slide.level_count == truth.level_count
        # every level is a real image, not padding: the centre of the smallest one has tissue
        small = np.asarray(slide.read_region((0, 0), 2, (250, 175)).convert("RGB"))
        assert small.std() > 5


def test_same_seed_gives_identical_bytes_other_seed_other_pixels(tmp_path):
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"
    make_slide(a, size=SMALL, grade=3, infiltration=0.7, seed=11)
    make_slide(b, size=SMALL, grade=3, infiltration=0.7, seed=11)
    make_slide(c, size=SMALL, grade=3, infiltration=0.7, seed=12)
    assert _digest(a) == _digest(b)
    with openslide.OpenSlide(str(a)) as sa, openslide.OpenSlide(str(c)) as sc:
        pa = np.asarray(sa.read_region((0, 0), 0, SMALL).convert("RGB"), dtype=float)
        pc = np.asarray(sc.read_region((0, 0), 0, SMALL).convert("RGB"), dtype=float)
    assert np.abs(pa - pc).mean() > 5


def test_truth_without_pixels_matches_written_truth(tmp_path):
    path = tmp_path / "s.tif"
    written = make_slide(path, size=SMALL, grade=1, infiltration=0.3, seed=5)
    planned = slide_truth(path, size=SMALL, grade=1, infiltration=0.3, seed=5)
    assert planned.to_dict() == written.to_dict()
    np.testing.assert_array_equal(planned.lesion_mask, written.lesion_mask)


def test_lesion_mask_png_agrees_with_geojson(tiny_cohort):
    for sid in tiny_cohort.slide_ids[:3]:
        mask, ds = tiny_cohort.lesion_mask(sid)
        assert ds == 16
        assert mask.shape == (SIZES["tiny"][1] // ds, SIZES["tiny"][0] // ds)
        annotations = read_geojson(tiny_cohort.lesion_geojson(sid))
        assert annotations and {a.classification for a in annotations} == {"Tumor"}
        drawn = annotations_to_mask(annotations, mask.shape, scale_xy=(ds, ds))
        iou = (drawn & mask).sum() / (drawn | mask).sum()
        assert iou > 0.97, f"{sid}: GeoJSON and PNG masks disagree (IoU {iou:.3f})"


def test_lesions_look_different_from_stroma(tiny_cohort):
    """At thumbnail scale a lesion is more purple than the stroma (and darker at grade 3)."""
    for sid in tiny_cohort.slide_ids:
        mask, ds = tiny_cohort.lesion_mask(sid)
        with openslide.OpenSlide(str(tiny_cohort.slide_path(sid))) as slide:
            level = slide.get_best_level_for_downsample(ds)
            thumb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))
        rgb = thumb[..., :3].astype(float)
        tissue = rgb.mean(axis=2) < 225
        core = ndimage.binary_erosion(mask, iterations=2)
        stroma = tissue & ~ndimage.binary_dilation(mask, iterations=8)
        if core.sum() < 5 or stroma.sum() < 50:
            continue
        lesion_rgb, stroma_rgb = rgb[core].mean(axis=0), rgb[stroma].mean(axis=0)
        assert np.linalg.norm(lesion_rgb - stroma_rgb) > 15, sid
        # purple: less red relative to blue than pink stroma
        assert (lesion_rgb[2] - lesion_rgb[0]) > (stroma_rgb[2] - stroma_rgb[0]) + 10, sid
        if tiny_cohort.truth.set_index("slide_id").loc[sid, "grade"] == 3:
            assert lesion_rgb.mean() < stroma_rgb.mean() - 10, sid


def _nuclear_areas(slide_path, mask, ds) -> np.ndarray:
    """Areas (px) of dark blobs at full resolution inside the lesion core."""
    core = ndimage.binary_erosion(mask, iterations=3)
    rows, cols = np.nonzero(core)
    k = len(rows) // 2
    x, y = int(cols[k]) * ds - 256, int(rows[k]) * ds - 256
    with openslide.OpenSlide(str(slide_path)) as slide:
        crop = np.asarray(slide.read_region((x, y), 0, (512, 512)).convert("RGB"), dtype=float)
    dark = crop.mean(axis=2) < 110
    labels, n = ndimage.label(dark)
    sizes = np.bincount(labels.ravel())[1:]
    return sizes[sizes >= 6]


def test_grade_shows_in_nuclei_at_full_resolution(tiny_cohort):
    truth = tiny_cohort.truth
    by_grade = {}
    for grade in (1, 3):
        sid = str(truth.loc[truth["grade"] == grade, "slide_id"].iloc[0])
        mask, ds = tiny_cohort.lesion_mask(sid)
        by_grade[grade] = _nuclear_areas(tiny_cohort.slide_path(sid), mask, ds)
    assert len(by_grade[3]) > 10
    # grade 3 nuclei are larger, and the largest of them much larger
    assert np.median(by_grade[3]) > 1.5 * np.median(by_grade[1])
    assert np.percentile(by_grade[3], 90) > 2 * np.percentile(by_grade[1], 90)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grade": 4}, "grade"),
        ({"infiltration": 1.5}, "infiltration"),
        ({"size": "huge"}, "tiny"),
        ({"size": (100, 100)}, "512"),
        ({"vendor": "hamamatsu"}, "vendor"),
    ],
)
def test_bad_arguments_say_what_is_allowed(tmp_path, kwargs, message):
    args = {"size": SMALL, "grade": 2, "infiltration": 0.5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        make_slide(tmp_path / "x.tif", **args)
    assert not (tmp_path / "x.tif").exists()


def test_windows_join_seamlessly():
    """Drawing a region in one piece or in odd-sized parts gives the same pixels."""
    from workbench.datasets._layout import build_layout
    from workbench.datasets._render import SlideRenderer

    layout = build_layout(2048, 1536, grade=3, infiltration=0.8, seed=21)
    renderer = SlideRenderer(layout)
    rows, cols = np.nonzero(layout.lesion_mask)
    x0, y0 = int(cols[len(cols) // 2]) * 16 - 200, int(rows[len(rows) // 2]) * 16 - 150
    whole = renderer.render(x0, y0, 400, 300)
    parts = np.concatenate(
        [
            np.concatenate(
                [renderer.render(x0, y0, 137, 111), renderer.render(x0 + 137, y0, 263, 111)], axis=1
            ),
            np.concatenate(
                [
                    renderer.render(x0, y0 + 111, 137, 189),
                    renderer.render(x0 + 137, y0 + 111, 263, 189),
                ],
                axis=1,
            ),
        ],
        axis=0,
    )
    assert whole.std() > 10  # real content, not glass
    np.testing.assert_array_equal(whole, parts)

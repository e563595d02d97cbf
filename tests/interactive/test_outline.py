"""Outline geometry (level 0) and rendering: pure functions, checked without a session."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from workbench.interactive import _outline, _render
from workbench.models._clicks import Click


def _disk(shape, centre_rc, radius):
    r, c = np.mgrid[: shape[0], : shape[1]]
    return (r - centre_rc[0]) ** 2 + (c - centre_rc[1]) ** 2 <= radius**2


def test_a_view_mask_and_its_level0_outline_round_trip():
    mask = _disk((64, 80), (30, 40), 15)
    origin, ds = (1000.0, 500.0), 4.0
    geom = _outline.view_geometry(mask, origin, ds)
    x0, y0, x1, y1 = geom.bounds  # level-0 pixels: the view's place and scale
    assert 1000 + 4 * 24 <= x0 <= 1000 + 4 * 26 and 500 + 4 * 45 <= y1 <= 500 + 4 * 47
    again = _outline.mask_in_view(geom, origin, mask.shape, ds)
    assert again.shape == mask.shape
    assert (again ^ mask).sum() <= 0.08 * mask.sum()  # a one-pixel edge at most
    # the same outline drawn into a view twice as coarse covers a quarter of the pixels
    coarse = _outline.mask_in_view(geom, origin, (32, 40), 2 * ds)
    assert abs(coarse.sum() * 4 - mask.sum()) <= 0.15 * mask.sum()
    assert _outline.view_geometry(np.zeros((8, 8), bool), origin, ds) is None
    assert not _outline.mask_in_view(None, origin, (8, 8), ds).any()


def test_merge_view_replaces_only_what_the_view_covered():
    outline = box(0, 0, 100, 100).union(box(300, 300, 400, 400))
    view = _outline.view_box((0.0, 0.0), (50, 50), 2.0)  # covers 0..100 square
    edited = Point(50, 50).buffer(10)
    merged = _outline.merge_view(outline, edited, view)
    assert merged.contains(Point(350, 350))  # outside the view: kept
    assert not merged.contains(Point(5, 5)) and merged.contains(Point(50, 50))
    assert _outline.merge_view(None, None, view) is None
    assert _outline.merge_view(outline, None, view).equals(box(300, 300, 400, 400))


def test_outline_parts_off_the_slide_are_dropped_with_a_warning():
    geom = box(10, 10, 20, 20).union(box(5000, 5000, 5010, 5010))
    with pytest.warns(UserWarning, match="1 of 2 outline polygon"):
        kept = _outline.on_slide(geom, (100, 100), "x.geojson")
    assert kept.equals(box(10, 10, 20, 20))
    with pytest.warns(UserWarning):
        assert _outline.on_slide(box(500, 500, 510, 510), (100, 100)) is None


def test_annotations_keep_lesion_polygons_only_and_sample_mask_follows_the_view():
    anns = _outline.lesion_annotations(box(0, 0, 10, 10).union(box(20, 20, 30, 25)))
    assert len(anns) == 2 and {a.classification for a in anns} == {"Tumor"}
    assert sorted(a.measurements["area_px"] for a in anns) == [50.0, 100.0]
    assert _outline.lesion_annotations(None) == []
    assert _outline.outline_from_annotations(anns).area == 150.0

    slide_mask = np.zeros((100, 100), bool)  # drawn at downsample 4 (400x400 level 0)
    slide_mask[50:, :] = True
    sub = _outline.sample_mask(slide_mask, 4.0, (0.0, 180.0), (10, 10), 4.0)
    assert not sub[:5].any() and sub[5:].all()  # level-0 row 200 = mask row 50


def test_rendering_draws_the_overlay_clicks_and_the_view_box():
    image = np.full((40, 40, 3), 100, np.uint8)
    mask = _disk((40, 40), (20, 20), 8)
    clicks = [Click(5.0, 5.0, True), Click(34.0, 34.0, False)]
    out = _render.render_view(image, mask, clicks, opacity=0.5)
    assert out.dtype == np.uint8 and image[0, 0, 0] == 100  # input untouched
    assert tuple(out[5, 5]) == _render.POSITIVE_COLOUR
    assert tuple(out[34, 34]) == _render.NEGATIVE_COLOUR
    assert tuple(out[20, 20]) == (177, 80, 150)  # half-way to the lesion colour (truncated)
    assert tuple(out[12, 20]) == (255, 60, 200)  # the edge is opaque
    edge = _render.mask_edge(mask)
    assert edge.sum() < mask.sum() and not edge[20, 20]

    overview = np.zeros((50, 50, 3), np.uint8)
    anns = _outline.lesion_annotations(box(0, 0, 100, 100))
    drawn = _render.render_overview(overview, (10.0, 10.0), anns, (200, 100, 300, 200))
    assert tuple(drawn[15, 20]) == _render.BOX_COLOUR and tuple(drawn[10, 25]) == (
        _render.BOX_COLOUR
    )
    assert drawn[5, 5].any() and not drawn[40, 40].any()

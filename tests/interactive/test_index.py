"""The outline's spatial index clips a view exactly as a plain intersection does."""

from __future__ import annotations

import numpy as np
from shapely.geometry import MultiPolygon, Point, box

from workbench.interactive._index import OutlineIndex, clip_to_box


def _many_glands(n: int = 400, seed: int = 0) -> MultiPolygon:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 10_000, (n, 2))
    radii = rng.uniform(5, 30, n)
    return MultiPolygon([Point(*c).buffer(r, 8) for c, r in zip(centres, radii, strict=True)])


def test_index_clip_equals_plain_intersection():
    glands = _many_glands()
    index = OutlineIndex(glands)
    for view in (box(1000, 1000, 2500, 2500), box(0, 0, 50, 50), box(-500, -500, -10, -10)):
        expected = glands.intersection(view)
        got = index.clip(view)
        assert abs(got.area - expected.area) < 1e-6 * max(1.0, expected.area)
        assert got.symmetric_difference(expected).area < 1e-6 * max(1.0, expected.area)
    assert index.clip(box(-500, -500, -10, -10)).is_empty


def test_clip_to_box_keeps_one_index_per_outline():
    import workbench.interactive._index as idx

    glands = _many_glands(200, seed=1)
    view = box(3000, 3000, 6000, 6000)
    first = clip_to_box(glands, view)
    kept = idx._LAST[0]
    assert kept is not None and kept.geometry is glands
    assert clip_to_box(glands, view).equals(first) and idx._LAST[0] is kept  # reused
    small = _many_glands(10, seed=2)  # few parts: a plain intersection, no index
    assert clip_to_box(small, view).equals(small.intersection(view))

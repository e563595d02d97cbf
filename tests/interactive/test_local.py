""" "All like this" proposals and local corrections: the pure functions on tiny arrays, and
their wiring in the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.interactive import (
    PROPAGATE,
    Click,
    RefinementEngine,
    RefinementError,
    iou,
)
from workbench.interactive._engine import _Snapshot
from workbench.interactive._local import local_region, similar_regions, standardised_features
from workbench.models import load_click_segmenter


@pytest.fixture(scope="module")
def model():
    return load_click_segmenter()


def _disk(shape, cy, cx, r):
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (rows - cy) ** 2 + (cols - cx) ** 2 < r**2


def disks_view(size=192, seed=0):
    """Five purple disks (the 'glands') on pink: a tiny many-object view."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), bool)
    for cy, cx in ((40, 40), (40, 150), (150, 40), (150, 150), (96, 96)):
        mask |= _disk((size, size), cy, cx, 22)
    img = np.where(mask[..., None], np.array([150, 90, 170.0]), np.array([235, 175, 205.0]))
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


# ------------------------------------------------------------------ local region ------
def test_local_region_is_the_box_of_the_change_under_the_click():
    old = np.zeros((60, 80), bool)
    new = old.copy()
    new[10:20, 10:20] = True  # near the click
    new[40:50, 60:70] = True  # far away
    rows, cols = local_region(old, new, (15, 15), pad=2)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (8, 22, 8, 22)
    # A click just outside a change takes the nearest one, within reach.
    rows, cols = local_region(old, new, (45, 72), pad=0)
    assert (rows.start, cols.start) == (40, 60)
    assert local_region(old, new, (55, 5), pad=0, reach=0.1) is None  # nothing near
    assert local_region(old, old, (5, 5)) is None  # nothing changed


def test_a_late_click_cannot_change_a_far_part_of_the_mask(model):
    image, _ = disks_view()
    far = _disk(image.shape[:2], 150, 150, 22)  # rows/cols around (150, 150)

    def run(local: bool):
        engine = RefinementEngine(model, local_corrections=local, local_from=2)
        assert np.array_equal(engine.set_view(image, initial_mask=far), far)
        real_step = engine._network_step

        def step(view):
            # A network step that adds a disk under the click and, from the second click
            # on, also (wrongly) drops the far part of the mask.
            snap = real_step(view)
            c = engine.clicks.last
            wanted = view.history[-1].mask | _disk(image.shape[:2], c.y, c.x, 15)
            if len(engine.clicks) >= 2:
                wanted &= ~far
            return _Snapshot(wanted, snap.work_mask, snap.module_state, snap.features, 0.0)

        engine._network_step = step
        first = engine.add_click(40, 40, True)  # x=40, y=40
        second = engine.add_click(150, 40, True)  # x=150, y=40: row 40, col 150
        assert first[40, 40] and first[150, 150]
        assert second[40, 150]  # the late click did its work near itself
        assert np.array_equal(engine.undo(), first)
        return second

    assert not run(local=False)[150, 150]  # without local corrections the far part goes
    kept = run(local=True)
    assert np.array_equal(kept[100:, 100:], far[100:, 100:])  # with them it stays


def test_local_corrections_on_the_real_network_keep_changes_near_the_click(model):
    image, truth = disks_view(seed=1)
    engine = RefinementEngine(model, local_corrections=True, local_from=2, local_pad=3)
    engine.set_view(image)
    before = engine.add_click(40, 40, True)
    after = engine.add_click(150, 150, True)
    changed = np.argwhere(before ^ after)
    assert len(changed) and after[150, 150]
    # One box of change around the new click: the first disk's corner is as it was.
    assert np.array_equal(after[:90, :90], before[:90, :90])


# ------------------------------------------------------------------ proposals ---------
def _feature_map():
    """Features (C=4) with three 'A' blobs, one 'B' blob and a 'C' background."""
    fh = fw = 24
    kind = np.full((fh, fw), 2)
    for r, c in ((4, 4), (4, 18), (18, 4)):
        kind[r - 2 : r + 2, c - 2 : c + 2] = 0
    kind[16:20, 16:20] = 1
    codes = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32)
    f = codes[kind].transpose(2, 0, 1) + 0.05 * np.random.default_rng(0).random((4, fh, fw))
    return torch.from_numpy(f.astype(np.float32))[None]


def test_similar_regions_propose_the_like_blobs_and_negative_clicks_prune():
    unit = standardised_features(_feature_map())
    h = w = 96  # view pixels: 4 per feature pixel
    net = np.zeros((h, w), bool)
    net[8:24, 8:24] = True  # the network found the clicked blob A1
    clicks = [Click(16, 16, True)]
    prop = similar_regions(unit, None, net, clicks, threshold=0.6, min_area=0.005)
    assert prop[16, 72] and prop[72, 16]  # A2, A3 proposed
    assert not prop[72, 72] and not prop[48, 48]  # B and the background not
    assert not (prop & net).any()  # only additions
    pruned = similar_regions(
        unit, None, net, [*clicks, Click(72, 16, False)], threshold=0.6, min_area=0.005
    )
    # The negative click removes A2, and its prototype lowers everything like it: A3, the
    # same kind of blob, goes too (the clicked A1 is the network's and stays).
    assert not pruned[16, 72] and not pruned[72, 16]
    assert not pruned[72, 72]
    fg = torch.zeros(24, 24)
    gated = similar_regions(unit, fg, net, clicks, threshold=0.6, min_foreground=0.5)
    assert not gated.any()  # nothing where the network sees no foreground
    assert not similar_regions(unit, None, net, [Click(5, 5, False)], threshold=0.6).any()


def test_all_like_this_adds_the_similar_structures_and_never_removes(model):
    image, truth = disks_view()
    one = RefinementEngine(model)
    every = RefinementEngine(model, propagate="all")
    assert one.propagate == "one" and every.propagate == "all" and PROPAGATE == ("one", "all")
    one.set_view(image)
    every.set_view(image)
    a = one.add_click(40, 40, True)
    b = every.add_click(40, 40, True)
    # The packaged network (trained with EBHI-Seg glands) already takes in most of the like
    # disks from one click (IoU ~0.82); the proposals must still add what it left out.
    assert (b >= a).all() and b.sum() > a.sum() and iou(b, truth) > iou(a, truth) + 0.05
    assert b[150, 150] and b[40, 150]  # other glands proposed
    # A negative click on a proposed gland takes it away again; the clicked one stays.
    c = every.add_click(150, 150, False)
    assert not c[150, 150] and c[40, 40]
    assert np.array_equal(every.undo(), b)
    # The mode switches per engine and per click; undo restores either way.
    every.propagate = "one"
    d = every.add_click(40, 150, True)
    every.undo()
    e = every.add_click(40, 150, True, propagate="all")
    assert (e >= d).all() and e.sum() > d.sum()
    with pytest.raises(RefinementError, match="propagate"):
        every.propagate = "many"
    with pytest.raises(RefinementError, match="propagate"):
        every.add_click(10, 10, True, propagate="some")
    with pytest.raises(RefinementError, match="random walker"):
        RefinementEngine(method="random_walker", propagate="all")


def test_proposals_on_a_view_larger_than_the_network_sees(model):
    from PIL import Image

    small, small_truth = disks_view()
    image = np.asarray(Image.fromarray(small).resize((320, 320), Image.BILINEAR))
    truth = np.asarray(Image.fromarray(small_truth).resize((320, 320), Image.NEAREST))
    one = RefinementEngine(model, work_size=192)  # the network sees it at 0.6x
    every = RefinementEngine(model, work_size=192, propagate="all")
    one.set_view(image)
    every.set_view(image)
    f = 320 / 192
    a = one.add_click(40 * f, 40 * f, True)
    b = every.add_click(40 * f, 40 * f, True)
    assert b.shape == truth.shape and (b >= a).all()
    assert b.sum() > a.sum() and iou(b, truth) > iou(a, truth) + 0.05
    c = every.add_click(150 * f, 150 * f, False)
    assert not c[int(150 * f), int(150 * f)] and c[int(40 * f), int(40 * f)]

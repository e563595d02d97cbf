from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.datasets import lesion_view
from workbench.interactive import (
    METHODS,
    Click,
    ClickState,
    InvalidViewError,
    RefinementEngine,
    RefinementError,
    click_maps,
    evaluate_clicks,
    iou,
    next_click,
    soft_click_maps,
    summarize,
)
from workbench.models import load_click_segmenter


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(0)
    return load_click_segmenter()


@pytest.fixture(scope="module")
def view():
    return lesion_view(192, seed=123)


def _centre(mask: np.ndarray) -> tuple[float, float]:
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(c), float(r)


def _near_boundary_inside(mask: np.ndarray, depth_px: float) -> tuple[float, float]:
    """A lesion pixel about ``depth_px`` from the lesion's edge."""
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(np.abs(depth - depth_px) < 0.5)
    return float(cols[0]), float(rows[0])


def test_click_state_add_undo_reset_and_outside_warning():
    state = ClickState((10, 20))
    assert state.add(Click(3, 4, True))
    assert state.add(Click(19, 9, False))
    with pytest.warns(UserWarning, match="outside"):
        assert not state.add(Click(20, 5, True))
    with pytest.warns(UserWarning, match="outside"):
        assert not state.add(Click(float("nan"), 5, True))
    assert len(state) == 2 and state.last == Click(19, 9, False)
    assert state.undo() == Click(19, 9, False)
    state.reset()
    assert len(state) == 0 and state.undo() is None


def test_click_maps_are_disks_in_the_right_channel():
    maps = click_maps([Click(10, 5, True), Click(2, 2, False)], (20, 30), radius=2)
    assert maps.shape == (2, 20, 30) and maps.dtype == np.float32
    assert maps[0, 5, 10] == 1 and maps[0, 5, 12] == 1 and maps[0, 5, 13] == 0
    assert maps[1, 2, 2] == 1 and maps[0, 2, 2] == 0
    assert maps[0].sum() == 13  # integer points within radius 2
    half = click_maps([Click(10, 6, True)], (10, 15), radius=1, scale=0.5)
    assert half[0, 3, 5] == 1


def test_soft_click_maps_decay_with_distance_and_take_the_nearest_click():
    clicks = [Click(4, 4, True), Click(20, 4, True), Click(12, 12, False)]
    maps = soft_click_maps(clicks, (16, 24), radius=3.0)
    assert maps.shape == (2, 16, 24)
    assert maps[0, 4, 4] == pytest.approx(1.0) and maps[0, 4, 20] == pytest.approx(1.0)
    assert maps[0, 4, 7] == pytest.approx(np.exp(-1.0), rel=1e-5)  # d = r: e^-1
    assert maps[0, 4, 12] < 1e-3  # halfway between the positives, far from both
    assert maps[1, 12, 12] == pytest.approx(1.0) and maps[1, 4, 4] < 1e-3


def test_next_click_goes_to_the_deepest_error():
    gt = np.zeros((40, 40), bool)
    gt[5:25, 5:25] = True
    pred = np.zeros_like(gt)
    c = next_click(pred, gt)
    assert c.positive and 14 <= c.x <= 15 and 14 <= c.y <= 15
    pred = gt.copy()
    pred[30:40, 0:40] = True  # false positive band touching the border
    c = next_click(pred, gt)
    assert not c.positive and c.y >= 30
    assert next_click(gt, gt) is None
    assert iou(pred, gt) == pytest.approx(400 / 800)


def test_no_prediction_view_starts_empty(base_model, view):
    image, _ = view
    engine = RefinementEngine(base_model)
    mask = engine.set_view(image)
    assert mask.shape == image.shape[:2] and not mask.any()


@pytest.mark.parametrize("method", ["cgam", "fbrs", "none"])
def test_first_click_on_empty_view_gives_a_plausible_lesion(base_model, view, method):
    image, gt = view
    engine = RefinementEngine(base_model, method=method)
    engine.set_view(image)
    x, y = _centre(gt)
    mask = engine.add_click(x, y, positive=True)
    assert mask[int(y), int(x)]
    assert iou(mask, gt) > 0.6
    assert engine.last_steps == 0  # the first click is the network's alone


def test_cgam_optimises_from_the_second_click_even_when_the_pixel_is_right(base_model, view):
    """The old engine stopped as soon as the clicked *pixel* was on the right side, so a
    second click inside an already found lesion never moved the gate. Now the loss covers the
    click's disk: a click 2 px inside the edge has disk pixels across it, and Adam runs (on
    click-free features, ``reencode=False``, so that the network cannot absorb the click
    first; with re-encoding the packaged network usually honours such a click by itself and
    the loss is exactly zero)."""
    image, gt = view
    engine = RefinementEngine(base_model, method="cgam", reencode=False)
    engine.set_view(image)
    x, y = _centre(gt)
    first = engine.add_click(x, y, True)
    assert engine.last_steps == 0
    x2, y2 = _near_boundary_inside(gt & first, 2.0)
    assert first[int(y2), int(x2)]  # the clicked pixel is already on the right side
    before = engine.module.flat_parameters()
    engine.add_click(x2, y2, True)
    assert engine.last_steps == engine.steps == 20
    assert not torch.equal(engine.module.flat_parameters(), before)


def test_cgam_loss_covers_the_disk_not_one_pixel(base_model, view):
    """The CGAM loss samples the whole disk around every click (about 80 points within
    ``loss_radius``, each click weighing the same); with features computed without clicks
    (``reencode=False``) only the gate can act on a positive click in stroma: it is
    optimised, moves the disk towards lesion, and pixels far from it hardly change."""
    image, gt = view
    engine = RefinementEngine(base_model, method="cgam", reencode=False, steps=40)
    engine.set_view(image)
    x, y = _centre(gt)
    before = engine.add_click(x, y, True)
    ys, xs = np.nonzero(~gt & ~before)
    far = np.hypot(ys - y, xs - x)
    k = int(np.argmax(far))
    cy, cx = int(ys[k]), int(xs[k])
    cy, cx = min(max(cy, 8), gt.shape[0] - 9), min(max(cx, 8), gt.shape[1] - 9)
    after = engine.add_click(cx, cy, True)
    assert engine.last_steps > 0  # optimised from the second click on

    view_state = engine._view
    fh, fw = view_state.history[-1].features.shape[2:]
    _, weights, _, _, point_weight = engine._disk_samples(view_state, engine.clicks.clicks, fh, fw)
    n_points = len(point_weight)
    assert n_points >= 2 * 40  # two clicks, tens of points each: disks, not two pixels
    owner_weight = [point_weight[: n_points // 2].sum(), point_weight[n_points // 2 :].sum()]
    np.testing.assert_allclose(sum(owner_weight), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)  # bilinear rows

    rr, cc = np.mgrid[: gt.shape[0], : gt.shape[1]]
    disk = np.hypot(rr - cy, cc - cx) <= engine.click_radius / view_state.scale
    assert after[disk].mean() >= before[disk].mean()
    far_px = np.hypot(rr - cy, cc - cx) > 0.5 * max(gt.shape)
    assert (before[far_px] != after[far_px]).mean() < 0.05


def test_loss_disk_grows_with_the_wrong_region_and_keeps_clear_of_other_clicks(base_model):
    """A click whose label the mask has nowhere yet keeps the small disk; a later click far
    inside a wrong region gets a disk of ``adaptive_disk`` times its distance to the mask
    (capped at ``max_loss_radius``); a click of the other sign shrinks both disks to half
    their distance, so grown disks never claim a pixel the user labelled otherwise."""
    image = np.full((256, 256, 3), 200, np.uint8)
    engine = RefinementEngine(base_model, method="cgam", steps=2)
    engine.set_view(image)  # 256 px: work scale 1
    engine._view.history[-1].mask[:] = False
    engine._view.history[-1].work_mask[:] = False
    engine.add_click(40, 40, True)
    assert engine._view.loss_radii[0] == engine.loss_radius  # nothing positive before it
    # Pretend the mask after the first click is a blob at (40, 40) of radius 10.
    rr, cc = np.mgrid[:256, :256]
    blob = np.hypot(rr - 40, cc - 40) <= 10
    engine._view.history[-1].work_mask = blob
    engine.add_click(40, 80, True)  # 30 px from the blob's edge
    assert engine._view.loss_radii[1] == pytest.approx(0.8 * 30, abs=1.0)
    engine.add_click(40, 230, True)  # far: capped
    assert engine._view.loss_radii[2] == engine.max_loss_radius
    engine.add_click(40, 100, False)  # 20 px below the second click
    radii = engine._effective_radii(engine._view, engine.clicks.clicks)
    assert radii[1] == pytest.approx(10.0) and radii[3] <= 10.0
    assert radii[2] == engine.max_loss_radius  # 130 px away: untouched
    fixed = RefinementEngine(base_model, method="cgam", adaptive_disk=0.0)
    fixed.set_view(image)
    fixed.add_click(40, 40, True)
    fixed.add_click(40, 200, True)
    assert fixed._view.loss_radii == [fixed.loss_radius] * 2
    engine.undo()
    assert len(engine._view.loss_radii) == 3


@pytest.mark.parametrize("confidence", [None, 0.0, 3.0, 1e6])
def test_disk_confidence_keeps_the_small_disk_where_the_network_is_already_sure(
    base_model, view, confidence
):
    """With ``disk_confidence`` a click whose pixel the network (having seen it) already
    gives its label that confidently keeps the fixed disk; a threshold it does not reach,
    or ``None``, lets the disk grow as before."""
    image, gt = view
    x, y = _centre(gt)
    engine = RefinementEngine(base_model, method="cgam", steps=2, disk_confidence=confidence)
    engine.set_view(image)
    engine.add_click(x, y, True)
    assert engine.last_disk_grown is None  # nothing positive before it: the small disk
    # Pretend the mask after the first click is a speck in the corner: the second click,
    # deep in the lesion the network has already found, looks far inside a missed region.
    rr, cc = np.mgrid[: gt.shape[0], : gt.shape[1]]
    engine._view.history[-1].work_mask = np.hypot(rr - 5, cc - 5) <= 3
    x2, y2 = x, y + 14
    assert gt[int(y2), int(x2)]
    mask = engine.add_click(x2, y2, True)
    assert mask[int(y2), int(x2)]
    grown = engine._view.loss_radii[1]
    if confidence is None or confidence > 100:
        assert engine.last_disk_grown is True
        assert grown == pytest.approx(0.8 * np.hypot(x2 - 5, y2 - 5) - 0.8 * 3, abs=2.0)
    else:  # the network gives the lesion centre a clearly positive logit
        assert engine.last_disk_grown is False
        assert grown == engine.loss_radius
    engine.undo()
    assert len(engine._view.loss_radii) == 1


def test_disk_stop_keeps_a_grown_disk_inside_what_the_network_outlined(base_model, view):
    """With ``disk_stop`` a grown disk ends about where the network, having seen the click,
    confidently gives the other label: at the lesion's edge, not 60 px out in the
    background; without it (``None``) the disk grows to its full size."""
    from scipy.ndimage import distance_transform_edt

    image, gt = view
    x, y = _centre(gt)
    x2, y2 = x, y + 14
    depth = distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1][int(y2), int(x2)]
    rr, cc = np.mgrid[: gt.shape[0], : gt.shape[1]]
    radii = {}
    for stop in (None, 0.0):
        engine = RefinementEngine(base_model, method="cgam", steps=2, disk_stop=stop)
        engine.set_view(image)
        engine.add_click(x, y, True)
        engine._view.history[-1].work_mask = np.hypot(rr - 5, cc - 5) <= 3
        engine.add_click(x2, y2, True)
        assert engine.last_disk_grown is True
        radii[stop] = engine._view.loss_radii[1]
    assert radii[None] > 50
    assert engine.loss_radius < radii[0.0] < radii[None]
    assert abs(radii[0.0] - depth) < 6  # the network's outline is close to the lesion's


def test_disk_grow_from_keeps_the_small_disk_for_the_first_clicks(base_model):
    """With ``disk_grow_from=3`` the second click keeps the fixed disk where the default
    grows it; the third click's disk grows."""
    image = np.full((256, 256, 3), 200, np.uint8)
    rr, cc = np.mgrid[:256, :256]
    blob = np.hypot(rr - 40, cc - 40) <= 10
    radii = {}
    for start in (1, 3):
        engine = RefinementEngine(base_model, method="cgam", steps=2, disk_grow_from=start)
        engine.set_view(image)
        engine._view.history[-1].work_mask[:] = False
        engine.add_click(40, 40, True)
        engine._view.history[-1].work_mask = blob
        engine.add_click(40, 80, True)  # 30 px from the blob's edge
        engine._view.history[-1].work_mask = blob
        engine.add_click(120, 40, True)  # 70 px from it
        radii[start] = engine._view.loss_radii
    assert radii[1][1] == pytest.approx(0.8 * 30, abs=1.0)
    assert radii[3][1] == RefinementEngine(base_model).loss_radius
    assert radii[3][2] == pytest.approx(0.8 * 70, abs=1.0) == radii[1][2]
    with pytest.raises(RefinementError, match="disk_grow_from"):
        RefinementEngine(method="random_walker", disk_grow_from=0)


def test_disk_confidence_and_stop_must_be_finite():
    with pytest.raises(RefinementError, match="disk_confidence"):
        RefinementEngine(method="random_walker", disk_confidence=float("nan"))
    with pytest.raises(RefinementError, match="disk_stop"):
        RefinementEngine(method="random_walker", disk_stop=float("inf"))


def test_every_click_changes_the_mask_where_it_was_made(base_model):
    """The simulated user clicks an error pixel; each click must fix that pixel."""
    image, gt = lesion_view(224, seed=5)
    engine = RefinementEngine(base_model, method="cgam")
    mask = engine.set_view(image)
    for _ in range(6):
        click = next_click(mask, gt)
        if click is None:
            break
        new = engine.add_click(click.x, click.y, click.positive)
        r, c = click.rc
        assert new[r, c] == click.positive
        assert (new != mask).sum() > 0
        mask = new


@pytest.mark.parametrize("method", METHODS)
def test_undo_restores_exact_previous_mask_and_gate(base_model, view, method):
    image, gt = view
    engine = RefinementEngine(base_model if method != "random_walker" else None, method=method)
    m0 = engine.set_view(image)
    x, y = _centre(gt)
    m1 = engine.add_click(x, y, True)
    m2 = engine.add_click(5, 5, False)
    state2 = engine.module.flat_parameters() if engine.module is not None else None
    m3 = engine.add_click(x + 3, y + 3, True)
    assert np.array_equal(engine.undo(), m2)
    if state2 is not None:
        assert torch.equal(engine.module.flat_parameters(), state2)
    again = engine.add_click(x + 3, y + 3, True)
    assert np.array_equal(again, m3)  # the gate state was restored exactly
    assert np.array_equal(engine.undo(), m2)
    assert np.array_equal(engine.undo(), m1)
    assert np.array_equal(engine.reset(), m0)
    assert len(engine.clicks) == 0
    if engine.module is not None and method == "cgam":
        assert float(engine.module.psi.weight.detach().abs().sum()) == 0  # back to the identity


def test_after_network_clicks_further_clicks_act_through_the_gate_only(base_model, view):
    image, gt = view
    engine = RefinementEngine(base_model, method="cgam", network_clicks=2)
    engine.set_view(image)
    calls = []
    original = engine.model.encode

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    engine.model.encode = counting
    try:
        x, y = _centre(gt)
        engine.add_click(x, y, True)
        m2 = engine.add_click(4, 4, False)
        assert len(calls) == 2
        m3 = engine.add_click(gt.shape[1] - 6, 6, True)  # a third click: gate only
        assert len(calls) == 2 and engine.last_steps > 0
        # A positive click through the gate adds lesion and removes none. (With the packaged
        # network it does not reach the clicked stroma pixel itself: see the notes of
        # network_clicks; the default lets the network see every click.)
        assert (m3 & ~m2).any() and not (m2 & ~m3).any()
    finally:
        engine.model.encode = original


def test_click_outside_view_is_ignored_with_warning(base_model, view):
    image, gt = view
    engine = RefinementEngine(base_model)
    engine.set_view(image)
    x, y = _centre(gt)
    m1 = engine.add_click(x, y, True)
    with pytest.warns(UserWarning, match="outside"):
        m2 = engine.add_click(image.shape[1] + 10, 3, True)
    assert np.array_equal(m1, m2) and len(engine.clicks) == 1


@pytest.mark.parametrize(
    "bad, phrase",
    [
        (np.zeros((0, 0, 3), np.uint8), "too small"),
        (np.zeros((300, 5, 3), np.uint8), "too small"),
        (np.zeros((40, 40, 2), np.uint8), "RGB"),
    ],
)
def test_degenerate_views_raise_a_clear_error(bad, phrase):
    engine = RefinementEngine(method="random_walker")
    with pytest.raises(InvalidViewError, match=phrase):
        engine.set_view(bad)


def test_mask_of_the_wrong_shape_and_no_view(base_model, view):
    image, _ = view
    engine = RefinementEngine(base_model)
    with pytest.raises(InvalidViewError, match="set_view"):
        engine.add_click(3, 3)
    with pytest.raises(InvalidViewError, match="view's size"):
        engine.set_view(image, initial_mask=np.zeros((5, 5), bool))


def test_bad_options():
    with pytest.raises(RefinementError, match="choose one of cgam, fbrs, none, random_walker"):
        RefinementEngine(method="magic")
    with pytest.raises(RefinementError, match="network_clicks"):
        RefinementEngine(method="random_walker", network_clicks=0)


def test_evaluate_and_summarize(view):
    image, gt = view
    engine = RefinementEngine(method="random_walker")
    run = evaluate_clicks(engine, image, gt, max_clicks=3, target_iou=0.99)
    assert len(run["ious"]) == 3 and 1 <= run["n_clicks"] <= 3
    assert len(run["cpu_seconds"]) == len(run["seconds"]) == len(run["steps"])
    summary = summarize([run, run], max_clicks=3)
    assert summary["n_views"] == 2 and len(summary["miou_per_click"]) == 3
    assert 1 <= summary["noc80"] <= summary["noc85"] <= summary["noc90"] <= 3
    assert summary["optimised_share"] == 0.0 and summary["mean_steps"] == 0.0


def test_summarize_reports_share_of_optimised_clicks_and_mean_steps():
    runs = [
        {"ious": [0.5, 0.9], "seconds": [0.1, 0.1], "steps": [0, 20]},
        {"ious": [0.2, 0.4, 0.86], "seconds": [0.1] * 3, "steps": [0, 20, 0]},
    ]
    for r in runs:
        r["ious"] += [r["ious"][-1]] * (3 - len(r["ious"]))
    s = summarize(runs, max_clicks=3)
    assert s["optimised_share"] == pytest.approx(2 / 3)
    assert s["mean_steps"] == pytest.approx(40 / 3)
    assert s["noc85"] == pytest.approx((2 + 3) / 2) and s["failures90"] == 1

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.interactive import (
    METHODS,
    Click,
    ClickState,
    RefinementEngine,
    click_maps,
    evaluate_clicks,
    iou,
    load_base_model,
    next_click,
    summarize,
)
from workbench.interactive._data import lesion_view


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(0)
    return load_base_model()


@pytest.fixture(scope="module")
def view():
    return lesion_view(192, seed=123)


def _centre(mask: np.ndarray) -> tuple[float, float]:
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(c), float(r)


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
def test_positive_click_on_empty_prediction_grows_region_containing_it(base_model, view, method):
    image, gt = view
    engine = RefinementEngine(base_model, method=method)
    engine.set_view(image)
    x, y = _centre(gt)
    mask = engine.add_click(x, y, positive=True)
    assert mask[int(y), int(x)]
    assert mask.sum() > 50
    assert iou(mask, gt) > 0.5


def test_cgam_satisfies_every_click_and_negative_click_removes_false_region(base_model, view):
    image, gt = view
    h, w = gt.shape
    false = np.zeros_like(gt)
    rr, cc = np.ogrid[:h, :w]
    # A false region in stroma, away from the lesion.
    ys, xs = np.nonzero(~gt)
    far = np.argmax(np.hypot(ys - _centre(gt)[1], xs - _centre(gt)[0]))
    fy, fx = min(max(ys[far], 20), h - 21), min(max(xs[far], 20), w - 21)
    false = ((rr - fy) ** 2 + (cc - fx) ** 2 <= 12**2) & ~gt
    engine = RefinementEngine(base_model, method="cgam", prior_strength=4.0)
    start = engine.set_view(image, initial_mask=gt | false)
    assert start[fy, fx]
    mask = engine.add_click(fx, fy, positive=False)
    assert not mask[fy, fx]
    assert mask[false].mean() < 0.2


def test_far_pixels_change_little(base_model, view):
    """CGAM keeps its edits local: under 2% of pixels farther than half the view from the
    newest click change state when that click is already satisfied by the network."""
    image, gt = view
    engine = RefinementEngine(base_model, method="cgam")
    engine.set_view(image)
    x, y = _centre(gt)
    before = engine.add_click(x, y, True)
    ys, xs = np.nonzero(gt & before)
    # A second positive click inside the already found lesion.
    k = len(ys) // 3
    after = engine.add_click(float(xs[k]), float(ys[k]), True)
    rr, cc = np.mgrid[: gt.shape[0], : gt.shape[1]]
    far = np.hypot(rr - ys[k], cc - xs[k]) > 0.5 * max(gt.shape)
    assert far.any()
    assert (before[far] != after[far]).mean() < 0.02


@pytest.mark.parametrize("method", METHODS)
def test_undo_restores_exact_previous_mask(base_model, view, method):
    image, gt = view
    engine = RefinementEngine(base_model if method != "random_walker" else None, method=method)
    m0 = engine.set_view(image)
    x, y = _centre(gt)
    m1 = engine.add_click(x, y, True)
    m2 = engine.add_click(5, 5, False)
    m3 = engine.add_click(x + 3, y + 3, True)
    assert np.array_equal(engine.undo(), m2)
    assert np.array_equal(engine.undo(), m1)
    again = engine.add_click(5, 5, False)
    assert np.array_equal(again, m2)  # gate state was restored too
    assert np.array_equal(engine.reset(), m0)
    assert len(engine.clicks) == 0
    del m3


def test_click_outside_view_is_ignored_with_warning(base_model, view):
    image, gt = view
    engine = RefinementEngine(base_model)
    engine.set_view(image)
    x, y = _centre(gt)
    m1 = engine.add_click(x, y, True)
    with pytest.warns(UserWarning, match="outside"):
        m2 = engine.add_click(image.shape[1] + 10, 3, True)
    assert np.array_equal(m1, m2) and len(engine.clicks) == 1


def test_gate_carries_over_and_is_identity_at_start(base_model, view):
    image, gt = view
    # Features cached once per view (no click maps into the backbone), so the clicks have
    # to be satisfied by optimising the gate.
    engine = RefinementEngine(base_model, method="cgam", reencode=False)
    engine.set_view(image)
    with torch.no_grad():
        assert all(float(p.abs().sum()) == 0 for p in engine.module.psi.parameters())
    x, y = _centre(gt)
    engine.add_click(x, y, True)
    mask = engine.add_click(2, 2, True)  # a positive click in stroma forces optimisation
    assert engine.last_steps > 0 and mask[2, 2]
    carried = engine.module.psi.weight.detach().clone()
    assert float(carried.abs().sum()) > 0
    engine.add_click(x, y, True)  # already satisfied: no steps, the gate is kept as it was
    assert engine.last_steps == 0
    assert torch.equal(engine.module.psi.weight.detach(), carried)
    engine.set_view(image)  # a new view starts from the identity again
    assert float(engine.module.psi.weight.detach().abs().sum()) == 0


def test_bad_options():
    with pytest.raises(ValueError, match="choose one of"):
        RefinementEngine(method="magic")


def test_evaluate_and_summarize(view):
    image, gt = view
    engine = RefinementEngine(method="random_walker")
    run = evaluate_clicks(engine, image, gt, max_clicks=3, target_iou=0.99)
    assert len(run["ious"]) == 3 and 1 <= run["n_clicks"] <= 3
    summary = summarize([run, run], max_clicks=3)
    assert summary["n_views"] == 2 and len(summary["miou_per_click"]) == 3
    assert 1 <= summary["noc85"] <= 3

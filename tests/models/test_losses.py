from __future__ import annotations

import pytest
import torch

from workbench.models import (
    binary_kl,
    consistency_loss,
    curriculum_weights,
    detail_mask_loss,
    node_loss,
)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_consistency_zero_for_identical_and_positive_otherwise(kind):
    a = torch.randn(4, 8)
    assert consistency_loss(a, a.clone(), kind=kind) == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss(a, torch.randn(4, 8), kind=kind) > 0.01


def test_consistency_stops_gradient_on_detail_side():
    proj = torch.randn(3, 8, requires_grad=True)
    emb = torch.randn(3, 8, requires_grad=True)
    consistency_loss(proj, emb).backward()
    assert proj.grad is not None and emb.grad is None


def test_binary_kl_zero_at_target_for_soft_targets():
    t = torch.tensor([0.1, 0.5, 0.9])
    assert binary_kl(torch.logit(t), t) == pytest.approx(0.0, abs=1e-5)
    assert binary_kl(torch.zeros(3), t) > 0


def test_node_loss_ignores_unlabelled():
    logits = torch.randn(5, 2, requires_grad=True)
    assert node_loss(logits, torch.full((5,), -1)) == 0
    assert node_loss(logits, torch.tensor([0, 1, -1, -1, -1])) > 0


def test_detail_mask_loss_prefers_the_right_mask():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    good = detail_mask_loss((mask * 2 - 1) * 6, mask)
    bad = detail_mask_loss((1 - mask * 2) * 6, mask)
    assert good < 0.1 < bad


def test_curriculum_schedule():
    w = [curriculum_weights(e, 10) for e in range(10)]
    assert w[0]["detail"] == 0 and w[1]["detail"] == 0 and w[2]["detail"] == 1
    assert w[2]["consistency"] > 0 and w[2]["consistency"] < w[3]["consistency"] <= 1
    assert w[9]["consistency"] == 1
    assert curriculum_weights(9, 10, consistency=False)["consistency"] == 0


def test_mil_lesion_loss_negatives_push_every_crop_positives_only_the_top():
    from workbench.models import mil_lesion_loss

    logits = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    mil_lesion_loss(logits, 0).backward()
    assert (logits.grad > 0).all()  # every crop of a negative slide goes down
    logits.grad = None
    mil_lesion_loss(logits, 1).backward()
    assert logits.grad[0] < 0 and logits.grad[1] == 0 and logits.grad[2] == 0
    assert mil_lesion_loss(torch.tensor([9.0, -9.0]), 1) < mil_lesion_loss(
        torch.tensor([-9.0, -9.0]), 1
    )


def test_slide_loss_label_smoothing_matches_the_smoothed_target_and_stops_at_a_finite_margin():
    import math

    from workbench.models import slide_loss

    z = torch.tensor([0.3, 2.0])
    logp = torch.log_softmax(z, 0)
    eps = 0.2  # two classes: target (eps/2, 1 - eps/2) for class 1
    expected = -((1 - eps / 2) * logp[1] + (eps / 2) * logp[0])
    assert slide_loss(z, 1, label_smoothing=eps) == pytest.approx(float(expected), rel=1e-6)
    assert slide_loss(z, 1) == pytest.approx(float(-logp[1]), rel=1e-6)  # 0: plain CE
    # the smoothed loss is smallest at the margin log((1 - eps/2) / (eps/2)), not at infinity
    margins = torch.linspace(0.0, 12.0, 1201)
    losses = torch.stack([slide_loss(torch.stack([-m / 2, m / 2]), 1, label_smoothing=eps)
                          for m in margins])  # fmt: skip
    best = float(margins[int(losses.argmin())])
    assert best == pytest.approx(math.log((1 - eps / 2) / (eps / 2)), abs=0.02)
    plain = torch.stack([slide_loss(torch.stack([-m / 2, m / 2]), 1) for m in margins])
    assert (plain[1:] <= plain[:-1]).all() and plain[-1] < 1e-4  # plain CE keeps falling
    # class weights still scale the smoothed term
    w = torch.tensor([1.0, 3.0])
    assert slide_loss(z, 1, weight=w, label_smoothing=eps) == pytest.approx(
        3 * float(expected), rel=1e-6
    )

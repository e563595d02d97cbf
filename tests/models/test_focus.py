from __future__ import annotations

import torch

from workbench.models import FocusPredictor, GlobalBranch, attribution_target


def test_focus_predictor_shapes_and_detached_tokens():
    tokens = torch.randn(20, 16, requires_grad=True)
    out = FocusPredictor(token_dim=16)(tokens)
    assert out["logits"].shape == (20,) and ((out["scores"] > 0) & (out["scores"] < 1)).all()
    out["logits"].sum().backward()
    assert tokens.grad is None  # the focus loss never reaches the global branch


def test_attribution_is_normalised(toy_slide):
    x, ei = toy_slide()
    out = GlobalBranch(in_features=10, hidden=16)(x, ei)
    attr = attribution_target(torch.log_softmax(out["logits"], -1)[1], out["tokens"])
    assert attr.shape == (36,) and not attr.requires_grad
    assert attr.min() >= 0 and torch.isclose(attr.max(), torch.tensor(1.0))


def test_select_returns_top_k(toy_slide):
    x, ei = toy_slide()
    fp = FocusPredictor(token_dim=10, top_k=4, hops=1)
    assert fp.select(torch.rand(36), ei).shape == (4,)


def test_focus_target_lesion_rule_against_the_class_rule(toy_slide):
    import pytest

    from workbench.models import focus_target

    x, ei = toy_slide()
    out = GlobalBranch(in_features=10, hidden=16)(x, ei)
    logits, tokens = out["logits"], out["tokens"]
    # a class-0 (reference) slide holds no lesion: zero everywhere
    assert torch.equal(focus_target(logits, tokens, 0, kind="lesion"), torch.zeros(36))
    # another class: the evidence for its margin over class 0
    lesion = focus_target(logits, tokens, 1, kind="lesion")
    assert torch.allclose(lesion, attribution_target(logits[1] - logits[0], tokens))
    assert float(lesion.max()) == pytest.approx(1.0, abs=1e-4)
    # the original rule: the log-probability of the slide's own class, on every slide
    own = focus_target(logits, tokens, 0, kind="class")
    assert torch.allclose(own, attribution_target(torch.log_softmax(logits, -1)[0], tokens))
    with pytest.raises(ValueError, match="focus target"):
        focus_target(logits, tokens, 1, kind="gradcam")


def test_lesion_target_survives_a_saturated_softmax():
    from workbench.models import focus_target

    tokens = torch.rand(12, 4, requires_grad=True)
    weights = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]) * 1e3
    logits = weights @ tokens.sum(0)  # class 1 wins by a margin far beyond float precision
    # the class rule's gradient of log p(1) underflows to zero: nothing to learn from
    assert focus_target(logits, tokens, 1, kind="class").max() == 0.0
    lesion = focus_target(logits, tokens, 1, kind="lesion")
    # the margin's attribution follows the evidence: feature 0 of each node
    assert torch.argmax(lesion) == torch.argmax(tokens[:, 0].detach())
    assert float(lesion.max()) > 0.999

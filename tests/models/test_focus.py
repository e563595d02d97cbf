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

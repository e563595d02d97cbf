from __future__ import annotations

import torch

from workbench.models import (
    SelfCalibratedModel,
    back_calibration_loss,
    consistency_loss,
    focus_loss,
    node_loss,
    slide_loss,
)


def _model(**kw):
    return SelfCalibratedModel(in_features=10, hidden=16, detail_width=8, embed_dim=16, **kw)


def test_self_calibrated_model_shapes(toy_slide):
    x, ei = toy_slide()
    model = _model(top_k=3)
    g = model.forward_global(x, ei)
    idx = model.select_focus(g["focus_scores"], ei)
    out = model(x, ei, crops=torch.rand(3, 3, 32, 32), focus_index=idx)
    assert idx.shape == (3,) and out["logits"].shape == (2,)
    assert out["lesion_logits"].shape == (3, 1, 32, 32) and out["lesion_prob"].shape == (3,)
    assert out["projected"].shape == out["embedding"].shape == (3, 16)
    assert torch.allclose(out["logits"], out["global_logits"] + out["detail_logits"])


def test_without_crops_the_answer_is_global(toy_slide):
    x, ei = toy_slide()
    out = _model().eval()(x, ei)
    assert torch.equal(out["logits"], out["global_logits"])


def test_gradients_reach_every_branch(toy_slide):
    torch.manual_seed(0)
    x, ei = toy_slide()
    model = _model()
    out = model(x, ei, crops=torch.rand(2, 3, 32, 32), focus_index=torch.tensor([0, 20]))
    attr = torch.rand(36)
    loss = (
        slide_loss(out["logits"], 1)
        + focus_loss(out["focus_logits"], attr)
        + consistency_loss(out["projected"], out["embedding"])
        + back_calibration_loss(out["focus_logits"][out["focus_index"]], out["lesion_prob"])
        + out["lesion_logits"].mean()
        + node_loss(out["node_logits"], torch.randint(0, 2, (36,)))
    )
    loss.backward()
    for name in ("global_branch", "focus", "detail", "project", "detail_classifier"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name

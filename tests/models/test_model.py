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


class _RedEncoder:
    """A frozen 'encoder' whose lesion evidence is the red channel of the crop."""

    embed_dim, name = 4, "red"

    def __call__(self, images):
        return {"embedding": images.mean((2, 3)).repeat(1, 2)[:, :4]}

    def evidence_maps(self, images):
        return images[:, 0]


class _Proposals:
    """SlideInputs of a 6x6 grid whose crops are fixed per node."""

    def __init__(self, toy_slide, crops_of):
        self.features, self.edge_index = toy_slide(6, 6, 10)
        self.crops_of, self.crop_calls = crops_of, []

    def crops(self, nodes):
        self.crop_calls.append(list(nodes))
        return torch.stack([self.crops_of(int(n)) for n in nodes])


def test_evidence_confirmation_keeps_the_proposals_whose_evidence_peaks_highest(toy_slide):
    torch.manual_seed(0)
    model = _model(
        encoder={"name": "red", "embed_dim": 4}, confirm_candidates=6, confirm_by="evidence"
    ).eval()
    model.detail.attach(_RedEncoder())
    inputs = _Proposals(toy_slide, lambda n: torch.zeros(3, 18, 18))
    with torch.no_grad():
        g = model.forward_global(inputs.features, inputs.edge_index)
        proposals = model.select_focus(g["focus_scores"], inputs.edge_index, k=6).tolist()
    a, b = proposals[4], proposals[2]  # two late proposals carry a small lesion each

    def crop(n):
        x = torch.zeros(3, 18, 18)
        x[0] = 0.4  # the others: moderate evidence everywhere (a higher mean)
        if n in (a, b):
            x[0] = 0.0
            x[0, 5:10, 8:13] = 1.0 if n == a else 0.9  # a 5x5 lesion: a higher peak
        return x

    inputs.crops_of = crop
    with torch.no_grad():
        out = model.infer(inputs, top_k=2)
    assert inputs.crop_calls[0] == proposals
    assert out["focus_index"].tolist() == [a, b]  # by peak, best first
    # the pooled lesion answer ranks them otherwise: the rule is what decides
    model.config["confirm_by"] = "lesion"
    with torch.no_grad():
        by_lesion = model.infer(inputs, top_k=2)["focus_index"].tolist()
        crops = torch.stack([crop(n) for n in proposals])
        prob = model.forward_detail(crops)["lesion_prob"]
    assert by_lesion == [proposals[i] for i in torch.argsort(prob, descending=True)[:2]]
    assert by_lesion != [a, b]


def test_evidence_confirmation_without_an_encoder_uses_the_lesion_maps(toy_slide, tmp_path):
    from workbench.models import evidence_peaks, load_checkpoint, save_checkpoint

    torch.manual_seed(1)
    model = _model(confirm_candidates=5, confirm_by="evidence").eval()
    gen = torch.Generator().manual_seed(2)
    bank = torch.rand(36, 3, 24, 24, generator=gen)
    inputs = _Proposals(toy_slide, lambda n: bank[n])
    with torch.no_grad():
        out = model.infer(inputs, top_k=2)
        cand = inputs.crop_calls[0]
        maps = torch.sigmoid(model.forward_detail(bank[cand])["lesion_logits"][:, 0])
    best = torch.argsort(evidence_peaks(maps)["value"], descending=True)[:2]
    assert out["focus_index"].tolist() == [cand[i] for i in best]
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m"))
    assert loaded.config["confirm_by"] == "evidence"


def test_confirm_by_must_be_a_known_rule():
    import pytest

    from workbench import OptionError

    with pytest.raises(OptionError, match="confirm_by must be one of"):
        _model(confirm_by="mean")

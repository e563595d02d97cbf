from __future__ import annotations

import pytest
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


# ---------------------------------------------------------------- survival focus (risk_focus)
def test_two_sided_focus_is_high_for_a_strongly_protective_crop():
    """``risk_focus="two-sided"``: the focus learns each crop's risk relative to the slide's
    median crop, and is chosen by the distance from the median, so a crop whose detail risk is
    far below the slide's typical crop scores highest; ``"raise"`` scores it lowest."""
    from workbench.models._model import _risk_answer, _two_sided

    risk = torch.tensor([0.1, -0.05, 0.0, 0.05, -3.0, 0.02])
    answer = _risk_answer(risk, "two-sided")
    assert torch.allclose(answer, torch.sigmoid(risk - 0.01))  # median of the six: 0.01
    assert float(answer[4]) < 0.05 and ((answer > 0) & (answer < 1)).all()
    chosen_by = _two_sided(answer)
    assert int(chosen_by.argmax()) == 4 and float(chosen_by[4]) > 0.4
    assert float(chosen_by[4]) > 10 * float(chosen_by[:4].max())
    # a strongly harmful crop is found the same way
    assert int(_two_sided(_risk_answer(-risk, "two-sided")).argmax()) == 4
    raised = _risk_answer(risk, "raise")
    assert torch.allclose(raised, torch.sigmoid(risk)) and int(raised.argmin()) == 4


@pytest.mark.parametrize(("rule", "first"), [("two-sided", 3), ("raise", 1)])
def test_survival_focus_selection_follows_the_rule(rule, first):
    """A survival model's focus regions: with ``"two-sided"`` the most protective region
    (score far below the slide's median) comes first and the most harmful one next; with
    ``"raise"`` the protective one is never chosen. A class model ignores the rule."""
    edges = torch.zeros((2, 0), dtype=torch.long)  # no neighbours: nothing is suppressed
    scores = torch.tensor([0.5, 0.7, 0.52, 0.02, 0.49, 0.5, 0.48])
    picked = _model(n_classes=1, risk_focus=rule).select_focus(scores, edges, k=2).tolist()
    assert picked[0] == first
    assert picked == ([3, 1] if rule == "two-sided" else [1, 2])
    assert _model(risk_focus=rule).select_focus(scores, edges, k=2).tolist() == [1, 2]


def test_risk_focus_is_stored_and_round_trips_a_checkpoint(tmp_path):
    from workbench.models import load_checkpoint, save_checkpoint

    assert _model(n_classes=1).config["risk_focus"] == "raise"  # the default
    model = _model(n_classes=1, risk_focus="two-sided")
    assert model.config["risk_focus"] == "two-sided"
    save_checkpoint(model, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.config["risk_focus"] == "two-sided" and loaded.predicts_risk


@pytest.mark.parametrize("bad", ["up", "", None, 1, "Two-sided", "deviation"])
def test_bad_risk_focus_is_refused(bad):
    from workbench import OptionError

    with pytest.raises(OptionError, match="risk_focus must be one of"):
        _model(n_classes=1, risk_focus=bad)


@pytest.mark.parametrize("rule", ["two-sided", "raise"])
def test_survival_focus_is_calibrated_on_the_chosen_rule(rule, toy_slide):
    """The back-calibration term of a survival model's training step is the binary KL of the
    focus logits of the magnified crops to the rule's answer on their detail risks."""
    from workbench.models import SlideSample, binary_kl, curriculum_weights
    from workbench.models._model import _risk_answer
    from workbench.models._protocol import StepContext, to_float_image

    torch.manual_seed(0)
    x, ei = toy_slide()
    crops = torch.randint(0, 255, (5, 3, 16, 16), dtype=torch.uint8)
    nodes = torch.tensor([0, 7, 14, 21, 35])
    sample = SlideSample(features=x, edge_index=ei, label=0, crops=crops, crop_nodes=nodes)
    model = _model(n_classes=1, top_k=2, risk_focus=rule).eval()
    with torch.no_grad():  # make the crops' detail risks differ clearly
        model.detail_classifier.weight.mul_(20.0)
        model.detail_classifier.bias.fill_(2.0)
    ctx = StepContext(
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        weights=curriculum_weights(9, 10),
        slide_loss=lambda logits, label: logits.sum() * 0.0,
        images=lambda t: to_float_image(t, torch.device("cpu")),
    )
    _, parts, _ = model.training_step(sample, ctx)
    with torch.no_grad():
        focus = model.forward_global(x, ei)["focus_logits"][nodes]
        risk = model.detail_classifier(model.detail(crops.float() / 255)["embedding"])[:, 0]
        want = binary_kl(focus, _risk_answer(risk, rule))
        other = binary_kl(focus, _risk_answer(risk, {"raise": "two-sided"}.get(rule, "raise")))
    assert float(parts["calibration"].detach()) == pytest.approx(float(want), rel=1e-5)
    assert abs(float(parts["calibration"].detach()) - float(other)) > 1e-3

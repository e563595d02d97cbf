from __future__ import annotations

import pytest
import torch

from workbench.models import GlobalOnly, SelfCalibratedModel, SlideSample, TileABMIL, Trainer


def _samples(grid, n=6, seed=0):
    """Toy slides: class-1 slides carry a bright 'lesion' blob in features and crops."""
    g = torch.Generator().manual_seed(seed)
    ei = grid(6, 6)
    out = []
    for i in range(n):
        label = i % 2
        x = torch.randn(36, 6, generator=g)
        lesion = torch.zeros(36, dtype=torch.long)
        lesion[[7, 8, 13, 14]] = 1
        x[:, 0] += 3.0 * lesion * (1 + label)
        crops = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
        masks = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
        crop_nodes = torch.tensor([7, 14, 0, 30])
        for r in range(2):  # the lesion crops
            crops[r, :, 8:24, 8:24] = 60 if label else 130
            masks[r, :, 8:24, 8:24] = 1
        out.append(
            SlideSample(
                features=x,
                edge_index=ei,
                label=label,
                node_labels=lesion,
                crops=crops,
                crop_nodes=crop_nodes,
                crop_masks=masks,
                tiles=crops,
                name=f"s{i}",
            )
        )
    return out


def test_training_lowers_the_loss(grid):
    torch.manual_seed(0)
    model = SelfCalibratedModel(in_features=6, hidden=16, detail_width=8, embed_dim=16, top_k=2)
    trainer = Trainer(model, epochs=8, lr=5e-3, progress=False).fit(_samples(grid))
    h = trainer.history_
    assert len(h) == 8 and h[-1]["slide"] < h[0]["slide"]
    assert h[-1]["detail"] < h[2]["detail"]  # detail loss on from epoch 3 (20%)
    assert "consistency" in h[-1] and "calibration" in h[-1]
    assert "detail" not in h[0]
    assert "fitted on 6 slides" in repr(trainer)


def test_training_is_seeded(grid):
    def run():
        torch.manual_seed(123)  # the trainer must not depend on outside state after init
        model = GlobalOnly(in_features=6, hidden=8)
        return Trainer(model, epochs=2, seed=1, progress=False).fit(_samples(grid)).history_

    torch.manual_seed(0)
    a = run()
    b = run()
    assert a[-1]["loss"] == pytest.approx(b[-1]["loss"])


def test_ablation_skips_consistency(grid):
    model = SelfCalibratedModel(in_features=6, hidden=8, detail_width=8, embed_dim=8, top_k=2)
    h = Trainer(model, epochs=3, consistency=False, progress=False).fit(_samples(grid, 2)).history_
    assert all("consistency" not in r for r in h)


def test_abmil_trains(grid):
    model = TileABMIL(detail_width=8, embed_dim=8)
    h = Trainer(model, epochs=3, lr=5e-3, progress=False).fit(_samples(grid, 4)).history_
    assert len(h) == 3 and h[-1]["loss"] < h[0]["loss"] + 1.0


def test_training_stops_at_the_first_nan_loss_naming_step_and_cause(grid):
    from workbench import NonFiniteError

    samples = _samples(grid)
    samples[3].features[5, 2] = float("nan")
    model = GlobalOnly(in_features=6, hidden=8)
    with pytest.raises(NonFiniteError, match=r"training stopped at step \d+ \(epoch 1, step \d "
                       r"of 6, slide s3\): the loss is not finite.*cause: the input\(s\) region "
                       r"features hold NaN/inf"):  # fmt: skip
        Trainer(model, epochs=2, progress=False).fit(samples)


def test_nan_weights_stop_training_at_step_one_and_are_named(grid):
    from workbench import NonFiniteError

    model = SelfCalibratedModel(in_features=6, hidden=16, detail_width=8, embed_dim=16, top_k=2)
    with torch.no_grad():
        model.focus.mlp[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"step 1 \(epoch 1, step 1 of 6.*cause: the "
                       r"network's weights focus\."):  # fmt: skip
        Trainer(model, epochs=1, progress=False).fit(_samples(grid))


def test_nan_probabilities_raise_instead_of_labelling_the_slide(grid):
    from workbench import NonFiniteError
    from workbench.models import predict_samples

    samples = _samples(grid, n=2)
    model = GlobalOnly(in_features=6, hidden=8)
    samples[1].features[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"class probabilities of slide s1 hold 2 NaN.*"
                       r"region features hold NaN/inf"):  # fmt: skip
        predict_samples(model, samples)


@pytest.mark.parametrize("lesion_mil", [True, False])
def test_lesion_answer_learns_from_slide_labels_only_with_mil(grid, lesion_mil):
    from workbench.models import TextureEncoder

    encoder = TextureEncoder(input_size=32)
    dim = int(encoder.embed_dim)
    g = torch.Generator().manual_seed(0)
    samples = _samples(grid, 8)
    for s in samples:
        s.crop_masks = None  # slide labels only
        s.node_labels = None
        s.crop_embeddings = torch.randn(4, dim, generator=g)
        if s.label:  # the first two crops of a positive slide show the lesion
            s.crop_embeddings[:2, :4] += 3.0
    torch.manual_seed(0)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, top_k=2,
                                encoder=encoder.spec(), lesion_mil=lesion_mil)  # fmt: skip
    before = model.detail.lesion_head.weight.detach().clone()
    Trainer(model, epochs=12, lr=1e-2, progress=False).fit(samples)
    after = model.detail.lesion_head.weight.detach()
    if not lesion_mil:  # the original behaviour: nothing trains the lesion answer
        assert torch.equal(before, after)
        return
    with torch.no_grad():
        pos = model.detail.from_embeddings(samples[1].crop_embeddings[:2])["lesion_prob"]
        rest = torch.cat([samples[1].crop_embeddings[2:], samples[0].crop_embeddings])
        neg = model.detail.from_embeddings(rest)["lesion_prob"]
    assert pos.max() > 0.5 > neg.max() and pos.mean() > neg.mean() + 0.2


def test_model_records_its_focus_rules():
    model = SelfCalibratedModel(in_features=6, focus_target="class", lesion_mil=False)
    assert model.config["focus_target"] == "class" and model.config["lesion_mil"] is False
    assert SelfCalibratedModel(in_features=6).config["focus_target"] == "detail"
    with pytest.raises(AssertionError, match="focus_target"):
        SelfCalibratedModel(in_features=6, focus_target="attention")


def test_label_smoothing_caps_the_confidence_of_training_slides(grid):
    """Separable toy slides: plain cross-entropy drives the logit margins up; with label
    smoothing they settle near log((1 - ε/2) / (ε/2))."""
    import math

    from workbench.models import predict_samples

    samples = _samples(grid, 8)

    def margins(eps):
        torch.manual_seed(0)
        model = GlobalOnly(in_features=6, hidden=16)
        Trainer(model, epochs=30, lr=1e-2, seed=0, label_smoothing=eps, progress=False).fit(samples)
        z = predict_samples(model, samples, return_logits=True)
        y = torch.tensor([s.label for s in samples]).numpy()
        return (z[range(len(y)), y] - z[range(len(y)), 1 - y]), model

    plain, _ = margins(0.0)
    smooth, _ = margins(0.2)
    cap = math.log(0.9 / 0.1)  # 2.20
    assert (plain > 0).all() and (smooth > 0).all()  # both separate the slides
    assert plain.max() > 2 * cap
    assert smooth.max() < 1.5 * cap and smooth.mean() < plain.mean() / 2


def test_label_smoothing_is_checked(grid):
    from workbench.models import RiskSetMemory

    model = GlobalOnly(in_features=6, hidden=8)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            Trainer(model, label_smoothing=bad)
    memory = RiskSetMemory([1.0, 2.0], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="not the Cox loss"):
        Trainer(model, label_smoothing=0.1, risk_set=memory)

"""The SlideModel protocol and the registry of kinds: every kind trains, saves, loads and
explains through the same hooks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from workbench import OptionError
from workbench.models import (
    MODEL_KINDS,
    GlobalOnly,
    SelfCalibratedModel,
    SlideModel,
    SlideSample,
    TileABMIL,
    Trainer,
    attribution_target,
    kind_of,
    load_checkpoint,
    model_kind,
    pool_by_region,
    predict_samples,
    register_kind,
    save_checkpoint,
)


def test_registry_names_the_three_kinds_and_their_classes():
    assert tuple(MODEL_KINDS) == ("sew", "global", "abmil")
    assert model_kind("sew") is SelfCalibratedModel
    assert model_kind("global") is GlobalOnly
    assert model_kind("abmil") is TileABMIL
    assert kind_of(TileABMIL(detail_width=4, embed_dim=8)) == "abmil"
    assert kind_of(GlobalOnly) == "global"


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(OptionError, match="one of \\('sew', 'global', 'abmil'"):
        model_kind("vit")
    with pytest.raises(OptionError, match="not a registered model kind"):
        kind_of(nn.Linear(2, 2))
    with pytest.raises(OptionError, match="taken by SelfCalibratedModel"):
        register_kind("sew", GlobalOnly)
    with pytest.raises(OptionError, match="not a SlideModel"):
        register_kind("linear", nn.Linear)


def test_trainer_refuses_a_module_that_is_not_a_slide_model():
    with pytest.raises(TypeError, match="SlideModel"):
        Trainer(nn.Linear(2, 2))


def test_pool_by_region_takes_the_mean_inside_and_the_nearest_tile_elsewhere():
    values = torch.tensor([1.0, 3.0, 10.0, 7.0])
    tile_region = torch.tensor([0, 0, 2, -1])  # tile 3 lies on background
    region_tile = torch.tensor([0, 3, 2])  # region 1 holds no tile centre: tile 3 is nearest
    assert pool_by_region(values, tile_region, region_tile).tolist() == [2.0, 7.0, 10.0]
    emb = torch.arange(8.0).reshape(4, 2)
    pooled = pool_by_region(emb, tile_region, region_tile)
    assert pooled.tolist() == [[1.0, 2.0], [6.0, 7.0], [4.0, 5.0]]


class _Inputs:
    """SlideInputs from tensors: a 6x6 region grid, 2 tiles per region but none in region 5."""

    def __init__(self, toy_slide, size: int = 16) -> None:
        self.features, self.edge_index = toy_slide(6, 6, 10)
        g = torch.Generator().manual_seed(1)
        self.region_ids = [r for r in range(36) if r != 5]
        self.tile_region = torch.tensor([r for r in self.region_ids for _ in range(2)])
        self.region_tile = torch.tensor(
            [2 * self.region_ids.index(r if r != 5 else 4) for r in range(36)]
        )
        self.tiles = torch.rand(len(self.tile_region), 3, size, size, generator=g)
        self.size, self.crop_calls = size, []

    def crops(self, nodes):
        self.crop_calls.append(list(nodes))
        return torch.rand(len(nodes), 3, self.size, self.size, generator=torch.Generator())

    def tile_batches(self):
        for start in range(0, len(self.tiles), 16):
            yield self.tiles[start : start + 16]


@pytest.mark.parametrize("kind", ["sew", "global", "abmil"])
def test_every_kind_infers_the_same_keys(kind, toy_slide):
    torch.manual_seed(0)
    kw = {"n_classes": 3}
    if kind != "abmil":
        kw.update(in_features=10, hidden=8)
    if kind != "global":
        kw.update(detail_width=4, embed_dim=8)
    model = model_kind(kind)(**kw).eval()
    inputs = _Inputs(toy_slide)
    out = model.infer(inputs, top_k=3)
    assert {"logits", "region_scores", "region_features", "focus_index"} <= set(out)
    assert out["logits"].shape == (3,) and out["region_scores"].shape == (36,)
    assert out["region_features"].shape[0] == 36 and out["focus_index"].shape == (3,)
    scores = out["region_scores"]
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    if kind != "sew":  # scaled over the slide (SEW's focus scores are sigmoids)
        assert float(scores.max()) == pytest.approx(1.0)
    assert ("lesion_prob" in out) == model.has_detail == (kind == "sew")
    if kind == "sew":  # only the chosen regions were read at the detail magnification
        assert inputs.crop_calls == [out["focus_index"].tolist()]
        assert out["lesion_maps"].shape == (3, 16, 16)
    else:
        assert inputs.crop_calls == []


def test_global_only_region_scores_are_the_attribution_of_its_answer(toy_slide):
    torch.manual_seed(0)
    model = GlobalOnly(in_features=10, hidden=8, n_classes=2).eval()
    inputs = _Inputs(toy_slide)
    with torch.no_grad():
        out = model.infer(inputs)
    ref = model(inputs.features, inputs.edge_index)
    pred = int(ref["logits"].argmax())
    expected = attribution_target(torch.log_softmax(ref["logits"], -1)[pred], ref["tokens"])
    assert torch.allclose(out["region_scores"], expected)
    assert torch.equal(out["global_logits"], out["logits"])
    assert out["focus_index"].shape == (4,)  # the default top-K


def test_abmil_region_scores_are_its_tile_attention_by_region(toy_slide):
    torch.manual_seed(0)
    model = TileABMIL(detail_width=4, embed_dim=8).eval()
    inputs = _Inputs(toy_slide)
    out = model.infer(inputs, top_k=2)
    with torch.no_grad():
        ref = model(inputs.tiles)
    region = pool_by_region(ref["attention"], inputs.tile_region, inputs.region_tile)
    expected = (region - region.min()) / (region.max() - region.min())
    assert torch.allclose(out["region_scores"], expected, atol=1e-6)
    assert torch.allclose(out["logits"], ref["logits"], atol=1e-6)
    assert torch.allclose(out["tile_attention"], ref["attention"], atol=1e-6)
    assert int(out["focus_index"][0]) == int(expected.argmax())


def test_checkpoint_records_the_kind_and_loads_old_ones_by_class(tmp_path):
    from workbench.models._checkpoint import _config_digest

    model = GlobalOnly(in_features=10, hidden=8)
    folder = save_checkpoint(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "global" and config["model"] == "GlobalOnly"
    assert config["config"] == model.to_config()
    # A checkpoint written before kinds were recorded names only the class.
    del config["kind"]
    config["config_sha256"] = _config_digest(config)
    (folder / "config.json").write_text(json.dumps(config))
    assert isinstance(load_checkpoint(folder), GlobalOnly)
    config["model"] = "Mystery"
    config["config_sha256"] = _config_digest(config)
    (folder / "config.json").write_text(json.dumps(config))
    from workbench import CheckpointError

    with pytest.raises(CheckpointError, match="unknown model kind 'Mystery'"):
        load_checkpoint(folder)


class _MeanFeatures(SlideModel):
    """A new kind in one class: the mean region feature through a linear layer."""

    region_score = "distance of the region's features from the mean"

    def __init__(self, *, in_features: int, n_classes: int = 2, **meta) -> None:
        super().__init__()
        self.config = {"in_features": in_features, "n_classes": n_classes, **meta}
        self.config.setdefault("preprocessing", {})
        self.head = nn.Linear(in_features, n_classes)

    def training_step(self, sample, ctx):
        logits = self.predict_logits(sample, device=ctx.device)
        loss = ctx.slide_loss(logits, sample.label)
        return loss, {"slide": loss}, logits

    def predict_logits(self, sample, *, device, crop_source=None):
        return self.head(sample.features.to(device).float().mean(0))

    def infer(self, inputs, *, top_k=None):
        from workbench.models import graph_nms

        x = inputs.features
        d = (x - x.mean(0)).norm(dim=1)
        scores = d / d.max()
        k = self._top_k(top_k, x.shape[0])
        return {
            "logits": self.head(x.mean(0)),
            "region_scores": scores,
            "region_features": x,
            "focus_index": graph_nms(scores, inputs.edge_index, k=k, hops=1),
        }


def test_a_new_kind_is_one_class_plus_a_registry_entry(tmp_path, toy_slide):
    from workbench.models import _protocol

    register_kind("mean", _MeanFeatures)
    try:
        assert "mean" in MODEL_KINDS and kind_of(_MeanFeatures) == "mean"
        samples = []
        for i in range(4):
            x, ei = toy_slide(6, 6, 10, seed=i)
            samples.append(SlideSample(features=x + 2.0 * (i % 2), edge_index=ei, label=i % 2))
        model = _MeanFeatures(in_features=10)
        Trainer(model, epochs=20, lr=0.05, progress=False).fit(samples)
        probs = predict_samples(model, samples)
        assert (probs.argmax(1) == [0, 1, 0, 1]).all()
        loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m"))
        assert isinstance(loaded, _MeanFeatures)
        assert (predict_samples(loaded, samples) == probs).all()
        assert loaded.infer(_Inputs(toy_slide))["focus_index"].shape == (4,)
    finally:
        _protocol._KINDS.pop("mean", None)
    assert "mean" not in MODEL_KINDS


def test_sew_detail_confirmation_keeps_the_most_lesion_like_of_its_proposals(toy_slide, tmp_path):
    torch.manual_seed(0)
    model = SelfCalibratedModel(
        in_features=10, hidden=8, detail_width=4, embed_dim=8, confirm_candidates=6
    ).eval()
    inputs = _Inputs(toy_slide)
    with torch.no_grad():
        out = model.infer(inputs, top_k=2)
        proposals = model.select_focus(
            model.forward_global(inputs.features, inputs.edge_index)["focus_scores"],
            inputs.edge_index,
            k=6,
        )
    first, second = inputs.crop_calls  # six proposals magnified, then the two kept
    assert first == proposals.tolist() and len(second) == 2
    assert set(second) <= set(first) and out["focus_index"].tolist() == second
    # the kept two are the most lesion-like of the six (same crops, deterministic branch)
    crops = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    inputs.crops = lambda nodes: crops[[first.index(n) for n in nodes]]
    inputs.crop_calls = []
    with torch.no_grad():
        out = model.infer(inputs, top_k=2)
        probe = model.forward_detail(crops, model.forward_global(
            inputs.features, inputs.edge_index)["tokens"][proposals])["lesion_prob"]  # fmt: skip
    best = [first[i] for i in torch.argsort(probe, descending=True)[:2].tolist()]
    assert out["focus_index"].tolist() == best
    # a saved model keeps the setting; 0 restores the focus predictor's own choice
    save_checkpoint(model, tmp_path / "m")
    assert load_checkpoint(tmp_path / "m").config["confirm_candidates"] == 6
    model.config["confirm_candidates"] = 0
    with torch.no_grad():
        plain = model.infer(_Inputs(toy_slide), top_k=2)["focus_index"]
    assert plain.tolist() == proposals[:2].tolist()

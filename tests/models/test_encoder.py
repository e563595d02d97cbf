"""Pluggable tile encoders: a module from Python, a .pt2 file, the checkpoint's refusal of others."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench import EncoderError
from workbench.models import (
    EncoderDetail,
    ModuleEncoder,
    SelfCalibratedModel,
    SlideSample,
    TileABMIL,
    Trainer,
    export_encoder,
    load_checkpoint,
    load_encoder,
    predict_samples,
    save_checkpoint,
)


class TinyViTish(nn.Module):
    """Stands in for a foundation model: (B, 3, 32, 32) normalised images -> (B, 24)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 12, 4, stride=4)
        self.head = nn.Linear(12, 24)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class WithMap(nn.Module):
    def forward(self, x):
        emb = x.mean(dim=(2, 3)).repeat(1, 2)
        return {"embedding": emb, "lesion_logits": x[:, :1, ::2, ::2]}


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "tiny.pt2"
    export_encoder(TinyViTish(), path, input_size=32, mpp=1.0, name="tiny-vit")
    return path


def test_module_encoder_resizes_normalises_and_is_frozen():
    enc = ModuleEncoder(TinyViTish(), input_size=32, mpp=1.0)
    assert enc.embed_dim == 24 and enc.frozen and enc.name == "TinyViTish"
    crops = torch.rand(5, 3, 48, 48)  # another size: resized to 32 inside
    out = enc(crops)
    assert out["embedding"].shape == (5, 24) and "lesion_logits" not in out
    assert not any(p.requires_grad for p in enc.parameters())
    expected = enc.module(
        (torch.nn.functional.interpolate(crops, size=(32, 32), mode="bilinear") - enc._mean)
        / enc._std
    )
    assert torch.allclose(out["embedding"], expected, atol=1e-5)
    enc.train()
    assert not enc.module.training  # stays in inference mode
    spec = enc.spec()
    assert spec["source"] == "module" and spec["embed_dim"] == 24 and len(spec["sha256"]) == 64


def test_dict_outputs_with_a_lesion_map_are_upsampled():
    enc = ModuleEncoder(WithMap(), input_size=16, mpp=0.5)
    out = enc(torch.rand(2, 3, 16, 16))
    assert out["embedding"].shape == (2, 6) and out["lesion_logits"].shape == (2, 1, 16, 16)


def test_bad_encoder_outputs_are_explained():
    class Scalar(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.raises(EncoderError, match=r"\(B, E\) embeddings.*num_classes=0"):
        ModuleEncoder(Scalar())
    with pytest.raises(EncoderError, match="without 'embedding'"):
        ModuleEncoder(type("D", (nn.Module,), {"forward": lambda self, x: {"feat": x}})())


def test_pt2_file_round_trip_matches_the_module(pt2):
    enc = load_encoder(pt2)
    assert isinstance(enc, ModuleEncoder)
    assert (enc.name, enc.input_size, enc.mpp, enc.embed_dim) == ("tiny-vit", 32, 1.0, 24)
    assert enc.spec()["source"] == "file" and enc.spec()["file"].endswith("tiny.pt2")
    x = torch.rand(3, 3, 32, 32)
    direct = ModuleEncoder(TinyViTish(), input_size=32, mpp=1.0)
    assert torch.allclose(enc(x)["embedding"], direct(x)["embedding"], atol=1e-5)
    assert enc(torch.rand(7, 3, 32, 32))["embedding"].shape == (7, 24)  # any batch size


def test_load_encoder_sources_and_errors(tmp_path):
    assert load_encoder(None) is None and load_encoder("builtin") is None
    assert isinstance(load_encoder(TinyViTish(), input_size=32), ModuleEncoder)
    with pytest.raises(EncoderError, match="unknown encoder 'uni'.*nothing is downloaded"):
        load_encoder("uni")
    with pytest.raises(EncoderError, match="no encoder file"):
        load_encoder(tmp_path / "missing.pt2")
    torch.save(TinyViTish().state_dict(), tmp_path / "weights.pth")
    with pytest.raises(EncoderError, match="pickled .* refused"):
        load_encoder(tmp_path / "weights.pth")
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(EncoderError, match="cannot load the encoder file"):
        load_encoder(tmp_path / "junk.pt2")


def _encoder_samples(grid, enc, n=4):
    """Toy slides whose cached crop embeddings come from ``enc`` (as the engine caches them)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        label = i % 2
        crops = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
        crops[:2, :, 8:24, 8:24] = 60 if label else 140
        masks = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
        masks[:2, :, 8:24, 8:24] = 1
        with torch.no_grad():
            emb = enc(crops.float() / 255)["embedding"]
        out.append(
            SlideSample(
                features=torch.randn(36, 6, generator=g),
                edge_index=grid(6, 6),
                label=label,
                crops=crops,
                crop_nodes=torch.tensor([7, 14, 0, 30]),
                crop_masks=masks,
                crop_embeddings=emb,
                tile_embeddings=emb,
                name=f"s{i}",
            )
        )
    return out


def test_sew_with_a_frozen_encoder_trains_on_cached_embeddings(grid, monkeypatch):
    enc = ModuleEncoder(TinyViTish(), input_size=32, mpp=1.0)
    samples = _encoder_samples(grid, enc)
    calls = []
    monkeypatch.setattr(enc, "forward", lambda x: calls.append(len(x)) or {"embedding": None})
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, top_k=2, encoder=enc.spec())
    assert isinstance(model.detail, EncoderDetail)
    before = {k: v.clone() for k, v in model.detail.state_dict().items()}
    h = Trainer(model, epochs=4, lr=5e-3, progress=False, augment={"sigma": 0.05, "bias": 0.02})
    h = h.fit(samples).history_
    assert calls == []  # the encoder never ran during training: embeddings were cached
    assert "detail" in h[-1] and h[-1]["slide"] < h[0]["slide"] + 0.5
    after = model.detail.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the heads learnt
    assert "encoder" not in "".join(model.state_dict())  # encoder weights are not the model's
    probs = predict_samples(model, samples)
    assert probs.shape == (4, 2) and torch.allclose(
        torch.from_numpy(probs).sum(1), torch.ones(4, dtype=torch.float64)
    )


def test_abmil_with_a_frozen_encoder(grid):
    enc = ModuleEncoder(TinyViTish(), input_size=32, mpp=1.0)
    model = TileABMIL(embed_dim=8, encoder=enc.spec())
    model.attach_encoder(enc)
    samples = _encoder_samples(grid, enc)
    Trainer(model, epochs=2, progress=False).fit(samples)
    tiles = torch.rand(5, 3, 32, 32)
    direct = model.embed_tiles(tiles)
    cached = model.embed_raw(enc(tiles)["embedding"])
    assert torch.allclose(direct, cached, atol=1e-6)


def test_checkpoint_records_the_encoder_and_refuses_another(pt2, tmp_path):
    enc = load_encoder(pt2)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, encoder=enc.spec())
    model.attach_encoder(enc)
    save_checkpoint(model, tmp_path / "m")
    # the recorded .pt2 file is found and checked by its SHA-256
    back = load_checkpoint(tmp_path / "m")
    assert back.tile_encoder is not None and back.tile_encoder.sha256 == enc.sha256
    crops = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model.forward_detail(crops)["embedding"]
        b = back.forward_detail(crops)["embedding"]
    assert torch.allclose(a, b)
    other = ModuleEncoder(TinyViTish(seed=1), input_size=32, mpp=1.0)
    with pytest.raises(EncoderError, match="trained with the encoder 'tiny-vit'.*not with"):
        load_checkpoint(tmp_path / "m", encoder=other)
    moved = tmp_path / "moved.pt2"
    moved.write_bytes(pt2.read_bytes())
    assert load_checkpoint(tmp_path / "m", encoder=moved).tile_encoder.sha256 == enc.sha256


def test_checkpoint_without_its_encoder_file_says_what_to_pass(tmp_path):
    enc = ModuleEncoder(TinyViTish(), input_size=32, mpp=1.0)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, encoder=enc.spec())
    save_checkpoint(model, tmp_path)
    with pytest.raises(EncoderError, match="pass it: load_checkpoint"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path, encoder=TinyViTish()).tile_encoder is not None
    plain = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8)
    save_checkpoint(plain, tmp_path / "plain")
    with pytest.raises(EncoderError, match="built-in detail network"):
        load_checkpoint(tmp_path / "plain", encoder=TinyViTish())


def test_frozen_embeddings_are_standardised_with_training_statistics(grid, tmp_path):
    """The trainer stores the training crops' (tiles') embedding mean and SD in the model, so
    a hand-made encoder whose dimensions differ in scale by orders of magnitude trains too;
    the statistics travel with the checkpoint."""
    enc = ModuleEncoder(TinyViTish(), input_size=32, mpp=1.0)
    samples = _encoder_samples(grid, enc)
    for s in samples:  # one dimension a thousand times the others
        s.crop_embeddings = s.crop_embeddings * torch.tensor([1000.0] + [1.0] * 23)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, top_k=2, encoder=enc.spec())
    Trainer(model, epochs=1, progress=False).fit(samples)
    raw = torch.cat([s.crop_embeddings for s in samples])
    assert torch.allclose(model.detail.raw_mean, raw.mean(0), rtol=1e-4, atol=1e-5)
    assert torch.allclose(model.detail.raw_std, raw.std(0), rtol=1e-4, atol=1e-5)
    model.attach_encoder(enc)
    save_checkpoint(model, tmp_path / "m")
    back = load_checkpoint(tmp_path / "m", encoder=enc)
    assert torch.equal(back.detail.raw_std, model.detail.raw_std)
    # tile MIL: no cached embeddings, so the attached encoder runs once on the training tiles
    abmil = TileABMIL(embed_dim=8, encoder=enc.spec())
    abmil.attach_encoder(enc)
    for s in samples:
        s.tile_embeddings, s.tiles = None, s.crops
    Trainer(abmil, epochs=1, progress=False).fit(samples)
    tiles = torch.cat([s.crops for s in samples]).float() / 255
    assert torch.allclose(abmil.raw_mean, enc(tiles)["embedding"].mean(0), atol=1e-5)


class Tokens(nn.Module):
    """A ViT-like trunk without a head: (B, 3, S, S) -> (B, tokens, 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 8, 16, stride=16)

    def forward(self, x):
        return self.patch(x).flatten(2).transpose(1, 2)


class Pooled(Tokens):
    def forward(self, x):
        return super().forward(x).mean(dim=1)


def _plain_export(module, path, *, batch=None, size=64):
    """A file made with plain ``torch.export`` (no export_encoder, no metadata)."""
    dyn = None if batch is None else ({0: torch.export.Dim("batch", min=1, max=1024)},)
    program = torch.export.export(module.eval(), (torch.zeros(2, 3, size, size),),
                                  dynamic_shapes=dyn)  # fmt: skip
    torch.export.save(program, path)
    return path


def test_plain_torch_export_file_says_what_it_needs(tmp_path):
    # fixed 64-px input, fixed batch, 3-D output: what a user gets from torch.export.export
    plain = _plain_export(Tokens(), tmp_path / "plain.pt2")
    with pytest.raises(EncoderError, match=r"fixed batch of 2 \(input \(2, 3, 64, 64\)\).*"
                       r"\(B, 3, S, S\).*returns \(B, E\) embeddings.*export_encoder"):  # fmt: skip
        load_encoder(plain)
    # any batch, but 3-D tokens out
    tokens = _plain_export(Tokens(), tmp_path / "tokens.pt2", batch="any")
    with pytest.raises(EncoderError, match=r"tokens.pt2.*got shape \(2, 16, 8\).*class token"
                       r".*\(B, E\) embeddings"):  # fmt: skip
        load_encoder(tokens)
    # a fitting file without metadata: its 64-px input size is read from the program
    pooled = _plain_export(Pooled(), tmp_path / "pooled.pt2", batch="any")
    enc = load_encoder(pooled)
    assert (enc.input_size, enc.embed_dim) == (64, 8)
    assert enc(torch.rand(5, 3, 100, 100))["embedding"].shape == (5, 8)
    with pytest.raises(EncoderError, match="exported for 64-px crops.*not 224 px"):
        load_encoder(pooled, input_size=224)


def test_a_module_that_fails_on_crops_is_an_encoder_error():
    class Only64(nn.Module):
        def forward(self, x):
            assert x.shape[-1] == 64, "wants 64 px"
            return x.mean(dim=(2, 3))

    with pytest.raises(EncoderError, match=r"fails on a batch of two 224-px crops "
                       r"\(AssertionError: wants 64 px\); give input_size="):  # fmt: skip
        ModuleEncoder(Only64())
    assert ModuleEncoder(Only64(), input_size=64).embed_dim == 3


def test_an_encoder_that_returns_nan_is_refused():
    from workbench import NonFiniteError

    class Broken(TinyViTish):
        def forward(self, x):
            out = super().forward(x)
            return out * torch.where(x[:, :1, 0, 0] > 0.5, float("nan"), 1.0)

    enc = ModuleEncoder(Broken(), input_size=32, mpp=1.0)  # the zero probe is finite
    assert torch.isfinite(enc(torch.zeros(2, 3, 32, 32))["embedding"]).all()
    with pytest.raises(NonFiniteError, match=r"embeddings of encoder 'Broken' for 3 crops hold "
                       r"72 NaN"):  # fmt: skip
        enc(torch.ones(3, 3, 32, 32))

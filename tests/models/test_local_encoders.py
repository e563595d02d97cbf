"""Foundation-model encoders from local weight files, by architecture name or registry name."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from workbench import EncoderError
from workbench.models import (
    ENCODER_ARCHITECTURES,
    LocalEncoder,
    RegistryEntry,
    SelfCalibratedModel,
    VisionTransformer,
    encoder_registry_path,
    load_checkpoint,
    load_encoder,
    load_local_encoder,
    read_encoder_registry,
    save_checkpoint,
)
from workbench.models._encoder import file_sha256

torch.set_num_threads(1)

TINY = {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "img_size": 32,
        "mlp": "swiglu", "mlp_hidden": 32, "reg_tokens": 2, "class_pos": False,
        "layer_scale": True, "pooling": "cls+mean"}  # fmt: skip


def _weights(path, config=TINY, seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(**config).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path) if path.suffix == ".safetensors" else torch.save(state, path)
    return vit


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry with one tiny custom ViT (relative path, checksum) and one named one."""
    vit = _weights(tmp_path / "models" / "tiny" / "model.safetensors")
    _weights(tmp_path / "models" / "wrong.bin", {**TINY, "mlp": "gelu", "mlp_hidden": 24})
    entries = {
        "tiny": {
            "path": "models/tiny/model.safetensors",
            "architecture": TINY,
            "mpp": 1.0,
            "input_size": 32,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "sha256": file_sha256(tmp_path / "models" / "tiny" / "model.safetensors"),
        },
        "Wrong": {"path": "models/wrong.bin", "architecture": TINY},
        "gone": {"path": "models/gone.bin", "architecture": "uni"},
    }
    path = tmp_path / "encoders.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("WORKBENCH_ENCODERS", str(path))
    return {"path": path, "vit": vit, "root": tmp_path}


def test_registry_encoder_by_name(registry):
    enc = load_encoder("tiny")
    assert isinstance(enc, LocalEncoder) and enc.frozen
    assert (enc.name, enc.input_size, enc.mpp, enc.embed_dim) == ("tiny", 32, 1.0, 32)
    assert enc.sha256 == file_sha256(registry["root"] / "models" / "tiny" / "model.safetensors")
    crops = torch.rand(3, 3, 48, 48)  # another crop size: resized to 32 inside
    small = torch.nn.functional.interpolate(crops, size=(32, 32), mode="bilinear")
    expected = registry["vit"]((small - 0.5) / 0.25)  # the entry's normalisation
    torch.testing.assert_close(enc(crops)["embedding"], expected, atol=1e-6, rtol=1e-6)
    spec = enc.spec()
    assert spec["source"] == "local" and spec["name"] == "tiny"
    assert spec["registry"] == str(registry["path"].resolve()) and spec["vit"]["reg_tokens"] == 2
    assert spec["weights"].endswith("model.safetensors") and spec["mean"] == [0.5, 0.5, 0.5]
    # the same by an explicit registry path, without the environment variable
    assert load_encoder("TINY", registry=registry["path"]).sha256 == enc.sha256
    entry = read_encoder_registry(registry["path"])["tiny"]
    assert isinstance(entry, RegistryEntry) and entry.path.is_absolute() and entry.mpp == 1.0
    assert entry.std == (0.25, 0.25, 0.25) and entry.architecture == TINY
    # overrides of the entry's geometry; another weights file for the same name (not checked)
    other = registry["root"] / "other.safetensors"
    _weights(other, seed=3)
    direct = load_local_encoder("tiny", weights=other, input_size=48, mpp=0.5)
    assert (direct.input_size, direct.mpp, direct.mean) == (48, 0.5, (0.5, 0.5, 0.5))
    assert direct.sha256 == file_sha256(other) != enc.sha256


def test_default_registry_location(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_ENCODERS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert encoder_registry_path() == tmp_path / "workbench" / "encoders.json"
    assert read_encoder_registry() == {}  # no file at the default place: no encoders
    _weights(tmp_path / "w.bin")
    (tmp_path / "workbench").mkdir()
    (tmp_path / "workbench" / "encoders.json").write_text(
        json.dumps({"t": {"path": str(tmp_path / "w.bin"), "architecture": TINY}})
    )
    enc = load_encoder("t")
    assert enc.input_size == 224 and enc.mpp == 0.5  # defaults of a custom architecture


def test_named_architecture_with_a_weights_file(tmp_path):
    arch = ENCODER_ARCHITECTURES["kaiko-vits8"]
    small = {**arch.vit, "depth": 1}  # same layout as the real file, one block: fast
    vit = _weights(tmp_path / "kaiko" / "pytorch_model.bin", small)
    with pytest.raises(
        EncoderError,
        match=r"the weights in .* do not fit the architecture 'kaiko-vits8': missing key 'blocks.1.norm1.weight'",
    ):
        load_encoder("kaiko-vits8", weights=tmp_path / "kaiko")
    full = _weights(tmp_path / "full" / "pytorch_model.bin", arch.vit)
    enc = load_encoder("kaiko-vits8", weights=tmp_path / "full")
    assert (enc.embed_dim, enc.input_size, enc.mpp, enc.mean) == (384, 224, 0.5, (0.5, 0.5, 0.5))
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(enc(x)["embedding"], full((x - 0.5) / 0.5), atol=1e-5, rtol=1e-5)
    assert enc.spec()["architecture"] == "kaiko-vits8" and enc.spec()["registry"] is None
    assert vit is not None


def test_errors_say_what_to_fix(registry, tmp_path):
    with pytest.raises(
        EncoderError,
        match=r"unknown encoder 'nosuch'.*registry names in .*encoders.json.*: gone, tiny, wrong; architectures.*uni2-h.*nothing is downloaded",
    ):
        load_encoder("nosuch")
    with pytest.raises(
        EncoderError, match=r"unknown encoder 'uni' .*architecture, which needs its weights file"
    ):
        load_encoder("uni")
    with pytest.raises(
        EncoderError,
        match=r"no weights file at '.*gone.bin' for the encoder 'gone' \(from the registry",
    ):
        load_encoder("gone")
    with pytest.raises(
        EncoderError,
        match=r"do not fit the architecture given in the registry: .blocks.0.mlp.fc1.weight. has shape \(24, 16\)",
    ):
        load_encoder("wrong")
    # a changed file: checksum mismatch
    _weights(registry["root"] / "models" / "tiny" / "model.safetensors", seed=5)
    with pytest.raises(
        EncoderError, match="checksum mismatch for the encoder 'tiny'.*update the sha256"
    ):
        load_encoder("tiny")
    # an explicit registry that is not there, and a registry with a bad entry
    with pytest.raises(EncoderError, match="no encoder registry at"):
        load_encoder("tiny", registry=tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    for content, phrase in (
        ({"x": {"path": "a.bin", "architecture": "vit-huge"}}, "unknown architecture 'vit-huge'"),
        ({"x": {"path": "a.bin", "architecture": "uni", "dtype": "f16"}}, "unknown field 'dtype'"),
        ({"x": {"path": "a.bin"}}, "the field 'architecture' is missing"),
        ({"x": {"path": "a.bin", "architecture": "uni", "sha256": "abc"}}, "64 hexadecimal"),
        ({"x": {"path": "a.bin", "architecture": "uni", "mpp": 0}}, "mpp must be a positive"),
        ({"texture": {"path": "a.bin", "architecture": "uni"}}, "is a built-in name"),
    ):
        bad.write_text(json.dumps(content))
        with pytest.raises(EncoderError, match=phrase):
            read_encoder_registry(bad)
    bad.write_text("{not json")
    with pytest.raises(EncoderError, match="is not valid JSON"):
        load_encoder("x", registry=bad)
    with pytest.raises(EncoderError, match="is not a .pt2 encoder file.*weights=FILE"):
        load_encoder(registry["root"] / "models" / "wrong.bin")


def test_hf_folder_through_the_registry(tmp_path, monkeypatch):
    transformers = pytest.importorskip(
        "transformers", reason="transformers (test extra) writes the Hugging Face folder"
    )
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
        use_swiglu_ffn=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Dinov2Model(config).eval()
    model.save_pretrained(tmp_path / "phikon-like")
    (tmp_path / "r.json").write_text(json.dumps({"p": {"path": "phikon-like", "architecture": "hf",
                                                        "input_size": 32}}))  # fmt: skip
    enc = load_encoder("p", registry=tmp_path / "r.json")
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(enc.mean).view(1, 3, 1, 1), torch.tensor(enc.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(pixel_values=(x - mean) / std).pooler_output
    torch.testing.assert_close(enc(x)["embedding"], ref, atol=1e-5, rtol=1e-5)


def test_checkpoint_reloads_a_registry_encoder_by_name(registry, tmp_path):
    enc = load_encoder("tiny")
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, encoder=enc.spec())
    model.attach_encoder(enc)
    save_checkpoint(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert config["encoder"]["name"] == "tiny" and config["encoder"]["source"] == "local"
    back = load_checkpoint(tmp_path / "m")  # nothing passed: found by its registry name
    assert isinstance(back.tile_encoder, LocalEncoder) and back.tile_encoder.sha256 == enc.sha256
    crops = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model.forward_detail(crops)["embedding"]
        b = back.forward_detail(crops)["embedding"]
    torch.testing.assert_close(a, b)
    assert load_checkpoint(tmp_path / "m", encoder="tiny").tile_encoder.sha256 == enc.sha256
    # the registry now points "tiny" at other weights: refused, not silently used
    other = registry["root"] / "models" / "other.safetensors"
    _weights(other, seed=9)
    entries = json.loads(registry["path"].read_text())
    entries["tiny"].update(path=str(other), sha256=file_sha256(other))
    registry["path"].write_text(json.dumps(entries))
    with pytest.raises(EncoderError, match="trained with the encoder 'tiny'.*not with"):
        load_checkpoint(tmp_path / "m")
    # gone from the registry, and no file where it was recorded: say where to add it
    del entries["tiny"]
    registry["path"].write_text(json.dumps(entries))
    (registry["root"] / "models" / "tiny" / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match="add 'tiny' to the encoder registry"):
        load_checkpoint(tmp_path / "m")


def test_checkpoint_with_an_architecture_and_file_reloads_from_the_file(tmp_path):
    arch = ENCODER_ARCHITECTURES["lunit-vits8"]
    _weights(tmp_path / "lunit.bin", arch.vit)
    enc = load_encoder("lunit-vits8", weights=tmp_path / "lunit.bin", input_size=64)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, encoder=enc.spec())
    save_checkpoint(model, tmp_path / "m")
    back = load_checkpoint(tmp_path / "m")
    assert back.tile_encoder.sha256 == enc.sha256 and back.tile_encoder.input_size == 64
    assert back.tile_encoder.mean == arch.mean

"""The plain-torch ViT family and its weight loaders, checked against Hugging Face transformers
and against timm's key names."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from workbench import EncoderError
from workbench.models import (
    ENCODER_ARCHITECTURES,
    VisionTransformer,
    hf_vit_config,
    load_vit_weights,
    read_weights,
)

torch.set_num_threads(1)

# Small configurations of each family (same switches as the named models, tiny sizes).
UNI_LIKE = {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "img_size": 32,
            "layer_scale": True}  # fmt: skip
SWIGLU_REG = {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "img_size": 32,
              "mlp": "swiglu", "mlp_hidden": 40, "reg_tokens": 4, "class_pos": False,
              "layer_scale": True}  # fmt: skip
DINO_S = {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "img_size": 32}


def _random_vit(config: dict, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    vit = VisionTransformer(**config).eval()
    with torch.no_grad():  # no parameter left at a constant init (layer scale, tokens, norms)
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return vit


# ------------------------------------------------------------------ shapes of every model
@pytest.mark.parametrize("name", sorted(ENCODER_ARCHITECTURES))
def test_named_architecture_shapes(name):
    arch = ENCODER_ARCHITECTURES[name]
    with torch.device("meta"):  # full size, no memory, no compute: shapes only
        out = VisionTransformer(**arch.vit)(torch.empty(2, 3, arch.input_size, arch.input_size))
    assert tuple(out.shape) == (2, arch.embed_dim)


@pytest.mark.parametrize(
    ("name", "millions"),
    [("uni", 303.4), ("uni2-h", 681.4), ("virchow2", 631.2), ("h-optimus-0", 1134.8),
     ("phikon", 85.8), ("phikon-v2", 303.4), ("lunit-vits8", 21.7), ("kaiko-vitl14", 303.2)],
)  # fmt: skip
def test_named_architectures_have_the_published_size(name, millions):
    """Parameter counts as the model cards give them (UNI2-h 681 M, Virchow2 632 M, H-optimus
    1.1 B, ViT-L 303 M, ViT-B 86 M, ViT-S 22 M): a wrong width, depth or MLP size would show."""
    with torch.device("meta"):
        vit = VisionTransformer(**ENCODER_ARCHITECTURES[name].vit)
    assert vit.num_params / 1e6 == pytest.approx(millions, abs=0.1)


@pytest.mark.parametrize(
    "config", [UNI_LIKE, SWIGLU_REG, DINO_S], ids=["ls", "swiglu-reg", "plain"]
)
@pytest.mark.parametrize("pooling", ["cls", "cls+mean", "mean"])
def test_tiny_vit_shapes_and_pooling(config, pooling):
    vit = _random_vit({**config, "pooling": pooling})
    x = torch.rand(3, 3, 32, 32)
    tokens = vit.forward_tokens(x)
    prefix = 1 + config.get("reg_tokens", 0)
    assert tokens.shape == (3, prefix + 16, 16)
    out = vit(x)
    assert out.shape == (3, vit.out_dim) and vit.out_dim == (32 if pooling == "cls+mean" else 16)
    if pooling != "mean":
        assert torch.equal(out[:, :16], tokens[:, 0])
    if pooling != "cls":  # the mean of the patch tokens, registers left out
        assert torch.allclose(out[:, -16:], tokens[:, prefix:].mean(1))
    # other sizes (non-square, not a multiple of the patch) work through interpolation
    assert vit(torch.rand(1, 3, 48, 41)).shape == (1, vit.out_dim)


def test_register_positions_as_timm_without_no_embed_class():
    """Virchow2's layout: the class token and the registers have positions (timm adds the table
    after concatenating them). Same as registers that carry their position in the token."""
    config = {**SWIGLU_REG, "class_pos": True, "reg_pos": True}
    a = _random_vit(config)
    assert a.pos_embed.shape == (1, 1 + 4 + 16, 16)
    b = VisionTransformer(**{**config, "reg_pos": False}).eval()
    state = dict(a.state_dict())
    table = state["pos_embed"]
    state["reg_token"] = state["reg_token"] + table[:, 1:5]
    state["pos_embed"] = torch.cat([table[:, :1], table[:, 5:]], dim=1)
    b.load_state_dict(state)
    for size in (32, 48):
        x = torch.rand(2, 3, size, size)
        torch.testing.assert_close(a.forward_tokens(x), b.forward_tokens(x))
    with pytest.raises(EncoderError, match="reg_pos=True needs class_pos=True"):
        VisionTransformer(**{**config, "class_pos": False})


def test_bad_configurations_are_explained():
    with pytest.raises(EncoderError, match="num_heads=3 must divide embed_dim=16"):
        VisionTransformer(embed_dim=16, depth=1, num_heads=3, patch_size=8)
    with pytest.raises(EncoderError, match="mlp='relu' is not one of"):
        VisionTransformer(embed_dim=16, depth=1, num_heads=2, patch_size=8, mlp="relu")
    with pytest.raises(EncoderError, match="pooling='max'"):
        VisionTransformer(embed_dim=16, depth=1, num_heads=2, patch_size=8, pooling="max")
    with pytest.raises(EncoderError, match="must be even"):
        VisionTransformer(
            embed_dim=16, depth=1, num_heads=2, patch_size=8, mlp="swiglu", mlp_hidden=33
        )
    with pytest.raises(EncoderError, match="depth must be a positive whole number"):
        VisionTransformer(embed_dim=16, depth=0, num_heads=2, patch_size=8)
    with pytest.raises(TypeError):
        VisionTransformer(16, 1, 2, 8)  # keyword-only
    vit = VisionTransformer(embed_dim=16, depth=1, num_heads=2, patch_size=8, img_size=32)
    with pytest.raises(EncoderError, match="smaller than one 8-px patch"):
        vit(torch.rand(1, 3, 4, 32))


# ------------------------------------------------------------------ timm key names
def _block_keys(i: int, *, ls: bool) -> list[str]:
    keys = [f"blocks.{i}.norm1.weight", f"blocks.{i}.norm1.bias",
            f"blocks.{i}.attn.qkv.weight", f"blocks.{i}.attn.qkv.bias",
            f"blocks.{i}.attn.proj.weight", f"blocks.{i}.attn.proj.bias",
            f"blocks.{i}.norm2.weight", f"blocks.{i}.norm2.bias",
            f"blocks.{i}.mlp.fc1.weight", f"blocks.{i}.mlp.fc1.bias",
            f"blocks.{i}.mlp.fc2.weight", f"blocks.{i}.mlp.fc2.bias"]  # fmt: skip
    if ls:
        keys += [f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"]
    return keys


# timm's state-dict keys of vit_large_patch16_224(init_values=1e-5) (UNI), of
# vit_*_patch14_reg4_dinov2 / SwiGLUPacked (UNI2-h, H-optimus: reg_token, fc1/fc2 of the packed
# SwiGLU, no class position), of vit_huge_patch14_224 with reg_tokens=4 (Virchow2: positions for
# the class token and the registers) and of vit_small_patch8_224 (Lunit, kaiko), written out
# for depth 2 from the timm naming scheme.
TIMM_KEYS = {
    "ls": ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
           *_block_keys(0, ls=True), *_block_keys(1, ls=True), "norm.weight", "norm.bias"],
    "swiglu-reg": ["cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight",
                   "patch_embed.proj.bias", *_block_keys(0, ls=True), *_block_keys(1, ls=True),
                   "norm.weight", "norm.bias"],
    "swiglu-reg-pos": ["cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight",
                       "patch_embed.proj.bias", *_block_keys(0, ls=True),
                       *_block_keys(1, ls=True), "norm.weight", "norm.bias"],
    "plain": ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
              *_block_keys(0, ls=False), *_block_keys(1, ls=False), "norm.weight", "norm.bias"],
}  # fmt: skip
TIMM_SHAPES = {
    "ls": {"pos_embed": (1, 17, 16), "blocks.0.mlp.fc1.weight": (64, 16),
           "blocks.0.ls1.gamma": (16,), "blocks.0.attn.qkv.weight": (48, 16)},
    "swiglu-reg": {"pos_embed": (1, 16, 16), "reg_token": (1, 4, 16),
                   "blocks.1.mlp.fc1.weight": (40, 16), "blocks.1.mlp.fc2.weight": (16, 20)},
    "swiglu-reg-pos": {"pos_embed": (1, 21, 16), "reg_token": (1, 4, 16)},
    "plain": {"pos_embed": (1, 17, 16), "patch_embed.proj.weight": (16, 3, 8, 8)},
}  # fmt: skip


@pytest.mark.parametrize("family", ["ls", "swiglu-reg", "swiglu-reg-pos", "plain"])
def test_parameter_names_are_timms(family):
    config = {"ls": UNI_LIKE, "swiglu-reg": SWIGLU_REG, "plain": DINO_S,
              "swiglu-reg-pos": {**SWIGLU_REG, "class_pos": True, "reg_pos": True}}[family]  # fmt: skip
    state = VisionTransformer(**config).state_dict()
    assert sorted(state) == sorted(TIMM_KEYS[family])
    for key, shape in TIMM_SHAPES[family].items():
        assert tuple(state[key].shape) == shape


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_timm_layout_files_round_trip(tmp_path, filename):
    vit = _random_vit(SWIGLU_REG)
    path = tmp_path / filename
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    save_file(state, path) if filename.endswith(".safetensors") else torch.save(state, path)
    back = load_vit_weights(path, SWIGLU_REG)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(back(x), vit(x))
    assert torch.equal(load_vit_weights(tmp_path, SWIGLU_REG)(x), vit(x))  # the folder


def test_other_timm_and_dinov2_spellings_load_the_same(tmp_path):
    """timm's unpacked SwiGLU (fc1_g/fc1_x), the DINOv2 code's w12/w3, register_tokens,
    mask_token and block chunks, a wrapper prefix and a classifier head."""
    vit = _random_vit(SWIGLU_REG)
    x = torch.rand(2, 3, 32, 32)
    state = vit.state_dict()
    unpacked = {}
    for k, v in state.items():
        if k.endswith(("mlp.fc1.weight", "mlp.fc1.bias")):
            g, val = v.chunk(2, dim=0)
            unpacked[k.replace("fc1", "fc1_g")] = g
            unpacked[k.replace("fc1", "fc1_x")] = val
        else:
            unpacked[f"module.{k}"] = v
    unpacked = {(k if k.startswith("module.") else f"module.{k}"): v for k, v in unpacked.items()}
    unpacked["module.head.weight"] = torch.zeros(5, 16)
    assert torch.equal(load_vit_weights(unpacked, SWIGLU_REG)(x), vit(x))
    dinov2 = {"mask_token": torch.zeros(1, 16)}
    for k, v in state.items():
        k = k.replace("reg_token", "register_tokens").replace("mlp.fc1", "mlp.w12")
        k = k.replace("mlp.fc2", "mlp.w3").replace("blocks.", "blocks.0.")  # one chunk
        dinov2[f"teacher.backbone.{k}"] = v
    torch.save({"teacher": dinov2, "epoch": 3}, tmp_path / "checkpoint.pth")
    assert torch.equal(load_vit_weights(tmp_path / "checkpoint.pth", SWIGLU_REG)(x), vit(x))


# ------------------------------------------------------------------ errors
def test_weights_that_do_not_fit_name_the_first_misfit(tmp_path):
    vit = _random_vit(UNI_LIKE)
    state = dict(vit.state_dict())
    missing = {k: v for k, v in state.items() if k != "blocks.0.ls1.gamma"}
    with pytest.raises(EncoderError, match=r"missing key 'blocks.0.ls1.gamma' \(16,\)"):
        load_vit_weights(missing, UNI_LIKE)
    with pytest.raises(EncoderError, match=r"missing key 'blocks.0.ls1.gamma' \(16,\) and 3 more"):
        load_vit_weights(_random_vit(DINO_S).state_dict(), UNI_LIKE)  # no layer scale at all
    with pytest.raises(EncoderError, match=r"unexpected key 'blocks.0.ls1.gamma' \(16,\)"):
        load_vit_weights(state, DINO_S)
    wide = _random_vit({**UNI_LIKE, "mlp_hidden": 48}).state_dict()
    with pytest.raises(
        EncoderError,
        match=r"'blocks.0.mlp.fc1.weight' has shape \(48, 16\) in the file.*needs \(64, 16\)",
    ):
        load_vit_weights(wide, UNI_LIKE)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "uni.safetensors")
    with pytest.raises(
        EncoderError,
        match=r"the weights in '.*uni.safetensors' do not fit the architecture 'small'",
    ):
        load_vit_weights(tmp_path / "uni.safetensors", DINO_S, label="'small'")


def test_unreadable_and_pickled_files_are_refused(tmp_path):
    with pytest.raises(EncoderError, match="no weights file at"):
        read_weights(tmp_path / "nope.bin")
    with pytest.raises(EncoderError, match="no weights file in the folder"):
        read_weights(tmp_path)
    torch.save(VisionTransformer(**DINO_S), tmp_path / "whole_model.bin")  # a pickled module
    with pytest.raises(EncoderError, match="never pickled Python objects"):
        read_weights(tmp_path / "whole_model.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(EncoderError, match="cannot read the safetensors file"):
        read_weights(tmp_path / "junk.safetensors")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "other.pth")
    with pytest.raises(EncoderError, match="not a state dict of tensors"):
        read_weights(tmp_path / "other.pth")


def test_position_grid_is_taken_from_the_file():
    """A checkpoint stored at another resolution (e.g. a 518-px DINOv2 table) keeps its grid."""
    vit = _random_vit({**DINO_S, "img_size": 48})  # 6x6 grid
    back = load_vit_weights(vit.state_dict(), DINO_S)  # config says 4x4
    assert back.grid == 6
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(back(x), vit(x))


# ------------------------------------------------------------------ Hugging Face reference
HF_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32,
            "patch_size": 8, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # fmt: skip


def _hf_models():
    # only these tests need it; the rest of the module runs without transformers
    pytest.importorskip(
        "transformers", reason="transformers (test extra) is the reference for the HF layouts"
    )
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        ViTConfig,
        ViTModel,
    )

    return {
        "vit": (ViTModel, ViTConfig(**HF_SMALL, intermediate_size=48)),
        "dinov2": (Dinov2Model, Dinov2Config(**HF_SMALL, layerscale_value=0.3)),
        "dinov2-swiglu": (
            Dinov2Model,
            Dinov2Config(**HF_SMALL, use_swiglu_ffn=True, layerscale_value=0.3),
        ),
        "dinov2-reg-swiglu": (
            Dinov2WithRegistersModel,
            Dinov2WithRegistersConfig(
                **HF_SMALL, use_swiglu_ffn=True, num_register_tokens=4, layerscale_value=0.3
            ),
        ),
        "dinov2-reg": (
            Dinov2WithRegistersModel,
            Dinov2WithRegistersConfig(**HF_SMALL, num_register_tokens=2, layerscale_value=0.3),
        ),
    }


def _reference(kind: str):
    cls, config = _hf_models()[kind]
    torch.manual_seed(1)
    model = cls(config).eval()
    with torch.no_grad():  # move layer scale, norms and tokens off their constant inits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, config


def _hf_tokens(model, x, kind):
    extra = {"interpolate_pos_encoding": True} if kind == "vit" else {}
    with torch.no_grad():
        return model(pixel_values=x, **extra).last_hidden_state


@pytest.mark.parametrize(
    "kind", ["vit", "dinov2", "dinov2-swiglu", "dinov2-reg-swiglu", "dinov2-reg"]
)
def test_matches_transformers_on_hub_files_and_in_memory_weights(kind, tmp_path):
    """Outputs equal to 1e-5: the file ``save_pretrained`` writes (the Hub layout: attention.
    attention.query, intermediate.dense, mlp.weights_in …) and transformers' own in-memory
    names (q_proj, gate_proj/up_proj …), at the native size and at another size."""
    model, config = _reference(kind)
    model.save_pretrained(tmp_path)
    ours_file = load_vit_weights(tmp_path, hf_vit_config(tmp_path))
    ours_mem = load_vit_weights(model.state_dict(), hf_vit_config(config.to_dict()))
    torch.manual_seed(2)
    for size in ((32, 32), (48, 40)):
        x = torch.randn(2, 3, *size)
        ref = _hf_tokens(model, x, kind)
        for ours in (ours_file, ours_mem):
            with torch.no_grad():
                tokens = ours.forward_tokens(x)
                pooled = ours(x)
            assert tokens.shape == ref.shape
            torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(pooled, ref[:, 0], atol=1e-5, rtol=1e-5)


def test_hf_pooler_and_mask_token_are_skipped_and_prefixes_dropped():
    model, config = _reference("vit")
    state = {f"vit.{k}": v for k, v in model.state_dict().items()}
    state["classifier.weight"] = torch.zeros(3, 32)
    ours = load_vit_weights(state, hf_vit_config(config.to_dict()))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ours(x), _hf_tokens(model, x, "vit")[:, 0], atol=1e-5, rtol=1e-5)


def test_hf_config_refuses_other_models():
    with pytest.raises(EncoderError, match="model_type 'clip' is not a plain ViT"):
        hf_vit_config({"model_type": "clip"})
    with pytest.raises(EncoderError, match="hidden_act='relu'"):
        hf_vit_config({"model_type": "vit", "hidden_act": "relu", "hidden_size": 8})

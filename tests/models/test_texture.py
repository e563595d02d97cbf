"""models.TextureEncoder: the built-in frozen encoder of stain and texture measures."""

from __future__ import annotations

import pytest
import torch

from workbench import EncoderError
from workbench.models import (
    SelfCalibratedModel,
    TextureEncoder,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from workbench.models._texture import _uniform_lbp_hist

H_RGB = torch.tensor([0.65, 0.70, 0.29])  # optical-density direction of haematoxylin
E_RGB = torch.tensor([0.07, 0.99, 0.11])


def _stained(direction: torch.Tensor, amount: float, size: int = 32) -> torch.Tensor:
    """A flat crop of one stain: RGB = 10^(-amount * direction) (Beer-Lambert)."""
    rgb = torch.pow(10.0, -amount * direction / direction.norm())
    return rgb.view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_shape_names_determinism_and_batch_independence():
    enc = TextureEncoder()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a = enc(x)["embedding"]
    assert a.shape == (3, enc.embed_dim) == (3, len(enc.feature_names)) == (3, 58)
    assert torch.isfinite(a).all()
    assert torch.equal(a, enc(x)["embedding"])
    assert torch.allclose(a[1:2], enc(x[1:2])["embedding"], atol=1e-6)
    assert enc.frozen and not any(True for _ in enc.parameters())


def test_stain_moments_tell_haematoxylin_from_eosin():
    enc = TextureEncoder()
    names = list(enc.feature_names)
    h_i, e_i = names.index("h_mean"), names.index("e_mean")
    blue = enc(_stained(H_RGB, 0.6))["embedding"][0]
    pink = enc(_stained(E_RGB, 0.6))["embedding"][0]
    white = enc(torch.ones(1, 3, 32, 32))["embedding"][0]
    assert blue[h_i] > 0.3 and blue[e_i] < 0.05
    assert pink[e_i] > 0.3 and pink[h_i] < 0.05
    assert white[h_i] < 0.01 and white[e_i] < 0.01


def test_uniform_lbp_codes_of_known_patterns():
    flat = torch.full((1, 1, 16, 16), 0.5)
    hist = _uniform_lbp_hist(flat)[0]
    assert hist[8] == pytest.approx(1.0)  # every neighbour >= the centre: 8 set bits
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    board = ((rows + cols) % 2).float().view(1, 1, 16, 16)
    inner = _uniform_lbp_hist(board)[0]
    # light squares see dark edge-neighbours (alternating bits: not uniform), dark squares see
    # only neighbours at least as bright (all bits set)
    assert inner[9] > 0.35 and inner[8] > 0.35 and inner.sum() == pytest.approx(1.0)


def test_texture_separates_smooth_from_granular_nuclei():
    """Same mean colour, different chromatin: the LBP part must differ, the mean must not."""
    g = torch.Generator().manual_seed(1)
    smooth = torch.full((1, 3, 64, 64), 0.5)
    grain = (0.5 + 0.3 * (torch.rand(1, 1, 64, 64, generator=g) - 0.5)).expand(1, 3, 64, 64)
    enc = TextureEncoder()
    names = list(enc.feature_names)
    a, b = enc(smooth)["embedding"][0], enc(grain)["embedding"][0]
    assert abs(float(a[names.index("lightness_mean")] - b[names.index("lightness_mean")])) < 0.01
    lbp = [i for i, n in enumerate(names) if n.startswith("lbp_grey_")]
    assert float((a[lbp] - b[lbp]).abs().sum()) > 0.5


def test_load_encoder_by_name_and_geometry():
    enc = load_encoder("texture", input_size=64, mpp=1.0)
    assert isinstance(enc, TextureEncoder) and (enc.input_size, enc.mpp) == (64, 1.0)
    assert enc.sha256 != load_encoder("texture").sha256  # the geometry is part of its identity
    with pytest.raises(EncoderError, match="bad texture encoder geometry"):
        TextureEncoder(input_size=4)
    with pytest.raises(EncoderError, match="'texture'"):
        load_encoder("textures")  # the error lists the built-in names


def test_checkpoint_rebuilds_the_texture_encoder_without_a_file(tmp_path):
    enc = TextureEncoder(input_size=32, mpp=2.0)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, encoder=enc.spec())
    model.attach_encoder(enc)
    save_checkpoint(model, tmp_path / "m")
    back = load_checkpoint(tmp_path / "m")  # no encoder passed: rebuilt from the record
    assert isinstance(back.tile_encoder, TextureEncoder) and back.tile_encoder.sha256 == enc.sha256
    crops = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            model.forward_detail(crops)["embedding"], back.forward_detail(crops)["embedding"]
        )
    with pytest.raises(EncoderError, match="trained with the encoder 'texture'"):
        load_checkpoint(tmp_path / "m", encoder=TextureEncoder(input_size=64, mpp=2.0))

from __future__ import annotations

import torch

from workbench.models import DetailBranch, TileABMIL


def test_tile_abmil_shapes():
    out = TileABMIL(n_classes=3, detail_width=8, embed_dim=16)(torch.rand(5, 3, 32, 32))
    assert out["logits"].shape == (3,) and out["attention"].shape == (5,)
    assert out["embeddings"].shape == (5, 16)


def test_tile_encoder_is_the_detail_branch():
    assert isinstance(TileABMIL(detail_width=8).encoder, DetailBranch)


def test_embedding_in_chunks_matches_one_pass():
    model = TileABMIL(detail_width=8, embed_dim=16).eval()
    tiles = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        whole = model(tiles)["logits"]
        parts = torch.cat([model.embed_tiles(tiles[:4]), model.embed_tiles(tiles[4:])])
        chunked = model.pool_embeddings(parts)["logits"]
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_one_output_is_a_survival_risk_model():
    """n_classes=1 builds the ABMIL-Cox peer: one risk per slide, the same attention."""
    model = TileABMIL(n_classes=1, detail_width=8, embed_dim=16).eval()
    assert model.predicts_risk
    with torch.no_grad():
        out = model(torch.rand(5, 3, 32, 32))
    assert out["logits"].shape == (1,) and torch.isclose(out["attention"].sum(), torch.tensor(1.0))
    assert not TileABMIL(n_classes=2).predicts_risk

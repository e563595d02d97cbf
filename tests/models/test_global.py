from __future__ import annotations

import torch

from workbench.models import GlobalBranch, GlobalOnly


def test_global_branch_shapes(toy_slide):
    x, ei = toy_slide()
    out = GlobalBranch(in_features=10, n_classes=3, hidden=16, transformer_layers=1)(x, ei)
    assert out["tokens"].shape == (36, 16) and out["logits"].shape == (3,)
    assert out["node_logits"].shape == (36, 2) and out["attention"].shape == (36,)
    assert torch.isclose(out["attention"].sum(), torch.tensor(1.0))


def test_global_only_shapes(toy_slide):
    x, ei = toy_slide()
    assert GlobalOnly(in_features=10, hidden=16)(x, ei)["logits"].shape == (2,)


def test_graph_convolution_mixes_neighbours_only(toy_slide):
    torch.manual_seed(0)
    net = GlobalBranch(in_features=10, hidden=16, gcn_layers=1).eval()
    x, ei = toy_slide(1, 6)
    base = net(x, ei)["tokens"]
    x2 = x.clone()
    x2[0] += 5.0
    moved = (net(x2, ei)["tokens"] - base).abs().sum(-1)
    # One layer reaches node 0 and its neighbour 1, nothing beyond.
    assert moved[0] > 0 and moved[1] > 0
    assert torch.allclose(moved[2:], torch.zeros(4), atol=1e-6)

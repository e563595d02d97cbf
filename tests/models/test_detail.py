from __future__ import annotations

import pytest
import torch

from workbench.models import DetailBranch


def test_detail_branch_shapes():
    torch.manual_seed(0)
    net = DetailBranch(width=8, embed_dim=16).eval()
    image = torch.rand(2, 3, 64, 48)
    out = net(image)
    assert out["features"].shape == (2, 16, 16, 12)
    assert out["logits"].shape == (2, 1, 64, 48)
    assert out["embedding"].shape == (2, 16)
    assert out["lesion_prob"].shape == (2,)
    assert torch.all((out["lesion_prob"] >= 0) & (out["lesion_prob"] <= 1))
    assert net.head(out["features"], (32, 24)).shape == (2, 1, 32, 24)
    assert net.embed(out["features"]).shape == (2, 16)


def test_detail_branch_extra_channels_change_the_output():
    torch.manual_seed(0)
    net = DetailBranch(extra_channels=2, width=8).eval()
    image = torch.rand(1, 3, 32, 32)
    extra = torch.zeros(1, 2, 32, 32)
    extra[:, 0, 10:14, 10:14] = 1.0
    with torch.no_grad():
        plain = net(image)["logits"]
        zeros = net(image, torch.zeros_like(extra))["logits"]
        clicked = net(image, extra)["logits"]
    # Missing extra channels are zeros.
    assert torch.equal(plain, zeros)
    assert not torch.allclose(plain, clicked)


def test_detail_branch_rejects_mismatched_extra():
    net = DetailBranch(width=8)
    with pytest.raises(ValueError, match="extra_channels=0"):
        net(torch.rand(1, 3, 16, 16), torch.zeros(1, 2, 16, 16))
    net2 = DetailBranch(extra_channels=2, width=8)
    with pytest.raises(AssertionError):
        net2(torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))


def test_detail_branch_trains():
    torch.manual_seed(0)
    net = DetailBranch(width=8)
    image = torch.rand(2, 3, 32, 32)
    out = net(image)
    loss = out["logits"].mean() + out["embedding"].pow(2).mean() + out["lesion_prob"].mean()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())

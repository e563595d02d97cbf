from __future__ import annotations

import torch

from workbench.models import ChannelScaleBias, ClickGuidedGate


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_gate_is_exactly_identity_at_init():
    torch.manual_seed(0)
    gate = ClickGuidedGate(feature_channels=12, click_channels=2, hidden=8)
    features = torch.randn(2, 12, 16, 20)
    clicks = torch.zeros(2, 2, 64, 80)
    clicks[:, 0, 30:34, 40:44] = 1.0
    assert torch.equal(gate.attention(features, clicks), torch.ones_like(features))
    assert torch.equal(gate(features, clicks), features)


def test_gate_parameter_count_does_not_depend_on_image_size():
    gate = ClickGuidedGate(feature_channels=12, click_channels=2, hidden=8)
    n = _count(gate)
    for h, w in ((8, 8), (64, 48), (256, 256)):
        out = gate(torch.randn(1, 12, h, w), torch.rand(1, 2, 4 * h, 4 * w))
        assert out.shape == (1, 12, h, w)
        assert _count(gate) == n
    # 1x1 convolutions only: W_f (12*8 + 8), W_c (2*8), psi (8*12 + 12).
    assert n == 12 * 8 + 8 + 2 * 8 + 8 * 12 + 12


def test_gate_learns_to_change_features_near_clicks():
    torch.manual_seed(0)
    gate = ClickGuidedGate(feature_channels=4, hidden=4)
    features = torch.rand(1, 4, 8, 8) + 0.5
    clicks = torch.zeros(1, 2, 8, 8)
    clicks[:, 0, 2, 2] = 1.0
    opt = torch.optim.Adam(gate.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        loss = -gate(features, clicks)[0, :, 2, 2].sum()
        loss.backward()
        opt.step()
    alpha = gate.attention(features, clicks).detach()
    assert float(alpha[0, :, 2, 2].mean()) > 1.2
    assert float(alpha.max()) <= 2.0 and float(alpha.min()) >= 0.0


def test_scale_bias_identity_and_reset():
    sb = ChannelScaleBias(feature_channels=5)
    f = torch.randn(1, 5, 4, 4)
    assert torch.equal(sb(f), f)
    with torch.no_grad():
        sb.scale.mul_(2)
    assert not torch.equal(sb(f), f)
    sb.reset_parameters()
    assert torch.equal(sb(f), f)
    assert _count(sb) == 10


def test_gate_points_match_the_map_and_flat_parameters_round_trip():
    torch.manual_seed(1)
    gate = ClickGuidedGate(feature_channels=6, click_channels=2, hidden=5)
    with torch.no_grad():
        for p in gate.parameters():
            p.normal_()
    features = torch.randn(1, 6, 7, 9)
    clicks = torch.rand(1, 2, 7, 9)
    full = gate(features, clicks)[0].flatten(1).T
    pts = gate.gate_points(features[0].flatten(1).T, clicks[0].flatten(1).T)
    assert torch.allclose(full, pts, atol=1e-6)
    theta = gate.flat_parameters()
    assert theta.numel() == sum(p.numel() for p in gate.parameters())
    other = ClickGuidedGate(feature_channels=6, click_channels=2, hidden=5)
    assert not torch.equal(other(features, clicks), gate(features, clicks))
    other.load_flat_parameters(theta)
    assert torch.equal(other(features, clicks), gate(features, clicks))


def test_scale_bias_points_and_flat_parameters():
    sb = ChannelScaleBias(feature_channels=3)
    with torch.no_grad():
        sb.scale.copy_(torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))
        sb.bias.fill_(0.5)
    f = torch.randn(4, 3)
    assert torch.allclose(sb.gate_points(f), f * torch.tensor([1.0, 2.0, 3.0]) + 0.5)
    theta = sb.flat_parameters()
    sb.reset_parameters()
    sb.load_flat_parameters(theta)
    assert float(sb.scale.detach()[0, 2, 0, 0]) == 3.0

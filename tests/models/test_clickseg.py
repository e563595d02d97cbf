from __future__ import annotations

import torch

from workbench.models import ClickSegmenter


def test_shapes_and_quarter_resolution_features():
    net = ClickSegmenter(widths=(8, 16, 32), feature_channels=12, head_hidden=8).eval()
    image = torch.rand(2, 3, 70, 90)
    extra = torch.rand(2, 3, 70, 90)
    out = net(image, extra)
    assert out["features"].shape == (2, 12, 18, 23)
    assert out["logits"].shape == (2, 1, 70, 90)
    assert net.head_lowres(out["features"]).shape == (2, 1, 18, 23)


def test_missing_guidance_channels_are_zeros():
    torch.manual_seed(0)
    net = ClickSegmenter(widths=(8, 16, 32), feature_channels=12).eval()
    image = torch.rand(1, 3, 32, 32)
    clicks = torch.zeros(1, 2, 32, 32)
    clicks[0, 0, 10:14, 10:14] = 1
    with torch.no_grad():
        padded = net(image, torch.cat([clicks, torch.zeros(1, 1, 32, 32)], dim=1))["logits"]
        short = net(image, clicks)["logits"]
        none = net(image)["logits"]
    assert torch.equal(padded, short)
    assert not torch.equal(short, none)  # the clicks reach the output


def test_config_round_trip():
    net = ClickSegmenter(widths=(8, 16, 32), feature_channels=12, head_hidden=8)
    again = ClickSegmenter(**net.config)
    again.load_state_dict(net.state_dict())
    image = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(net.eval()(image)["logits"], again.eval()(image)["logits"])

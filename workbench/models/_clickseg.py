"""Click-conditioned segmenter: the base network under interactive refinement (CGAM, f-BRS).

A compact fully convolutional network built for one job: given an RGB view, positive and
negative click disks and the previous mask (RITM-style), return features at a quarter of the
input resolution and a per-pixel object logit. Compared with :class:`DetailBranch` it spends
little at full resolution (where small-channel convolutions are slow on a CPU) and more at
1/8 and 1/16 (where they are cheap), which buys a receptive field that covers a whole
384-pixel view plus a pooled image-level context, at about the same cost per view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClickSegmenter"]


def _gn(channels: int) -> nn.GroupNorm:
    # Per-sample normalisation: robust to stain shifts between labs (batch statistics are not).
    for g in (8, 4, 2):
        if channels % g == 0:
            return nn.GroupNorm(g, channels)
    return nn.GroupNorm(1, channels)


class _ConvGNAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
            ),
            _gn(c_out),
            nn.ReLU(inplace=True),
        )


class _Residual(nn.Module):
    def __init__(self, channels: int, *, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _ConvGNAct(channels, channels, dilation=dilation)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.norm2 = _gn(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.norm2(self.conv2(self.conv1(x))))


class ClickSegmenter(nn.Module):
    """Click-conditioned object segmenter with features at 1/4 resolution.

    Parameters
    ----------
    in_channels
        Image channels (3 for RGB in [0, 1]).
    extra_channels
        Guidance channels concatenated to the image: positive and negative click disks and,
        with 3, the previous mask (zeros when absent).
    widths
        Channels at 1/4, 1/8 and 1/16 of the input resolution.
    feature_channels
        Channels of the feature map returned by :meth:`encode` (what a CGAM gate sits on).
    head_hidden
        Width of the per-pixel head.

    Notes
    -----
    Stem: two stride-2 convolutions to 1/4. One residual block at 1/4, two at 1/8 (dilation
    1, 2), two at 1/16 (dilation 2, 4) plus a pooled global context; a top-down pathway adds
    the coarse levels back into the 1/4 map. The head is per pixel (1x1 convolutions), so it
    can be re-run cheaply on cached features, even on a subset of feature pixels.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        extra_channels: int = 3,
        widths: tuple[int, int, int] = (24, 48, 96),
        feature_channels: int = 32,
        head_hidden: int = 32,
    ) -> None:
        super().__init__()
        assert in_channels > 0, "in_channels must be positive"
        assert extra_channels >= 0, "extra_channels must be >= 0"
        assert len(widths) == 3 and min(widths) >= 4, "widths: three channel counts >= 4"
        assert feature_channels > 0 and head_hidden > 0
        self.in_channels = int(in_channels)
        self.extra_channels = int(extra_channels)
        self.widths = tuple(int(w) for w in widths)
        self.feature_channels = int(feature_channels)
        self.head_hidden = int(head_hidden)
        self.stride = 4
        #: Constructor arguments (what a checkpoint records; :func:`save_checkpoint`).
        self.config = {
            "in_channels": self.in_channels,
            "extra_channels": self.extra_channels,
            "widths": list(self.widths),
            "feature_channels": self.feature_channels,
            "head_hidden": self.head_hidden,
        }
        c1, c2, c3 = self.widths
        self.stem = nn.Sequential(
            _ConvGNAct(in_channels + extra_channels, c1 // 2, stride=2),
            _ConvGNAct(c1 // 2, c1, stride=2),
        )
        self.stage1 = _Residual(c1)
        self.stage2 = nn.Sequential(
            _ConvGNAct(c1, c2, stride=2), _Residual(c2), _Residual(c2, dilation=2)
        )
        self.stage3 = nn.Sequential(
            _ConvGNAct(c2, c3, stride=2), _Residual(c3, dilation=2), _Residual(c3, dilation=4)
        )
        self.context = nn.Conv2d(c3, c3, 1)
        f = self.feature_channels
        self.lateral3 = nn.Conv2d(c3, f, 1)
        self.lateral2 = nn.Conv2d(c2, f, 1)
        self.lateral1 = nn.Conv2d(c1, f, 1)
        self.smooth = _ConvGNAct(f, f)
        self.head_in = nn.Conv2d(f, self.head_hidden, 1)
        self.head_out = nn.Conv2d(self.head_hidden, 1, 1)
        self.register_buffer(
            "pixel_mean", torch.tensor([0.70, 0.55, 0.70]).view(1, 3, 1, 1), persistent=False
        )

    def to_config(self) -> dict:
        """The constructor arguments, as plain JSON (what a checkpoint records).

        Returns
        -------
        dict
            ``in_channels``, ``extra_channels``, ``widths``, ``feature_channels``,
            ``head_hidden``.
        """
        return {**self.config, "widths": list(self.widths)}

    @classmethod
    def from_config(cls, config: dict) -> ClickSegmenter:
        """Build the network a checkpoint describes (weights not loaded).

        Parameters
        ----------
        config
            What :meth:`to_config` returned.

        Returns
        -------
        ClickSegmenter
            A freshly initialised network of that shape.
        """
        return cls(**config)

    def _inputs(self, image: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        assert image.ndim == 4 and image.shape[1] == self.in_channels, (
            f"image must be (B, {self.in_channels}, H, W), got {tuple(image.shape)}"
        )
        x = (image - self.pixel_mean) / 0.25 if self.in_channels == 3 else image
        if not self.extra_channels:
            if extra is not None:
                raise ValueError("this ClickSegmenter has extra_channels=0; pass extra=None")
            return x
        b, _, h, w = image.shape
        if extra is None:
            extra = image.new_zeros((b, self.extra_channels, h, w))
        assert extra.shape[2:] == image.shape[2:] and extra.shape[1] <= self.extra_channels, (
            f"extra must be (B, <= {self.extra_channels}, H, W) matching the image, "
            f"got {tuple(extra.shape)}"
        )
        if extra.shape[1] < self.extra_channels:  # e.g. click maps without a previous mask
            pad = image.new_zeros((b, self.extra_channels - extra.shape[1], h, w))
            extra = torch.cat([extra.to(x.dtype), pad], dim=1)
        return torch.cat([x, extra.to(x.dtype)], dim=1)

    def encode(self, image: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The feature map a CGAM gate sits on.

        Parameters
        ----------
        image
            ``(B, in_channels, H, W)`` images in [0, 1].
        extra
            ``(B, E, H, W)`` guidance channels (click disks, previous mask; missing trailing channels are
            zero-filled); zeros when ``None``.

        Returns
        -------
        torch.Tensor
            ``(B, feature_channels, ceil(H/4), ceil(W/4))``.
        """
        s1 = self.stage1(self.stem(self._inputs(image, extra)))
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        s3 = s3 + self.context(s3.mean(dim=(2, 3), keepdim=True))
        p = self.lateral2(s2) + F.interpolate(
            self.lateral3(s3), size=s2.shape[2:], mode="bilinear", align_corners=False
        )
        p = self.lateral1(s1) + F.interpolate(
            p, size=s1.shape[2:], mode="bilinear", align_corners=False
        )
        return self.smooth(p)

    def head_lowres(self, features: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits at the feature resolution.

        Parameters
        ----------
        features
            ``(B, feature_channels, h, w)`` from :meth:`encode` (gated or not).

        Returns
        -------
        torch.Tensor
            ``(B, 1, h, w)`` logits.
        """
        return self.head_out(F.relu(self.head_in(features)))

    def head(self, features: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Logits upsampled bilinearly to ``out_size``.

        Parameters
        ----------
        features
            ``(B, feature_channels, h, w)`` from :meth:`encode`.
        out_size
            ``(rows, cols)`` of the output.

        Returns
        -------
        torch.Tensor
            ``(B, 1, rows, cols)`` logits.
        """
        low = self.head_lowres(features)
        return F.interpolate(low, size=tuple(out_size), mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, extra: torch.Tensor | None = None) -> dict:
        """Run the network.

        Parameters
        ----------
        image
            ``(B, in_channels, H, W)`` images in [0, 1].
        extra
            ``(B, E, H, W)`` guidance channels (click disks, previous mask); zeros when ``None``.

        Returns
        -------
        dict
            ``features`` (B, C, h, w) and ``logits`` (B, 1, H, W) at the input size.
        """
        features = self.encode(image, extra)
        return {"features": features, "logits": self.head(features, image.shape[2:])}

"""Detail branch: a compact fully convolutional lesion segmenter for magnified crops.

The network reads an RGB crop (optionally with extra input channels such as click maps),
returns a feature map at a quarter of the input resolution, a per-pixel lesion logit, a
pooled region embedding and a pooled "is this region lesion?" probability. It is small
enough to run on a CPU at interactive speed and needs no pretrained weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DetailBranch"]


def _groups(channels: int) -> int:
    # GroupNorm keeps the network independent of batch size (crops often come one at a time).
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _ConvNormAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                c_in,
                c_out,
                kernel_size=3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                bias=False,
            ),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU(inplace=True),
        )


class DetailBranch(nn.Module):
    """Compact fully convolutional network for lesion maps of magnified crops.

    Parameters
    ----------
    in_channels
        Image channels (3 for RGB).
    extra_channels
        Additional input channels concatenated to the image, e.g. positive/negative click
        maps. When ``extra`` is not given they are filled with zeros.
    width
        Base channel count; the feature map returned by :meth:`encode` has ``2 * width``
        channels.
    embed_dim
        Size of the pooled region embedding.

    Notes
    -----
    Encoder: three stride-2 stages (1/2, 1/4, 1/8) with a dilated context block at 1/8; a
    light decoder upsamples the context to 1/4 and fuses it with the 1/4 skip. The head is
    per-pixel (1x1 convolutions) on those features followed by bilinear upsampling, so it is
    cheap to re-run many times on cached features (the interactive refinement does that).
    The pooled lesion probability is a log-sum-exp pooling of the pixel logits, which ties
    the region answer to the map (usable for multiple-instance training on slide labels).
    """

    #: Draws per-pixel lesion maps that a mask loss can train (the frozen-encoder detail
    #: branch, :class:`~workbench.models.EncoderDetail`, gives one logit per crop).
    pixel_maps = True

    def __init__(
        self,
        *,
        in_channels: int = 3,
        extra_channels: int = 0,
        width: int = 32,
        embed_dim: int = 64,
    ) -> None:
        super().__init__()
        assert in_channels > 0, "in_channels must be positive"
        assert extra_channels >= 0, "extra_channels must be >= 0"
        assert width >= 4, "width must be at least 4"
        assert embed_dim > 0, "embed_dim must be positive"
        self.in_channels = in_channels
        self.extra_channels = extra_channels
        self.width = width
        self.embed_dim = embed_dim
        self.feature_channels = 2 * width
        self.stride = 4  # features are at 1/4 of the input resolution
        self.pool_sharpness = 4.0

        w = width
        c_in = in_channels + extra_channels
        self.stage1 = nn.Sequential(_ConvNormAct(c_in, w, stride=2), _ConvNormAct(w, w))
        self.stage2 = nn.Sequential(_ConvNormAct(w, 2 * w, stride=2), _ConvNormAct(2 * w, 2 * w))
        self.stage3 = nn.Sequential(
            _ConvNormAct(2 * w, 4 * w, stride=2),
            _ConvNormAct(4 * w, 4 * w, dilation=2),
            _ConvNormAct(4 * w, 4 * w, dilation=4),
        )
        self.lateral = nn.Conv2d(4 * w, 2 * w, kernel_size=1)
        self.fuse = _ConvNormAct(4 * w, 2 * w)
        self.head_hidden = nn.Conv2d(2 * w, w, kernel_size=1)
        self.head_out = nn.Conv2d(w, 1, kernel_size=1)
        self.embed_proj = nn.Linear(4 * w, embed_dim)
        self.register_buffer(
            "pixel_mean", torch.tensor([0.70, 0.55, 0.70]).view(1, 3, 1, 1), persistent=False
        )

    # ------------------------------------------------------------------------------------
    def _inputs(self, image: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        assert image.ndim == 4 and image.shape[1] == self.in_channels, (
            f"image must be (B, {self.in_channels}, H, W), got {tuple(image.shape)}"
        )
        x = image
        if self.in_channels == 3:
            x = (image - self.pixel_mean) / 0.25
        if self.extra_channels:
            if extra is None:
                b, _, h, w = image.shape
                extra = image.new_zeros((b, self.extra_channels, h, w))
            assert extra.shape[1] == self.extra_channels and extra.shape[2:] == image.shape[2:], (
                f"extra must be (B, {self.extra_channels}, H, W) matching the image, "
                f"got {tuple(extra.shape)}"
            )
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        elif extra is not None:
            raise ValueError("this DetailBranch was built with extra_channels=0; pass extra=None")
        return x

    def encode(self, image: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Feature map of images in [0, 1].

        Parameters
        ----------
        image
            ``(B, in_channels, H, W)`` images in [0, 1].
        extra
            ``(B, E, H, W)`` guidance channels (``extra_channels`` of them, e.g. click maps); zeros when ``None``.

        Returns
        -------
        torch.Tensor
            ``(B, 2 * width, ceil(H/4), ceil(W/4))``.
        """
        x = self._inputs(image, extra)
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        up = F.interpolate(
            self.lateral(s3), size=s2.shape[2:], mode="bilinear", align_corners=False
        )
        return self.fuse(torch.cat([s2, up], dim=1))

    def head_lowres(self, features: torch.Tensor) -> torch.Tensor:
        """Per-pixel lesion logits at the feature resolution.

        Parameters
        ----------
        features
            ``(B, 2 * width, h, w)`` from :meth:`encode`.

        Returns
        -------
        torch.Tensor
            ``(B, 1, h, w)`` logits.
        """
        return self.head_out(F.relu(self.head_hidden(features)))

    def head(self, features: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Lesion logits upsampled bilinearly to ``out_size``.

        Parameters
        ----------
        features
            ``(B, 2 * width, h, w)`` from :meth:`encode`.
        out_size
            ``(rows, cols)`` of the output.

        Returns
        -------
        torch.Tensor
            ``(B, 1, rows, cols)`` logits.
        """
        logits = self.head_lowres(features)
        return F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled region embedding (mean and max pooling, projected).

        Parameters
        ----------
        features
            ``(B, 2 * width, h, w)`` from :meth:`encode`.

        Returns
        -------
        torch.Tensor
            ``(B, embed_dim)``.
        """
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.embed_proj(pooled)

    def pool_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-sum-exp pooling of pixel logits into one logit per image.

        Parameters
        ----------
        logits
            ``(B, 1, h, w)`` pixel logits.

        Returns
        -------
        torch.Tensor
            ``(B,)`` pooled logits (between the mean and the maximum pixel logit).
        """
        r = self.pool_sharpness
        flat = logits.flatten(1)
        n = torch.tensor(float(flat.shape[1]), dtype=flat.dtype, device=flat.device)
        return (torch.logsumexp(r * flat, dim=1) - torch.log(n)) / r

    def forward(self, image: torch.Tensor, extra: torch.Tensor | None = None) -> dict:
        """Run the branch.

        Parameters
        ----------
        image
            ``(B, in_channels, H, W)`` images in [0, 1].
        extra
            ``(B, E, H, W)`` guidance channels (``extra_channels`` of them); zeros when ``None``.

        Returns
        -------
        dict
            ``features`` (B, C, h, w), ``logits`` (B, 1, H, W), ``embedding`` (B, embed_dim),
            ``lesion_prob`` (B,) pooled probability that the crop shows lesion.
        """
        features = self.encode(image, extra)
        low = self.head_lowres(features)
        logits = F.interpolate(low, size=image.shape[2:], mode="bilinear", align_corners=False)
        return {
            "features": features,
            "logits": logits,
            "embedding": self.embed(features),
            "lesion_prob": torch.sigmoid(self.pool_logits(low)),
        }

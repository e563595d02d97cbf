"""Click-guided attention gate (CGAM) and the f-BRS-style channel scale/bias baseline.

Both modules sit between a segmentation network's cached features and its per-pixel head.
During interactive refinement only their parameters are optimised, so every extra click
costs a few passes of a cheap head instead of a full backbone pass. Both are pointwise
(1x1 convolutions only), so they can also be evaluated on a subset of feature pixels
(:meth:`ClickGuidedGate.gate_points`), which is what makes an optimisation step cost the same
whatever the size of the view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelScaleBias", "ClickGuidedGate"]


class ClickGuidedGate(nn.Module):
    """Multiplicative feature gate conditioned on features and click maps.

    ``alpha = 2 * sigmoid(psi(ReLU(W_f F + W_c pool(C))))`` and ``F' = F * alpha``, where
    ``C`` are click maps pooled to the feature resolution and ``W_f``, ``W_c``, ``psi`` are
    1x1 convolutions. ``psi`` starts at zero, so ``alpha`` is exactly 1 and the gate is the
    identity until it is optimised. All weights are 1x1 convolutions, so the parameter count
    depends on channel counts only, never on the image size.

    Parameters
    ----------
    feature_channels
        Channels of the gated feature map.
    click_channels
        Channels of the click maps (positive, negative).
    hidden
        Width of the gate's hidden layer.
    """

    def __init__(self, *, feature_channels: int, click_channels: int = 2, hidden: int = 16) -> None:
        super().__init__()
        assert feature_channels > 0 and click_channels > 0 and hidden > 0
        self.w_f = nn.Conv2d(feature_channels, hidden, kernel_size=1)
        self.w_c = nn.Conv2d(click_channels, hidden, kernel_size=1, bias=False)
        self.psi = nn.Conv2d(hidden, feature_channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise: random ``W_f``/``W_c``, zero ``psi`` (so the gate is the identity)."""
        gen = torch.Generator().manual_seed(0)
        for conv in (self.w_f, self.w_c):
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / fan_in**0.5)
                if conv.bias is not None:
                    conv.bias.zero_()
        nn.init.zeros_(self.psi.weight)
        nn.init.zeros_(self.psi.bias)

    def attention(self, features: torch.Tensor, click_maps: torch.Tensor) -> torch.Tensor:
        """The gate ``alpha`` (same shape as ``features``), values in (0, 2).

        Parameters
        ----------
        features
            ``(B, C, h, w)`` feature map.
        click_maps
            ``(B, K, H, W)`` click maps (pooled to ``(h, w)`` when larger).

        Returns
        -------
        torch.Tensor
            ``alpha``, shaped like ``features``.
        """
        pooled = click_maps
        if click_maps.shape[2:] != features.shape[2:]:
            pooled = F.adaptive_avg_pool2d(click_maps, features.shape[2:])
        hidden = F.relu(self.w_f(features) + self.w_c(pooled.to(features.dtype)))
        return 2.0 * torch.sigmoid(self.psi(hidden))

    def forward(self, features: torch.Tensor, click_maps: torch.Tensor) -> torch.Tensor:
        """Gated features ``features * alpha``.

        Parameters
        ----------
        features
            ``(B, C, h, w)`` feature map.
        click_maps
            ``(B, K, H, W)`` click maps.

        Returns
        -------
        torch.Tensor
            The gated features, shaped like ``features``.
        """
        return features * self.attention(features, click_maps)

    def gate_points(self, features: torch.Tensor, click_values: torch.Tensor) -> torch.Tensor:
        """The gate applied to single feature vectors (the numbers :meth:`forward` gives there).

        Parameters
        ----------
        features
            ``(n, C)`` feature vectors (pixels of the feature map).
        click_values
            ``(n, K)`` click-map values at the same pixels.

        Returns
        -------
        torch.Tensor
            ``(n, C)`` gated features.
        """
        return self.gate_points_flat(self.flat_parameters(), features, click_values)

    def flat_parameters(self) -> torch.Tensor:
        """All parameters as one vector (a copy): what an optimiser can work on directly.

        Returns
        -------
        torch.Tensor
            1-D, in the order of ``self.parameters()``.
        """
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def load_flat_parameters(self, theta: torch.Tensor) -> None:
        """Set the parameters from a vector made by :meth:`flat_parameters`.

        Parameters
        ----------
        theta
            1-D vector of every parameter.
        """
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta.detach().clone(), self.parameters())

    def gate_points_flat(
        self, theta: torch.Tensor, features: torch.Tensor, click_values: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`gate_points` with the parameters taken from the vector ``theta``.

        Few tensor operations, so that many small optimisation steps stay cheap, and
        differentiable in ``theta``.

        Parameters
        ----------
        theta
            1-D parameter vector (as from :meth:`flat_parameters`).
        features
            ``(n, C)`` feature vectors.
        click_values
            ``(n, K)`` click-map values at the same pixels.

        Returns
        -------
        torch.Tensor
            ``(n, C)`` gated features.
        """
        c, k = features.shape[1], click_values.shape[1]
        hid = self.psi.in_channels
        sizes = (hid * c, hid, hid * k, c * hid, c)  # the order of self.parameters()
        w_f, b_f, w_c, w_psi, b_psi = torch.split(theta, sizes)
        hidden = torch.addmm(b_f, features, w_f.view(hid, c).T)
        hidden = F.relu(hidden + click_values @ w_c.view(hid, k).T)
        alpha = 2.0 * torch.sigmoid(torch.addmm(b_psi, hidden, w_psi.view(c, hid).T))
        return features * alpha


class ChannelScaleBias(nn.Module):
    """f-BRS-style auxiliary parameters: one scale and one bias per feature channel.

    ``F' = F * scale + bias``, starting at the identity (scale 1, bias 0). The click maps
    argument is accepted and ignored so it can stand in for :class:`ClickGuidedGate`.

    Parameters
    ----------
    feature_channels
        Number of feature channels ``C`` (one scale and one bias each).
    """

    def __init__(self, *, feature_channels: int) -> None:
        super().__init__()
        assert feature_channels > 0
        self.scale = nn.Parameter(torch.ones(1, feature_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, feature_channels, 1, 1))

    def reset_parameters(self) -> None:
        """Back to the identity."""
        with torch.no_grad():
            self.scale.fill_(1.0)
            self.bias.zero_()

    def forward(
        self, features: torch.Tensor, click_maps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scaled and shifted features.

        Parameters
        ----------
        features
            ``(B, C, h, w)`` feature map.
        click_maps
            Ignored.

        Returns
        -------
        torch.Tensor
            ``features * scale + bias``.
        """
        return features * self.scale + self.bias

    def gate_points(
        self, features: torch.Tensor, click_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same on single feature vectors.

        Parameters
        ----------
        features
            ``(n, C)`` feature vectors.
        click_values
            Ignored.

        Returns
        -------
        torch.Tensor
            ``(n, C)`` scaled and shifted features.
        """
        return self.gate_points_flat(self.flat_parameters(), features, click_values)

    def flat_parameters(self) -> torch.Tensor:
        """Scale and bias as one vector (a copy).

        Returns
        -------
        torch.Tensor
            1-D, ``C`` scales then ``C`` biases.
        """
        return torch.cat([self.scale.detach().reshape(-1), self.bias.detach().reshape(-1)])

    def load_flat_parameters(self, theta: torch.Tensor) -> None:
        """Set scale and bias from a vector made by :meth:`flat_parameters`.

        Parameters
        ----------
        theta
            1-D vector, ``C`` scales then ``C`` biases.
        """
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta.detach().clone(), self.parameters())

    def gate_points_flat(
        self, theta: torch.Tensor, features: torch.Tensor, click_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`gate_points` with scale and bias taken from ``theta``.

        Parameters
        ----------
        theta
            1-D vector, ``C`` scales then ``C`` biases.
        features
            ``(n, C)`` feature vectors.
        click_values
            Ignored.

        Returns
        -------
        torch.Tensor
            ``(n, C)`` scaled and shifted features.
        """
        c = features.shape[1]
        return features * theta[:c] + theta[c:]

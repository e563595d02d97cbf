"""Stain augmentation on tensors: H&E colour jitter for training crops and tiles.

The same transform as :func:`workbench.pp.augment_stain` (optical density, unmixed into
haematoxylin, eosin and DAB with the Ruifrok–Johnston vectors, each stain scaled and shifted,
recomposed; glass stays white), written in torch so the training loop can apply it to batches
of crops on any device without leaving torch (``models`` does not import ``pp``).
"""

from __future__ import annotations

import torch

__all__ = ["apply_stain_jitter", "stain_jitter"]

# Rows: optical-density colour of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001).
_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64
)
_HED = _HED / _HED.norm(dim=1, keepdim=True)
_HED_INV = torch.linalg.inv(_HED)


def stain_jitter(
    images: torch.Tensor,
    *,
    sigma: float = 0.05,
    bias: float = 0.02,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Jitter each image of a batch in HED optical-density space.

    Parameters
    ----------
    images
        ``(B, 3, H, W)`` float RGB in ``[0, 1]``.
    sigma
        Half-width of the multiplicative jitter per stain (one draw per image and stain).
    bias
        Half-width of the additive jitter per stain, in optical-density units; it scales with
        how stained a pixel is, so glass stays white.
    generator
        Seeded generator for the draws (CPU).

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` float in ``[0, 1]``; the input is not modified. With
        ``sigma = bias = 0`` the images come back unchanged (up to float rounding).
    """
    assert images.ndim == 4 and images.shape[1] == 3, "images must be (B, 3, H, W)"
    assert sigma >= 0 and bias >= 0, "sigma and bias must be >= 0"
    b = images.shape[0]
    alpha = 1.0 + (torch.rand(b, 3, generator=generator) * 2 - 1) * sigma
    beta = (torch.rand(b, 3, generator=generator) * 2 - 1) * bias
    return apply_stain_jitter(images, alpha, beta)


def apply_stain_jitter(
    images: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """The jitter of :func:`stain_jitter` with given per-image factors ``alpha`` and shifts
    ``beta`` (both ``(B, 3)``, stains in H, E, DAB order)."""
    b = images.shape[0]
    dev = images.device
    alpha = torch.as_tensor(alpha, dtype=torch.float32).reshape(b, 3)
    beta = torch.as_tensor(beta, dtype=torch.float32).reshape(b, 3)
    hed = _HED.to(dev, torch.float32)
    inv = _HED_INV.to(dev, torch.float32)
    od = -torch.log(images.float().clamp(min=1.0 / 255.0, max=1.0))  # (B, 3, H, W)
    conc = torch.einsum("bchw,cs->bshw", od, inv)
    stained = (od.sum(dim=1, keepdim=True) / 0.3).clamp(0.0, 1.0)
    conc = conc * alpha.to(dev).view(b, 3, 1, 1) + beta.to(dev).view(b, 3, 1, 1) * stained
    out = torch.exp(-torch.einsum("bshw,sc->bchw", conc, hed))
    return out.clamp(0.0, 1.0)

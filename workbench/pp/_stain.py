"""Stain tools: H&E colour augmentation (and, later in this module, stain normalisation).

Pure array functions in the scikit-image manner: RGB ``uint8`` in, RGB ``uint8`` out, the input
never modified, options keyword-only.
"""

from __future__ import annotations

import numpy as np


def augment_stain(
    rgb: np.ndarray,
    *,
    sigma: float = 0.05,
    bias: float = 0.02,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Jitter an H&E image in haematoxylin-eosin-DAB (HED) optical-density space.

    Each of the three stain concentrations is scaled by ``1 + U(-sigma, sigma)`` and shifted
    by ``U(-bias, bias)`` (one draw per channel for the whole image), which mimics another
    lab's staining strength and scanner while keeping the tissue's structure. White glass
    stays white.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` RGB image (uint8, or float in [0, 1]).
    sigma
        Half-width of the multiplicative jitter per stain.
    bias
        Half-width of the additive jitter per stain (in HED optical-density units).
    rng
        A NumPy generator or a seed.

    Returns
    -------
    ``(H, W, 3)`` uint8 image.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"augment_stain needs an (H, W, 3) RGB image, got shape {arr.shape}")
    if sigma < 0 or bias < 0:
        raise ValueError(f"sigma and bias must be >= 0, got sigma={sigma}, bias={bias}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    img = arr[:, :, :3]
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    # Optical density, then stain concentrations by the inverse of the Ruifrok-Johnston HED
    # matrix (no clipping, so the round trip is exact without jitter).
    od = -np.log(np.clip(img, 1.0 / 255.0, 1.0))
    conc = od @ _HED_TO_RGB_INV
    alpha = rng.uniform(1.0 - sigma, 1.0 + sigma, size=3)
    beta = rng.uniform(-bias, bias, size=3)
    # The additive shift scales with how stained a pixel is, so glass stays white.
    stained = np.clip(od.sum(axis=2, keepdims=True) / 0.3, 0.0, 1.0)
    out = np.exp(-((conc * alpha + beta * stained) @ _HED_TO_RGB))
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Rows: optical-density colour of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001).
_HED_TO_RGB = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_HED_TO_RGB = _HED_TO_RGB / np.linalg.norm(_HED_TO_RGB, axis=1, keepdims=True)
_HED_TO_RGB_INV = np.linalg.inv(_HED_TO_RGB)


__all__ = ["augment_stain"]

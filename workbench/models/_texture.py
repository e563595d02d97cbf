"""A built-in frozen tile encoder made of classical texture measures (no weights to train).

The compact :class:`~workbench.models.DetailBranch` learns its features from the slides it is
trained on; with a few dozen slides and only a slide label that is often not enough to pick up
fine nuclear detail (chromatin texture, nucleoli, ragged outlines). :class:`TextureEncoder` is
the opposite trade: a fixed description of a magnified crop that needs no training at all —

* stain moments: haematoxylin and eosin optical densities (colour deconvolution with the
  Ruifrok–Johnston H&E vectors), their mean, spread and 90th percentile, mean optical
  density, lightness and saturation;
* stain histograms: 8 bins of haematoxylin and of eosin density;
* texture: rotation-invariant "uniform" local binary pattern histograms (8 neighbours on the
  3 x 3 ring, 10 codes) of the grey image at the crop's resolution and at half of it, and of
  the haematoxylin image, plus the mean gradient magnitude at both scales.

Histograms enter as square roots of their shares (the Hellinger map), so that a linear head
compares them sensibly. Everything is plain torch on batches, deterministic, and cheap next to
reading the crop. Used as ``encoder="texture"`` by :class:`~workbench.tl.SlideTrainer`, it is
the tile encoder of both the self-calibrated model's detail branch and the tile-MIL baseline,
so a comparison between them stays like for like.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F

from workbench._errors import EncoderError
from workbench.models._encoder import TileEncoder

__all__ = ["TextureEncoder"]

#: Bumped whenever the features change (part of the SHA-256 recorded in checkpoints).
TEXTURE_VERSION = 1
#: Optical-density directions of haematoxylin, eosin and DAB (Ruifrok & Johnston, 2001).
_STAIN_OD = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
_H_EDGES = (0.0, 0.04, 0.08, 0.12, 0.16, 0.20, 0.25, 0.30)  # lower edges, 8 bins
_E_EDGES = (0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.19, 0.24)
# The 8 neighbours of the 3 x 3 ring, in circular order (row, column offsets).
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
_N_CODES = 10  # uniform patterns with 0..8 set bits, plus one bin for all the others


def _feature_names() -> list[str]:
    names = ["h_mean", "h_std", "h_p90", "e_mean", "e_std", "e_p90", "od_mean"]
    names += ["lightness_mean", "lightness_std", "saturation_mean"]
    names += [f"h_hist_{i}" for i in range(len(_H_EDGES))]
    names += [f"e_hist_{i}" for i in range(len(_E_EDGES))]
    for scale in ("grey", "grey_half", "haem"):
        names += [f"lbp_{scale}_{i}" for i in range(_N_CODES)]
    names += ["gradient_mean", "gradient_half_mean"]
    return names


def _uniform_lut() -> torch.Tensor:
    """``(256, 10)`` one-hot map from an 8-bit ring pattern to its uniform LBP code."""
    lut = torch.zeros(256, _N_CODES)
    for pattern in range(256):
        bits = [(pattern >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[i - 1] for i in range(8))
        lut[pattern, sum(bits) if transitions <= 2 else _N_CODES - 1] = 1.0
    return lut


_LUT = _uniform_lut()


def _uniform_lbp_hist(grey: torch.Tensor) -> torch.Tensor:
    """Shares of the 10 rotation-invariant uniform LBP codes of ``(B, 1, H, W)`` images."""
    b, _, h, w = grey.shape
    pad = F.pad(grey, (1, 1, 1, 1), mode="replicate")[:, 0]
    centre = grey[:, 0]
    pattern = torch.zeros((b, h, w), dtype=torch.int64, device=grey.device)
    for bit, (dr, dc) in enumerate(_RING):
        pattern |= (pad[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] >= centre).long() << bit
    offsets = torch.arange(b, device=grey.device).view(b, 1, 1) * 256
    counts = torch.bincount((pattern + offsets).flatten(), minlength=b * 256).view(b, 256)
    return counts.float() @ _LUT.to(grey.device) / float(h * w)


def _hist(values: torch.Tensor, edges: tuple[float, ...]) -> torch.Tensor:
    """Shares of ``(B, N)`` values in the bins starting at ``edges`` (the last one open)."""
    bounds = torch.tensor(edges[1:], dtype=values.dtype, device=values.device)
    idx = torch.bucketize(values.contiguous(), bounds)
    return F.one_hot(idx, len(edges)).sum(1).float() / float(values.shape[1])


def _p90(values: torch.Tensor) -> torch.Tensor:
    """90th percentile of each row of ``(B, N)`` values (the nearest-rank value)."""
    k = min(values.shape[1], int(0.9 * (values.shape[1] - 1)) + 1)
    return values.kthvalue(k, dim=1).values


def _gradient(grey: torch.Tensor) -> torch.Tensor:
    gy = grey[:, :, 1:, :] - grey[:, :, :-1, :]
    gx = grey[:, :, :, 1:] - grey[:, :, :, :-1]
    return gy.abs().mean(dim=(1, 2, 3)) + gx.abs().mean(dim=(1, 2, 3))


class TextureEncoder(TileEncoder):
    """Frozen tile encoder of stain and texture statistics (58 numbers per crop).

    Parameters
    ----------
    input_size
        Crop side in pixels the crops are read at (default 256).
    mpp
        Resolution the crops are read at (µm/px, default 0.5: nuclear detail is a few pixels).

    Notes
    -----
    Crops of another size are used as they come (the measures are shares and means), so
    ``input_size`` only sets how large a crop the engine reads. The encoder has no weights:
    its SHA-256 is that of its name, version and geometry, so a checkpoint trained with it
    reloads it by itself.
    """

    frozen = True
    name = "texture"
    feature_names = tuple(_feature_names())

    def __init__(self, *, input_size: int = 256, mpp: float = 0.5) -> None:
        super().__init__()
        if int(input_size) < 16 or float(mpp) <= 0:
            raise EncoderError(
                f"bad texture encoder geometry: input_size={input_size} (at least 16), "
                f"mpp={mpp} (positive)"
            )
        self.input_size = int(input_size)
        self.mpp = float(mpp)
        self.embed_dim = len(self.feature_names)
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)
        od = torch.tensor(_STAIN_OD, dtype=torch.float32)
        od = od / od.norm(dim=1, keepdim=True)
        # Least-squares unmixing: optical density (N, 3) @ pinv -> stain amounts (N, 3).
        self.register_buffer("_unmix", torch.linalg.pinv(od), persistent=False)
        ident = {"name": self.name, "version": TEXTURE_VERSION, "input_size": self.input_size}
        ident["mpp"] = self.mpp
        self.sha256 = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def train(self, mode: bool = True) -> TextureEncoder:
        """Stay in inference mode whatever ``mode`` says (the encoder has no weights to train).

        Parameters
        ----------
        mode
            Ignored.

        Returns
        -------
        TextureEncoder
            ``self``.
        """
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict:
        """Hand-made stain and texture features of crops.

        Parameters
        ----------
        images
            ``(B, 3, H, W)`` RGB crops in ``[0, 1]``.

        Returns
        -------
        dict
            ``{"embedding": (B, 58)}``.

        Raises
        ------
        ValueError
            The crops are not ``(B, 3, H, W)``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"crops must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float().clamp(0.0, 1.0)
        b = x.shape[0]
        od = -torch.log10((x * 255.0 + 1.0) / 256.0)  # (B, 3, H, W)
        stains = torch.einsum("bchw,cs->bshw", od, self._unmix.to(x)).clamp_min(0.0)
        h = stains[:, 0].flatten(1)
        e = stains[:, 1].flatten(1)
        light = x.mean(1).flatten(1)
        sat = (x.amax(1) - x.amin(1)).flatten(1)
        moments = torch.stack(
            [
                h.mean(1),
                h.std(1),
                _p90(h),
                e.mean(1),
                e.std(1),
                _p90(e),
                od.mean(dim=(1, 2, 3)),
                light.mean(1),
                light.std(1),
                sat.mean(1),
            ],
            dim=1,
        )
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        half = F.avg_pool2d(grey, 2, ceil_mode=True)
        haem = stains[:, :1]
        parts = [
            moments,
            _hist(h, _H_EDGES).sqrt(),
            _hist(e, _E_EDGES).sqrt(),
            _uniform_lbp_hist(grey).sqrt(),
            _uniform_lbp_hist(half).sqrt(),
            _uniform_lbp_hist(haem).sqrt(),
            torch.stack([_gradient(grey), _gradient(half)], dim=1),
        ]
        emb = torch.cat(parts, dim=1)
        assert emb.shape == (b, self.embed_dim)
        return {"embedding": emb}

    def spec(self) -> dict:
        """JSON description recorded in checkpoints (reloaded by name: no file needed).

        Returns
        -------
        dict
            Name, sizes, mpp, checksum and the feature version.
        """
        return {**self._spec("builtin", None), "version": TEXTURE_VERSION}

    def extra_repr(self) -> str:
        """The configuration in one line, for ``repr(encoder)``.

        Returns
        -------
        str
            Embedding size, input size and mpp.
        """
        return f"embed_dim={self.embed_dim}, input_size={self.input_size}, mpp={self.mpp}, frozen"

"""Tile encoders: the network that turns a magnified crop into an embedding.

The interface (:class:`TileEncoder`) is a torch module with a few declared properties:

``forward(images)``
    ``images`` is a ``(B, 3, H, W)`` float tensor in ``[0, 1]`` (RGB, as read from the slide);
    the result is a dict with ``"embedding"`` ``(B, embed_dim)`` and, when the encoder draws a
    lesion map, ``"lesion_logits"`` ``(B, 1, H, W)``. Resizing to ``input_size`` and the
    normalisation (``mean``/``std``) happen inside, so callers always pass plain crops.
``embed_dim``, ``input_size``, ``mpp``, ``mean``, ``std``
    Embedding size, the crop side in pixels and the resolution (µm/px) it expects (the
    crops are read at that mpp and size), and the per-channel normalisation.
``frozen``
    A frozen encoder is never trained, so its embeddings are computed once per crop and
    cached per slide (a large ViT runs once per crop, not once per epoch).
``spec()``
    A JSON description recorded in checkpoints, with a SHA-256 of the weights (or of the
    ``.pt2`` file), so a checkpoint refuses to run with another encoder.

Where encoders come from (:func:`~workbench.models.load_encoder`, in
:mod:`workbench.models._load_encoder`, which imports the concrete encoders):

* the built-in compact network — :class:`~workbench.models.DetailBranch`, trained with the
  model, which also draws per-pixel lesion maps (``None`` / ``"builtin"``);
* the built-in frozen texture encoder — :class:`~workbench.models.TextureEncoder`, stain and
  local-binary-pattern statistics that need no training (``"texture"``);
* any ``torch.nn.Module`` passed from Python (how a pathology foundation model built on
  one's own machine with timm or open_clip comes in: UNI, CONCH, Virchow, H-optimus …),
  wrapped by :class:`ModuleEncoder` and frozen;
* a ``.pt2`` file written by :func:`export_encoder` (``torch.export``): a program with its
  weights and our metadata, loaded with :func:`torch.export.load` — no timm, no Python code
  unpickled, nothing downloaded. This is what ``workbench train --encoder FILE.pt2`` takes;
* a foundation model's own weight files (UNI, UNI2-h, Virchow2, H-optimus, Phikon, Lunit,
  kaiko …), read into a plain-torch :class:`~workbench.models.VisionTransformer` by name:
  ``load_encoder("uni", weights="…/pytorch_model.bin")``, or a name of the local encoder
  registry (:mod:`workbench.models._local_encoders`), which is what ``--encoder NAME`` takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench._errors import EncoderError
from workbench.models._finite import require_finite

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_ENCODERS",
    "EncoderDetail",
    "ModuleEncoder",
    "TileEncoder",
    "check_encoder",
    "export_encoder",
    "file_sha256",
    "module_sha256",
]

#: Names that select the built-in compact network (the model's own :class:`DetailBranch`).
BUILTIN_ENCODERS = ("builtin", "compact")
#: Name of the built-in frozen encoder of stain and texture measures (:class:`TextureEncoder`).
TEXTURE_ENCODER = "texture"
#: The name of the packaged CNN encoder trained on real colorectal biopsies.
TISSUE_ENCODER = "crc_biopsy"
#: ImageNet statistics, what most pretrained encoders (and timm's defaults) expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Name of the metadata entry inside a ``.pt2`` file written by :func:`export_encoder`.
PT2_METADATA = "workbench_encoder.json"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's class name and its state (names, dtypes, shapes and values)."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class TileEncoder(nn.Module):
    """Base class of tile encoders (see the module documentation for the interface)."""

    embed_dim: int
    input_size: int | None = None
    mpp: float | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    frozen: bool = True
    name: str = "encoder"

    def _spec(self, source: str, file: str | None) -> dict:
        """The JSON description every encoder records in checkpoints."""
        return {
            "source": source,
            "name": self.name,
            "file": file,
            "sha256": self.sha256,
            "embed_dim": self.embed_dim,
            "input_size": self.input_size,
            "mpp": self.mpp,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def spec(self) -> dict:  # pragma: no cover - implemented by subclasses
        """JSON description recorded in checkpoints (what :func:`check_encoder` compares).

        Returns
        -------
        dict
            At least ``source``, ``name``, ``sha256``, ``embed_dim``, ``input_size``,
            ``mpp``, ``mean`` and ``std``.
        """
        raise NotImplementedError


def _interpret(out: Any, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(embedding, lesion_logits or None)`` from what a wrapped module returned."""
    lesion = None
    if isinstance(out, dict):
        if "embedding" not in out:
            raise EncoderError(
                f"the encoder returned a dict without 'embedding' (keys {sorted(out)}); return "
                "{'embedding': (B, E)[, 'lesion_logits': (B, 1, H, W)]}"
            )
        emb, lesion = out["embedding"], out.get("lesion_logits")
    elif isinstance(out, tuple | list):
        if not out:
            raise EncoderError("the encoder returned an empty tuple")
        emb = out[0]
        lesion = out[1] if len(out) > 1 else None
    else:
        emb = out
    if not torch.is_tensor(emb):
        raise EncoderError(f"the encoder returned a {type(emb).__name__}, not a tensor")
    if emb.ndim == 4:  # a CNN feature map: global average pooling
        emb = emb.mean(dim=(2, 3))
    if emb.ndim != 2 or emb.shape[0] != batch:
        hint = "a timm model: create it with num_classes=0"
        if emb.ndim == 3:
            hint = "tokens of a ViT: return one per crop, e.g. the class token out[:, 0]"
        raise EncoderError(
            f"the encoder must return (B, E) embeddings for B={batch} crops, got shape "
            f"{tuple(emb.shape)} ({hint})"
        )
    if lesion is not None and (lesion.ndim != 4 or lesion.shape[:2] != (batch, 1)):
        raise EncoderError(f"lesion_logits must be (B, 1, h, w), got shape {tuple(lesion.shape)}")
    return emb, lesion


class ModuleEncoder(TileEncoder):
    """A frozen ``torch.nn.Module`` used as tile encoder.

    Parameters
    ----------
    module
        Maps normalised ``(B, 3, input_size, input_size)`` images to ``(B, E)`` embeddings
        (or a ``(B, C, h, w)`` feature map, pooled; or a dict/tuple with the embedding first
        and optional ``(B, 1, h, w)`` lesion logits).
    input_size
        Crop side the module expects; crops are read at this size (and resized if not).
    mpp
        Resolution (µm/px) the module was trained at; crops are read at it.
    mean, std
        Per-channel normalisation applied to ``[0, 1]`` RGB before the module.
    name
        A name for reports and checkpoints (default: the module's class name).
    embed_dim
        Embedding size; found by running the module once when not given.
    sha256
        Identity recorded in checkpoints (default: :func:`module_sha256`; the file's
        SHA-256 for a ``.pt2`` file).
    file
        The ``.pt2`` file it was loaded from, if any.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        input_size: int = 224,
        mpp: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        name: str | None = None,
        embed_dim: int | None = None,
        sha256: str | None = None,
        file: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise EncoderError(f"an encoder must be a torch.nn.Module, got {type(module).__name__}")
        if int(input_size) < 8 or float(mpp) <= 0:
            raise EncoderError(f"bad encoder geometry: input_size={input_size}, mpp={mpp}")
        self.module = module
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.input_size = int(input_size)
        self.mpp = float(mpp)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.name = name or type(module).__name__
        self.file = file
        self.frozen = True
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.sha256 = sha256 or module_sha256(module)
        if embed_dim is None:
            probe = torch.zeros(2, 3, self.input_size, self.input_size)
            try:
                with torch.no_grad():
                    out = self.module(self._normalise(probe))
            except Exception as exc:  # noqa: BLE001 - any failure: the module does not fit
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise EncoderError(
                    f"the encoder fails on a batch of two {self.input_size}-px crops "
                    f"({type(exc).__name__}: {detail}); give input_size= the crop side it takes"
                ) from None
            emb, _ = _interpret(out, 2)
            embed_dim = int(emb.shape[1])
        self.embed_dim = int(embed_dim)

    def train(self, mode: bool = True) -> ModuleEncoder:
        """Stay in inference mode whatever ``mode`` says: the encoder is frozen.

        Parameters
        ----------
        mode
            Ignored (dropout and norm statistics of the wrapped module never train).

        Returns
        -------
        ModuleEncoder
            ``self``.
        """
        super().train(False)
        return self

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self._mean.to(images)) / self._std.to(images)

    def forward(self, images: torch.Tensor) -> dict:
        """Embed crops (and predict their lesion logits when the module does).

        Parameters
        ----------
        images
            ``(B, 3, H, W)`` RGB crops in ``[0, 1]``; resized to ``input_size`` when needed.

        Returns
        -------
        dict
            ``{"embedding": (B, E)}``, with ``"lesion_logits"`` ``(B, 1, H, W)`` when the
            module predicts them.

        Raises
        ------
        workbench.EncoderError
            The crops are not ``(B, 3, H, W)``.
        workbench.NonFiniteError
            The module gave NaN or infinite values.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise EncoderError(f"crops must be (B, 3, H, W), got {tuple(images.shape)}")
        size = images.shape[2:]
        x = images
        if tuple(size) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        with torch.no_grad():
            emb, lesion = _interpret(self.module(self._normalise(x)), images.shape[0])
        hint = "check the encoder (NaN weights, or an overflow in half precision)"
        require_finite(emb, f"the embeddings of encoder {self.name!r} for {len(emb)} crops", hint)
        if lesion is not None:
            require_finite(lesion, f"the lesion logits of encoder {self.name!r}", hint)
        out = {"embedding": emb.float()}
        if lesion is not None:
            out["lesion_logits"] = F.interpolate(
                lesion.float(), size=tuple(size), mode="bilinear", align_corners=False
            )
        return out

    def evidence_maps(self, images: torch.Tensor) -> torch.Tensor | None:
        """Where in each crop the module's own class evidence lies, if it can say.

        Parameters
        ----------
        images
            ``(B, 3, H, W)`` RGB crops in ``[0, 1]``.

        Returns
        -------
        torch.Tensor or None
            ``(B, H, W)`` evidence (higher = more of the module's target class, e.g.
            adenocarcinoma for ``crc_biopsy``), from the wrapped module's ``evidence``
            method; ``None`` when the module has none.
        """
        fn = getattr(self.module, "evidence", None)
        if fn is None or images.shape[0] == 0:
            return None
        size = tuple(images.shape[2:])
        x = images
        if size != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        with torch.no_grad():
            ev = fn(self._normalise(x)).float()
        ev = F.interpolate(ev, size=size, mode="bilinear", align_corners=False)[:, 0]
        require_finite(ev, f"the evidence maps of encoder {self.name!r}", "check the encoder")
        return ev

    def spec(self) -> dict:
        """JSON description recorded in checkpoints.

        Returns
        -------
        dict
            Name, source (file or module), sizes, mpp, normalisation and checksum.
        """
        return self._spec("file" if self.file else "module", self.file)

    def extra_repr(self) -> str:
        """The configuration in one line, for ``repr(encoder)``.

        Returns
        -------
        str
            Name, embedding size, input size and mpp.
        """
        return (
            f"name={self.name!r}, embed_dim={self.embed_dim}, input_size={self.input_size}, "
            f"mpp={self.mpp}, frozen"
        )


def export_encoder(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: int = 224,
    mpp: float = 0.5,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    name: str | None = None,
) -> Path:
    """Write ``module`` as a ``.pt2`` encoder file (``torch.export``, any batch size).

    Run this once where the model can be built (e.g. ``timm.create_model("hf-hub:MahmoodLab/
    uni", pretrained=True, num_classes=0)`` on your own machine); the file then loads anywhere
    with :func:`load_encoder` without timm and without unpickling Python code. The metadata
    (name, input size, mpp, normalisation, embedding size) travels inside the file.

    Parameters
    ----------
    module
        The encoder: ``(B, 3, input_size, input_size)`` normalised images to ``(B, E)``
        embeddings.
    path
        Where to write; must end in ``.pt2``.
    input_size
        Side of the square input in pixels.
    mpp
        Microns per pixel the encoder expects.
    mean, std
        Per-channel normalisation applied to ``[0, 1]`` images before the module.
    name
        A name for reports and checkpoints (default: the module's class name).

    Returns
    -------
    pathlib.Path
        The file (written atomically).
    """
    from workbench.io._atomic import atomic_path

    path = Path(path)
    if path.suffix != ".pt2":
        raise EncoderError(f"encoder files end in .pt2, got {path.name!r}")
    module = module.eval()
    wrapped = ModuleEncoder(module, input_size=input_size, mpp=mpp, mean=mean, std=std, name=name)
    example = torch.zeros(2, 3, int(input_size), int(input_size))
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    meta = {k: v for k, v in wrapped.spec().items() if k not in ("source", "file", "sha256")}
    meta["format"] = "workbench-encoder"
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp, extra_files={PT2_METADATA: json.dumps(meta)})
    logger.info(
        "export_encoder: wrote %s (%s, %d-d embeddings)", path, meta["name"], meta["embed_dim"]
    )
    return path


def check_encoder(spec: dict | None, encoder: TileEncoder) -> None:
    """Refuse an encoder other than the one described by ``spec`` (same SHA-256 and size).

    Raises
    ------
    EncoderError
        The model was built for the built-in network, or for another encoder.
    """
    if not spec:
        raise EncoderError("this model uses the built-in detail network; it takes no tile encoder")
    sha = getattr(encoder, "sha256", None)
    if sha != spec.get("sha256") or int(encoder.embed_dim) != int(spec.get("embed_dim", -1)):
        raise EncoderError(
            f"this model was trained with the encoder {spec.get('name')!r} "
            f"(sha256 {str(spec.get('sha256'))[:12]}…, {spec.get('embed_dim')}-d"
            + (f", file {spec['file']}" if spec.get("file") else "")
            + f"), not with {getattr(encoder, 'name', type(encoder).__name__)!r} "
            f"(sha256 {str(sha)[:12]}…, {encoder.embed_dim}-d); pass the encoder it was trained "
            "with, or train again"
        )


def set_scaling(mean_buf, std_buf, mean, std) -> None:
    """Copy a mean and standard deviation into buffers; near-constant dimensions keep 1."""
    std = torch.as_tensor(std, dtype=torch.float32)
    mean_buf.copy_(torch.as_tensor(mean, dtype=torch.float32))
    std_buf.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))


class EncoderDetail(nn.Module):
    """The detail branch around a frozen tile encoder: trainable heads on its embeddings.

    Stands in for :class:`~workbench.models.DetailBranch` in the assembled models and gives the
    same outputs: ``embedding`` ``(B, embed_dim)`` (a projection of the encoder's
    embedding), ``lesion_prob`` ``(B,)`` (a linear lesion head) and ``logits`` — the encoder's
    lesion map when it has one, else ``(B, 1, 1, 1)``: one lesion logit per crop.

    The encoder itself is attached with :meth:`attach` and is not a registered sub-module, so
    its weights never enter this model's state dict or checkpoint (the checkpoint records
    the encoder's ``spec`` and SHA-256 instead).

    Parameters
    ----------
    in_dim
        The encoder's embedding size.
    embed_dim
        Size of the projected embedding.
    """

    pixel_maps = False

    def __init__(self, *, in_dim: int, embed_dim: int = 64) -> None:
        super().__init__()
        assert in_dim > 0 and embed_dim > 0, "in_dim and embed_dim must be positive"
        self.in_dim = int(in_dim)
        self.embed_dim = int(embed_dim)
        self.norm = nn.LayerNorm(in_dim)
        self.project = nn.Sequential(
            nn.Linear(in_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim)
        )
        self.lesion_head = nn.Linear(in_dim, 1)
        # Per-dimension standardisation of the raw embeddings (identity until the trainer sets
        # it from the training crops): hand-made features such as the texture encoder's mix
        # scales that a layer norm alone would let the largest dominate.
        self.register_buffer("raw_mean", torch.zeros(in_dim))
        self.register_buffer("raw_std", torch.ones(in_dim))
        object.__setattr__(self, "encoder", None)

    def set_embedding_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-dimension mean and standard deviation of the raw embeddings.

        Parameters
        ----------
        mean, std
            ``(in_dim,)`` per-dimension mean and standard deviation.
        """
        set_scaling(self.raw_mean, self.raw_std, mean, std)

    def attach(self, encoder: TileEncoder) -> None:
        """Attach the frozen encoder (kept out of the state dict).

        Parameters
        ----------
        encoder
            The encoder; its embedding size must be ``in_dim``.

        Raises
        ------
        workbench.EncoderError
            The encoder's embedding size is not ``in_dim``.
        """
        if int(encoder.embed_dim) != self.in_dim:
            raise EncoderError(
                f"the encoder gives {encoder.embed_dim}-d embeddings, this model expects {self.in_dim}"
            )
        object.__setattr__(self, "encoder", encoder)

    def encode(self, images: torch.Tensor) -> dict:
        """Run the attached encoder (no gradients).

        Parameters
        ----------
        images
            ``(B, 3, H, W)`` float crops in ``[0, 1]``.

        Returns
        -------
        dict
            The encoder's outputs: ``embedding`` ``(B, in_dim)`` and, when it has one,
            ``lesion_logits``.
        """
        if self.encoder is None:
            raise EncoderError(
                "no tile encoder attached; load the checkpoint with encoder=… (the .pt2 file or "
                "module it was trained with)"
            )
        return self.encoder(images)

    def from_embeddings(self, raw: torch.Tensor, lesion_logits: torch.Tensor | None = None) -> dict:
        """Heads on (cached) encoder embeddings ``(B, in_dim)``.

        Parameters
        ----------
        raw
            ``(B, in_dim)`` encoder embeddings.
        lesion_logits
            The encoder's lesion maps ``(B, 1, H, W)``, or ``None``.

        Returns
        -------
        dict
            ``embedding`` ``(B, embed_dim)``, ``lesion_prob`` ``(B,)`` and ``logits`` (the lesion
            maps, or ``(B, 1, 1, 1)`` without them).
        """
        h = self.norm((raw.float() - self.raw_mean) / self.raw_std)
        pooled = self.lesion_head(h).squeeze(-1)
        if lesion_logits is None:
            logits = pooled.view(-1, 1, 1, 1)
            prob = torch.sigmoid(pooled)
        else:
            logits = lesion_logits
            prob = torch.sigmoid(0.5 * (pooled + lesion_logits.flatten(1).amax(1)))
        return {"embedding": self.project(h), "lesion_prob": prob, "logits": logits}

    def forward(self, images: torch.Tensor) -> dict:
        """Encode crops and apply the heads (:meth:`from_embeddings`).

        Parameters
        ----------
        images
            ``(B, 3, H, W)`` float crops in ``[0, 1]``.

        Returns
        -------
        dict
            ``embedding``, ``lesion_prob`` and ``logits``, as :meth:`from_embeddings`.
        """
        enc = self.encode(images)
        return self.from_embeddings(enc["embedding"].to(images.device), enc.get("lesion_logits"))

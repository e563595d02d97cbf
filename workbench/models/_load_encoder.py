"""``load_encoder``: a tile encoder from a name, a file or a module.

The one place that knows every kind of tile encoder (the built-in texture encoder, wrapped
modules, ``.pt2`` programs, the local registry's foundation models). It sits above
:mod:`workbench.models._encoder` (the interface and the module wrapper),
:mod:`workbench.models._texture` and :mod:`workbench.models._local_encoders`, which import
only the interface, so none of them imports another back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from workbench._errors import EncoderError
from workbench.models import _local_encoders as local
from workbench.models._encoder import (
    BUILTIN_ENCODERS,
    PT2_METADATA,
    TEXTURE_ENCODER,
    ModuleEncoder,
    TileEncoder,
    file_sha256,
)
from workbench.models._texture import TextureEncoder
from workbench.models._tissue_cnn import TISSUE_ENCODER, load_tissue_encoder

__all__ = ["load_encoder"]


def _load_pt2(path: Path, overrides: dict) -> ModuleEncoder:
    extra = {PT2_METADATA: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        raise EncoderError(
            f"cannot load the encoder file {str(path)!r} ({type(exc).__name__}: {exc}); write it "
            "with workbench.models.export_encoder (torch.export)"
        ) from None
    meta: dict = {}
    if extra[PT2_METADATA]:
        try:
            meta = json.loads(extra[PT2_METADATA])
        except json.JSONDecodeError:
            raise EncoderError(f"the metadata inside {str(path)!r} is not JSON") from None
    kwargs = {
        k: meta[k] for k in ("input_size", "mpp", "mean", "std", "name", "embed_dim") if k in meta
    }
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    if "name" not in kwargs:
        kwargs["name"] = path.stem
    fixed = _program_input_size(program, path, kwargs.get("input_size"))
    if fixed is not None:
        kwargs["input_size"] = fixed
    try:
        return ModuleEncoder(
            program.module(), sha256=file_sha256(path), file=str(path.resolve()), **kwargs
        )
    except EncoderError as exc:
        raise EncoderError(f"the encoder file {str(path)!r}: {exc}. {_PT2_NEEDS}") from None


#: What a ``.pt2`` encoder file must be, said in every refusal of one.
_PT2_NEEDS = (
    "A .pt2 encoder takes one (B, 3, S, S) image batch with any batch size B and returns (B, E) "
    "embeddings; write it with workbench.models.export_encoder(module, path, input_size=S)"
)


def _program_input_size(program, path: Path, wanted: int | None) -> int | None:
    """The crop side an exported program was traced for, when it is fixed there (else
    ``None``); refuses a program whose input cannot be a batch of RGB crops of any size."""
    sig = program.graph_signature
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    inputs = [vals.get(name) for name in sig.user_inputs]
    where = f"the encoder file {str(path)!r}"
    if len(inputs) != 1 or not hasattr(inputs[0], "shape"):
        raise EncoderError(f"{where} takes {len(inputs)} inputs. {_PT2_NEEDS}")
    shape = list(inputs[0].shape)
    fixed = [isinstance(d, int) for d in shape]
    shown = "(" + ", ".join(str(d) if f else "any" for d, f in zip(shape, fixed, strict=True)) + ")"
    if len(shape) != 4 or not fixed[1] or shape[1] != 3:
        raise EncoderError(f"{where} takes input of shape {shown}. {_PT2_NEEDS}")
    if fixed[0]:
        raise EncoderError(
            f"{where} was exported for a fixed batch of {shape[0]} (input {shown}); the crops "
            f"of a slide come in batches of any size. {_PT2_NEEDS}"
        )
    if fixed[2] != fixed[3] or (fixed[2] and shape[2] != shape[3]):
        raise EncoderError(f"{where} takes non-square crops {shown}. {_PT2_NEEDS}")
    if not fixed[2]:
        return None
    size = int(shape[2])
    if wanted is not None and int(wanted) != size:
        raise EncoderError(
            f"{where} was exported for {size}-px crops (input {shown}), not {int(wanted)} px; "
            f"pass input_size={size} or export it again for {int(wanted)} px"
        )
    return size


def load_encoder(
    source: str | os.PathLike | nn.Module | None = None,
    *,
    input_size: int | None = None,
    mpp: float | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    name: str | None = None,
    weights: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
) -> TileEncoder | None:
    """A tile encoder from a name, a file or a module; ``None`` for the built-in one.

    Parameters
    ----------
    source
        ``None``, ``"builtin"`` or ``"compact"`` (the model's own compact network, trained with
        it); ``"texture"`` (:class:`~workbench.models.TextureEncoder`, frozen, no weights; its
        ``input_size`` and ``mpp`` can be overridden); ``"crc_biopsy"`` (the packaged CNN
        trained on real colorectal biopsies, :func:`~workbench.models.load_tissue_encoder`); a name of the local encoder registry
        (:func:`~workbench.models.read_encoder_registry`) or of
        :data:`~workbench.models.ENCODER_ARCHITECTURES` with ``weights`` (a
        :class:`~workbench.models.LocalEncoder`: UNI, UNI2-h, Virchow2, H-optimus, Phikon,
        Lunit, kaiko from their own weight files); a path to a ``.pt2`` file
        (:func:`export_encoder`); a :class:`TileEncoder`; or any ``torch.nn.Module`` (wrapped
        by :class:`ModuleEncoder`, frozen).
    input_size, mpp, mean, std, name
        Geometry and normalisation of a module (defaults 224 px, 0.5 µm/px, ImageNet
        statistics) or overrides of what a ``.pt2`` file, registry entry or architecture
        records (``name`` does not apply to registry encoders).
    weights
        The weights file (``pytorch_model.bin``, ``model.safetensors``) or folder of a named
        architecture or registry encoder; read as tensors only, never as Python code.
    registry
        The registry JSON file (default ``$WORKBENCH_ENCODERS``, else
        ``~/.config/workbench/encoders.json``).

    Returns
    -------
    TileEncoder or None
        The encoder, frozen; ``None`` for the built-in network.

    Raises
    ------
    EncoderError
        An unknown name (the message lists the known ones), a missing file, a checksum
        mismatch, weights that do not fit the architecture (the first missing or unexpected
        key, or shape), a file that is neither a ``.pt2`` program nor a named architecture's
        weights, or a module whose outputs do not fit the interface.
    """
    if source is None or (isinstance(source, str) and source.lower() in BUILTIN_ENCODERS):
        return None
    overrides = {"input_size": input_size, "mpp": mpp, "mean": mean, "std": std, "name": name}
    if isinstance(source, str) and source.lower() == TEXTURE_ENCODER:
        geometry = {"input_size": input_size, "mpp": mpp}
        return TextureEncoder(**{k: v for k, v in geometry.items() if v is not None})
    if isinstance(source, str) and source.lower() == TISSUE_ENCODER:
        return load_tissue_encoder(input_size=input_size, mpp=mpp)
    if isinstance(source, TileEncoder):
        return source
    if isinstance(source, nn.Module):
        return ModuleEncoder(source, **{k: v for k, v in overrides.items() if v is not None})
    if not isinstance(source, str | os.PathLike):
        raise EncoderError(f"cannot make a tile encoder from a {type(source).__name__}")
    geometry = {"input_size": input_size, "mpp": mpp, "mean": mean, "std": std}
    if weights is not None:
        return local.load_local_encoder(str(source), weights=weights, registry=registry, **geometry)
    path = Path(source)
    if path.is_file():
        if path.suffix != ".pt2":
            raise EncoderError(
                f"{str(path)!r} is not a .pt2 encoder file. A weights file (.bin, .pth, "
                ".safetensors) is read with its architecture: load_encoder('uni', "
                "weights=FILE) or a registry entry; pickled models (Python code) are refused"
            )
        return _load_pt2(path, overrides)
    looks_like_path = os.sep in str(source) or "/" in str(source) or not isinstance(source, str)
    if not looks_like_path and local.is_local_encoder_name(source, registry):
        return local.load_local_encoder(source, registry=registry, **geometry)
    if looks_like_path or path.suffix:
        raise EncoderError(f"no encoder file at {str(path)!r}; check the path")
    reg = local.read_encoder_registry(registry)
    raise local._unknown(str(source), reg, local.encoder_registry_path(registry))

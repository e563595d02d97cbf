"""Reading ViT weight files as they are distributed, into :class:`VisionTransformer`.

Files: ``model.safetensors`` (also sharded, with ``model.safetensors.index.json``), or a
``torch.save`` state dict (``pytorch_model.bin``, ``.pth``, ``.pt``) read with
``torch.load(weights_only=True)``: tensors only, never Python code. A folder stands for the file
in it.

Layouts, all renamed to timm's names, which :class:`VisionTransformer` uses:

``timm``
    ``cls_token``, ``reg_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.norm1``,
    ``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.ls1.gamma``, ``blocks.N.norm2``,
    ``blocks.N.mlp.fc1``/``fc2`` (GELU or packed SwiGLU; an unpacked SwiGLU's ``fc1_g`` and
    ``fc1_x`` are packed), ``blocks.N.ls2.gamma``, ``norm`` — UNI, UNI2-h, Virchow2,
    H-optimus, Lunit, kaiko.
``dinov2``
    The DINOv2 reference code: as timm, but ``register_tokens``, a ``mask_token`` (unused here),
    SwiGLU as ``mlp.w12``/``mlp.w3``, and blocks possibly grouped in chunks
    (``blocks.C.N.…``).
``hf``
    Hugging Face ``ViTModel``, ``Dinov2Model`` and ``Dinov2WithRegistersModel``, both as the
    files on the Hub store them (``encoder.layer.N.attention.attention.query`` …,
    ``intermediate.dense``/``output.dense``, ``mlp.weights_in``/``weights_out``,
    ``layer_scale1.lambda1``) and as ``transformers`` 5 names them in memory
    (``layers.N.attention.q_proj`` …, ``mlp.gate_proj``/``up_proj``/``down_proj``) — Phikon,
    Phikon-v2. Separate query/key/value projections are fused into ``qkv``.

A prefix before the names (``module.``, ``backbone.``, ``vit.`` …) is dropped. Classifier heads
(``head.*``, ``classifier.*``), the Hugging Face pooler and the mask token are not part of the
encoder and are skipped (logged). Anything else that does not fit raises
:class:`~workbench.EncoderError` naming the first missing or unexpected key, or the first
tensor whose shape differs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

import torch

from workbench._errors import EncoderError
from workbench.models._vit import VisionTransformer

logger = logging.getLogger(__name__)

__all__ = ["WEIGHT_FILES", "hf_vit_config", "load_vit_weights", "read_weights", "vit_state_dict"]

#: File names looked for, in this order, when a folder is given.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.pth",
)
#: Key prefixes of tensors that are not part of an encoder (classifier heads, HF pooler).
SKIPPED = ("head.", "classifier.", "pooler.", "fc_head.")
_ANCHORS = ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight")
_WRAPPERS = ("state_dict", "model", "teacher", "module", "model_state_dict", "student")


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _resolve_file(path: Path) -> Path:
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise EncoderError(
            f"no weights file in the folder {str(path)!r}; expected one of {', '.join(WEIGHT_FILES)}"
        )
    if not path.is_file():
        raise EncoderError(f"no weights file at {str(path)!r}; check the path")
    return path


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EncoderError(f"cannot read the safetensors file {str(path)!r}: {exc}") from None


def _read_pickled_weights(path: Path) -> dict:
    """A ``torch.save`` state dict, read with the weights-only unpickler (no code runs)."""
    import pickle

    errors = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError)
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except errors as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(
            f"cannot read {str(path)!r} as a weights-only state dict ({first}); only tensors are "
            "read, never pickled Python objects. Save the model's state_dict() (or use the "
            ".safetensors file)"
        ) from None
    for _ in range(3):  # {"state_dict": {...}}, {"teacher": {...}} … one or two levels deep
        if not isinstance(obj, dict):
            break
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return obj
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    raise EncoderError(
        f"{str(path)!r} holds a {type(obj).__name__}, not a state dict of tensors; save "
        "model.state_dict()"
    )


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (or of the weights file in a folder), by name.

    Parameters
    ----------
    path
        A ``.safetensors`` file, a sharded ``model.safetensors.index.json``, a ``torch.save``
        state dict (``.bin``, ``.pth``, ``.pt``; read with ``weights_only=True``), or a folder
        holding one of :data:`WEIGHT_FILES`.

    Returns
    -------
    dict
        Tensor name -> tensor, as stored (no renaming).

    Raises
    ------
    EncoderError
        No such file, a file that is not a state dict of tensors, or an unreadable file.
    """
    path = _resolve_file(Path(path))
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            raise EncoderError(
                f"{str(path)!r} is not a safetensors index (no weight_map)"
            ) from None
        state: dict = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_read_safetensors(_resolve_file(path.parent / shard)))
        return state
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_pickled_weights(path)


# ---------------------------------------------------------------------------- layouts
_HF_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
_HF_RENAME = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2",
    "mlp.down_proj": "mlp.fc2",
}
_HF_QKV = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "reg_token",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def _strip_prefix(state: dict) -> dict:
    for key in state:
        for anchor in _ANCHORS:
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                if not prefix:
                    return state
                return {
                    (k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()
                }
    return state


def _pack(parts: dict, order: tuple, name: str, out: dict) -> None:
    """Concatenate ``parts[o]`` for ``o`` in ``order`` (weight and bias) into ``out[name]``."""
    for kind in ("weight", "bias"):
        pieces = [parts.get((o, kind)) for o in order]
        if all(p is not None for p in pieces):
            out[f"{name}.{kind}"] = torch.cat(pieces, dim=0)
        else:  # an incomplete group stays under its own names: reported as missing/unexpected
            for o, p in zip(order, pieces, strict=True):
                if p is not None:
                    out[parts[(o, kind, "key")]] = p


def _from_hf(state: dict) -> dict:
    out: dict = {}
    groups: dict[int, dict] = {}
    for key, value in state.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if not m:
            out[key] = value
            continue
        i, rest = int(m.group(1)), m.group(2)
        stem, _, kind = rest.rpartition(".")
        g = groups.setdefault(i, {})
        if stem in _HF_QKV:
            g[("qkv", _HF_QKV[stem], kind)] = value
            g[("qkv", _HF_QKV[stem], kind, "key")] = key
        elif stem in ("mlp.gate_proj", "mlp.up_proj"):
            g[("swiglu", stem, kind)] = value
            g[("swiglu", stem, kind, "key")] = key
        elif stem in _HF_RENAME:
            out[f"blocks.{i}.{_HF_RENAME[stem]}.{kind}"] = value
        elif stem in ("layer_scale1", "layer_scale2") and kind == "lambda1":
            out[f"blocks.{i}.ls{stem[-1]}.gamma"] = value
        else:
            out[key] = value
    for i, g in groups.items():
        qkv = {k[1:]: v for k, v in g.items() if k[0] == "qkv"}
        if qkv:
            _pack(qkv, ("q", "k", "v"), f"blocks.{i}.attn.qkv", out)
        glu = {k[1:]: v for k, v in g.items() if k[0] == "swiglu"}
        if glu:
            _pack(glu, ("mlp.gate_proj", "mlp.up_proj"), f"blocks.{i}.mlp.fc1", out)
    return out


_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")


def _from_timm_or_dinov2(state: dict) -> dict:
    out: dict = {}
    unpacked: dict[str, dict] = {}
    for key, value in state.items():
        m = _CHUNKED.match(key)
        if m:  # DINOv2 block chunks: blocks.C.N.x -> blocks.N.x
            key = f"blocks.{m.group(1)}.{m.group(2)}"
        if key == "register_tokens":
            key = "reg_token"
        key = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        m = re.match(r"^(blocks\.\d+\.mlp)\.fc1_([gx])\.(weight|bias)$", key)
        if m:  # timm's unpacked SwiGLU: gate (fc1_g) first, then value (fc1_x)
            unpacked.setdefault(m.group(1), {})[(m.group(2), m.group(3))] = value
            unpacked[m.group(1)][(m.group(2), m.group(3), "key")] = key
            continue
        out[key] = value
    for stem, parts in unpacked.items():
        _pack(parts, ("g", "x"), f"{stem}.fc1", out)
    return out


def vit_state_dict(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Rename a ViT state dict of any supported layout to :class:`VisionTransformer`'s names.

    Parameters
    ----------
    state
        Tensor name -> tensor, as read by :func:`read_weights`.

    Returns
    -------
    tuple
        ``(state, layout, skipped)``: the renamed tensors (floating ones as float32), the layout
        recognised (``"timm"``, ``"dinov2"`` or ``"hf"``) and the names of the tensors skipped
        (classifier heads, pooler, mask token).
    """
    state = _strip_prefix(dict(state))
    skipped = sorted(
        (k for k in state if k.startswith(SKIPPED) or k.rsplit(".", 1)[-1] == "mask_token"
         or k == "embeddings.mask_token"),
        key=_natural,
    )  # fmt: skip
    state = {k: v for k, v in state.items() if k not in set(skipped)}
    if any(k.startswith(("embeddings.", "encoder.layer.", "layers.")) for k in state):
        layout, state = "hf", _from_hf(state)
    else:
        dinov2 = any(k == "register_tokens" or ".mlp.w12." in k or _CHUNKED.match(k) for k in state)
        layout, state = ("dinov2" if dinov2 else "timm"), _from_timm_or_dinov2(state)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, layout, skipped


def _fits(config: dict, state: dict, where: str, label: str) -> dict:
    """``config``, with the position grid taken from the file; raises on the first misfit."""
    config = dict(config)
    pos = state.get("pos_embed")
    if pos is not None and pos.ndim == 3:
        n = pos.shape[1] - (1 if config.get("class_pos", True) else 0)
        n -= int(config.get("reg_tokens", 0)) if config.get("reg_pos", False) else 0
        side = math.isqrt(max(n, 0))
        grid = int(config.get("img_size", 224)) // int(config["patch_size"])
        if side * side == n and side > 0 and side != grid:
            logger.info(
                "%s: position table of a %dx%d grid (config: %dx%d)", where, side, side, grid, grid
            )
            config["img_size"] = side * int(config["patch_size"])
    with torch.device("meta"):
        expected = VisionTransformer(**config).state_dict()
    missing = [k for k in expected if k not in state]  # in the model's order
    unexpected = [k for k in state if k not in expected]  # in the file's order
    if missing or unexpected:
        parts = []
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            parts.append(f"missing key {missing[0]!r} {tuple(expected[missing[0]].shape)}{more}")
        if unexpected:
            more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
            parts.append(
                f"unexpected key {unexpected[0]!r} {tuple(state[unexpected[0]].shape)}{more}"
            )
        raise EncoderError(
            f"the weights in {where} do not fit the architecture {label}: {'; '.join(parts)}. "
            "Check that the file is this model's (or give the right architecture)"
        )
    for key in expected:
        if tuple(expected[key].shape) != tuple(state[key].shape):
            raise EncoderError(
                f"the weights in {where} do not fit the architecture {label}: {key!r} has shape "
                f"{tuple(state[key].shape)} in the file, the architecture needs "
                f"{tuple(expected[key].shape)}. Check that the file is this model's"
            )
    return config


def load_vit_weights(
    weights: str | os.PathLike | dict, config: dict, *, label: str | None = None
) -> VisionTransformer:
    """A :class:`VisionTransformer` of ``config`` holding the weights of a file.

    Parameters
    ----------
    weights
        A weights file or folder (see :func:`read_weights`) or an already-read state dict,
        in any supported layout (timm, DINOv2, Hugging Face).
    config
        Keyword arguments of :class:`VisionTransformer`. The position grid is taken from the
        file when it holds a square grid of another size.
    label
        How to name the architecture in errors (default: a summary of ``config``).

    Returns
    -------
    VisionTransformer
        In eval mode, float32, on the CPU.

    Raises
    ------
    EncoderError
        The file cannot be read, or its tensors do not fit ``config`` (the message names the
        first missing or unexpected key, or the first shape that differs).
    """
    if isinstance(weights, dict):
        raw, where = weights, "the state dict"
    else:
        raw, where = read_weights(weights), repr(str(weights))
    state, layout, skipped = vit_state_dict(raw)
    if label is None:
        c = config
        label = (
            f"ViT (embed_dim={c.get('embed_dim')}, depth={c.get('depth')}, "
            f"patch_size={c.get('patch_size')}, mlp={c.get('mlp', 'gelu')}, "
            f"reg_tokens={c.get('reg_tokens', 0)})"
        )
    config = _fits(config, state, where, label)
    with torch.device("meta"):
        model = VisionTransformer(**config)
    model.load_state_dict(state, strict=True, assign=True)
    if skipped:
        logger.info("%s: %s layout; skipped %s", where, layout, ", ".join(skipped[:6]))
    return model.eval()


def hf_vit_config(config: dict | str | os.PathLike) -> dict:
    """:class:`VisionTransformer` settings from a Hugging Face ``config.json``.

    Parameters
    ----------
    config
        The parsed ``config.json`` of a ``ViTModel``, ``Dinov2Model`` or
        ``Dinov2WithRegistersModel`` (``model_type`` ``vit``, ``dinov2`` or
        ``dinov2_with_registers``), or the path of the file or its folder.

    Returns
    -------
    dict
        Keyword arguments of :class:`VisionTransformer` (class-token pooling, as these models'
        ``pooler_output``/``last_hidden_state[:, 0]``).

    Raises
    ------
    EncoderError
        Not one of these model types, or settings the plain ViT does not have.
    """
    if not isinstance(config, dict):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EncoderError(
                f"cannot read the Hugging Face config {str(path)!r}: {exc}"
            ) from None
    kind = config.get("model_type")
    if kind not in ("vit", "dinov2", "dinov2_with_registers"):
        raise EncoderError(
            f"Hugging Face model_type {kind!r} is not a plain ViT; known: 'vit', 'dinov2', "
            "'dinov2_with_registers'"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise EncoderError(f"hidden_act={act!r} is not supported (only 'gelu')")
    dim = int(config["hidden_size"])
    out = {
        "embed_dim": dim,
        "depth": int(config["num_hidden_layers"]),
        "num_heads": int(config["num_attention_heads"]),
        "patch_size": int(config.get("patch_size", 16)),
        "img_size": int(config.get("image_size", 224)),
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "norm_eps": float(config.get("layer_norm_eps", 1e-12 if kind == "vit" else 1e-6)),
        "reg_tokens": int(config.get("num_register_tokens", 0)),
        "class_pos": True,
        "pooling": "cls",
        # ViTModel and Dinov2Model resample the position table without antialiasing
        "pos_antialias": kind == "dinov2_with_registers",
    }
    if kind == "vit":
        out.update(mlp="gelu", mlp_hidden=int(config.get("intermediate_size", 4 * dim)))
        out["layer_scale"] = False
    else:
        hidden = int(dim * float(config.get("mlp_ratio", 4)))
        if config.get("use_swiglu_ffn", False):
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # as Hugging Face sizes the gate
            out.update(mlp="swiglu", mlp_hidden=2 * hidden)
        else:
            out.update(mlp="gelu", mlp_hidden=hidden)
        out["layer_scale"] = True
    return out

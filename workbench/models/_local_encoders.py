"""Pathology foundation models from local weight files, and the local registry of them.

Nothing is downloaded and neither timm nor transformers is needed: the architectures below are
built with :class:`~workbench.models.VisionTransformer` and the weights are read from files a
user already has (the ``pytorch_model.bin`` / ``model.safetensors`` of the model's Hugging Face
repository, fetched once on a machine with access).

Architectures (:data:`ENCODER_ARCHITECTURES`), as the model cards describe them:

============== ========= ===== ===== ===== ======= ====== ====== ======== ==========  =====
name           family    width depth heads patch   MLP    reg.   layer    embedding   norm
                                                                 scale
============== ========= ===== ===== ===== ======= ====== ====== ======== ==========  =====
uni            ViT-L/16  1024  24    16    16      GELU   0      yes      cls 1024    IN
uni2-h         ViT-H/14  1536  24    24    14      SwiGLU 8      yes      cls 1536    IN
virchow2       ViT-H/14  1280  32    16    14      SwiGLU 4      yes      cls+mean    IN
                                                                          2560
h-optimus-0/1  ViT-g/14  1536  40    24    14      SwiGLU 4      yes      cls 1536    own
phikon         ViT-B/16  768   12    12    16      GELU   0      no       cls 768     IN
phikon-v2      ViT-L/16  1024  24    16    16      GELU   0      yes      cls 1024    IN
lunit-vits8    ViT-S/8   384   12    6     8       GELU   0      no       cls 384     own
kaiko-vits16/8 ViT-S     384   12    6     16 / 8  GELU   0      no       cls 384     0.5
kaiko-vitb16/8 ViT-B     768   12    12    16 / 8  GELU   0      no       cls 768     0.5
kaiko-vitl14   ViT-L/14  1024  24    16    14      GELU   4      yes      cls 1024    0.5
============== ========= ===== ===== ===== ======= ====== ====== ======== ==========  =====

All take 224-px crops; "IN" is the ImageNet mean and SD, "0.5" a mean and SD of 0.5 per
channel, "own" the model's published statistics. UNI2-h, H-optimus and kaiko ViT-L/14 use
timm's ``no_embed_class`` (the position table covers the patches only); Virchow2 keeps timm's
default, where the class token and the four registers have positions too (261 entries); the
other models have a position for the class token only. UNI2-h, Virchow2 and H-optimus
use timm's packed SwiGLU (``mlp_ratio`` 5.33, resp. 5.3375 for Virchow2). The resolution is
0.5 µm/px (20x) for all; models trained at several magnifications (Virchow2, Lunit, kaiko)
use 20x as the default, which a registry entry can change. For Phikon and Phikon-v2 the
architecture ``"hf"`` (the ``config.json`` beside the weights) gives the exact settings; the
named entries assume the published defaults.

The registry (:func:`read_encoder_registry`) is a JSON file mapping a name to a weights file::

    {
      "uni": {"path": "/models/uni/pytorch_model.bin", "architecture": "uni",
              "sha256": "…"},
      "my-vit": {"path": "my_vit.safetensors",
                 "architecture": {"embed_dim": 384, "depth": 12, "num_heads": 6,
                                  "patch_size": 16},
                 "mpp": 0.25, "input_size": 224,
                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    }

found at an explicit path, else ``$WORKBENCH_ENCODERS``, else
``~/.config/workbench/encoders.json`` (``$XDG_CONFIG_HOME`` respected). A relative ``path`` is
relative to the JSON file. ``architecture`` is a name above, ``"hf"`` (read the
``config.json`` beside the weights) or the settings of a :class:`VisionTransformer`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench._errors import EncoderError
from workbench.models._encoder import (
    BUILTIN_ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TEXTURE_ENCODER,
    TISSUE_ENCODER,
    ModuleEncoder,
    file_sha256,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ENCODER_ARCHITECTURES",
    "EncoderArchitecture",
    "LocalEncoder",
    "RegistryEntry",
    "encoder_registry_path",
    "load_local_encoder",
    "read_encoder_registry",
]

#: Environment variable naming the registry file.
REGISTRY_ENV = "WORKBENCH_ENCODERS"
#: Fields a registry entry may have.
ENTRY_FIELDS = ("path", "architecture", "mpp", "input_size", "mean", "std", "sha256", "description")
#: ``architecture`` value meaning: read the Hugging Face ``config.json`` beside the weights.
HF_CONFIG = "hf"


@dataclass(frozen=True)
class EncoderArchitecture:
    """A named encoder architecture: the ViT settings and what its crops must look like.

    Parameters
    ----------
    name
        Lower-case name used by :func:`~workbench.models.load_encoder`.
    vit
        Keyword arguments of :class:`~workbench.models.VisionTransformer`.
    input_size, mpp
        Crop side in pixels and resolution in µm/px the model expects.
    mean, std
        Per-channel normalisation of ``[0, 1]`` RGB.
    summary
        One line: the model, its family, and the file it is distributed as.
    """

    name: str
    vit: dict
    input_size: int = 224
    mpp: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    summary: str = ""

    @property
    def embed_dim(self) -> int:
        """Size of the embedding the model gives."""
        dim = int(self.vit["embed_dim"])
        return 2 * dim if self.vit.get("pooling") == "cls+mean" else dim


_HALF = (0.5, 0.5, 0.5)
_HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
_HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
_LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
_LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)


def _vit(dim, depth, heads, patch, **kw) -> dict:
    out = {"embed_dim": dim, "depth": depth, "num_heads": heads, "patch_size": patch}
    out.update({"img_size": 224, "mlp": "gelu", "mlp_hidden": 4 * dim, "norm_eps": 1e-6})
    out.update(kw)
    return out


def _registers(n: int) -> dict:
    """timm's register models: registers, no class position, layer scale."""
    return {"reg_tokens": n, "class_pos": False, "layer_scale": True}


_ARCHS = [
    EncoderArchitecture(
        "uni",
        _vit(1024, 24, 16, 16, layer_scale=True),
        summary="UNI (MahmoodLab): ViT-L/16, timm pytorch_model.bin",
    ),
    EncoderArchitecture(
        "uni2-h",
        _vit(1536, 24, 24, 14, mlp="swiglu", mlp_hidden=8192, **_registers(8)),
        summary="UNI2-h (MahmoodLab): ViT-H/14, SwiGLU, 8 registers, timm pytorch_model.bin",
    ),
    EncoderArchitecture(
        "virchow2",
        _vit(
            1280,
            32,
            16,
            14,
            mlp="swiglu",
            mlp_hidden=6832,
            pooling="cls+mean",
            reg_tokens=4,
            layer_scale=True,
            reg_pos=True,
        ),  # timm's default: class and registers have positions
        summary="Virchow2 (Paige): ViT-H/14, SwiGLU, 4 registers, class token + mean of the "
        "patch tokens, timm pytorch_model.bin / model.safetensors",
    ),
    EncoderArchitecture(
        "h-optimus-0",
        _vit(1536, 40, 24, 14, mlp="swiglu", mlp_hidden=8192, **_registers(4)),
        mean=_HOPTIMUS_MEAN,
        std=_HOPTIMUS_STD,
        summary="H-optimus-0 (Bioptimus): ViT-g/14, SwiGLU, 4 registers, timm "
        "pytorch_model.bin / model.safetensors",
    ),
    EncoderArchitecture(
        "h-optimus-1",
        _vit(1536, 40, 24, 14, mlp="swiglu", mlp_hidden=8192, **_registers(4)),
        mean=_HOPTIMUS_MEAN,
        std=_HOPTIMUS_STD,
        summary="H-optimus-1 (Bioptimus): ViT-g/14 as H-optimus-0, timm model.safetensors",
    ),
    EncoderArchitecture(
        "phikon",
        _vit(768, 12, 12, 16, norm_eps=1e-12, pos_antialias=False),
        summary="Phikon (Owkin): ViT-B/16, Hugging Face ViTModel, model.safetensors",
    ),
    EncoderArchitecture(
        "phikon-v2",
        _vit(1024, 24, 16, 16, layer_scale=True, pos_antialias=False),
        summary="Phikon-v2 (Owkin): ViT-L/16, Hugging Face Dinov2Model, model.safetensors",
    ),
    EncoderArchitecture(
        "lunit-vits8",
        _vit(384, 12, 6, 8),
        mean=_LUNIT_MEAN,
        std=_LUNIT_STD,
        summary="Lunit DINO ViT-S/8 (Kang et al. 2023): timm-layout weights",
    ),
    EncoderArchitecture(
        "kaiko-vits16",
        _vit(384, 12, 6, 16),
        mean=_HALF,
        std=_HALF,
        summary="kaiko.ai ViT-S/16 (DINO): timm-layout weights",
    ),
    EncoderArchitecture(
        "kaiko-vits8",
        _vit(384, 12, 6, 8),
        mean=_HALF,
        std=_HALF,
        summary="kaiko.ai ViT-S/8 (DINO): timm-layout weights",
    ),
    EncoderArchitecture(
        "kaiko-vitb16",
        _vit(768, 12, 12, 16),
        mean=_HALF,
        std=_HALF,
        summary="kaiko.ai ViT-B/16 (DINO): timm-layout weights",
    ),
    EncoderArchitecture(
        "kaiko-vitb8",
        _vit(768, 12, 12, 8),
        mean=_HALF,
        std=_HALF,
        summary="kaiko.ai ViT-B/8 (DINO): timm-layout weights",
    ),
    EncoderArchitecture(
        "kaiko-vitl14",
        _vit(1024, 24, 16, 14, **_registers(4)),
        mean=_HALF,
        std=_HALF,
        summary="kaiko.ai ViT-L/14 (DINOv2, 4 registers): timm-layout weights",
    ),
]
#: The named architectures, by name (see the module documentation for the table).
ENCODER_ARCHITECTURES: dict[str, EncoderArchitecture] = {a.name: a for a in _ARCHS}


@dataclass(frozen=True)
class RegistryEntry:
    """One encoder of the local registry.

    Parameters
    ----------
    name
        The name it is selected by.
    path
        Its weights file (or folder), absolute.
    architecture
        A name of :data:`ENCODER_ARCHITECTURES`, ``"hf"``, or :class:`VisionTransformer`
        settings.
    registry
        The JSON file it comes from.
    mpp, input_size, mean, std
        Overrides of the architecture's geometry and normalisation (``None``: the
        architecture's).
    sha256
        Expected SHA-256 of the weights file (``None``: not checked).
    description
        Free text.
    """

    name: str
    path: Path
    architecture: str | dict
    registry: Path
    mpp: float | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    sha256: str | None = None
    description: str = field(default="", compare=False)


def encoder_registry_path(path: str | os.PathLike | None = None) -> Path:
    """Where the registry is read from.

    Parameters
    ----------
    path
        An explicit file; else ``$WORKBENCH_ENCODERS``; else
        ``$XDG_CONFIG_HOME/workbench/encoders.json`` (``~/.config`` when unset).

    Returns
    -------
    pathlib.Path
        The file (it may not exist).
    """
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "workbench" / "encoders.json"


def _triple(value, what: str, where: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or (what == "std" and min(out) <= 0):
        raise EncoderError(
            f"{where}: {what} must be three numbers (RGB){', all > 0' if what == 'std' else ''}, got {value!r}"
        )
    return out  # type: ignore[return-value]


def _entry(name: str, raw: Any, registry: Path) -> RegistryEntry:
    where = f"encoder {name!r} in {str(registry)!r}"
    if not isinstance(raw, dict):
        raise EncoderError(f"{where}: an entry is an object with 'path' and 'architecture'")
    unknown = sorted(set(raw) - set(ENTRY_FIELDS))
    if unknown:
        raise EncoderError(
            f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(ENTRY_FIELDS)}"
        )
    for key in ("path", "architecture"):
        if key not in raw:
            raise EncoderError(f"{where}: the field {key!r} is missing")
    if not isinstance(raw["path"], str) or not raw["path"]:
        raise EncoderError(f"{where}: 'path' must be the weights file's path")
    arch = raw["architecture"]
    if isinstance(arch, str):
        arch = arch.lower()
        if arch != HF_CONFIG and arch not in ENCODER_ARCHITECTURES:
            raise EncoderError(
                f"{where}: unknown architecture {arch!r}; known: "
                f"{', '.join(ENCODER_ARCHITECTURES)}, {HF_CONFIG!r} (the config.json beside the "
                "weights), or an object of VisionTransformer settings"
            )
    elif not isinstance(arch, dict):
        raise EncoderError(f"{where}: 'architecture' must be a name or an object of ViT settings")
    path = Path(raw["path"]).expanduser()
    if not path.is_absolute():
        path = registry.parent / path
    kw: dict = {}
    if raw.get("mpp") is not None:
        if (
            not isinstance(raw["mpp"], int | float)
            or isinstance(raw["mpp"], bool)
            or raw["mpp"] <= 0
        ):
            raise EncoderError(
                f"{where}: mpp must be a positive number of µm/px, got {raw['mpp']!r}"
            )
        kw["mpp"] = float(raw["mpp"])
    if raw.get("input_size") is not None:
        size = raw["input_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 8:
            raise EncoderError(
                f"{where}: input_size must be a whole number of pixels >= 8, got {size!r}"
            )
        kw["input_size"] = size
    for key in ("mean", "std"):
        if raw.get(key) is not None:
            kw[key] = _triple(raw[key], key, where)
    sha = raw.get("sha256")
    if sha is not None:
        if (
            not isinstance(sha, str)
            or len(sha) != 64
            or any(c not in "0123456789abcdef" for c in sha.lower())
        ):
            raise EncoderError(f"{where}: sha256 must be 64 hexadecimal digits, got {sha!r}")
        kw["sha256"] = sha.lower()
    return RegistryEntry(
        name=name,
        path=path,
        architecture=arch,
        registry=registry,
        description=str(raw.get("description", "")),
        **kw,
    )


def read_encoder_registry(path: str | os.PathLike | None = None) -> dict[str, RegistryEntry]:
    """The encoders of the local registry, by lower-case name.

    Parameters
    ----------
    path
        The registry JSON file (see :func:`encoder_registry_path` for the default places).
        An explicit path must exist; a default one may be absent (no encoders then).

    Returns
    -------
    dict
        Name -> :class:`RegistryEntry`.

    Raises
    ------
    EncoderError
        An explicit file that does not exist, a file that is not JSON, or a bad entry (the
        message names the entry and the field).
    """
    file = encoder_registry_path(path)
    explicit = path is not None or bool(os.environ.get(REGISTRY_ENV))
    if not file.is_file():
        if explicit:
            origin = "" if path is not None else f" (from ${REGISTRY_ENV})"
            raise EncoderError(f"no encoder registry at {str(file)!r}{origin}; check the path")
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderError(f"the encoder registry {str(file)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EncoderError(f"the encoder registry {str(file)!r} must be an object: name -> entry")
    out: dict[str, RegistryEntry] = {}
    for name, raw in data.items():
        key = str(name).lower()
        if key in BUILTIN_ENCODERS or key in (TEXTURE_ENCODER, TISSUE_ENCODER):
            raise EncoderError(f"the encoder registry {str(file)!r}: {name!r} is a built-in name")
        if key in out:
            raise EncoderError(f"the encoder registry {str(file)!r} names {name!r} twice")
        out[key] = _entry(key, raw, file.resolve())
    return out


class LocalEncoder(ModuleEncoder):
    """A frozen :class:`~workbench.models.VisionTransformer` loaded from a local weights file.

    Made by :func:`load_local_encoder` (or :func:`~workbench.models.load_encoder` with a
    registry or architecture name). Its ``spec()`` records the registry name, the
    architecture, the weights file and its SHA-256, so a checkpoint reloads it by name.

    Parameters
    ----------
    vit
        The loaded network.
    name
        Registry or architecture name.
    architecture
        The architecture's name, or its settings for a custom one.
    weights
        The weights file.
    sha256
        SHA-256 of the weights file.
    registry
        The registry file the encoder came from (``None``: given directly).
    input_size, mpp, mean, std
        Crop geometry and normalisation.
    """

    def __init__(
        self,
        vit,
        *,
        name: str,
        architecture: str | dict,
        weights: str | os.PathLike,
        sha256: str,
        registry: str | os.PathLike | None,
        input_size: int,
        mpp: float,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__(
            vit,
            input_size=input_size,
            mpp=mpp,
            mean=mean,
            std=std,
            name=name,
            embed_dim=vit.out_dim,
            sha256=sha256,
        )
        self.architecture = architecture
        self.weights = str(weights)
        self.registry = None if registry is None else str(registry)

    def spec(self) -> dict:
        """JSON description recorded in checkpoints (source ``"local"``).

        Returns
        -------
        dict
            The encoder's common description plus ``architecture``, ``vit`` (the
            transformer's config), ``weights`` (the weight file) and ``registry`` (the
            registry it was found in, ``None`` when given directly).
        """
        return {
            **self._spec("local", None),
            "architecture": self.architecture,
            "vit": dict(self.module.config),
            "weights": self.weights,
            "registry": self.registry,
        }


def _architecture(
    arch: str | dict, weights: Path
) -> tuple[dict, str | dict, EncoderArchitecture | None]:
    """``(ViT settings, what to record, the named architecture or None)``."""
    from workbench.models._vit_weights import hf_vit_config

    if isinstance(arch, dict):
        return dict(arch), dict(arch), None
    if arch == HF_CONFIG:
        folder = weights if weights.is_dir() else weights.parent
        return hf_vit_config(folder / "config.json"), hf_vit_config(folder / "config.json"), None
    named = ENCODER_ARCHITECTURES[arch]
    return dict(named.vit), arch, named


def _unknown(name: str, registry: dict, file: Path) -> EncoderError:
    import difflib

    known = sorted(registry)
    where = f" in {str(file)!r}" if file.is_file() else f" (no registry file at {str(file)!r})"
    every = [*known, *ENCODER_ARCHITECTURES, *BUILTIN_ENCODERS, TEXTURE_ENCODER, TISSUE_ENCODER]
    close = difflib.get_close_matches(name.lower(), every, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return EncoderError(
        f"unknown encoder {name!r}: {hint}registry names{where}: {', '.join(known) or 'none'}; "
        f"architectures (with weights=FILE): {', '.join(ENCODER_ARCHITECTURES)}; built-in: "
        f"{', '.join(BUILTIN_ENCODERS)}, {TEXTURE_ENCODER}, {TISSUE_ENCODER}; or a .pt2 file; "
        "nothing is downloaded"
    )


def is_local_encoder_name(name: str, registry: str | os.PathLike | None = None) -> bool:
    """Whether ``name`` is a registry name or an architecture name."""
    key = name.lower()
    return key in ENCODER_ARCHITECTURES or key in read_encoder_registry(registry)


def load_local_encoder(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    input_size: int | None = None,
    mpp: float | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> LocalEncoder:
    """A foundation-model encoder from a local weights file, by registry or architecture name.

    Parameters
    ----------
    name
        A registry name (its entry gives the file, architecture, geometry and expected SHA-256)
        or an architecture of :data:`ENCODER_ARCHITECTURES` (then ``weights`` is needed).
    weights
        The weights file or folder; for a registry name it replaces the entry's file (whose
        SHA-256 is then not checked).
    registry
        The registry file (default: :func:`encoder_registry_path`).
    input_size, mpp, mean, std
        Overrides of the geometry and normalisation.

    Returns
    -------
    LocalEncoder
        Frozen, in eval mode.

    Raises
    ------
    EncoderError
        An unknown name (the message lists the known ones), an architecture without weights, a
        missing file, a checksum mismatch, or weights that do not fit the architecture.
    """
    key = str(name).lower()
    reg = read_encoder_registry(registry)
    entry = reg.get(key)
    expected = None
    if entry is not None:
        path = Path(weights).expanduser() if weights is not None else entry.path
        if weights is None:
            expected = entry.sha256
        arch = entry.architecture
        geometry = {k: getattr(entry, k) for k in ("input_size", "mpp", "mean", "std")}
        origin = f"registry {str(entry.registry)!r}"
    elif key in ENCODER_ARCHITECTURES:
        if weights is None:
            raise EncoderError(
                f"unknown encoder {key!r} (no such entry in the encoder registry "
                f"{str(encoder_registry_path(registry))!r}); {key!r} is an architecture, which "
                f"needs its weights file: load_encoder({key!r}, weights='…/pytorch_model.bin' "
                "or '…/model.safetensors'), or add it to the registry; nothing is downloaded"
            )
        path, arch, geometry, origin = Path(weights).expanduser(), key, {}, None
    else:
        raise _unknown(str(name), reg, encoder_registry_path(registry))
    if not path.exists():
        where = f" (from the {origin})" if origin else ""
        raise EncoderError(
            f"no weights file at {str(path)!r} for the encoder {key!r}{where}; check the path"
        )
    from workbench.models._vit_weights import _resolve_file, load_vit_weights

    file = _resolve_file(path)
    sha = file_sha256(file)
    if expected is not None and sha != expected:
        raise EncoderError(
            f"checksum mismatch for the encoder {key!r}: {str(file)!r} has SHA-256 {sha[:16]}…, "
            f"the {origin} expects {expected[:16]}…; the file is another version or damaged "
            "(fetch it again, or update the sha256 in the registry)"
        )
    config, recorded, named = _architecture(arch, path)
    label = repr(arch) if isinstance(arch, str) else "given in the registry"
    vit = load_vit_weights(file, config, label=label)
    defaults = {
        "input_size": named.input_size if named else 224,
        "mpp": named.mpp if named else 0.5,
        "mean": named.mean if named else IMAGENET_MEAN,
        "std": named.std if named else IMAGENET_STD,
    }
    for k, v in {"input_size": input_size, "mpp": mpp, "mean": mean, "std": std}.items():
        if v is not None:
            geometry[k] = v
    geometry = {k: (geometry[k] if geometry.get(k) is not None else defaults[k]) for k in defaults}
    enc = LocalEncoder(
        vit,
        name=key,
        architecture=recorded,
        weights=file.resolve(),
        sha256=sha,
        registry=entry.registry if entry is not None else None,
        **geometry,
    )
    logger.info("load_encoder: %s (%s, %d-d embeddings) from %s", key, label, enc.embed_dim, file)
    return enc


def encoder_from_spec(spec: dict) -> LocalEncoder:
    """Rebuild the encoder a checkpoint recorded (``spec()`` of a :class:`LocalEncoder`).

    A registry encoder is looked up by name (in the registry file it came from, else the
    default one); one given as architecture + file is rebuilt from the recorded file.

    Raises
    ------
    EncoderError
        Neither the registry name nor the recorded file can be found.
    """
    name = str(spec.get("name"))
    if spec.get("registry") is not None:
        recorded = Path(spec["registry"])
        for reg in ([recorded] if recorded.is_file() else []) + [None]:
            try:
                if name in read_encoder_registry(reg):
                    return load_local_encoder(name, registry=reg)
            except EncoderError:
                if reg is not None:
                    raise
    weights = spec.get("weights")
    if weights and Path(weights).exists():
        arch = spec.get("architecture")
        if isinstance(arch, str) and arch in ENCODER_ARCHITECTURES:
            return load_local_encoder(
                arch, weights=weights, input_size=spec.get("input_size"), mpp=spec.get("mpp"),
                mean=spec.get("mean"), std=spec.get("std"),
            )  # fmt: skip
        from workbench.models._vit_weights import load_vit_weights

        file = Path(weights)
        vit = load_vit_weights(file, dict(spec["vit"]))
        return LocalEncoder(
            vit, name=name, architecture=arch, weights=file, sha256=file_sha256(file),
            registry=None, input_size=int(spec["input_size"]), mpp=float(spec["mpp"]),
            mean=tuple(spec["mean"]), std=tuple(spec["std"]),
        )  # fmt: skip
    where = "the encoder registry" if spec.get("registry") is not None else "its weights file"
    raise EncoderError(
        f"the checkpoint was trained with the encoder {name!r} ({where}; weights "
        f"{weights!r}), which cannot be found: add {name!r} to the encoder registry "
        f"(${REGISTRY_ENV} or {str(encoder_registry_path())!r}) or pass "
        "load_checkpoint(..., encoder=NAME or the weights)"
    )

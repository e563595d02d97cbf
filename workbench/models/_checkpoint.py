"""Checkpoints as two plain files: ``model.safetensors`` (weights) + ``config.json``.

Nothing is ever unpickled: weights are read with safetensors and the configuration is JSON.
``config.json`` records the SHA-256 of the weights *and* a SHA-256 of its own content, so a
truncated or edited weights file, and an edited configuration (reversed class names, another
layer size …), are refused with :class:`workbench.CheckpointError` before any tensor reaches a
model. The configuration's numbers are range-checked before anything is built, and the model
is first laid out on torch's ``meta`` device (no memory) to check every tensor's shape against
the file, so a configuration cannot make the loader allocate more than the weights file holds.

A model trained with a frozen tile encoder keeps only its own heads in the weights file; the
configuration records the encoder (its spec and SHA-256), and :func:`load_checkpoint` attaches
the encoder passed to it — or the ``.pt2`` file recorded, when it is still there — and refuses
any other.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from workbench._errors import CheckpointError, NonFiniteError
from workbench.models._finite import nonfinite_names

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_FORMAT = "workbench-checkpoint"
_VERSION = 2

# Inclusive ranges of the numbers a configuration may hold (checked before building).
_RANGES: dict[str, tuple[float, float]] = {
    "in_features": (1, 100_000),
    "n_classes": (1, 10_000),  # 1: a survival model (one risk output)
    "hidden": (1, 4096),
    "gcn_layers": (1, 64),
    "transformer_layers": (0, 64),
    "heads": (1, 64),
    "dropout": (0.0, 1.0),
    "focus_hidden": (1, 4096),
    "top_k": (1, 1024),
    "nms_hops": (0, 64),
    "confirm_candidates": (0, 1024),
    "detail_width": (4, 512),
    "embed_dim": (1, 8192),
    "attn_dim": (1, 8192),
    # the click network (ClickSegmenter)
    "in_channels": (1, 64),
    "extra_channels": (0, 64),
    "feature_channels": (1, 4096),
    "head_hidden": (1, 4096),
}
_ENCODER_RANGES = {"embed_dim": (1, 65_536), "input_size": (8, 8192), "mpp": (1e-3, 1e3)}


#: Networks that are not slide-model kinds but share the checkpoint format: kind -> class name.
_NETWORKS = {"click_segmenter": "ClickSegmenter"}


def _network_class(kind: str) -> type[nn.Module]:
    """The class of a checkpointed network: a registered slide-model kind or the click network."""
    if kind == "click_segmenter":
        from workbench.models._clickseg import ClickSegmenter

        return ClickSegmenter
    from workbench.models._protocol import model_kind

    return model_kind(kind)


def _kind_name(model: nn.Module) -> str:
    """The registered kind of ``model`` (a TypeError for anything else)."""
    from workbench._errors import OptionError
    from workbench.models._protocol import kind_of

    if type(model).__name__ in _NETWORKS.values():
        return next(k for k, v in _NETWORKS.items() if v == type(model).__name__)
    try:
        return kind_of(model)
    except OptionError as err:
        raise TypeError(f"cannot checkpoint a {type(model).__name__}: {err}") from None


def _kind_of_config(config: dict, cfg_path: str) -> str:
    """The kind a checkpoint holds: its ``kind`` entry, or (checkpoints written before kinds
    were recorded) the kind whose class its ``model`` entry names."""
    from workbench.models._protocol import MODEL_KINDS, kind_by_class_name

    kind = config.get("kind")
    if kind is None:
        by_class = {v: k for k, v in _NETWORKS.items()}
        model = str(config.get("model"))
        kind = by_class[model] if model in by_class else kind_by_class_name(model)
    if kind not in MODEL_KINDS and kind not in _NETWORKS:
        raise CheckpointError(
            f"{cfg_path!r} holds an unknown model kind "
            f"{config.get('kind', config.get('model'))!r}; known: {tuple(MODEL_KINDS)} (a kind "
            "registered with workbench.models.register_kind must be registered before loading)"
        )
    return kind


def _config_digest(config: dict) -> str:
    """SHA-256 of everything in ``config.json`` except the digest itself (canonical JSON)."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_checkpoint(
    model: nn.Module, directory: str | os.PathLike, *, extra: dict | None = None
) -> Path:
    """Write ``model`` to ``directory`` as ``model.safetensors`` + ``config.json``.

    Both files are written atomically (:func:`workbench.io.atomic_write_bytes`: a temporary
    file, then a rename; the usual file permissions); the configuration is written last and
    carries the weights' checksum and its own, so a crash in between leaves a checkpoint
    that :func:`load_checkpoint` refuses rather than one that silently mixes old and new
    files.

    Parameters
    ----------
    model
        A :class:`~workbench.models.SlideModel` of a registered kind
        (:data:`~workbench.models.MODEL_KINDS`); ``config.json`` records the kind's name
        (``"kind"``), its class (``"model"``) and :meth:`~workbench.models.SlideModel.to_config`; or the click network
        (:class:`~workbench.models.ClickSegmenter`, recorded as kind ``"click_segmenter"``).
    directory
        Folder to write into (created if missing).
    extra
        JSON-able metadata to keep beside the configuration (e.g. the training history);
        covered by the checksum too.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    from safetensors.torch import save

    from workbench.io._atomic import atomic_write_bytes

    kind = _kind_name(model)
    name = type(model).__name__
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = nonfinite_names(state)
    if bad:
        raise NonFiniteError(
            f"the {name} holds NaN or infinite weights in {len(bad)} tensor(s) "
            f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}); not saved"
        )
    data = save(state, metadata={"format": _FORMAT, "model": name})
    config = {
        "format": _FORMAT,
        "version": _VERSION,
        "model": name,
        "kind": kind,
        "config": model.to_config(),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "weights_bytes": len(data),
        "extra": extra or {},
    }
    try:
        config["config_sha256"] = _config_digest(config)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the model configuration or extra is not plain JSON: {exc}") from None
    text = json.dumps(config, indent=2, sort_keys=True)
    atomic_write_bytes(directory / WEIGHTS_FILE, data)
    atomic_write_bytes(directory / CONFIG_FILE, text.encode("utf-8"))
    return directory


def _folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(
            f"no checkpoint folder at {str(path)!r}; pass the folder that holds "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    return path


def _check_ranges(cfg: dict, where: str) -> None:
    """Refuse numbers outside :data:`_RANGES` (before any allocation)."""
    for key, (lo, hi) in _RANGES.items():
        if key not in cfg:
            continue
        v = cfg[key]
        kind = float if key == "dropout" else int
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        ok = ok and math.isfinite(float(v)) and (kind is float or float(v).is_integer())
        if not ok or not lo <= float(v) <= hi:
            raise CheckpointError(
                f"{where}: config value {key}={v!r} is outside the supported range "
                f"[{lo}, {hi}]; the checkpoint is damaged or not from this workbench"
            )
    widths = cfg.get("widths")
    if widths is not None and not (
        isinstance(widths, list)
        and all(isinstance(w, int) and not isinstance(w, bool) and 4 <= w <= 4096 for w in widths)
    ):
        raise CheckpointError(f"{where}: widths must be a list of channel counts in [4, 4096]")
    names = cfg.get("class_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise CheckpointError(f"{where}: class_names must be a list of strings")
    enc = cfg.get("encoder")
    if enc is not None:
        if not isinstance(enc, dict) or not isinstance(enc.get("sha256"), str):
            raise CheckpointError(f"{where}: the encoder record is malformed")
        for key, (lo, hi) in _ENCODER_RANGES.items():
            v = enc.get(key)
            if not isinstance(v, int | float) or not lo <= float(v) <= hi:
                raise CheckpointError(
                    f"{where}: encoder {key}={v!r} is outside the supported range [{lo}, {hi}]"
                )


def read_checkpoint_config(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint folder, checked (format, checksum, ranges).

    Parameters
    ----------
    path
        The checkpoint folder, or its ``config.json`` or weights file.

    Returns
    -------
    dict
        The configuration as saved (model kind and sizes, encoder, training settings).

    Raises
    ------
    workbench.CheckpointError
        Missing or invalid JSON, another format or version, a configuration changed after
        saving (its checksum does not match), or numbers outside the supported ranges.
    """
    folder = _folder(path)
    cfg_path = folder / CONFIG_FILE
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{str(cfg_path)!r} is missing; the checkpoint is incomplete"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{str(cfg_path)!r} is not valid JSON ({exc}); the checkpoint is damaged, save it again"
        ) from None
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        raise CheckpointError(f"{str(cfg_path)!r} is not a workbench checkpoint configuration")
    if config.get("version") == 1:
        raise CheckpointError(
            f"{str(cfg_path)!r} was saved by an earlier workbench (checkpoint format 1, whose "
            "configuration has no checksum); train the model again to get a format "
            f"{_VERSION} checkpoint"
        )
    if config.get("version") != _VERSION:
        raise CheckpointError(
            f"checkpoint format version {config.get('version')!r} is not supported "
            f"(this workbench reads version {_VERSION})"
        )
    for key in ("model", "config", "weights_sha256", "config_sha256"):
        if key not in config:
            raise CheckpointError(f"{str(cfg_path)!r} lacks the {key!r} entry")
    try:
        digest = _config_digest(config)
    except (TypeError, ValueError):
        digest = None
    if digest != config["config_sha256"]:
        raise CheckpointError(
            f"{str(cfg_path)!r} was changed after saving (its checksum does not match): "
            "class names, layer sizes or settings may no longer be what the weights were "
            "trained with. Restore the file or re-train the model"
        )
    if not isinstance(config["config"], dict):
        raise CheckpointError(f"{str(cfg_path)!r}: 'config' must be a mapping")
    _check_ranges(config["config"], str(cfg_path))
    return config


def _resolve_encoder(spec: dict, encoder, folder: Path):
    from workbench._errors import EncoderError
    from workbench.models._encoder import check_encoder
    from workbench.models._load_encoder import load_encoder

    if encoder is None and spec.get("source") == "builtin":
        # A built-in frozen encoder has no file: it is rebuilt from its name and geometry.
        try:
            enc = load_encoder(
                str(spec.get("name")), input_size=int(spec["input_size"]), mpp=float(spec["mpp"])
            )
        except EncoderError as err:
            raise EncoderError(
                f"the checkpoint in {str(folder)!r} names the built-in encoder "
                f"{spec.get('name')!r}, which this version cannot build: {err}"
            ) from None
        check_encoder(spec, enc)
        return enc
    if encoder is None and spec.get("source") == "local":
        # A foundation model from local weights: found again by its registry name or file.
        from workbench.models._local_encoders import encoder_from_spec

        enc = encoder_from_spec(spec)
        check_encoder(spec, enc)
        return enc
    if encoder is None:
        recorded = spec.get("file")
        if recorded and Path(recorded).is_file():
            encoder = recorded
        else:
            where = f" (recorded file {recorded!r} is not there)" if recorded else ""
            raise EncoderError(
                f"the checkpoint in {str(folder)!r} was trained with the frozen tile encoder "
                f"{spec.get('name')!r}{where}; pass it: load_checkpoint(..., encoder=<the .pt2 "
                "file or module>) or --encoder FILE.pt2"
            )
    enc = load_encoder(encoder)
    check_encoder(spec, enc)
    return enc


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    expect: type | None = None,
    encoder=None,
) -> nn.Module:
    """Rebuild a model saved by :func:`save_checkpoint` (in eval mode).

    Parameters
    ----------
    path
        The checkpoint folder (or either of its two files).
    device
        Where to put the model.
    expect
        Optional model class the checkpoint must hold.
    encoder
        For a model trained with a frozen tile encoder: that encoder (a ``.pt2`` path or a
        module; by default the ``.pt2`` file the checkpoint records, if it still exists).

    Returns
    -------
    torch.nn.Module
        The model, with ``checkpoint_extra_`` holding the saved ``extra`` metadata.

    Raises
    ------
    workbench.CheckpointError
        Missing files, invalid JSON, a configuration or weights changed after saving
        (truncated or tampered), numbers outside the supported ranges, weights that
        safetensors cannot parse, or tensors that do not fit the model.
    workbench.EncoderError
        The model needs its tile encoder and none (or another one) was given.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = _folder(path)
    config = read_checkpoint_config(folder)
    cls = _network_class(_kind_of_config(config, str(folder / CONFIG_FILE)))
    name = cls.__name__
    if expect is not None and name != expect.__name__:
        raise CheckpointError(f"checkpoint holds a {name}, not a {expect.__name__}")
    weights_path = folder / config.get("weights_file", WEIGHTS_FILE)
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"{str(weights_path)!r} is missing; the checkpoint is incomplete"
        ) from None
    if hashlib.sha256(data).hexdigest() != config["weights_sha256"]:
        size_note = ""
        expected_size = config.get("weights_bytes")
        if isinstance(expected_size, int) and len(data) < expected_size:
            size_note = f" (it is truncated: {len(data)} of {expected_size} bytes)"
        raise CheckpointError(
            f"{str(weights_path)!r} does not match the checksum recorded in {CONFIG_FILE}"
            f"{size_note}; the weights were changed or damaged after saving. Re-save or "
            "re-train the model"
        )
    try:
        state = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{str(weights_path)!r} is not a readable safetensors file: {exc}"
        ) from None
    bad = nonfinite_names(state)
    if bad:
        raise CheckpointError(
            f"{str(weights_path)!r} holds NaN or infinite weights in {len(bad)} tensor(s) "
            f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}); the model diverged before it "
            "was saved. Train it again (a lower learning rate) or use an earlier checkpoint"
        )
    cfg = config["config"]
    try:
        with torch.device("meta"):  # lay the model out without memory
            skeleton = cls.from_config(cfg)
    except (TypeError, AssertionError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"the configuration in {CONFIG_FILE} does not build a {name}: {exc}"
        ) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise CheckpointError(f"the weights do not fit a {name} of this configuration ({detail})")
    model = cls.from_config(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - shapes were checked above
        raise CheckpointError(
            f"the weights do not fit a {name} of this configuration: {exc}"
        ) from None
    if cfg.get("encoder"):
        model.attach_encoder(_resolve_encoder(cfg["encoder"], encoder, folder))
    elif encoder is not None:
        from workbench.models._load_encoder import load_encoder

        if load_encoder(encoder) is not None:
            from workbench._errors import EncoderError

            raise EncoderError(
                "this checkpoint uses the built-in detail network; it takes no tile encoder"
            )
    model.checkpoint_extra_ = config.get("extra", {})
    return model.to(device).eval()

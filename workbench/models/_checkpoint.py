"""Checkpoints as two plain files: ``model.safetensors`` (weights) + ``config.json``.

Nothing is ever unpickled: weights are read with safetensors, the configuration is JSON, and
the JSON records the SHA-256 of the weights, so a truncated or edited file is refused with
:class:`workbench.CheckpointError` before any tensor reaches a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from workbench._errors import CheckpointError

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
_VERSION = 1


def _model_classes() -> dict[str, type[nn.Module]]:
    from workbench.models._abmil import TileABMIL
    from workbench.models._global_only import GlobalOnly
    from workbench.models._model import SelfCalibratedModel

    return {cls.__name__: cls for cls in (SelfCalibratedModel, GlobalOnly, TileABMIL)}


def _atomic_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: nn.Module, directory: str | os.PathLike, *, extra: dict | None = None
) -> Path:
    """Write ``model`` to ``directory`` as ``model.safetensors`` + ``config.json``.

    Both files are written atomically (temporary file, then rename); the configuration is
    written last and carries the weights' checksum, so a crash in between leaves a
    checkpoint that :func:`load_checkpoint` refuses rather than one that silently mixes old
    and new files.

    Parameters
    ----------
    model
        A :class:`SelfCalibratedModel`, :class:`GlobalOnly` or :class:`TileABMIL`.
    directory
        Folder to write into (created if missing).
    extra
        JSON-able metadata to keep beside the configuration (e.g. the training history).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    from safetensors.torch import save

    name = type(model).__name__
    if name not in _model_classes():
        raise TypeError(f"cannot checkpoint a {name}; expected one of {sorted(_model_classes())}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": _FORMAT, "model": name})
    config = {
        "format": _FORMAT,
        "version": _VERSION,
        "model": name,
        "config": model.config,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "weights_bytes": len(data),
        "extra": extra or {},
    }
    text = json.dumps(config, indent=2, sort_keys=True)
    _atomic_bytes(directory / WEIGHTS_FILE, data)
    _atomic_bytes(directory / CONFIG_FILE, text.encode("utf-8"))
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


def read_checkpoint_config(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint folder (checked for shape, not weights)."""
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
    if config.get("version") != _VERSION:
        raise CheckpointError(
            f"checkpoint format version {config.get('version')!r} is not supported "
            f"(this workbench reads version {_VERSION})"
        )
    for key in ("model", "config", "weights_sha256"):
        if key not in config:
            raise CheckpointError(f"{str(cfg_path)!r} lacks the {key!r} entry")
    return config


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", expect: type | None = None
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

    Returns
    -------
    torch.nn.Module
        The model, with ``checkpoint_extra_`` holding the saved ``extra`` metadata.

    Raises
    ------
    workbench.CheckpointError
        Missing files, invalid JSON, weights whose checksum does not match (truncated or
        tampered), weights that safetensors cannot parse, or tensors that do not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = _folder(path)
    config = read_checkpoint_config(folder)
    classes = _model_classes()
    name = config["model"]
    if name not in classes:
        raise CheckpointError(
            f"checkpoint holds an unknown model {name!r}; known: {sorted(classes)}"
        )
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
    try:
        model = classes[name](**config["config"])
    except (TypeError, AssertionError, ValueError) as exc:
        raise CheckpointError(
            f"the configuration in {CONFIG_FILE} does not build a {name}: {exc}"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights do not fit a {name} of this configuration: {exc}"
        ) from None
    model.checkpoint_extra_ = config.get("extra", {})
    return model.to(device).eval()

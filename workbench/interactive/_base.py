"""The packaged base network for interactive refinement (safetensors + JSON)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workbench._errors import CheckpointError

__all__ = ["BASE_CONFIG", "BASE_WEIGHTS", "load_base_model", "save_base_model"]

BASE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "base_segmenter.safetensors"
BASE_CONFIG = {
    "in_channels": 3,
    "extra_channels": 3,
    "widths": [24, 48, 96],
    "feature_channels": 32,
    "head_hidden": 32,
}
_KIND = "workbench.interactive.base_segmenter"
_MODELS = ("ClickSegmenter", "DetailBranch")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config_of(model) -> tuple[str, dict]:
    name = type(model).__name__
    if name not in _MODELS:
        raise TypeError(f"cannot save a {name} as base network; use one of {', '.join(_MODELS)}")
    if hasattr(model, "config"):
        return name, model.config()
    return name, {
        "in_channels": model.in_channels,
        "extra_channels": model.extra_channels,
        "width": model.width,
        "embed_dim": model.embed_dim,
    }


def save_base_model(
    model, path: str | Path = BASE_WEIGHTS, *, training: dict | None = None
) -> Path:
    """Write ``model`` as ``path`` (safetensors) plus ``path.with_suffix('.json')``.

    The JSON holds the model class and constructor arguments, the SHA-256 of the weights
    file and a description of how the weights were trained. Both files are written
    atomically.
    """
    from safetensors.torch import save_file

    from workbench.io import atomic_path, atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name, config = _config_of(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    meta = {
        "kind": _KIND,
        "model": name,
        "config": config,
        "sha256": _sha256(path),
        "training": training or {},
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return path


def read_base_config(path: str | Path | None = None) -> dict:
    """The JSON record next to the weights (model, config, checksum, how it was trained)."""
    path = Path(path) if path is not None else BASE_WEIGHTS
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise CheckpointError(
            f"base network weights not found at {str(path)!r} (+ .json); "
            "retrain them with `python -m workbench.interactive.train_base`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {str(meta_path)!r}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("kind") != _KIND:
        raise CheckpointError(f"{str(meta_path)!r} is not a base segmenter checkpoint")
    if meta.get("model", "DetailBranch") not in _MODELS:
        raise CheckpointError(
            f"{str(meta_path)!r} names model {meta.get('model')!r}; expected one of "
            f"{', '.join(_MODELS)}"
        )
    return meta


def load_base_model(path: str | Path | None = None):
    """Load the base network (a ``ClickSegmenter``, or an older ``DetailBranch``), in eval mode.

    Raises
    ------
    CheckpointError
        When the files are missing, of another model, or the weights do not match the
        checksum recorded in the JSON.
    """
    from safetensors.torch import load_file

    from workbench import models

    path = Path(path) if path is not None else BASE_WEIGHTS
    meta = read_base_config(path)
    if meta.get("sha256") != _sha256(path):
        raise CheckpointError(
            f"{str(path)!r} does not match the checksum in {path.with_suffix('.json').name!r} "
            "(changed or truncated); retrain with `python -m workbench.interactive.train_base`"
        )
    cls = getattr(models, meta.get("model", "DetailBranch"))
    try:
        model = cls(**meta["config"])
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError, TypeError, AssertionError) as exc:
        raise CheckpointError(f"weights in {str(path)!r} do not fit the model: {exc}") from exc
    return model.eval()

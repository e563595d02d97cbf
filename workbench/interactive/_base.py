"""The packaged base segmentation network for interactive refinement (safetensors + JSON)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workbench._errors import CheckpointError

__all__ = ["BASE_CONFIG", "BASE_WEIGHTS", "load_base_model", "save_base_model"]

BASE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "base_segmenter.safetensors"
BASE_CONFIG = {"in_channels": 3, "extra_channels": 2, "width": 24, "embed_dim": 32}
_KIND = "workbench.interactive.base_segmenter"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_base_model(
    model, path: str | Path = BASE_WEIGHTS, *, training: dict | None = None
) -> Path:
    """Write ``model`` as ``path`` (safetensors) plus ``path.with_suffix('.json')``.

    The JSON holds the constructor arguments, the SHA-256 of the weights file and a
    description of how the weights were trained.
    """
    from safetensors.torch import save_file

    from workbench.io import atomic_path, atomic_write_text

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    config = {
        "kind": _KIND,
        "model": "DetailBranch",
        "config": {
            "in_channels": model.in_channels,
            "extra_channels": model.extra_channels,
            "width": model.width,
            "embed_dim": model.embed_dim,
        },
        "sha256": _sha256(path),
        "training": training or {},
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(config, indent=2) + "\n")
    return path


def load_base_model(path: str | Path | None = None):
    """Load the base network (a ``DetailBranch`` with two click-map channels), in eval mode.

    Raises
    ------
    CheckpointError
        When the files are missing, of another model, or the weights do not match the
        checksum recorded in the JSON.
    """
    from safetensors.torch import load_file

    from workbench.models import DetailBranch

    path = Path(path) if path is not None else BASE_WEIGHTS
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise CheckpointError(
            f"base segmenter weights not found at {str(path)!r} (+ .json); "
            "retrain them with `python -m workbench.interactive.train_base`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {str(meta_path)!r}: {exc}") from exc
    if meta.get("kind") != _KIND:
        raise CheckpointError(f"{str(meta_path)!r} is not a base segmenter checkpoint")
    if meta.get("sha256") != _sha256(path):
        raise CheckpointError(
            f"{str(path)!r} does not match the checksum in {meta_path.name!r} (changed or "
            "truncated); retrain with `python -m workbench.interactive.train_base`"
        )
    model = DetailBranch(**meta["config"])
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"weights in {str(path)!r} do not fit the model: {exc}") from exc
    return model.eval()

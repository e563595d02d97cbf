"""Learning from the user: a small adapter on the base network's head, and its file.

The adapter is all that :meth:`RefinementEngine.adapt` trains. It sits between the network's
features (after the CGAM gate / f-BRS scale-bias of the current click) and the per-pixel
logit, and holds

``feature_scale``, ``feature_shift``
    a per-channel affine map of the features (identity when packaged);
``head_in.bias``
    the bias of the head's hidden layer;
``head_out.weight``, ``head_out.bias``
    the head's last layer.

The backbone and the packaged weights file are never touched: the packaged values of the head
are copied, and :meth:`RefinementEngine.reset_adaptation` drops the adapter altogether, so the
engine computes exactly what a fresh one does.

File format (one ``.safetensors`` file; the name a session uses is
``<GeoJSON name without .geojson>.adaptation.safetensors``): the five tensors above (float32)
and, in the safetensors header's metadata, ``kind`` (``workbench.interactive.adaptation``),
``version``, ``base_sha256`` (the SHA-256 of the base network's parameters, see
:func:`network_sha256`), ``tensors_sha256`` (of the tensors' bytes in name order) and
``n_images`` (how many confirmed outlines it learnt from). A file of another network, a
truncated or altered file raises :class:`~workbench.RefinementError`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from workbench._errors import RefinementError

__all__ = [
    "ADAPTATION_KIND",
    "ADAPTATION_SUFFIX",
    "adaptation_path_for",
    "network_sha256",
]

ADAPTATION_KIND = "workbench.interactive.adaptation"
ADAPTATION_VERSION = "1"
#: What :class:`RefinementSession` appends to the GeoJSON's name (``.geojson`` dropped).
ADAPTATION_SUFFIX = ".adaptation.safetensors"
PARAMETER_NAMES = (
    "feature_scale",
    "feature_shift",
    "head_in.bias",
    "head_out.weight",
    "head_out.bias",
)


def adaptation_path_for(geojson_path: str | Path) -> Path:
    """The adaptation file a session keeps next to ``geojson_path``.

    Parameters
    ----------
    geojson_path
        The session's GeoJSON output.

    Returns
    -------
    Path
        The same folder and name with ``.geojson`` replaced by ``.adaptation.safetensors``
        (``slide.lesion.geojson`` -> ``slide.lesion.adaptation.safetensors``; a name without
        ``.geojson`` gets the suffix appended).
    """
    path = Path(geojson_path)
    stem = path.name[: -len(".geojson")] if path.name.endswith(".geojson") else path.name
    return path.with_name(stem + ADAPTATION_SUFFIX)


def network_sha256(model) -> str:
    """SHA-256 of a network's parameters and buffers (names, dtypes, shapes and bytes, in name
    order): what an adaptation file records to refuse being loaded onto another network."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _tensors_sha256(params: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in PARAMETER_NAMES:
        arr = np.ascontiguousarray(params[name], dtype=np.float32)
        digest.update(f"{name}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def supports_adaptation(model) -> bool:
    return all(hasattr(model, a) for a in ("head_in", "head_out", "feature_channels"))


def packaged_parameters(model) -> dict:
    """The adapter's parameters at the packaged behaviour (torch tensors, copies)."""
    import torch

    c = int(model.feature_channels)
    return {
        "feature_scale": torch.ones(c),
        "feature_shift": torch.zeros(c),
        "head_in.bias": model.head_in.bias.detach().clone().reshape(-1),
        "head_out.weight": model.head_out.weight.detach().clone().reshape(-1),
        "head_out.bias": model.head_out.bias.detach().clone().reshape(-1),
    }


def check_parameters(params: dict, model, where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in packaged_parameters(model).items()}
    missing = [k for k in PARAMETER_NAMES if k not in params]
    if missing:
        raise RefinementError(f"{where} lacks adapter parameter(s) {', '.join(missing)}")
    for name, shape in expected.items():
        got = tuple(np.shape(params[name]))
        if got != shape:
            raise RefinementError(
                f"{where}: adapter parameter {name!r} has shape {got}, this network needs "
                f"{shape}; it was made for another network"
            )
        if not np.all(np.isfinite(np.asarray(params[name], dtype=np.float64))):
            raise RefinementError(f"{where}: adapter parameter {name!r} is not finite")


def write_adaptation(path: str | Path, params: dict, *, base_sha256: str, n_images: int) -> Path:
    """Write the adapter parameters (numpy or torch) atomically as one safetensors file."""
    import torch
    from safetensors.torch import save_file

    from workbench.io import atomic_path

    arrays = {
        k: np.ascontiguousarray(
            params[k].detach().cpu().numpy() if hasattr(params[k], "detach") else params[k],
            dtype=np.float32,
        )
        for k in PARAMETER_NAMES
    }
    meta = {
        "kind": ADAPTATION_KIND,
        "version": ADAPTATION_VERSION,
        "base_sha256": base_sha256,
        "tensors_sha256": _tensors_sha256(arrays),
        "n_images": str(int(n_images)),
    }
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: torch.from_numpy(v) for k, v in arrays.items()}, str(tmp), metadata=meta)
    return path


def read_adaptation(path: str | Path, *, base_sha256: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify an adaptation file: ``(parameters as numpy, metadata)``.

    Raises
    ------
    RefinementError
        Missing, unreadable or truncated file; not an adaptation file; made for another base
        network; tensors that do not match the recorded checksum.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RefinementError(f"no adaptation file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = dict(fh.metadata() or {})
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise RefinementError(
            f"cannot read the adaptation file {str(path)!r} (truncated or not a safetensors "
            f"file: {exc}); delete it to start from the packaged network"
        ) from exc
    if meta.get("kind") != ADAPTATION_KIND:
        raise RefinementError(
            f"{str(path)!r} is not a refinement adaptation file (kind {meta.get('kind')!r})"
        )
    if meta.get("base_sha256") != base_sha256:
        raise RefinementError(
            f"the adaptation file {str(path)!r} was made for another base network "
            f"(sha256 {str(meta.get('base_sha256'))[:12]}…, this one {base_sha256[:12]}…); "
            "delete it, or load it into an engine with that network"
        )
    missing = [k for k in PARAMETER_NAMES if k not in arrays]
    if missing:
        raise RefinementError(f"{str(path)!r} lacks adapter parameter(s) {', '.join(missing)}")
    if _tensors_sha256(arrays) != meta.get("tensors_sha256"):
        raise RefinementError(
            f"the adaptation file {str(path)!r} does not match its recorded checksum (changed "
            "or damaged); delete it to start from the packaged network"
        )
    try:
        meta["n_images"] = int(meta.get("n_images", 0))
    except ValueError:
        meta["n_images"] = 0
    return arrays, meta

"""Explaining one slide with a trained model: ``tl.extract`` (the per-slide AnnData) and
``tl.predict_tiles`` (the exhaustive-tiling baseline's prediction), with their input handling."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import EXPLAIN, SLIDE_ID, SPATIAL, X_FOCUS
from workbench.tl._calibration import model_temperature, softmax_with_temperature
from workbench.tl._engine import (
    edge_index_of,
    open_slide,
    read_crops,
    read_tiles,
    region_graph_for,
    settings_of,
    tissue_grid,
    to_tensor_images,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from workbench.io import Slide

__all__ = ["extract", "load_model", "predict_tiles"]

logger = logging.getLogger(__name__)


def load_model(model, *, encoder=None, expect: type | None = None):
    """A model object from a model or a checkpoint folder (``encoder``: the frozen tile
    encoder a checkpoint was trained with, when it is not at its recorded path; ``expect``:
    the model class a checkpoint must hold)."""
    if isinstance(model, str | os.PathLike):
        from workbench.models import load_checkpoint

        return load_checkpoint(model, encoder=encoder, expect=expect)
    if encoder is not None and getattr(model, "tile_encoder", None) is None:
        from workbench.models import load_encoder

        model.attach_encoder(load_encoder(encoder))
    return model


def _default_slide_id(slide) -> str:
    from workbench.io import slide_id

    path = str(slide.path)
    if path.startswith("<array:") and path.endswith(">"):
        return path[len("<array:") : -1]
    return slide_id(path)


def _warn_if_not_brightfield(slide, name: str) -> None:
    """``NotBrightfieldWarning`` when the slide (its own colours, before any stain
    normalisation) does not look like brightfield H&E (fluorescence, dark background …)."""
    from workbench.pp import check_brightfield

    raw = getattr(slide, "_slide", slide)  # a StainedSlide's own slide
    check_brightfield(raw.thumbnail(max_size=512), name=name, warn=True, stacklevel=4)


def _class_names(model, n: int) -> list[str]:
    names = getattr(model, "config", {}).get("class_names")
    return list(names) if names else [f"class {i}" for i in range(n)]


def extract(
    slide: Slide | str | os.PathLike,
    model,
    *,
    mpp: float | None = None,
    top_k: int | None = None,
    graph: anndata.AnnData | None = None,
    device: str | None = None,
    lesion_threshold: float = 0.5,
    slide_id: str | None = None,
    encoder=None,
) -> anndata.AnnData:
    """Explain one slide: region graph, focus regions, their lesion maps, slide probabilities.

    Only the thumbnail and ``top_k`` magnified crops are read from the file, never the whole
    of level 0, through the same engine (:mod:`workbench.tl._engine`) and with the same
    settings as in training, stain normalisation included.

    Parameters
    ----------
    slide
        A :class:`~workbench.io.Slide` or a path.
    model
        A trained :class:`~workbench.models.SelfCalibratedModel` or its checkpoint folder.
    mpp
        Microns per pixel to use when the file does not record it.
    top_k
        Number of focus regions (default: the model's).
    graph
        A precomputed :func:`workbench.pp.region_graph` of this slide (else computed with the
        model's preprocessing settings).
    device
        Torch device (default CPU).
    lesion_threshold
        Probability above which a lesion-map pixel counts as lesion (for outlines/export).
    slide_id
        Identifier stored in ``uns["slide_id"]`` (default: :func:`workbench.io.slide_id` of the
        file name).
    encoder
        The frozen tile encoder a checkpoint was trained with, when it is not at the path
        the checkpoint records (a ``.pt2`` file or a module).

    Returns
    -------
    AnnData
        The region graph (see :func:`workbench.pp.region_graph`) plus
        ``obs["focus_score"]`` (focus predictor, 0–1), ``obs["is_focus"]`` (one of the
        top-K), ``obs["lesion_prob"]`` (the detail branch's pooled lesion probability for
        focus regions, the global node head's estimate elsewhere), ``uns["slide_id"]``,
        ``obsm["X_focus"]``
        (node tokens, the focused discriminative features) and ``uns["explain"]`` with
        ``model``, ``label`` (the clinical column it learnt), ``class_names``,
        ``probabilities`` (slide, final, calibrated: ``softmax(logits / T)`` with the
        temperature ``T`` the checkpoint carries), ``raw_probabilities`` (the same before
        calibration, ``softmax(logits)``), ``temperature`` (``T``; 1.0 for a model without
        one, e.g. a checkpoint saved before calibration existed), ``global_probabilities``
        (the global branch alone, uncalibrated), ``predicted_class``,
        ``predicted_label``, ``slide`` (metadata), ``stain`` (the normalisation method or
        ``None``), ``encoder`` (its name, or ``"builtin"``), ``lesion_threshold`` and
        ``focus`` = {``obs_index``, ``region_id``, ``centers_xy``, ``boxes_xywh`` (level-0),
        ``focus_score``, ``lesion_prob``, ``crops`` (K, S, S, 3 uint8, as the model saw them:
        stain-normalised when it was trained so), ``lesion_maps`` (K, S, S float32
        probabilities), ``detail_mpp``, ``crop_size``}.

    Raises
    ------
    MissingResolutionError
        The slide records no mpp and none was given.
    """
    import torch

    from workbench.models import SelfCalibratedModel

    model = load_model(model, encoder=encoder, expect=SelfCalibratedModel)
    if not isinstance(model, SelfCalibratedModel):
        raise TypeError(f"extract needs a SelfCalibratedModel, got {type(model).__name__}")
    pre = settings_of(model)
    slide = open_slide(slide, pre, mpp=mpp)
    slide.require_mpp()
    sid = str(slide_id or _default_slide_id(slide))
    _warn_if_not_brightfield(slide, sid)
    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    if graph is None:
        adata = region_graph_for(slide, pre)
    else:
        adata = graph.copy()
    names = pre.get("feature_names")
    if names is not None and list(adata.var_names) != list(names):
        raise ValueError(
            "the region features do not match the ones the model was trained on "
            f"({adata.n_vars} vs {len(names)} columns); recompute the region graph with this "
            "workbench version"
        )
    x = torch.from_numpy(np.asarray(adata.X, dtype=np.float32)).to(dev)
    ei = edge_index_of(adata).to(dev)
    k = min(int(top_k or model.focus.top_k), adata.n_obs)
    size, dmpp = int(pre["crop_size"]), float(pre["detail_mpp"])
    with torch.no_grad():
        g = model.forward_global(x, ei)
        idx = model.select_focus(g["focus_scores"], ei, k=k)
        centers = np.asarray(adata.obsm[SPATIAL])[idx.cpu().numpy()]
        crops, boxes = read_crops(slide, centers, mpp=dmpp, size=size)
        det = model.forward_detail(to_tensor_images(crops, dev), g["tokens"][idx])
        logits = g["logits"] + det["detail_logits"]
        raw_logits = logits.float().cpu().numpy().astype(np.float64)
        gprobs = torch.softmax(g["logits"], -1).cpu().numpy().astype(np.float64)
        node_lesion = torch.softmax(g["node_logits"], -1)[:, 1].cpu().numpy()
        maps = torch.sigmoid(det["lesion_logits"][:, 0]).cpu().numpy().astype(np.float32)
        det_prob = det["lesion_prob"].cpu().numpy()
    temperature = model_temperature(model)
    raw_probs = softmax_with_temperature(raw_logits, 1.0)
    probs = softmax_with_temperature(raw_logits, temperature)
    _require_finite_probabilities(probs, sid, model, {"region features": x})
    idx_np = idx.cpu().numpy().astype(np.int64)
    focus_score = g["focus_scores"].cpu().numpy().astype(np.float32)
    lesion = node_lesion.astype(np.float32)
    lesion[idx_np] = det_prob
    is_focus = np.zeros(adata.n_obs, dtype=bool)
    is_focus[idx_np] = True
    adata.obs["focus_score"] = focus_score
    adata.obs["lesion_prob"] = lesion
    adata.obs["is_focus"] = is_focus
    adata.obsm[X_FOCUS] = g["tokens"].cpu().numpy().astype(np.float32)
    classes = _class_names(model, len(probs))
    pred = int(np.argmax(probs))
    region_ids = (
        adata.obs["region_id"].to_numpy()[idx_np] if "region_id" in adata.obs else idx_np + 1
    )
    adata.uns[SLIDE_ID] = sid
    stain = pre.get("stain")
    enc = model.tile_encoder
    adata.uns[EXPLAIN] = {
        "model": type(model).__name__,
        "label": model.config.get("label") or "",
        "class_names": classes,
        "probabilities": probs,
        "raw_probabilities": raw_probs,
        "temperature": float(temperature),
        "global_probabilities": gprobs,
        "predicted_class": pred,
        "predicted_label": classes[pred],
        "slide": slide.info.to_dict(),
        "stain": str(stain.get("method")) if isinstance(stain, Mapping) else "none",
        "encoder": enc.name if enc is not None else "builtin",
        "lesion_threshold": float(lesion_threshold),
        "focus": {
            "obs_index": idx_np,
            "region_id": np.asarray(region_ids, dtype=np.int64),
            "centers_xy": centers.astype(np.float64),
            "boxes_xywh": boxes,
            "focus_score": focus_score[idx_np],
            "lesion_prob": det_prob.astype(np.float32),
            "crops": crops,
            "lesion_maps": maps,
            "detail_mpp": dmpp,
            "crop_size": size,
        },
    }
    logger.info(
        "extract: %s -> %s (p=%.3f), %d focus regions; added obs focus_score/lesion_prob/"
        "is_focus, obsm['X_focus'], uns['explain']",
        slide.path,
        classes[pred],
        probs[pred],
        k,
    )
    return adata


def _require_finite_probabilities(probs, sid: str, model, inputs: dict) -> None:
    """A slide's class probabilities are finite, or a NonFiniteError names the slide and cause."""
    if np.isfinite(probs).all():
        return
    from workbench.models._finite import nonfinite_cause, require_finite

    require_finite(
        probs, f"the class probabilities of slide {sid}", f"cause: {nonfinite_cause(model, inputs)}"
    )


# ---------------------------------------------------------------------------------------
def predict_tiles(
    slide: Slide | str | os.PathLike,
    model,
    *,
    mpp: float | None = None,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = False,
    encoder=None,
) -> dict:
    """Slide prediction of the exhaustive-tiling :class:`~workbench.models.TileABMIL`.

    Every tissue tile at the model's detail magnification is read (in batches, so memory
    stays bounded) and embedded; the embeddings are pooled once at the end.

    Returns
    -------
    dict
        ``probabilities`` (n_classes,; calibrated with the model's temperature, as in
        :func:`extract`), ``raw_probabilities`` (before calibration), ``temperature``,
        ``attention`` (T,), ``n_tiles``, ``tiles_xy``
        (T, 2 level-0 top-left corners).
    """
    import torch
    from tqdm.auto import tqdm

    from workbench.models import TileABMIL

    model = load_model(model, encoder=encoder, expect=TileABMIL)
    pre = settings_of(model)
    slide = open_slide(slide, pre, mpp=mpp)
    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    size, dmpp = int(pre["crop_size"]), float(pre["detail_mpp"])
    xy = tissue_grid(slide, pre)
    if len(xy) == 0:
        from workbench._errors import NoTissueError

        raise NoTissueError(f"no tissue tiles in {slide.path!r}")
    embs = []
    with torch.no_grad():
        for start in tqdm(range(0, len(xy), batch_size), disable=not progress, desc="tiles"):
            batch = read_tiles(slide, xy[start : start + batch_size], mpp=dmpp, size=size)
            embs.append(model.embed_tiles(to_tensor_images(batch, dev)))
        out = model.pool_embeddings(torch.cat(embs))
    logits = out["logits"].float().cpu().numpy().astype(np.float64)
    probs = softmax_with_temperature(logits, model_temperature(model))
    _require_finite_probabilities(probs, _default_slide_id(slide), model, {})
    return {
        "probabilities": probs,
        "raw_probabilities": softmax_with_temperature(logits, 1.0),
        "temperature": model_temperature(model),
        "attention": out["attention"].cpu().numpy(),
        "n_tiles": int(len(xy)),
        "tiles_xy": xy,
    }

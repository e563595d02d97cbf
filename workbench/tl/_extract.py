"""Explaining slides with a trained model: per-slide AnnData, cohort runs, QuPath export."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._constants import (
    EXPLAIN,
    FOCUS_CLASS,
    FOCUS_COLOR,
    LESION_CLASS,
    LESION_COLOR,
    SLIDE_ID,
    SPATIAL,
    X_FOCUS,
)
from workbench.tl._engine import (  # DEFAULT_PREPROCESSING, as_slide: for older imports
    DEFAULT_PREPROCESSING,  # noqa: F401
    as_slide,  # noqa: F401
    edge_index_of,
    mask_at,
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
    import pandas as pd

    from workbench.io import Slide

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
        ``probabilities`` (slide, final), ``global_probabilities``, ``predicted_class``,
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
        probs = torch.softmax(logits, -1).cpu().numpy().astype(np.float64)
        gprobs = torch.softmax(g["logits"], -1).cpu().numpy().astype(np.float64)
        node_lesion = torch.softmax(g["node_logits"], -1)[:, 1].cpu().numpy()
        maps = torch.sigmoid(det["lesion_logits"][:, 0]).cpu().numpy().astype(np.float32)
        det_prob = det["lesion_prob"].cpu().numpy()
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
        ``probabilities`` (n_classes,), ``attention`` (T,), ``n_tiles``, ``tiles_xy``
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
    return {
        "probabilities": torch.softmax(out["logits"], -1).cpu().numpy().astype(np.float64),
        "attention": out["attention"].cpu().numpy(),
        "n_tiles": int(len(xy)),
        "tiles_xy": xy,
    }


# ---------------------------------------------------------------------------------------
def cohort_slides(cohort) -> list[tuple[str, dict]]:
    """``(slide_id, clinical row)`` of every slide of a cohort, in table order (kept for
    older code: iterate over ``cohort.slide_ids`` and ``cohort.clinical`` instead)."""
    return [
        (sid, row.to_dict())
        for sid, (_, row) in zip(cohort.slide_ids, cohort.clinical.iterrows(), strict=True)
    ]


def _slide_table(slides) -> list[tuple[str, Any, float | None]]:
    """``(slide_id, path or Slide, mpp override)`` from a Cohort, a folder, a mapping or a
    list of paths (ids by :func:`workbench.io.slide_id`)."""
    from workbench.io import Cohort

    if isinstance(slides, Cohort):
        return [(sid, str(slides.slide_path(sid)), slides.mpp_of(sid)) for sid in slides.slide_ids]
    if isinstance(slides, Mapping):
        # Slide objects are kept as they are (usable without a dask client).
        return [
            (str(k), v if hasattr(v, "read_region") else str(v), None) for k, v in slides.items()
        ]
    if isinstance(slides, str | os.PathLike) and Path(slides).is_dir():
        slides = Cohort.from_folder(slides)
        return _slide_table(slides)
    if isinstance(slides, str | os.PathLike):
        slides = [slides]
    from workbench.io._cohort import _slide_table as paths_by_id

    return [(sid, str(p), None) for sid, p in paths_by_id(list(slides)).items()]


def _status_row(sid: str, path, out, status: str, error: str = "") -> dict:
    """One row of ``extract_cohort``'s status table."""
    return {
        "slide_id": sid,
        "path": str(getattr(path, "path", path)),
        "output": str(out),
        "status": status,
        "error": error,
    }


def _extract_to_file(
    path, model, out_path: str, mpp: float | None, top_k: int | None, slide_id: str, encoder=None
) -> str:
    from workbench.io import write_h5ad

    adata = extract(path, model, mpp=mpp, top_k=top_k, slide_id=slide_id, encoder=encoder)
    write_h5ad(adata, out_path)
    return out_path


def extract_cohort(
    slides: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike] | Any,
    model,
    out_dir: str | os.PathLike,
    *,
    client: Any = None,
    n_workers: int = 2,
    mpp: float | None = None,
    top_k: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    encoder=None,
) -> pd.DataFrame:
    """Run :func:`extract` on many slides, one ``<slide_id>.h5ad`` per slide in ``out_dir``.

    Each file is written atomically (temporary file, then rename), so an interrupted run
    leaves only complete files, and a rerun skips the slides whose file exists (resume).
    A slide that fails is reported in the returned table and does not stop the others.

    Parameters
    ----------
    slides
        A :class:`~workbench.io.Cohort` (its per-slide mpp overrides apply), a folder of
        slides, ``{slide_id: path}``, or a list of paths (ids by
        :func:`workbench.io.slide_id`).
    model
        A :class:`~workbench.models.SelfCalibratedModel` or its checkpoint folder.
    out_dir
        Output folder (created if missing).
    client
        ``None`` runs in this process; ``"local"`` starts a local ``dask.distributed``
        cluster of ``n_workers`` single-threaded workers for this call; a scheduler address
        (``"tcp://host:8786"``) or a ``distributed.Client`` fans the slides out to that
        cluster (workers need the slide paths and ``out_dir`` on a shared file system).
    n_workers
        Workers of the local cluster.
    mpp
        Resolution for slides that record none (a cohort's own overrides come first).
    top_k
        Focus regions per slide (default: the model's).
    overwrite
        Recompute slides whose output exists.
    progress
        Show a tqdm progress bar.
    encoder
        The frozen tile encoder the checkpoint was trained with, if not at its recorded path.

    Returns
    -------
    pandas.DataFrame
        One row per slide: ``slide_id``, ``path`` (input), ``output``, ``status``
        (``"done"``, ``"skipped"`` or ``"failed"``), ``error``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    table = _slide_table(slides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    todo = []
    for sid, path, own_mpp in table:
        out = out_dir / f"{sid}.h5ad"
        if out.exists() and not overwrite:
            rows.append(_status_row(sid, path, out, "skipped"))
        else:
            todo.append((sid, path, str(out), own_mpp if own_mpp is not None else mpp))
    if todo and client is None:
        from workbench.models import SelfCalibratedModel

        model = load_model(model, encoder=encoder, expect=SelfCalibratedModel)
        for sid, path, out, slide_mpp in tqdm(todo, desc="extract", disable=not progress):
            try:
                _extract_to_file(path, model, out, slide_mpp, top_k, sid)
                rows.append(_status_row(sid, path, out, "done"))
            except Exception as exc:  # report and carry on with the other slides
                logger.warning("extract failed on %s: %s", path, exc)
                rows.append(_status_row(sid, path, out, "failed", f"{type(exc).__name__}: {exc}"))
    elif todo:
        rows.extend(
            _extract_distributed(todo, model, out_dir, client, n_workers, top_k, progress, encoder)
        )
    order = {sid: i for i, (sid, _, _) in enumerate(table)}
    df = pd.DataFrame(rows, columns=["slide_id", "path", "output", "status", "error"])
    df = df.sort_values("slide_id", key=lambda s: s.map(order)).reset_index(drop=True)
    logger.info("extract_cohort: %s", df["status"].value_counts().to_dict())
    return df


def _extract_distributed(
    todo, model, out_dir, client, n_workers, top_k, progress, encoder
) -> list[dict]:
    from distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    # Workers load the model from a checkpoint folder: plain files, nothing pickled.
    if isinstance(model, str | os.PathLike):
        ckpt = str(model)
    else:
        from workbench.models import save_checkpoint

        ckpt = str(save_checkpoint(model, out_dir / ".model"))
    enc = encoder
    if enc is None and getattr(model, "tile_encoder", None) is not None:
        enc = getattr(model.tile_encoder, "file", None)  # a module cannot travel; a file can
    if enc is not None and not isinstance(enc, str | os.PathLike):
        raise TypeError("with a dask client, pass the tile encoder as a .pt2 file path")
    own_client = own_cluster = None
    if client == "local":
        own_cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        own_client = client = Client(own_cluster)
    elif isinstance(client, str):
        own_client = client = Client(client)
    rows = []
    try:
        futures = {
            client.submit(
                _extract_to_file, path, ckpt, out, slide_mpp, top_k, sid, enc, pure=False
            ): (sid, path, out)
            for sid, path, out, slide_mpp in todo
        }
        for fut in tqdm(
            as_completed(futures), total=len(futures), desc="extract", disable=not progress
        ):
            sid, path, out = futures[fut]
            try:
                fut.result()
                rows.append(_status_row(sid, path, out, "done"))
            except Exception as exc:
                rows.append(_status_row(sid, path, out, "failed", f"{type(exc).__name__}: {exc}"))
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return rows


# ---------------------------------------------------------------------------------------
def focus_in_mask(adata: anndata.AnnData, mask: np.ndarray, downsample: float) -> np.ndarray:
    """Which focus regions of an explained slide are centred inside ``mask``.

    Parameters
    ----------
    adata
        Output of :func:`extract` (reads ``uns["explain"]["focus"]["centers_xy"]``).
    mask
        Boolean whole-slide mask (e.g. the true lesion) drawn at ``downsample``.
    downsample
        Level-0 pixels per mask pixel.

    Returns
    -------
    Boolean array, one entry per focus region; its mean is the *focus hit rate*.
    """
    centres = np.asarray(adata.uns[EXPLAIN]["focus"]["centers_xy"], dtype=float).reshape(-1, 2)
    return mask_at(mask, downsample, centres[:, 0], centres[:, 1])


def focus_annotations(adata: anndata.AnnData, *, threshold: float | None = None) -> list:
    """Focus boxes and lesion polygons of an extracted slide as :class:`~workbench.io.Annotation`."""
    from workbench.io import Annotation, mask_to_annotations

    if EXPLAIN not in adata.uns:
        raise KeyError("adata has no uns['explain']; run workbench.tl.extract first")
    ex = adata.uns[EXPLAIN]
    focus = ex["focus"]
    thr = float(ex.get("lesion_threshold", 0.5) if threshold is None else threshold)
    anns = []
    maps = np.asarray(focus["lesion_maps"])
    for i, (x, y, w, h) in enumerate(np.asarray(focus["boxes_xywh"], dtype=float)):
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        anns.append(
            Annotation(
                geometry={"type": "Polygon", "coordinates": [ring]},
                classification=FOCUS_CLASS,
                color=FOCUS_COLOR,
                name=f"focus {i + 1}",
                measurements={
                    "focus_score": float(focus["focus_score"][i]),
                    "lesion_prob": float(focus["lesion_prob"][i]),
                },
            )
        )
        mask = maps[i] >= thr
        if mask.any():
            anns.extend(
                mask_to_annotations(
                    mask,
                    classification=LESION_CLASS,
                    color=LESION_COLOR,
                    scale_xy=(w / mask.shape[1], h / mask.shape[0]),
                    offset_xy=(x, y),
                    min_area_px=4,
                    tolerance=0.5,
                )
            )
    return anns


def export_geojson(
    adata: anndata.AnnData, path: str | os.PathLike, *, threshold: float | None = None
) -> Path:
    """Write the focus regions and their lesion polygons as QuPath GeoJSON (level-0 pixels).

    Focus regions become rectangles classified ``"Focus region"`` with ``focus_score`` and
    ``lesion_prob`` measurements; lesion-map pixels above ``threshold`` (default: the
    extraction's ``lesion_threshold``) become ``"Tumor"`` polygons. Written atomically.
    """
    from workbench.io import write_geojson

    out = write_geojson(path, focus_annotations(adata, threshold=threshold))
    logger.info("export_geojson: wrote %s", out)
    return Path(out)


__all__ = [
    "export_geojson",
    "extract",
    "extract_cohort",
    "focus_annotations",
    "focus_in_mask",
    "load_model",
    "predict_tiles",
]

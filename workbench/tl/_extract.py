"""Explaining slides with a trained model: per-slide AnnData, cohort runs, QuPath export."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._constants import (
    ADJACENCY,
    EXPLAIN,
    FOCUS_CLASS,
    FOCUS_COLOR,
    LESION_CLASS,
    LESION_COLOR,
    SLIDE_ID,
    SPATIAL,
    X_FOCUS,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd
    import torch

    from workbench.io import Slide

logger = logging.getLogger(__name__)


#: Settings a model's ``preprocessing`` dict may carry, with the defaults used when absent.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "thumbnail_mpp": 8.0,
    "thumbnail_max_px": 1280,
    "n_segments": 1500,
    "detail_mpp": 0.5,
    "crop_size": 256,
}


def _settings(model) -> dict:
    pre = dict(DEFAULT_PREPROCESSING)
    pre.update(getattr(model, "preprocessing", {}) or {})
    return pre


def thumbnail_mpp_for(slide: Slide, settings: dict) -> float:
    """Thumbnail resolution for a slide: ``thumbnail_mpp``, coarsened if needed so the
    thumbnail's longer side stays within ``thumbnail_max_px`` (bounds the superpixel cost
    on very large slides)."""
    mpp = float(settings["thumbnail_mpp"])
    cap = settings.get("thumbnail_max_px")
    if cap:
        long_um = max(slide.dimensions) * slide.require_mpp()
        mpp = max(mpp, long_um / float(cap))
    return mpp


def tissue_grid(slide: Slide, settings: dict) -> np.ndarray:
    """Level-0 top-left corners ``(T, 2)`` of the tissue tiles at the detail magnification.

    Tissue is detected on the same thumbnail resolution as the region graph (detection on
    fine, near-full-resolution thumbnails misses pale stroma), so the tile baseline and the
    region graph see the same tissue.
    """
    from workbench.pp import detect_tissue, tile_tissue

    mask = detect_tissue(slide.thumbnail(mpp=thumbnail_mpp_for(slide, settings)))
    grid = tile_tissue(
        slide,
        mpp=float(settings["detail_mpp"]),
        tile_size=int(settings["crop_size"]),
        min_tissue=float(settings.get("min_tissue", 0.5)),
        tissue_mask=mask,
    )
    return np.column_stack([grid.obs["x"].to_numpy(), grid.obs["y"].to_numpy()]).reshape(-1, 2)


def as_slide(slide: Slide | str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """A :class:`~workbench.io.Slide` from a path or a slide (``mpp`` overrides the file's)."""
    from workbench.io import Slide

    if isinstance(slide, Slide):
        if mpp is not None and slide.mpp != mpp:
            if slide.info.vendor == "array":
                raise ValueError("give mpp= to Slide.from_array, not to extract")
            return Slide(slide.path, mpp=mpp)
        return slide
    return Slide(slide, mpp=mpp)


def load_model(model):
    """A model object from a model or a checkpoint folder."""
    if isinstance(model, str | os.PathLike):
        from workbench.models import load_checkpoint

        return load_checkpoint(model)
    return model


def edge_index_of(adata: anndata.AnnData) -> torch.Tensor:
    """``(2, E)`` long tensor of the region adjacency in ``obsp["adjacency"]``."""
    import scipy.sparse as sp
    import torch

    coo = sp.coo_matrix(adata.obsp[ADJACENCY])
    keep = coo.row < coo.col
    return torch.from_numpy(np.vstack([coo.row[keep], coo.col[keep]]).astype(np.int64))


def read_crops(
    slide: Slide, centers_xy: np.ndarray, *, mpp: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of ``size`` px at ``mpp`` centred on level-0 points.

    Returns
    -------
    crops
        ``(K, size, size, 3)`` uint8.
    boxes
        ``(K, 4)`` level-0 ``(x, y, width, height)`` of each crop.
    """
    side0 = size * mpp / slide.require_mpp()
    centers_xy = np.asarray(centers_xy, dtype=np.float64).reshape(-1, 2)
    crops = np.empty((len(centers_xy), size, size, 3), dtype=np.uint8)
    boxes = np.empty((len(centers_xy), 4), dtype=np.float64)
    for i, (cx, cy) in enumerate(centers_xy):
        x0, y0 = cx - side0 / 2.0, cy - side0 / 2.0
        crops[i] = slide.read_region((x0, y0), (size, size), mpp=mpp)
        boxes[i] = (x0, y0, side0, side0)
    return crops, boxes


def _to_tensor_images(crops: np.ndarray, device) -> torch.Tensor:
    import torch

    return (
        torch.from_numpy(np.ascontiguousarray(crops))
        .permute(0, 3, 1, 2)
        .float()
        .div(255.0)
        .to(device)
    )


def _default_slide_id(slide: Slide) -> str:
    path = str(slide.path)
    if path.startswith("<array:") and path.endswith(">"):
        return path[len("<array:") : -1]
    return Path(path).stem


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
) -> anndata.AnnData:
    """Explain one slide: region graph, focus regions, their lesion maps, slide probabilities.

    Only the thumbnail and ``top_k`` magnified crops are read from the file, never the whole
    of level 0.

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
        Identifier stored in ``uns["slide_id"]`` (default: the file stem).

    Returns
    -------
    AnnData
        The region graph (see :func:`workbench.pp.region_graph`) plus
        ``obs["focus_score"]`` (focus predictor, 0–1), ``obs["is_focus"]`` (one of the
        top-K), ``obs["lesion_prob"]`` (the detail branch's pooled lesion probability for
        focus regions, the global node head's estimate elsewhere), ``uns["slide_id"]``,
        ``obsm["X_focus"]``
        (node tokens, the focused discriminative features) and ``uns["explain"]`` with
        ``model``, ``class_names``, ``probabilities`` (slide, final), ``global_probabilities``,
        ``predicted_class``, ``predicted_label``, ``slide`` (metadata), ``lesion_threshold`` and
        ``focus`` = {``obs_index``, ``region_id``, ``centers_xy``, ``boxes_xywh`` (level-0),
        ``focus_score``, ``lesion_prob``, ``crops`` (K, S, S, 3 uint8), ``lesion_maps``
        (K, S, S float32 probabilities), ``detail_mpp``, ``crop_size``}.

    Raises
    ------
    MissingResolutionError
        The slide records no mpp and none was given.
    """
    import torch

    from workbench.pp import region_graph

    model = load_model(model)
    from workbench.models import SelfCalibratedModel

    if not isinstance(model, SelfCalibratedModel):
        raise TypeError(f"extract needs a SelfCalibratedModel, got {type(model).__name__}")
    pre = _settings(model)
    slide = as_slide(slide, mpp=mpp)
    slide.require_mpp()
    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    if graph is None:
        adata = region_graph(
            slide, thumbnail_mpp=thumbnail_mpp_for(slide, pre), n_segments=int(pre["n_segments"])
        )
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
        det = model.forward_detail(_to_tensor_images(crops, dev), g["tokens"][idx])
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
    adata.uns[SLIDE_ID] = str(slide_id or _default_slide_id(slide))
    adata.uns[EXPLAIN] = {
        "model": type(model).__name__,
        "class_names": classes,
        "probabilities": probs,
        "global_probabilities": gprobs,
        "predicted_class": pred,
        "predicted_label": classes[pred],
        "slide": slide.info.to_dict(),
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

    model = load_model(model)
    pre = _settings(model)
    slide = as_slide(slide, mpp=mpp)
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
            batch = np.stack(
                [
                    slide.read_region(tuple(p), (size, size), mpp=dmpp)
                    for p in xy[start : start + batch_size]
                ]
            )
            embs.append(model.embed_tiles(_to_tensor_images(batch, dev)))
        out = model.pool_embeddings(torch.cat(embs))
    return {
        "probabilities": torch.softmax(out["logits"], -1).cpu().numpy().astype(np.float64),
        "attention": out["attention"].cpu().numpy(),
        "n_tiles": int(len(xy)),
        "tiles_xy": xy,
    }


# ---------------------------------------------------------------------------------------
def cohort_slides(cohort) -> list[tuple[str, dict]]:
    """``(slide_id, clinical row)`` of every slide of a synthetic cohort, in table order.

    The id is the file stem of the ``slide`` column (``slides/S000.tif`` -> ``S000``).
    """
    out = []
    for _, row in cohort.clinical.iterrows():
        out.append((Path(str(row["slide"])).name.split(".")[0], row.to_dict()))
    return out


def _slide_table(slides) -> dict[str, Any]:
    """``{slide_id: path}`` from a mapping, a list of paths, or a synthetic cohort."""
    if hasattr(slides, "slide_path") and hasattr(slides, "clinical"):
        return {sid: str(slides.slide_path(sid)) for sid, _ in cohort_slides(slides)}
    if isinstance(slides, Mapping):
        # Slide objects are kept as they are (usable without a dask client).
        return {str(k): v if hasattr(v, "read_region") else str(v) for k, v in slides.items()}
    if isinstance(slides, str | os.PathLike):
        slides = [slides]
    out: dict[str, str] = {}
    for p in slides:
        sid = Path(p).stem
        if sid in out:
            raise ValueError(f"two slides share the id {sid!r}; pass a {{id: path}} mapping")
        out[sid] = str(p)
    return out


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
    path, model, out_path: str, mpp: float | None, top_k: int | None, slide_id: str
) -> str:
    from workbench.io import write_h5ad

    adata = extract(path, model, mpp=mpp, top_k=top_k, slide_id=slide_id)
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
) -> pd.DataFrame:
    """Run :func:`extract` on many slides, one ``<slide_id>.h5ad`` per slide in ``out_dir``.

    Each file is written atomically (temporary file, then rename), so an interrupted run
    leaves only complete files, and a rerun skips the slides whose file exists (resume).
    A slide that fails is reported in the returned table and does not stop the others.

    Parameters
    ----------
    slides
        ``{slide_id: path}``, a list of paths (ids = file stems), or a synthetic cohort.
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
        Override for slides without a recorded resolution.
    top_k
        Focus regions per slide (default: the model's).
    overwrite
        Recompute slides whose output exists.
    progress
        Show a tqdm progress bar.

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
    for sid, path in table.items():
        out = out_dir / f"{sid}.h5ad"
        if out.exists() and not overwrite:
            rows.append(_status_row(sid, path, out, "skipped"))
        else:
            todo.append((sid, path, str(out)))
    if todo and client is None:
        model = load_model(model)
        for sid, path, out in tqdm(todo, desc="extract", disable=not progress):
            try:
                _extract_to_file(path, model, out, mpp, top_k, sid)
                rows.append(_status_row(sid, path, out, "done"))
            except Exception as exc:  # report and carry on with the other slides
                logger.warning("extract failed on %s: %s", path, exc)
                rows.append(_status_row(sid, path, out, "failed", f"{type(exc).__name__}: {exc}"))
    elif todo:
        rows.extend(
            _extract_distributed(todo, model, out_dir, client, n_workers, mpp, top_k, progress)
        )
    order = {sid: i for i, sid in enumerate(table)}
    df = pd.DataFrame(rows, columns=["slide_id", "path", "output", "status", "error"])
    df = df.sort_values("slide_id", key=lambda s: s.map(order)).reset_index(drop=True)
    logger.info("extract_cohort: %s", df["status"].value_counts().to_dict())
    return df


def _extract_distributed(
    todo, model, out_dir, client, n_workers, mpp, top_k, progress
) -> list[dict]:
    from distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    # Workers load the model from a checkpoint folder: plain files, nothing pickled.
    if isinstance(model, str | os.PathLike):
        ckpt = str(model)
    else:
        from workbench.models import save_checkpoint

        ckpt = str(save_checkpoint(model, out_dir / ".model"))
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
            client.submit(_extract_to_file, path, ckpt, out, mpp, top_k, sid, pure=False): (
                sid,
                path,
                out,
            )
            for sid, path, out in todo
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
    mask = np.asarray(mask, dtype=bool)
    centres = np.asarray(adata.uns[EXPLAIN]["focus"]["centers_xy"], dtype=float).reshape(-1, 2)
    rows = np.clip((centres[:, 1] / downsample).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip((centres[:, 0] / downsample).astype(int), 0, mask.shape[1] - 1)
    return mask[rows, cols]


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
    "DEFAULT_PREPROCESSING",
    "as_slide",
    "edge_index_of",
    "export_geojson",
    "extract",
    "extract_cohort",
    "focus_annotations",
    "focus_in_mask",
    "predict_tiles",
    "read_crops",
]

"""Exemplar crops per phenotype: what ``phenotype_2`` looks like under the microscope.

:func:`phenotype_exemplars` picks, for every phenotype that ``tl.markers`` assigned, the regions
closest to the phenotype's mean in the uniqueness space (``obsm["X_uniqueness"]``; the focused
features when absent or when the slides were scored by different models, as the cross-fitted
folds of ``tl.discover(folds=k)`` are), one per slide before a second from the same slide, and cuts a square
around each region's centroid (``obsm["spatial"]``, level-0 pixels): from the slide file
recorded in ``uns["region_graph"]["slide"]["path"]`` when it can be opened, else from the
stored thumbnail. ``tl.discover`` stores the result in the cohort AnnData
(``uns["phenotype_exemplars"]``) so that ``pl.phenotype_gallery`` and the report can show the
phenotypes without the per-slide AnnData or the slide files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from workbench._constants import (
    FEATURE_UNIQUENESS,
    PHENOTYPE,
    PHENOTYPE_EXEMPLARS,
    REGION_GRAPH,
    SPATIAL,
    X_FOCUS,
    X_UNIQUENESS,
)
from workbench._errors import MarkerError
from workbench.tl._markers import OTHER, slide_id_of

logger = logging.getLogger(__name__)

__all__ = ["PHENOTYPE_EXEMPLARS", "phenotype_exemplars"]


def _resize(img: np.ndarray, out_px: int) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == out_px and img.shape[1] == out_px:
        return img
    return np.asarray(Image.fromarray(img).resize((out_px, out_px), Image.BILINEAR))


def _from_thumbnail(adata: AnnData, xy: np.ndarray, size_um: float, out_px: int, mpp: float):
    graph = adata.uns.get(REGION_GRAPH, {})
    if "thumbnail" not in graph:
        return None
    thumb = np.asarray(graph["thumbnail"])
    sx, sy = (float(v) for v in graph.get("scale_xy", (1.0, 1.0)))
    half_x = max(1, int(round(size_um / mpp / sx / 2)))
    half_y = max(1, int(round(size_um / mpp / sy / 2)))
    cx, cy = int(xy[0] / sx), int(xy[1] / sy)
    crop = np.full((2 * half_y, 2 * half_x, 3), 255, dtype=np.uint8)
    r0, c0 = cy - half_y, cx - half_x
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(cy + half_y, thumb.shape[0]), min(cx + half_x, thumb.shape[1])
    if re > rs and ce > cs:
        crop[rs - r0 : re - r0, cs - c0 : ce - c0] = thumb[rs:re, cs:ce, :3]
    return _resize(crop, out_px)


def _reader(adata: AnnData):
    """An open :class:`~workbench.io.Slide` for the recorded path, or ``None``."""
    slide = adata.uns.get(REGION_GRAPH, {}).get("slide", {}) or {}
    path = slide.get("path") if hasattr(slide, "get") else None
    if not path or str(path).startswith("<"):
        return None
    from pathlib import Path

    if not Path(path).is_file():
        return None
    from workbench.io import Slide

    try:
        return Slide(path, mpp=slide.get("mpp"))
    except Exception as exc:  # noqa: BLE001 - any unreadable file falls back to the thumbnail
        logger.info("exemplars: cannot open %s (%s); using the thumbnail", path, exc)
        return None


def _one_uniqueness_space(adatas: Sequence[AnnData]) -> bool:
    """Whether every slide's ``obsm["X_uniqueness"]`` comes from one fitted model (the same
    fitting slides). Cross-fitted folds (``tl.discover(folds=k)``) each have their own
    standardisation and PCA basis, often of another width: not one space to measure in."""
    fits = set()
    for a in adatas:
        if X_UNIQUENESS not in a.obsm:
            return False
        params = (a.uns.get(FEATURE_UNIQUENESS) or {}).get("params") or {}
        fit = np.asarray(params.get("fit_slides", []), dtype=object).ravel()
        fits.add(tuple(str(s) for s in fit))
    return len(fits) <= 1


def phenotype_exemplars(
    adatas: Sequence[AnnData],
    *,
    key: str = PHENOTYPE,
    n_per_phenotype: int = 6,
    size_um: float = 200.0,
    out_px: int = 96,
    include_other: bool = False,
) -> dict:
    """Pick typical regions of every phenotype and cut a crop around each.

    Parameters
    ----------
    adatas
        Per-slide region AnnData with ``obs[key]`` (``tl.markers`` / ``tl.discover``) and
        ``obsm["spatial"]``.
    key
        ``obs`` column of the phenotypes.
    n_per_phenotype
        Crops per phenotype (fewer when a phenotype has fewer regions).
    size_um
        Side of each crop in µm.
    out_px
        Side of each stored crop in pixels.
    include_other
        Also show the regions that match no phenotype (``"other"``).

    Returns
    -------
    dict
        ``{"params": {...}, "phenotypes": {name: {"crops": uint8 (n, out_px, out_px, 3),
        "slides": [slide id per crop], "xy": float (n, 2) level-0 centroids, "n_regions":
        int, "n_slides": int, "source": "slide" | "thumbnail" per crop}}}``; a phenotype
        without a readable crop keeps its counts and an empty ``crops`` array.
    """
    if n_per_phenotype < 1:
        raise ValueError(f"n_per_phenotype must be at least 1, got {n_per_phenotype}")
    if size_um <= 0:
        raise ValueError(f"size_um must be positive, got {size_um}")
    missing = [i for i, a in enumerate(adatas) if key not in a.obs or SPATIAL not in a.obsm]
    if missing:
        raise MarkerError(
            f"{len(missing)} slide AnnData lack obs[{key!r}] or obsm['spatial']; assign the "
            "phenotypes first (workbench.tl.markers or workbench.tl.discover)"
        )
    names: list[str] = []
    for a in adatas:
        col = a.obs[key]
        cats = list(col.cat.categories) if hasattr(col, "cat") else sorted(set(col.astype(str)))
        names += [str(c) for c in cats if str(c) not in names]
    if not include_other:
        names = [n for n in names if n != OTHER]
    rep = X_UNIQUENESS if _one_uniqueness_space(adatas) else X_FOCUS
    out: dict = {
        "params": {"key": key, "n_per_phenotype": int(n_per_phenotype), "size_um": float(size_um),
                   "out_px": int(out_px), "chosen_by": f"nearest to the phenotype mean in {rep}"},
        "phenotypes": {},
    }  # fmt: skip
    readers: dict[int, object] = {}
    try:
        for name in names:
            members = []  # (slide index, region index)
            for i, a in enumerate(adatas):
                idx = np.flatnonzero(a.obs[key].astype(str).to_numpy() == name)
                members += [(i, j) for j in idx]
            entry = {"n_regions": len(members), "n_slides": len({i for i, _ in members})}
            crops, slides, xys, sources = [], [], [], []
            if members and all(rep in adatas[i].obsm for i in {i for i, _ in members}):
                Z = np.vstack([np.asarray(adatas[i].obsm[rep])[j] for i, j in members])
                dist = np.linalg.norm(Z - Z.mean(axis=0), axis=1)
                order = np.argsort(dist, kind="stable")
                # One region per slide in order of typicality, then second ones, and so on.
                rank_in_slide: dict[int, int] = {}
                keyed = []
                for o in order:
                    i = members[o][0]
                    keyed.append((rank_in_slide.get(i, 0), len(keyed), o))
                    rank_in_slide[i] = rank_in_slide.get(i, 0) + 1
                chosen = [o for _, _, o in sorted(keyed)]
                for o in chosen:
                    if len(crops) >= n_per_phenotype:
                        break
                    i, j = members[o]
                    a = adatas[i]
                    xy = np.asarray(a.obsm[SPATIAL], dtype=float)[j]
                    mpp = float(
                        (a.uns.get(REGION_GRAPH, {}).get("slide", {}) or {}).get("mpp") or 0
                    )
                    crop, source = None, ""
                    if i not in readers:
                        readers[i] = _reader(a)
                    if readers[i] is not None and mpp > 0:
                        half = size_um / mpp / 2
                        try:
                            crop = readers[i].read_region(
                                (xy[0] - half, xy[1] - half), (out_px, out_px),
                                mpp=size_um / out_px,
                            )  # fmt: skip
                            source = "slide"
                        except Exception as exc:  # noqa: BLE001 - fall back to the thumbnail
                            logger.info("exemplars: slide read failed (%s); thumbnail", exc)
                    if crop is None and mpp > 0:
                        crop = _from_thumbnail(a, xy, size_um, out_px, mpp)
                        source = "thumbnail"
                    if crop is None:
                        continue
                    crops.append(np.asarray(crop, dtype=np.uint8)[..., :3])
                    slides.append(slide_id_of(a, fallback=f"slide_{i}"))
                    xys.append(xy)
                    sources.append(source)
            entry["crops"] = (
                np.stack(crops) if crops else np.zeros((0, out_px, out_px, 3), dtype=np.uint8)
            )
            entry["slides"] = slides
            entry["xy"] = np.asarray(xys, dtype=float).reshape(-1, 2)
            entry["source"] = sources
            out["phenotypes"][name] = entry
    finally:
        for r in readers.values():
            if r is not None:
                r.close()
    n = sum(len(e["crops"]) for e in out["phenotypes"].values())
    logger.info("phenotype exemplars: %d crops of %d phenotypes", n, len(out["phenotypes"]))
    return out

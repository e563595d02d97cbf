"""Plots of the phenotypes written by ``tl.markers`` and of the marker families written by
``tl.marker_families`` (they read, they never refit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench._constants import (
    FEATURE_UNIQUENESS,
    MARKER_FAMILIES,
    PHENOTYPE,
    REGION_GRAPH,
    X_UNIQUENESS,
)

if TYPE_CHECKING:
    import anndata
    from matplotlib.axes import Axes

_OTHER_RGBA = (0.8, 0.8, 0.8, 0.0)


def _palette(n: int) -> np.ndarray:
    from matplotlib import colormaps

    return np.asarray(colormaps["tab10"](np.arange(n) % 10))


def _phenotypes(adata: anndata.AnnData, key: str) -> pd.Categorical:
    if key not in adata.obs:
        raise KeyError(f"adata.obs[{key!r}] is missing; run workbench.tl.markers first")
    return adata.obs[key].astype("category").cat


def marker_map(
    adata: anndata.AnnData,
    *,
    key: str = PHENOTYPE,
    ax: Axes | None = None,
    alpha: float = 0.6,
    legend: bool = True,
    title: bool = True,
) -> Axes:
    """Phenotypes painted over the slide thumbnail (one colour per phenotype, "other" clear).

    Parameters
    ----------
    adata
        A region AnnData with ``obs[key]`` and ``uns["region_graph"]`` (``labels``,
        ``thumbnail``).
    key
        ``obs`` column of phenotypes.
    ax
        Axes to draw on (a new figure otherwise).
    alpha
        Opacity of the phenotype colours.
    legend, title
        Draw a legend / the slide id as title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax`` when given, else a new figure's).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cat = _phenotypes(adata, key)
    graph = adata.uns.get(REGION_GRAPH, {})
    if "labels" not in graph or "thumbnail" not in graph:
        raise KeyError(
            "adata.uns['region_graph'] needs 'labels' and 'thumbnail' to draw a marker map"
        )
    labels = np.asarray(graph["labels"])
    thumb = np.asarray(graph["thumbnail"])
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6 * labels.shape[0] / max(labels.shape[1], 1)))
    names = [str(c) for c in cat.categories]
    colours = _palette(len(names))
    colours[[n == "other" for n in names]] = _OTHER_RGBA
    region_ids = (
        adata.obs["region_id"].to_numpy(dtype=np.int64)
        if "region_id" in adata.obs
        else np.arange(1, adata.n_obs + 1)
    )
    lut = np.zeros((max(int(labels.max()), int(region_ids.max())) + 1, 4))
    codes = cat.codes.to_numpy()
    lut[region_ids[codes >= 0]] = colours[codes[codes >= 0]]
    overlay = lut[labels]
    overlay[..., 3] *= alpha
    ax.imshow(thumb)
    ax.imshow(overlay)
    ax.set_axis_off()
    if legend:
        handles = [Patch(color=colours[i], label=n) for i, n in enumerate(names) if n != "other"]
        ax.legend(handles=handles, loc="lower right", fontsize="small", frameon=True)
    if title:
        ax.set_title(str(adata.uns.get("slide_id", "")))
    return ax


def uniqueness(
    adatas: anndata.AnnData | Sequence[anndata.AnnData],
    *,
    key: str = PHENOTYPE,
    components: tuple[int, int] = (0, 1),
    max_points: int = 5000,
    ax: Axes | None = None,
    seed: int = 0,
) -> Axes:
    """Regions in the feature-uniqueness PCA space, coloured by phenotype, with every cluster
    centroid annotated by its group and uniqueness score.

    Parameters
    ----------
    adatas
        One or several slides carrying ``obsm["X_uniqueness"]``, ``obs[key]`` and
        ``uns["feature_uniqueness"]``.
    key
        ``obs`` column of phenotypes.
    components
        The two principal components to show (0-based).
    max_points
        Regions drawn at most (a seeded subsample).
    ax
        Axes to draw on.
    seed
        Seed of the subsample.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax`` when given, else a new figure's).
    """
    import anndata as ad_mod
    import matplotlib.pyplot as plt

    if isinstance(adatas, ad_mod.AnnData):
        adatas = [adatas]
    if not adatas or FEATURE_UNIQUENESS not in adatas[0].uns or X_UNIQUENESS not in adatas[0].obsm:
        raise KeyError(
            "no uns['feature_uniqueness'] / obsm['X_uniqueness']; run workbench.tl.markers first"
        )
    Z = np.vstack([np.asarray(a.obsm[X_UNIQUENESS]) for a in adatas])
    lab = pd.Categorical(
        np.concatenate([a.obs[key].astype(str).to_numpy() for a in adatas]),
        categories=[str(c) for c in _phenotypes(adatas[0], key).categories],
    )
    i, j = components
    rng = np.random.default_rng(seed)
    take = rng.choice(len(Z), min(max_points, len(Z)), replace=False)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    colours = _palette(len(lab.categories))
    for c, name in enumerate(lab.categories):
        sel = take[lab.codes[take] == c]
        col = (0.75, 0.75, 0.75, 0.4) if name == "other" else colours[c]
        ax.scatter(Z[sel, i], Z[sel, j], s=4, color=col, label=name, rasterized=True)
    table = adatas[0].uns[FEATURE_UNIQUENESS]["clusters"]
    cols = {0: "pc1", 1: "pc2"}
    if i in cols and j in cols:
        for _, row in table.iterrows():
            x, y = row[cols[i]], row[cols[j]]
            chosen = bool(row.get("phenotype", ""))
            ax.scatter([x], [y], marker="*" if chosen else "x", s=120 if chosen else 40, color="k")
            if chosen:
                tag = f"{row['phenotype']} ({row['cluster']}, {row['uniqueness']:+.3f})"
                ax.annotate(tag, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
            else:
                tag = f"{row['cluster']} {row['uniqueness']:+.3f}"
                ax.annotate(
                    tag, (x, y), fontsize=6, color="0.4", xytext=(4, -9), textcoords="offset points"
                )
    ax.set_xlabel(f"PC{i + 1}")
    ax.set_ylabel(f"PC{j + 1}")
    ax.set_title("feature uniqueness (clusters: group:index, score)")
    ax.legend(markerscale=3, fontsize="small")
    return ax


def marker_families(
    adata: anndata.AnnData,
    *,
    key: str = MARKER_FAMILIES,
    max_markers: int = 60,
    ax: Axes | None = None,
) -> Axes:
    """Absolute Spearman rho between the cohort's markers, ordered and outlined by marker family.

    Parameters
    ----------
    adata
        Cohort AnnData after ``tl.marker_families``.
    key
        ``uns`` key of the families.
    max_markers
        Markers drawn at most (the largest families first).
    ax
        Axes to draw on.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax`` when given, else a new figure's).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if key not in adata.uns:
        raise KeyError(f"adata.uns[{key!r}] is missing; run workbench.tl.marker_families first")
    stored = adata.uns[key]
    members = pd.DataFrame(stored["members"])
    corr = pd.DataFrame(stored["correlation"])
    n_families = members["family"].nunique()
    members = members[members.index.isin(corr.index)]  # constant markers have no correlation
    sizes = members.groupby("family").size().sort_values(ascending=False, kind="stable")
    order = []
    for fam in sizes.index:
        block = members[members["family"] == fam]
        order += [fam] + [m for m in block.index if m != fam]
    order = order[:max_markers]
    mat = corr.loc[order, order].abs().to_numpy()
    if ax is None:
        side = 2.5 + 0.16 * len(order)
        _, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    start = 0
    for fam in sizes.index:
        n = int(min(sizes[fam], max(len(order) - start, 0)))
        if n <= 0:
            break
        if n > 1:
            ax.add_patch(Rectangle((start - 0.5, start - 0.5), n, n, fill=False, ec="w", lw=1.5))
        start += n
    ax.set_xticks(range(len(order)))
    ax.set_yticks(range(len(order)))
    ax.set_xticklabels(order, rotation=90, fontsize=6)
    ax.set_yticklabels(order, fontsize=6)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|Spearman rho|")
    params = stored.get("params", {})
    ax.set_title(
        f"{n_families} marker families (|rho| >= {params.get('threshold', '?')}, "
        f"{params.get('n_patients', '?')} {params.get('patients', '')} patients)",
        fontsize=9,
    )
    return ax

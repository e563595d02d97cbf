"""Plots of what :func:`workbench.tl.extract` stored: never recomputes anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import EXPLAIN, FOCUS_COLOR, LESION_COLOR, REGION_GRAPH

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["focus_gallery", "slide_overlay"]


def _explain(adata: anndata.AnnData) -> dict:
    if EXPLAIN not in adata.uns or REGION_GRAPH not in adata.uns:
        raise KeyError(
            "adata lacks uns['explain'] or uns['region_graph']; run workbench.tl.extract first"
        )
    return adata.uns[EXPLAIN]


def _rgb(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in color)


def _is_survival(ex: dict) -> bool:
    return ex.get("target") == "survival"


def _risk_norm(adata: anndata.AnnData, key: str = "focus_score", center: float | None = None):
    """Diverging colour scale of a survival model's region scores.

    Centred at ``center`` (default: the slide's median region score), so that regions above
    the slide's typical region (pushing its risk up) read warm and those below read cool.
    """
    from matplotlib.colors import TwoSlopeNorm

    if center is None:
        values = adata.obs[key].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        center = float(np.median(values)) if values.size else 0.5
    # TwoSlopeNorm needs vmin < vcenter < vmax.
    center = float(np.clip(center, 1e-3, 1.0 - 1e-3))
    return TwoSlopeNorm(vcenter=center, vmin=0.0, vmax=1.0)


def region_values(adata: anndata.AnnData, key: str) -> np.ndarray:
    """Paint ``obs[key]`` onto the thumbnail label image (NaN on background)."""
    labels = np.asarray(adata.uns[REGION_GRAPH]["labels"])
    values = adata.obs[key].to_numpy(dtype=float)
    ids = (
        adata.obs["region_id"].to_numpy()
        if "region_id" in adata.obs
        else np.arange(1, adata.n_obs + 1)
    )
    lut = np.full(int(max(labels.max(), ids.max())) + 1, np.nan)
    lut[ids] = values
    return lut[labels]


def slide_overlay(
    adata: anndata.AnnData,
    *,
    key: str = "focus_score",
    ax: Axes | None = None,
    cmap: str | None = None,
    alpha: float = 0.5,
    lesions: bool = True,
    boxes: bool = True,
    title: bool = True,
    center: float | None = None,
) -> Axes:
    """Thumbnail with a per-region heat map, lesion outlines and the top-K focus boxes.

    Parameters
    ----------
    adata
        Output of :func:`workbench.tl.extract`.
    key
        ``obs`` column painted as the heat map (``"focus_score"`` or ``"lesion_prob"``).
    ax
        Axes to draw into (a new figure when ``None``).
    cmap, alpha
        Heat map colour map (default ``"magma"``; ``"RdBu_r"`` for a survival model) and
        opacity.
    lesions
        Outline the lesion maps of the focus regions (at the extraction's threshold; never
        for a survival model, whose lesion maps were not trained on lesion).
    boxes
        Draw and number the focus regions.
    title
        Put the predicted class and its probability in the title (a survival model: its risk,
        higher = shorter survival).
    center
        Survival models only: the region score at the white middle of the diverging map
        (default: the slide's median region score, so red marks the regions that push this
        slide's risk up more than its typical region, blue those that push it up less).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax`` when given, else a new figure's).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ex = _explain(adata)
    rg = adata.uns[REGION_GRAPH]
    thumb = np.asarray(rg["thumbnail"])
    sx, sy = (float(v) for v in rg["scale_xy"])
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6 * thumb.shape[0] / max(thumb.shape[1], 1)))
    ax.imshow(thumb)
    heat = np.ma.masked_invalid(region_values(adata, key))
    survival = _is_survival(ex)
    if survival:
        norm = _risk_norm(adata, key, center)
        im = ax.imshow(heat, cmap=cmap or "RdBu_r", alpha=alpha, norm=norm)
        lesions = False
    else:
        im = ax.imshow(heat, cmap=cmap or "magma", alpha=alpha, vmin=0.0, vmax=1.0)
    im.set_label(f"heat:{key}")
    focus = ex["focus"]
    thr = float(ex.get("lesion_threshold", 0.5))
    maps = np.asarray(focus["lesion_maps"])
    for i, (x, y, w, h) in enumerate(np.asarray(focus["boxes_xywh"], dtype=float)):
        # Level-0 box -> thumbnail pixel coordinates (imshow puts pixel centres at integers).
        tx, ty, tw, th = x / sx - 0.5, y / sy - 0.5, w / sx, h / sy
        if lesions and maps[i].max() >= thr and maps[i].min() < thr:
            m = maps[i]
            xs = tx + (np.arange(m.shape[1]) + 0.5) * tw / m.shape[1]
            ys = ty + (np.arange(m.shape[0]) + 0.5) * th / m.shape[0]
            ax.contour(xs, ys, m, levels=[thr], colors=[_rgb(LESION_COLOR)], linewidths=1.0)
        if boxes:
            ax.add_patch(
                Rectangle(
                    (tx, ty),
                    tw,
                    th,
                    fill=False,
                    edgecolor=_rgb(FOCUS_COLOR),
                    linewidth=1.5,
                    label=f"focus {i + 1}",
                )
            )
            ax.text(tx, ty, str(i + 1), color=_rgb(FOCUS_COLOR), fontsize=8, va="bottom")
    if boxes and focus.get("peak_source", "center") != "center":
        # where in each magnified focus region the lesion evidence peaks (tl.focus_peaks)
        px, py = np.asarray(focus["peak_xy"], dtype=float).reshape(-1, 2).T
        ax.plot(px / sx - 0.5, py / sy - 0.5, "+", color=_rgb(FOCUS_COLOR), ms=7, mew=1.5,
                ls="none", label="lesion peak")  # fmt: skip
    ax.set_xlim(-0.5, thumb.shape[1] - 0.5)
    ax.set_ylim(thumb.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    graded = (
        np.isfinite(float(ex["risk"])) if survival else int(ex["predicted_class"]) >= 0
    )  # tl.extract gives no grade to a slide that is not brightfield H&E (applicability)
    if title and not graded:
        ax.set_title("not graded (not brightfield H&E)")
    elif title and survival:
        ax.set_title(f"risk {float(ex['risk']):.2f} (higher = shorter survival)")
    elif title:
        p = float(np.asarray(ex["probabilities"])[int(ex["predicted_class"])])
        ax.set_title(f"{ex['predicted_label']} (p = {p:.2f})")
    return ax


def focus_gallery(
    adata: anndata.AnnData,
    *,
    fig: Figure | None = None,
    cmap: str = "viridis",
    panel_size: float = 2.5,
) -> Figure:
    """Magnified crops of the focus regions above their lesion maps.

    Parameters
    ----------
    adata
        Output of :func:`workbench.tl.extract`.
    fig
        Figure to draw into (a new one when ``None``).
    cmap
        Colour map of the lesion probability maps.
    panel_size
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        Two rows (crop; lesion map with its outline) and one column per focus region. For a
        survival model (``uns["explain"]["target"] == "survival"``) the titles give each
        region's *risk contribution* (its region score: how much it pushes the slide risk
        up) instead of a lesion probability, in a ``"RdBu_r"`` colour centred at the slide's
        median region score (red: above it), and there is one row (no lesion maps: a
        survival model's were not trained on lesion).
    """
    import matplotlib.pyplot as plt

    ex = _explain(adata)
    focus = ex["focus"]
    crops = np.asarray(focus["crops"])
    maps = np.asarray(focus["lesion_maps"])
    thr = float(ex.get("lesion_threshold", 0.5))
    k = len(crops)
    survival = _is_survival(ex)
    rows = 1 if survival else 2
    if fig is None:
        fig = plt.figure(figsize=(panel_size * max(k, 1), panel_size * rows))
    axes = fig.subplots(rows, max(k, 1), squeeze=False)
    if survival:
        import matplotlib

        norm, colours = _risk_norm(adata), matplotlib.colormaps["RdBu_r"]
        for i in range(k):
            score = float(focus["focus_score"][i])
            axes[0, i].imshow(crops[i])
            axes[0, i].set_title(
                f"{i + 1}: risk contribution {score:.2f}", fontsize=8, color=colours(norm(score))
            )
            axes[0, i].set_axis_off()
    for i in range(k if not survival else 0):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(crops[i])
        lesion = float(focus["lesion_prob"][i])
        has_map = bool(np.isfinite(maps[i]).any())  # kinds without a detail branch: NaN maps
        top.set_title(
            f"{i + 1}: focus {float(focus['focus_score'][i]):.2f}\n"
            + (f"lesion {lesion:.2f}" if np.isfinite(lesion) else "no lesion map"),
            fontsize=8,
        )
        bottom.imshow(maps[i], cmap=cmap, vmin=0.0, vmax=1.0)
        if has_map and np.nanmax(maps[i]) >= thr and np.nanmin(maps[i]) < thr:
            bottom.contour(maps[i], levels=[thr], colors=[_rgb(LESION_COLOR)], linewidths=1.0)
        top.set_axis_off()
        bottom.set_axis_off()
    what = "prognostic focus regions" if survival else "focus regions"
    fig.suptitle(f"{what} at {float(focus['detail_mpp']):g} µm/px", fontsize=9)
    return fig

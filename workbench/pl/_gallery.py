"""The phenotype gallery: exemplar crops per phenotype, as ``tl.discover`` stored them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import PHENOTYPE_EXEMPLARS

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    from matplotlib.figure import Figure

__all__ = ["phenotype_gallery"]


def phenotype_gallery(
    adata: anndata.AnnData,
    *,
    phenotypes: list[str] | None = None,
    n_per_phenotype: int | None = None,
    panel_size: float = 1.3,
    fig: Figure | None = None,
) -> Figure:
    """One row per phenotype: crops of its most typical regions, from several slides.

    Reads ``uns["phenotype_exemplars"]`` (written by :func:`workbench.tl.discover`, or put
    there from :func:`workbench.tl.phenotype_exemplars`); never reads a slide.

    Parameters
    ----------
    adata
        The cohort AnnData of ``tl.discover``.
    phenotypes
        Rows to draw, in this order (default: every stored phenotype).
    n_per_phenotype
        Crops per row (default: as many as stored).
    panel_size
        Inches per crop.
    fig
        Figure to draw into (a new one when ``None``).

    Returns
    -------
    matplotlib.figure.Figure
        One row of axes per phenotype; each row's first axes is labelled with the phenotype,
        its number of regions and slides, and each crop is titled with its slide.
    """
    import matplotlib.pyplot as plt

    if PHENOTYPE_EXEMPLARS not in adata.uns:
        raise KeyError(
            f"adata.uns[{PHENOTYPE_EXEMPLARS!r}] is missing; run workbench.tl.discover (or store "
            "workbench.tl.phenotype_exemplars(adatas) there)"
        )
    stored = adata.uns[PHENOTYPE_EXEMPLARS]
    table = dict(stored.get("phenotypes", {}))
    names = list(table) if phenotypes is None else list(phenotypes)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise KeyError(f"no exemplars of {unknown}; stored: {sorted(table)}")
    if not names:
        raise ValueError("uns['phenotype_exemplars'] holds no phenotype")
    counts = [len(np.asarray(table[n]["crops"])) for n in names]
    n_cols = max(1, max(counts) if n_per_phenotype is None else int(n_per_phenotype))
    if fig is None:
        fig = plt.figure(figsize=(panel_size * n_cols + 1.6, panel_size * len(names) + 0.4))
    axes = fig.subplots(len(names), n_cols, squeeze=False)
    size_um = float(stored.get("params", {}).get("size_um", np.nan))
    for r, name in enumerate(names):
        entry = table[name]
        crops = np.asarray(entry["crops"])
        slides = [str(s) for s in np.asarray(entry.get("slides", [])).ravel()]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(crops):
                ax.imshow(crops[c])
                if c < len(slides):
                    ax.set_title(slides[c], fontsize=6, pad=2)
        label = (
            f"{name}\n{int(entry.get('n_regions', 0))} regions\n"
            f"{int(entry.get('n_slides', 0))} slides"
        )
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
        if len(crops) == 0:
            axes[r, 0].text(0.5, 0.5, "no crop", ha="center", va="center", fontsize=7,
                            transform=axes[r, 0].transAxes)  # fmt: skip
    if np.isfinite(size_um):
        fig.suptitle(f"typical regions per phenotype, {size_um:g} µm squares", fontsize=9)
    return fig

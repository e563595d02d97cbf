"""Plots of the survival screen written by ``tl.survival`` (they read, they never re-test)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import SURVIVAL_SCREEN

if TYPE_CHECKING:
    import anndata
    import pandas as pd
    from matplotlib.axes import Axes


def _screen(adata: anndata.AnnData, key: str) -> tuple[pd.DataFrame, dict]:
    if key not in adata.uns:
        raise KeyError(f"adata.uns[{key!r}] is missing; run workbench.tl.survival first")
    return adata.uns[key], dict(adata.uns.get(f"{key}_params", {}))


def kaplan_meier(
    adata: anndata.AnnData,
    marker: str | None = None,
    *,
    key: str = SURVIVAL_SCREEN,
    ax: Axes | None = None,
    ci: bool = True,
) -> Axes:
    """Kaplan-Meier curves of the patients above vs at-or-below the marker's median.

    Uses the same patients as the screen (``uns[key + "_params"]["tested_patients"]``) and
    quotes the screen's log-rank p and q.

    Parameters
    ----------
    adata
        Cohort AnnData after ``tl.survival``.
    marker
        Marker name (default: the top row of the screen).
    key
        ``uns`` key of the screen.
    ax
        Axes to draw on.
    ci
        Draw confidence bands.

    Returns
    -------
    The axes.
    """
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter

    table, params = _screen(adata, key)
    marker = marker or str(table.index[0])
    if marker not in table.index:
        raise KeyError(f"marker {marker!r} is not in the screen; e.g. {list(table.index[:5])}")
    tested = params.get("tested_patients")
    sub = adata[adata.obs_names.isin(tested)] if tested is not None else adata
    dkey, ekey = params.get("duration_key", "time"), params.get("event_key", "event")
    x = np.asarray(sub[:, marker].X, dtype=float).ravel()
    ok = np.isfinite(x)
    T = sub.obs[dkey].to_numpy(dtype=float)[ok]
    E = sub.obs[ekey].to_numpy(dtype=int)[ok]
    high = x[ok] > np.median(x[ok])
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for name, sel, colour in (("above median", high, "C3"), ("at or below median", ~high, "C0")):
        if sel.any():
            KaplanMeierFitter(label=f"{name} (n={int(sel.sum())})").fit(
                T[sel], E[sel]
            ).plot_survival_function(ax=ax, ci_show=ci, color=colour)
    row = table.loc[marker]
    ax.set_title(
        f"{marker}\nlog-rank p={row['p_logrank']:.2g}, q={row['q_logrank']:.2g}", fontsize=9
    )
    ax.set_xlabel(dkey)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    return ax


def forest(
    adata: anndata.AnnData,
    *,
    key: str = SURVIVAL_SCREEN,
    top: int = 15,
    adjusted: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Hazard ratios per standard deviation (95% CI) of the top markers, called ones in red.

    Parameters
    ----------
    adata
        Cohort AnnData after ``tl.survival``.
    key
        ``uns`` key of the screen.
    top
        Number of markers (smallest Cox p first).
    adjusted
        Also mark the covariate-adjusted hazard ratio (when the screen has one).
    ax
        Axes to draw on.

    Returns
    -------
    The axes.
    """
    import matplotlib.pyplot as plt

    table, params = _screen(adata, key)
    rows = table[table["hr"].notna()].head(top)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * max(len(rows), 1) + 1.2))
    y = np.arange(len(rows))[::-1]
    colours = np.where(rows["called"].to_numpy(dtype=bool), "C3", "0.3")
    err = np.vstack([rows["hr"] - rows["hr_lower"], rows["hr_upper"] - rows["hr"]])
    for k in range(len(rows)):
        ax.errorbar(
            rows["hr"].iloc[k], y[k], xerr=err[:, [k]], fmt="o", color=colours[k], capsize=2
        )
    if adjusted and "hr_adj" in rows:
        ax.scatter(
            rows["hr_adj"], y, marker="d", facecolor="none", edgecolor="k", label="adjusted HR"
        )
        ax.legend(fontsize="small")
    ax.axvline(1.0, color="0.6", lw=1, ls="--")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    lo, hi = ax.get_xlim()
    ticks = [t for t in (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0) if lo <= t <= hi] or [1.0]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y)
    ax.set_yticklabels(
        [f"{m}  (q={q:.2g})" for m, q in zip(rows.index, rows["q_cox"], strict=True)], fontsize=7
    )
    ax.set_xlabel("hazard ratio per SD (95% CI)")
    ax.set_title(
        f"survival screen, {len(params.get('tested_patients', []))} patients, FDR {params.get('fdr', '')}"
    )
    return ax

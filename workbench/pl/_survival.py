"""Plots of the survival screen written by ``tl.survival`` (they read, they never re-test)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import SURVIVAL_FAMILIES, SURVIVAL_SCREEN

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
    time_unit: str | None = None,
    at_risk: bool = True,
) -> Axes:
    """Kaplan-Meier curves of the patients above vs at-or-below the marker's median.

    Uses the same patients as the screen (``uns[key + "_params"]["tested_patients"]``) and
    quotes the screen's log-rank p and q.

    Parameters
    ----------
    adata
        Cohort AnnData after ``tl.survival``.
    marker
        Marker name (default: the strongest member of the top family when the screen has
        families, else the top row of the screen).
    key
        ``uns`` key of the screen.
    ax
        Axes to draw on.
    ci
        Draw confidence bands.
    time_unit
        Unit of the follow-up times (``"months"``), shown on the time axis; when ``None``,
        ``uns[key + "_params"]["time_unit"]`` if recorded, else the axis reads just the
        duration column's name.
    at_risk
        Add the numbers at risk of each group below the axis (lifelines'
        ``add_at_risk_counts``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax`` when given, else a new figure's).
    """
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    table, params = _screen(adata, key)
    if marker is None:
        fam = adata.uns.get(_families_key(key))
        marker = str(fam["best"].iloc[0]) if fam is not None and len(fam) else str(table.index[0])
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
    fitters = []
    for name, sel, colour in (("above median", high, "C3"), ("at or below median", ~high, "C0")):
        if sel.any():
            km = KaplanMeierFitter(label=f"{name} (n={int(sel.sum())})").fit(T[sel], E[sel])
            km.plot_survival_function(ax=ax, ci_show=ci, color=colour)
            fitters.append(km)
    row = table.loc[marker]
    ax.set_title(
        f"{marker}\nlog-rank p={row['p_logrank']:.2g}, q={row['q_logrank']:.2g}", fontsize=9
    )
    unit = time_unit if time_unit is not None else params.get("time_unit")
    ax.set_xlabel(f"{dkey} ({unit})" if unit else dkey)
    if at_risk and fitters:
        # Short row labels: the legend already says which group is which.
        short = [f.label.split(" (")[0] for f in fitters]
        add_at_risk_counts(*fitters, ax=ax, labels=short, rows_to_show=["At risk"])
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    return ax


def _families_key(key: str) -> str:
    return SURVIVAL_FAMILIES if key == SURVIVAL_SCREEN else f"{key}_families"


def _rows(
    adata: anndata.AnnData, key: str, families: bool | None, top: int
) -> tuple[pd.DataFrame, dict, bool, str]:
    """The rows to draw: families (when asked or available) or markers, with HR columns."""
    import pandas as pd

    table, params = _screen(adata, key)
    fkey = _families_key(key)
    if families is None:
        families = fkey in adata.uns
    if families:
        if fkey not in adata.uns:
            raise KeyError(
                f"adata.uns[{fkey!r}] is missing; group the markers first "
                "(workbench.tl.marker_families, then tl.survival) or pass families=False"
            )
        fam = adata.uns[fkey]
        fam = fam if isinstance(fam, pd.DataFrame) else pd.DataFrame(fam)
        rows = fam[fam["hr"].notna()].head(top).copy()
        rows["q"] = rows["q_family"]
        return rows, params, True, "hr"
    stratified = str(params.get("decided_by", "q_cox")) == "q_strat" and "hr_strat" in table
    hr = "hr_strat" if stratified else "hr"
    rows = table[table[hr].notna()].head(top).copy()
    rows["q"] = rows["q_strat" if stratified else "q_cox"]
    if stratified:
        rows[["hr", "hr_lower", "hr_upper"]] = rows[
            ["hr_strat", "hr_strat_lower", "hr_strat_upper"]
        ]
    return rows, params, False, hr


def forest(
    adata: anndata.AnnData,
    *,
    key: str = SURVIVAL_SCREEN,
    families: bool | None = None,
    top: int = 15,
    adjusted: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Hazard ratios per standard deviation (95% CI), one row per marker family or marker.

    Called rows are red; rows whose marker is mostly site (``mostly_site``, the site guard
    of ``tl.survival``) are drawn as open squares and labelled ``[site]``. With a site-stratified
    screen the stratified hazard ratios are shown.

    Parameters
    ----------
    adata
        Cohort AnnData after ``tl.survival``.
    key
        ``uns`` key of the screen.
    families
        One row per marker family (``uns["survival_families"]``): the best member's hazard
        ratio, labelled with the family's name, its size and, when another member is
        strongest, that member. Default: when the screen has families.
    top
        Number of rows (smallest p first).
    adjusted
        Also mark the covariate-adjusted hazard ratio (markers only, when the screen has one).
    ax
        Axes to draw on.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax`` when given, else a new figure's).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows, params, by_family, _ = _rows(adata, key, families, top)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.35 * max(len(rows), 1) + 1.4))
    y = np.arange(len(rows))[::-1]
    called = rows["called"].to_numpy(dtype=bool)
    site = (
        rows["mostly_site"].fillna(False).to_numpy(dtype=bool)
        if "mostly_site" in rows
        else np.zeros(len(rows), dtype=bool)
    )
    err = np.vstack([rows["hr"] - rows["hr_lower"], rows["hr_upper"] - rows["hr"]])
    for k in range(len(rows)):
        colour = "C3" if called[k] else "0.3"
        ax.errorbar(
            rows["hr"].iloc[k], y[k], xerr=err[:, [k]], fmt="s" if site[k] else "o",
            color=colour, mfc="white" if site[k] else colour, capsize=2,
        )  # fmt: skip
    if adjusted and not by_family and "hr_adj" in rows:
        ax.scatter(
            rows["hr_adj"], y, marker="d", facecolor="none", edgecolor="k", label="adjusted HR"
        )
    ax.axvline(1.0, color="0.6", lw=1, ls="--")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    lo, hi = ax.get_xlim()
    ticks = [t for t in (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0) if lo <= t <= hi] or [1.0]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y)
    labels = []
    for name, row in rows.iterrows():
        text = str(name)
        if by_family:
            n = int(row["n_members"])
            more = f" +{n - 1}" if n > 1 else ""
            best = f", best {row['best']}" if str(row["best"]) != str(name) else ""
            text = f"{name}{more}{best}"
        labels.append(
            f"{text}{' [site]' if row.get('mostly_site', False) else ''}  (q={row['q']:.2g})"
        )
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel(
        "hazard ratio per SD (95% CI)"
        + (", stratified by site" if params.get("stratified_by_site") else "")
    )
    what = "marker families" if by_family else "markers"
    ax.set_title(
        f"survival screen ({what}), {len(params.get('tested_patients', []))} patients, "
        f"FDR {params.get('fdr', '')}",
        fontsize=9,
    )
    handles = [Line2D([], [], color="C3", marker="o", ls="", label="called")]
    if site.any():
        handles.append(
            Line2D([], [], color="0.3", marker="s", mfc="white", ls="", label="mostly site")
        )
    if adjusted and not by_family and "hr_adj" in rows:
        handles.append(
            Line2D([], [], color="k", marker="d", mfc="none", ls="", label="adjusted HR")
        )
    if called.any() or site.any() or len(handles) > 1:
        ax.legend(handles=handles, fontsize="small", loc="best")
    return ax

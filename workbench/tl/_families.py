"""Marker families: markers that carry the same signal are reported as one discovery.

Spatial markers come in near-synonyms: the share of the lesion margin that is immune and the
share that is stroma are compositional complements, the co-occurrence ratios at 100, 250 and
500 µm follow each other, and abundance drags several others along. A screen that counts each
of them as a discovery reports eighteen findings where there are three.

:func:`marker_families` groups the markers whose per-patient values are strongly associated,
without looking at the outcome: Spearman correlation between every pair of markers (pairwise
complete patients), average-linkage hierarchical clustering on the distance ``1 - |rho|``,
cut at ``1 - threshold``. Two families merge only if their members correlate, on average, by
at least ``threshold`` in absolute value (a negative correlation is the same signal seen from
the other side). Each family is named by its most interpretable member (:data:`KIND_ORDER`:
a margin density reads more directly than a Ripley's L), ties broken by how central the member
is in its family.

:func:`family_screen` turns a per-marker survival screen into one row per family: the best
member (smallest p), its hazard ratio, and a family p-value (Simes' combination of the
members' p-values, valid when the members' tests are positively dependent, as strongly
correlated markers are), with Benjamini-Hochberg q-values across families.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import DISCOVERY_SPLIT, MARKER_FAMILIES, MARKER_FAMILY
from workbench.tl._stats import benjamini_hochberg, simes

logger = logging.getLogger(__name__)

#: Marker kinds from the most to the least directly interpretable (``tl.spatial`` names).
KIND_ORDER = (
    "boundary_density",
    "boundary_share",
    "abundance",
    "lesion_share",
    "nhood_z",
    "cooc",
    "moran",
    "ripley_L",
)


def _kind_rank(name: str) -> int:
    kind = str(name).split(":", 1)[0]
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _patients(adata: AnnData, patients: str | Sequence[str] | None, min_patients: int):
    if patients is None:
        if DISCOVERY_SPLIT in adata.obs:
            disc = (adata.obs[DISCOVERY_SPLIT] == "discovery").to_numpy()
            if disc.sum() >= min_patients:
                return disc, "discovery"
        return np.ones(adata.n_obs, dtype=bool), "all"
    if isinstance(patients, str):
        if patients == "all":
            return np.ones(adata.n_obs, dtype=bool), "all"
        if DISCOVERY_SPLIT not in adata.obs:
            raise ValueError(f"patients={patients!r} needs obs[{DISCOVERY_SPLIT!r}]")
        return (adata.obs[DISCOVERY_SPLIT] == patients).to_numpy(), patients
    return adata.obs_names.isin([str(p) for p in patients]), "list"


def marker_families(
    adata: AnnData,
    *,
    threshold: float = 0.7,
    patients: str | Sequence[str] | None = None,
    markers: Sequence[str] | None = None,
    min_patients: int = 10,
    key_added: str = MARKER_FAMILIES,
) -> pd.DataFrame:
    """Group the cohort's markers into families of strongly associated markers.

    Parameters
    ----------
    adata
        Cohort AnnData from ``tl.aggregate`` (obs = patients, X = markers).
    threshold
        Average absolute Spearman rho at which markers (and families) merge; 1 keeps every marker
        on its own.
    patients
        Whose values define the correlations: default the ``"discovery"`` patients when
        ``obs["discovery_split"]`` has at least ``min_patients`` of them, else everyone (the
        outcome is never used, so no patient is tested on anything chosen with its outcome);
        ``"all"``, ``"discovery"``, ``"validation"`` or a list of ids to override.
    markers
        Markers to group (default every marker); markers with fewer than ``min_patients``
        values, or constant ones, form families of their own.
    min_patients
        Fewest patients with both values for a correlation to count.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    pandas.DataFrame
        One row per marker: ``family`` (the name of its family = its representative
        member), ``representative``, ``n_members``, ``rho`` (Spearman rho with the
        representative), ``kind``. Writes ``uns[key_added]`` = {``"members"``: that table,
        ``"correlation"``: the Spearman matrix, ``"params"``} and ``var["marker_family"]``.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    names = list(adata.var_names if markers is None else markers)
    unknown = [m for m in names if m not in adata.var_names]
    if unknown:
        raise KeyError(f"unknown marker(s) {unknown[:10]}; the cohort has {adata.n_vars} markers")
    mask, who = _patients(adata, patients, min_patients)
    X = adata[mask, names].X
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=float)
    values = pd.DataFrame(X, columns=names)
    usable = [
        m
        for m in names
        if values[m].notna().sum() >= min_patients and np.nanmax(values[m]) > np.nanmin(values[m])
    ]
    corr = values[usable].corr(method="spearman", min_periods=min_patients)
    corr = corr.fillna(0.0)
    np.fill_diagonal(corr.values, 1.0)

    labels = {}
    if len(usable) >= 2:
        dist = np.clip(1.0 - np.abs(corr.to_numpy()), 0.0, 2.0)
        dist = (dist + dist.T) / 2
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        cut = fcluster(tree, t=1.0 - threshold + 1e-12, criterion="distance")
        labels = dict(zip(usable, cut, strict=True))
    elif usable:
        labels = {usable[0]: 1}
    next_label = max(labels.values(), default=0) + 1
    for m in names:  # unusable markers stand alone
        if m not in labels:
            labels[m] = next_label
            next_label += 1

    rows = []
    groups: dict[int, list[str]] = {}
    for m in names:
        groups.setdefault(labels[m], []).append(m)
    for members in groups.values():
        sub = corr.reindex(index=members, columns=members).fillna(0.0).abs()
        centrality = (sub.sum(axis=1) - 1.0) / max(len(members) - 1, 1)
        rep = sorted(members, key=lambda m: (_kind_rank(m), -centrality[m], m))[0]
        for m in members:
            rho = 1.0 if m == rep else float(corr.reindex(index=[m], columns=[rep]).iloc[0, 0])
            rows.append(
                {
                    "marker": m,
                    "family": rep,
                    "representative": m == rep,
                    "n_members": len(members),
                    "rho": rho if np.isfinite(rho) else 0.0,
                    "kind": str(m).split(":", 1)[0],
                }
            )
    table = pd.DataFrame(rows).set_index("marker").loc[names]
    table.index.name = None
    adata.var[MARKER_FAMILY] = (
        table["family"]
        .reindex(adata.var_names)
        .fillna(pd.Series(adata.var_names, index=adata.var_names))
    )
    adata.uns[key_added] = {
        "members": table,
        "correlation": corr,
        "params": {
            "threshold": float(threshold),
            "method": "spearman, average linkage on 1 - |rho|",
            "patients": who,
            "n_patients": int(mask.sum()),
            "min_patients": int(min_patients),
        },
    }
    n_fam = table["family"].nunique()
    logger.info(
        "added adata.uns[%r] (%d markers in %d families, |rho| >= %g on %d %s patients)",
        key_added, len(table), n_fam, threshold, int(mask.sum()), who,
    )  # fmt: skip
    return table


def family_screen(
    screen: pd.DataFrame,
    members: pd.DataFrame,
    *,
    p_col: str = "p_cox",
    fdr: float = 0.05,
    flag_col: str | None = None,
) -> pd.DataFrame:
    """One row per marker family from a per-marker screen.

    Parameters
    ----------
    screen
        Per-marker survival screen (``tl.survival``'s table).
    members
        ``marker_families``' table (marker → family).
    p_col
        The p-value that decides (``p_cox``, or ``p_strat`` for the site-stratified Cox).
    fdr
        Level of ``called``.
    flag_col
        Boolean per-marker column carried over from the best member (e.g. ``mostly_site``).

    Returns
    -------
    pandas.DataFrame
        Indexed by family: ``n_members``, ``n_tested``, ``best`` (member with the smallest
        p), ``hr``/``hr_lower``/``hr_upper`` of the best member (of the model behind
        ``p_col``), ``p_best``, ``p_family`` (Simes), ``q_family`` (BH across families),
        ``called``, ``members`` (``"; "``-joined, best first), and ``flag_col`` when given;
        sorted by ``p_family``.
    """
    hr_cols = {"p_strat": ("hr_strat", "hr_strat_lower", "hr_strat_upper")}.get(
        p_col, ("hr", "hr_lower", "hr_upper")
    )
    fam_of = members["family"].reindex(screen.index)
    fam_of = fam_of.fillna(pd.Series(screen.index, index=screen.index))
    rows = []
    for fam, idx in fam_of.groupby(fam_of, sort=False).groups.items():
        sub = screen.loc[list(idx)]
        p = sub[p_col].to_numpy(dtype=float)
        order = np.argsort(np.where(np.isfinite(p), p, np.inf), kind="stable")
        ranked = sub.index[order]
        best = ranked[0]
        tested = int(np.isfinite(p).sum())
        row = {
            "family": fam,
            "n_members": len(sub),
            "n_tested": tested,
            "best": best,
            "hr": sub.loc[best, hr_cols[0]] if tested else np.nan,
            "hr_lower": sub.loc[best, hr_cols[1]] if tested else np.nan,
            "hr_upper": sub.loc[best, hr_cols[2]] if tested else np.nan,
            "p_best": float(p[order[0]]) if tested else np.nan,
            "p_family": simes(p),
            "members": "; ".join(map(str, ranked)),
        }
        if flag_col is not None and flag_col in sub:
            row[flag_col] = bool(sub.loc[best, flag_col]) if tested else False
        rows.append(row)
    table = pd.DataFrame(rows).set_index("family")
    table["q_family"] = benjamini_hochberg(table["p_family"])
    table["called"] = table["q_family"] < fdr
    table = table.sort_values("p_family", na_position="last")
    table.index.name = None
    cols = ["n_members", "n_tested", "best", "hr", "hr_lower", "hr_upper", "p_best", "p_family",
            "q_family", "called", *([flag_col] if flag_col in table else []), "members"]  # fmt: skip
    return table[cols]


__all__ = ["KIND_ORDER", "family_screen", "marker_families"]

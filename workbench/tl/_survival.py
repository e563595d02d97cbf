"""Survival screen of cohort markers with lifelines.

For each marker (a column of the cohort AnnData):

* univariable Cox proportional hazards on the standardised marker
  (``z = (x - mean) / sd``, sample sd), so hazard ratios are per standard deviation;
* log-rank test between patients above and at-or-below the median;
* Benjamini-Hochberg q-values across the markers that could be tested, for both tests;
* optionally a multivariable Cox with clinical covariates (adjusted hazard ratio);
* when the site (batch) of each patient is known, the site guard: the Cox model stratified
  by site (``p_strat``, which then decides the calls) and each marker's association with
  site (``tl._site``: Kruskal-Wallis ``q_site``, ``site_eta2``, ``mostly_site``);
* when the markers are grouped into families (``tl.marker_families``), one row per family
  in ``uns["survival_families"]`` (``tl._families.family_screen``).

**No double dipping.** When the cohort records which patients chose the markers
(``obs["discovery_split"]``, written by ``tl.aggregate`` after ``tl.markers``), only the
``"validation"`` patients are tested unless you ask otherwise. ``tl.discover`` runs the whole
chain with that split (or cross-fitting) made up front.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import (
    DISCOVERY_SPLIT,
    MARKER_FAMILIES,
    SURVIVAL_CV,
    SURVIVAL_FAMILIES,
    SURVIVAL_SCREEN,
)
from workbench._errors import ClinicalTableError, MarkerError, remedy
from workbench.io._clinical import _names, covariate_frame
from workbench.tl._families import family_screen, marker_families
from workbench.tl._site import site_association
from workbench.tl._stats import benjamini_hochberg

logger = logging.getLogger(__name__)

DISCOVERY, VALIDATION = "discovery", "validation"


def _select_patients(adata: AnnData, patients: str | Sequence[str] | None) -> np.ndarray:
    if patients is None:
        if DISCOVERY_SPLIT in adata.obs:
            patients = VALIDATION
        else:
            return np.ones(adata.n_obs, dtype=bool)
    if isinstance(patients, str):
        if patients == "all":
            if DISCOVERY_SPLIT in adata.obs:
                n_disc = int((adata.obs[DISCOVERY_SPLIT] == DISCOVERY).sum())
                if n_disc:
                    logger.warning(
                        "survival: testing ALL patients, including the %d that chose the "
                        "markers; p-values are optimistic (double dipping)",
                        n_disc,
                    )
            return np.ones(adata.n_obs, dtype=bool)
        if patients in (DISCOVERY, VALIDATION):
            if DISCOVERY_SPLIT not in adata.obs:
                raise MarkerError(
                    f"patients={patients!r} needs obs[{DISCOVERY_SPLIT!r}], which is missing"
                )
            return (adata.obs[DISCOVERY_SPLIT] == patients).to_numpy()
        raise ValueError(
            f"patients must be 'validation', 'discovery', 'all' or a list of ids, got {patients!r}"
        )
    wanted = pd.Index([str(p) for p in patients])
    unknown = wanted.difference(adata.obs_names)
    if len(unknown):
        raise ClinicalTableError(
            f"{len(unknown)} requested patient(s) are not in the cohort: {list(unknown[:10])}"
        )
    return adata.obs_names.isin(wanted)


def _design(
    obs: pd.DataFrame, covariates: Sequence[str], categorical: Sequence[str], dropna: bool
) -> tuple[pd.DataFrame | None, np.ndarray]:
    """Covariate design of the tested patients, and which patients it keeps."""
    keep = np.ones(len(obs), dtype=bool)
    if not covariates:
        return None, keep
    design, problems = covariate_frame(obs, covariates, categorical=categorical)
    errors = problems["unknown"] + problems["text"]
    if problems["missing"] and not dropna:
        errors += [m + "; fill it, or pass dropna=True" for m in problems["missing"]]
    if errors:
        raise ClinicalTableError("covariate problems:\n  - " + "\n  - ".join(errors))
    if problems["missing"]:
        keep = design.notna().all(axis=1).to_numpy()
        logger.warning(
            "survival: dropna=True left out %d patient(s) with missing covariates: %s",
            int((~keep).sum()),
            _names(obs.index[~keep]),
        )
    return design, keep


def _cox(df: pd.DataFrame, duration: str, event: str, penalizer: float, strata: str | None = None):
    from lifelines import CoxPHFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter(penalizer=penalizer).fit(
            df, duration_col=duration, event_col=event, strata=[strata] if strata else None
        )


def _test_marker(
    name: str,
    x: np.ndarray,
    T: np.ndarray,
    E: np.ndarray,
    *,
    cov: pd.DataFrame | None,
    sites: np.ndarray | None,
    stratum: str,
    dkey: str,
    ekey: str,
    penalizer: float,
    min_patients: int,
    min_events: int,
) -> tuple[dict, dict]:
    """One marker's row of the screen, and the lifelines fitters behind it."""
    from lifelines.statistics import logrank_test

    ok = np.isfinite(x)
    row = {"n": int(ok.sum()), "events": int(E[ok].sum()), "n_dropped_nan": int((~ok).sum())}
    fits: dict = {}
    if row["n"] < min_patients:
        return {
            **row,
            "reason": f"{row['n']} patients with a value (< min_patients={min_patients})",
        }, fits
    if row["events"] < min_events:
        reason = f"{row['events']} events among patients with a value (< min_events={min_events})"
        return {**row, "reason": reason}, fits
    xs = x[ok]
    if np.ptp(xs) == 0:
        return {**row, "reason": "constant marker"}, fits
    reason = ""
    z = (xs - xs.mean()) / xs.std(ddof=1)
    df = pd.DataFrame({dkey: T[ok], ekey: E[ok], name: z})
    try:
        cph = _cox(df, dkey, ekey, penalizer)
        s = cph.summary.loc[name]
        row.update(
            hr=float(s["exp(coef)"]), hr_lower=float(s["exp(coef) lower 95%"]),
            hr_upper=float(s["exp(coef) upper 95%"]), coef=float(s["coef"]),
            se=float(s["se(coef)"]), p_cox=float(s["p"]), concordance=float(cph.concordance_index_),
        )  # fmt: skip
        fits["univariable"] = cph
    except Exception as exc:  # lifelines raises several types when it cannot converge
        reason = f"Cox fit failed: {type(exc).__name__}: {exc}"[:200]
    if sites is not None and "p_cox" in row:
        dfs = df.assign(**{stratum: sites[ok]})
        try:
            cps = _cox(dfs, dkey, ekey, penalizer, strata=stratum)
            s = cps.summary.loc[name]
            row.update(
                hr_strat=float(s["exp(coef)"]), hr_strat_lower=float(s["exp(coef) lower 95%"]),
                hr_strat_upper=float(s["exp(coef) upper 95%"]), p_strat=float(s["p"]),
            )  # fmt: skip
            fits["stratified"] = cps
        except Exception as exc:
            reason = reason or f"site-stratified Cox failed: {type(exc).__name__}"
    high = xs > np.median(xs)
    row["n_high"] = int(high.sum())
    if high.all() or not high.any():
        reason = reason or "median split leaves one side empty (tied values)"
    else:
        lr = logrank_test(
            T[ok][high], T[ok][~high], event_observed_A=E[ok][high], event_observed_B=E[ok][~high]
        )
        row.update(logrank_stat=float(lr.test_statistic), p_logrank=float(lr.p_value))
    if cov is not None and "p_cox" in row:
        dfm = pd.concat([df.reset_index(drop=True), cov[ok].reset_index(drop=True)], axis=1)
        strata = None
        if sites is not None:
            dfm[stratum] = sites[ok]
            strata = stratum
        try:
            cphm = _cox(dfm, dkey, ekey, penalizer, strata=strata)
            sm = cphm.summary.loc[name]
            row.update(hr_adj=float(sm["exp(coef)"]), p_adj=float(sm["p"]))
            fits["multivariable"] = cphm
        except Exception as exc:
            reason = reason or f"multivariable Cox failed: {type(exc).__name__}"
    return {**row, "reason": reason}, fits


def _sites(
    sub: AnnData, site_key: str | None, stratify: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Site labels of the tested patients (for the association) and for stratification."""
    if not site_key:
        return None, None
    if site_key not in sub.obs:
        raise ClinicalTableError(
            f"site_key={site_key!r} is not an obs column of the cohort {list(sub.obs.columns)}"
        )
    raw = sub.obs[site_key]
    if raw.isna().any():
        raise ClinicalTableError(
            f"obs[{site_key!r}] is missing for patients {_names(sub.obs_names[raw.isna()])}"
        )
    sites = raw.astype(str).to_numpy()
    n_sites = len(np.unique(sites))
    if n_sites < 2:
        logger.warning("survival: every tested patient is from one site; no site guard")
        return sites, None
    return sites, (sites if stratify else None)


def survival(
    adata: AnnData,
    *,
    markers: Sequence[str] | None = None,
    covariates: Sequence[str] = (),
    categorical: Sequence[str] | None = None,
    dropna: bool = False,
    patients: str | Sequence[str] | None = None,
    duration_key: str | None = None,
    event_key: str | None = None,
    site_key: str | None = None,
    stratify_site: bool = True,
    site_threshold: float = 0.5,
    families: bool | None = None,
    family_threshold: float = 0.7,
    fdr: float = 0.05,
    min_patients: int = 10,
    min_events: int = 3,
    penalizer: float = 0.0,
    cv_folds: int = 5,
    cv_top: int = 5,
    seed: int = 0,
    return_fitters: bool = False,
    key_added: str = SURVIVAL_SCREEN,
) -> pd.DataFrame | tuple[pd.DataFrame, dict]:
    """Screen every marker for association with survival; control the FDR across markers.

    Parameters
    ----------
    adata
        Cohort AnnData from ``tl.aggregate`` (obs = patients with time/event, X = markers).
    markers
        Marker names to screen (default: all of ``var_names``).
    covariates
        Clinical ``obs`` columns for the multivariable Cox and the clinical CV baseline.
        They must be numeric and complete, except those declared ``categorical``.
    categorical
        Covariates to one-hot encode (first level dropped); default: what ``tl.aggregate``
        recorded. A text value in an undeclared covariate raises
        :class:`~workbench.ClinicalTableError`.
    dropna
        Leave out the patients with a missing covariate (logged) instead of raising.
    patients
        Who is tested: default ``"validation"`` when ``obs["discovery_split"]`` exists (the
        patients that did not choose the markers), else everyone; ``"all"``, ``"discovery"``
        or a list of patient ids to override.
    duration_key, event_key
        ``obs`` columns (default: the ones recorded by ``tl.aggregate``, else time/event).
    site_key
        ``obs`` column with each patient's site (default: the one ``tl.aggregate`` recorded).
        Adds the site association columns and, with ``stratify_site``, the site-stratified
        Cox, whose q-value then decides ``called``.
    stratify_site
        Fit the Cox models stratified by site (each site its own baseline hazard).
    site_threshold
        Between-site share of a marker's rank variance (eta squared) from which a marker
        significantly associated with site is flagged ``mostly_site``.
    families
        Report one row per marker family in ``uns["survival_families"]``: default when
        ``uns["marker_families"]`` exists; ``True`` groups the markers first if needed
        (``tl.marker_families`` with ``family_threshold``); ``False`` never.
    family_threshold
        Absolute Spearman rho threshold when the families are made here.
    fdr
        Level at which ``called`` is set from the deciding q-value.
    min_patients, min_events
        Fewer usable patients / events for a marker → NaN with a reason.
    penalizer
        Passed to ``lifelines.CoxPHFitter`` (0 = plain partial likelihood).
    cv_folds, cv_top
        Cross-validated concordance (``lifelines.utils.k_fold_cross_validation``) for the
        ``cv_top`` markers with the smallest p-values; 0 skips it.
    seed
        Seed of the CV folds.
    return_fitters
        Also return lifelines' own fitted ``CoxPHFitter`` objects.
    key_added
        ``uns`` key of the screen table.

    Returns
    -------
    pandas.DataFrame or tuple
        The screen table (one row per marker, sorted by the deciding p-value): ``n``,
        ``events``, ``n_dropped_nan``, ``hr``, ``hr_lower``, ``hr_upper``, ``coef``, ``se``,
        ``p_cox``, ``q_cox``, ``concordance``, ``logrank_stat``, ``p_logrank``,
        ``q_logrank``, ``n_high``, (``hr_adj``, ``p_adj``, ``q_adj`` with covariates;
        ``hr_strat``, ``hr_strat_lower``, ``hr_strat_upper``, ``p_strat``, ``q_strat``,
        ``p_site``, ``q_site``, ``site_eta2``, ``n_sites``, ``mostly_site`` with a site;
        ``marker_family``, ``family_called`` with families), ``called``, ``reason``.
        Writes ``uns[key_added]`` (the table), ``uns[key_added + "_params"]`` (settings,
        the patients tested, which q decides), ``uns["survival_families"]`` with families
        (``uns[key_added + "_families"]`` for another ``key_added``) and, with
        ``cv_top > 0``, ``uns["survival_cv"]``. With ``return_fitters=True``,
        ``(table, fitters)`` where ``fitters`` is ``{"univariable": {marker: CoxPHFitter},
        "stratified": {...}, "multivariable": {...}}``.
    """
    info = adata.uns.get("cohort", {})
    duration_key = duration_key or info.get("duration_key", "time")
    event_key = event_key or info.get("event_key", "event")
    site_key = site_key or info.get("site_key") or None
    if categorical is None:
        categorical = [c for c in info.get("categorical", []) if c in covariates]
    for col in (duration_key, event_key):
        if col not in adata.obs:
            raise ClinicalTableError(
                f"obs[{col!r}] is missing; name the survival columns with "
                + remedy("duration_key=/event_key=", "--duration-key/--event-key")
            )
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must be in (0, 1), got {fdr}")
    markers = list(adata.var_names if markers is None else markers)
    unknown = [m for m in markers if m not in adata.var_names]
    if unknown:
        raise MarkerError(
            f"unknown marker(s) {unknown[:10]}; the cohort has {adata.n_vars} markers"
        )
    mask = _select_patients(adata, patients)
    cov, keep = _design(adata.obs[mask], covariates, categorical, dropna)
    dropped = list(map(str, adata.obs_names[mask][~keep]))
    if not keep.all():
        mask[np.flatnonzero(mask)[~keep]] = False
        cov = cov[keep]
    sub = adata[mask]
    if sub.n_obs < 2:
        raise ClinicalTableError(
            f"only {sub.n_obs} patient(s) to test; a survival screen needs at least 2 (and tens, "
            "with events, to find anything): add patients"
        )
    T = sub.obs[duration_key].to_numpy(dtype=float)
    E = sub.obs[event_key].to_numpy(dtype=int)
    if not np.isfinite(T).all() or (T < 0).any():
        kinds = [k for k, bad in (("NaN", np.isnan(T)), ("infinite", np.isinf(T)),
                                  ("negative", T < 0)) if bad.any()]  # fmt: skip
        raise ClinicalTableError(
            f"obs[{duration_key!r}] has {' and '.join(kinds)} times "
            f"({int((~np.isfinite(T) | (T < 0)).sum())} patient(s)); run io.validate_clinical"
        )
    if (T == 0).all():
        raise ClinicalTableError(
            f"every obs[{duration_key!r}] is 0: no follow-up to model; the column should hold "
            "the time from diagnosis to the event or the last visit"
        )
    if E.sum() == 0:
        raise ClinicalTableError(
            f"no events among the {sub.n_obs} patients tested; a Cox model needs at least 1 event "
            "(about 10 per covariate to be stable). Check the event column (1 = death or "
            "progression observed, 0 = censored) or add patients with events"
        )
    site_labels, strata = _sites(sub, site_key, stratify_site)
    logger.info(
        "survival: screening %d markers on %d patients (%d events)%s%s",
        len(markers), sub.n_obs, int(E.sum()),
        f", {int((~mask).sum())} patients left out" if (~mask).any() else "",
        f", stratified by {site_key!r} ({len(np.unique(strata))} sites)" if strata is not None else "",
    )  # fmt: skip

    rows, fitters = [], {"univariable": {}, "stratified": {}, "multivariable": {}}
    X = sub[:, markers].X
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=float)
    taken = {duration_key, event_key, *markers, *([] if cov is None else cov.columns)}
    stratum = site_key or "site"
    while stratum in taken:
        stratum = f"{stratum}_"
    for j, name in enumerate(markers):
        row, fits = _test_marker(
            name, X[:, j], T, E, cov=cov, sites=strata, stratum=stratum, dkey=duration_key,
            ekey=event_key,
            penalizer=penalizer, min_patients=min_patients, min_events=min_events,
        )  # fmt: skip
        rows.append({"marker": name, **row})
        for kind, fit in fits.items():
            fitters[kind][name] = fit
    table = _assemble(rows, cov is not None, strata is not None)
    decide = "p_strat" if strata is not None else "p_cox"
    if site_labels is not None and len(np.unique(site_labels)) >= 2:
        assoc = site_association(
            X, markers, site_labels, fdr=fdr, site_threshold=site_threshold
        ).reindex(table.index)
        for col in assoc.columns:
            table[col] = assoc[col]
        table["mostly_site"] = table["mostly_site"].fillna(False).astype(bool)
    table["called"] = table["q" + decide[1:]] < fdr
    table = table.sort_values(decide, na_position="last", kind="stable")
    table.index.name = None

    family_table = _families(adata, table, families, family_threshold, decide, fdr)
    family_key = SURVIVAL_FAMILIES if key_added == SURVIVAL_SCREEN else f"{key_added}_families"
    if family_table is not None:
        adata.uns[family_key] = family_table
    adata.uns[key_added] = table
    adata.uns[f"{key_added}_params"] = {
        "fdr": fdr,
        "patients": "validation"
        if patients is None and DISCOVERY_SPLIT in adata.obs
        else str(patients or "all"),
        "tested_patients": list(map(str, sub.obs_names)),
        "covariates": list(covariates),
        "categorical": list(categorical),
        "dropped_missing_covariates": dropped,
        "duration_key": duration_key,
        "event_key": event_key,
        "site_key": site_key or "",
        "stratified_by_site": strata is not None,
        "site_threshold": site_threshold,
        "decided_by": "q" + decide[1:],
        "families": family_table is not None,
        "penalizer": penalizer,
    }
    _log_result(key_added, family_key, table, family_table, fdr, decide)
    if cv_top and cv_folds >= 2:
        cv = _cross_validated(
            sub, table, X, markers, T, E, cov, duration_key, event_key, cv_folds, cv_top,
            penalizer, seed,
        )  # fmt: skip
        adata.uns[SURVIVAL_CV] = cv
        logger.info("added adata.uns[%r] (%d-fold concordance)", SURVIVAL_CV, cv_folds)
    if return_fitters:
        return table, fitters
    return table


def _assemble(rows: list[dict], with_cov: bool, with_strata: bool) -> pd.DataFrame:
    cols = ["n", "events", "n_dropped_nan", "hr", "hr_lower", "hr_upper", "coef", "se", "p_cox",
            "concordance", "logrank_stat", "p_logrank", "n_high"]  # fmt: skip
    if with_strata:
        cols += ["hr_strat", "hr_strat_lower", "hr_strat_upper", "p_strat"]
    if with_cov:
        cols += ["hr_adj", "p_adj"]
    table = pd.DataFrame(rows).set_index("marker").reindex(columns=[*cols, "reason"])
    holes = table["n_dropped_nan"][table["n_dropped_nan"] > 0]
    if len(holes):
        logger.info(
            "survival: %d marker(s) undefined for some patients, who were left out of that "
            "marker's tests (see column n_dropped_nan): %s",
            len(holes), ", ".join(f"{m} ({int(k)})" for m, k in holes.head(8).items())
            + (", ..." if len(holes) > 8 else ""),
        )  # fmt: skip
    table["q_cox"] = benjamini_hochberg(table["p_cox"])
    table["q_logrank"] = benjamini_hochberg(table["p_logrank"])
    if with_strata:
        table["q_strat"] = benjamini_hochberg(table["p_strat"])
    if with_cov:
        table["q_adj"] = benjamini_hochberg(table["p_adj"])
    table["reason"] = table["reason"].fillna("").astype(str)
    return table


def _families(
    adata: AnnData, table: pd.DataFrame, families: bool | None, threshold: float, decide: str,
    fdr: float,
) -> pd.DataFrame | None:  # fmt: skip
    if families is False or (families is None and MARKER_FAMILIES not in adata.uns):
        return None
    if MARKER_FAMILIES not in adata.uns:
        marker_families(adata, threshold=threshold)
    members = adata.uns[MARKER_FAMILIES]["members"]
    if not isinstance(members, pd.DataFrame):
        members = pd.DataFrame(members)
    flag = "mostly_site" if "mostly_site" in table else None
    fam = family_screen(table, members, p_col=decide, fdr=fdr, flag_col=flag)
    of = members["family"].reindex(table.index)
    table["marker_family"] = of.fillna(pd.Series(table.index, index=table.index)).astype(str)
    table["family_called"] = table["marker_family"].map(fam["called"]).fillna(False).astype(bool)
    return fam


def _log_result(key, family_key, table, family_table, fdr, decide) -> None:
    fam = ""
    if family_table is not None:
        fam = (
            f"; {len(family_table)} families, {int(family_table['called'].sum())} called "
            f"(added adata.uns[{family_key!r}])"
        )
    logger.info(
        "added adata.uns[%r] (%d markers, %d called at q < %g by %s%s)",
        key, len(table), int(table["called"].sum()), fdr, "q" + decide[1:], fam,
    )  # fmt: skip


def _cross_validated(
    sub, table, X, markers, T, E, cov, dkey, ekey, folds, top, penalizer, seed
) -> pd.DataFrame:
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError
    from lifelines.utils import k_fold_cross_validation

    unscored: list[str] = []

    def score(df: pd.DataFrame) -> tuple[float, float]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = k_fold_cross_validation(
                    CoxPHFitter(penalizer=penalizer), df, dkey, event_col=ekey, k=folds,
                    scoring_method="concordance_index", seed=seed,
                )  # fmt: skip
        except (ZeroDivisionError, ConvergenceError, ValueError) as exc:
            # Small cohorts: a held-out fold with one patient or no comparable pair (or a fit
            # that does not converge) has no concordance; report NaN rather than failing.
            unscored.append(str(exc))
            return float("nan"), float("nan")
        return float(np.mean(s)), float(np.std(s))

    base = pd.DataFrame({dkey: T, ekey: E})
    rows = []
    if cov is not None:
        m, s = score(pd.concat([base, cov.reset_index(drop=True)], axis=1))
        rows.append({"model": "clinical", "marker": "", "c_index": m, "c_index_sd": s})
    for name in table.index[table["p_cox"].notna()][:top]:
        x = X[:, markers.index(name)]
        ok = np.isfinite(x)
        df = base[ok].reset_index(drop=True).assign(**{name: x[ok]})
        m, s = score(df)
        rows.append({"model": "marker", "marker": name, "c_index": m, "c_index_sd": s})
        if cov is not None:
            m, s = score(pd.concat([df, cov[ok].reset_index(drop=True)], axis=1))
            rows.append(
                {"model": "clinical + marker", "marker": name, "c_index": m, "c_index_sd": s}
            )
    if unscored:
        logger.warning(
            "survival: cross-validated concordance is NaN for %d of %d models (%s)",
            len(unscored),
            len(rows),
            unscored[0],
        )
    return pd.DataFrame(rows)

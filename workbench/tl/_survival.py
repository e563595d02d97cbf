"""Survival screen of cohort markers with lifelines, and the honest discovery pipeline.

For each marker (a column of the cohort AnnData):

* univariable Cox proportional hazards on the standardised marker
  (``z = (x - mean) / sd``, sample sd), so hazard ratios are per standard deviation;
* log-rank test between patients above and at-or-below the median;
* Benjamini-Hochberg q-values across the markers that could be tested, for both tests;
* optionally a multivariable Cox with clinical covariates (adjusted hazard ratio).

**No double dipping.** When the cohort records which patients chose the markers
(``obs["discovery_split"]``, written by ``tl.cohort`` after ``tl.markers``), only the
``"validation"`` patients are tested unless you ask otherwise. :func:`discover` runs the whole
chain with that split made up front.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import DISCOVERY_SPLIT, SURVIVAL_CV, SURVIVAL_SCREEN
from workbench._errors import ClinicalTableError, MarkerError
from workbench.tl._cohort import DISCOVERY, VALIDATION, cohort, validate_clinical

logger = logging.getLogger(__name__)


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN and is not counted."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def _select_patients(adata: AnnData, patients: str | Sequence[str] | None) -> np.ndarray:
    if patients is None:
        if DISCOVERY_SPLIT in adata.obs:
            patients = VALIDATION
        else:
            return np.ones(adata.n_obs, dtype=bool)
    if isinstance(patients, str):
        if patients == "all":
            if DISCOVERY_SPLIT in adata.obs:
                logger.warning(
                    "survival: testing ALL patients, including the %d that chose the markers; "
                    "p-values are optimistic (double dipping)",
                    int((adata.obs[DISCOVERY_SPLIT] == DISCOVERY).sum()),
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


def _design(obs: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in covariates if c not in obs]
    if missing:
        raise ClinicalTableError(
            f"covariate column(s) {missing} not in the cohort obs {list(obs.columns)}"
        )
    cov = obs[list(covariates)]
    return pd.get_dummies(cov, drop_first=True, dtype=float).astype(float)


def _cox(df: pd.DataFrame, duration: str, event: str, penalizer: float):
    from lifelines import CoxPHFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter(penalizer=penalizer).fit(df, duration_col=duration, event_col=event)


def survival(
    adata: AnnData,
    *,
    markers: Sequence[str] | None = None,
    covariates: Sequence[str] = (),
    patients: str | Sequence[str] | None = None,
    duration_key: str | None = None,
    event_key: str | None = None,
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
        Cohort AnnData from ``tl.cohort`` (obs = patients with time/event, X = markers).
    markers
        Marker names to screen (default: all of ``var_names``).
    covariates
        Clinical ``obs`` columns for the multivariable Cox and the clinical CV baseline
        (categorical columns are one-hot encoded, first level dropped).
    patients
        Who is tested: default ``"validation"`` when ``obs["discovery_split"]`` exists (the
        patients that did not choose the markers), else everyone; ``"all"``, ``"discovery"``
        or a list of patient ids to override.
    duration_key, event_key
        ``obs`` columns (default: the ones recorded by ``tl.cohort``, else time/event).
    fdr
        Level at which ``called`` is set from the Cox q-value.
    min_patients, min_events
        Fewer usable patients / events for a marker → NaN with a reason.
    penalizer
        Passed to ``lifelines.CoxPHFitter`` (0 = plain partial likelihood).
    cv_folds, cv_top
        Cross-validated concordance (``lifelines.utils.k_fold_cross_validation``) for the
        ``cv_top`` markers with the smallest Cox p-values; 0 skips it.
    seed
        Seed of the CV folds.
    return_fitters
        Also return lifelines' own fitted ``CoxPHFitter`` objects.
    key_added
        ``uns`` key of the screen table.

    Returns
    -------
    The screen table (one row per marker, sorted by Cox p-value): ``n``, ``events``,
    ``n_dropped_nan``, ``hr``, ``hr_lower``, ``hr_upper``, ``coef``, ``se``, ``p_cox``,
    ``q_cox``, ``concordance``, ``logrank_stat``, ``p_logrank``, ``q_logrank``, ``n_high``,
    (``hr_adj``, ``p_adj``, ``q_adj`` with covariates), ``called``, ``reason``. Writes
    ``uns[key_added]`` (the table), ``uns[key_added + "_params"]`` (settings and the patients
    tested) and, with ``cv_top > 0``, ``uns["survival_cv"]``. With ``return_fitters=True``
    returns ``(table, {"univariable": {marker: CoxPHFitter}, "multivariable": {...}})``.
    """
    from lifelines.statistics import logrank_test

    info = adata.uns.get("cohort", {})
    duration_key = duration_key or info.get("duration_key", "time")
    event_key = event_key or info.get("event_key", "event")
    for col in (duration_key, event_key):
        if col not in adata.obs:
            raise ClinicalTableError(f"obs[{col!r}] is missing; pass duration_key=/event_key=")
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must be in (0, 1), got {fdr}")
    markers = list(adata.var_names if markers is None else markers)
    unknown = [m for m in markers if m not in adata.var_names]
    if unknown:
        raise MarkerError(
            f"unknown marker(s) {unknown[:10]}; the cohort has {adata.n_vars} markers"
        )
    mask = _select_patients(adata, patients)
    sub = adata[mask]
    if sub.n_obs < 2:
        raise ClinicalTableError(
            f"only {sub.n_obs} patient(s) to test; a survival screen needs several"
        )
    T = sub.obs[duration_key].to_numpy(dtype=float)
    E = sub.obs[event_key].to_numpy(dtype=int)
    if not np.isfinite(T).all() or (T < 0).any():
        raise ClinicalTableError(
            f"obs[{duration_key!r}] has NaN or negative times; run tl.validate_clinical"
        )
    if E.sum() == 0:
        raise ClinicalTableError("no events among the patients tested; survival cannot be modelled")
    cov = _design(sub.obs, covariates) if covariates else None
    logger.info(
        "survival: screening %d markers on %d patients (%d events)%s",
        len(markers), sub.n_obs, int(E.sum()),
        f", {int((~mask).sum())} discovery patients left out" if (~mask).any() else "",
    )  # fmt: skip

    rows, uni_fits, multi_fits = [], {}, {}
    X = sub[:, markers].X
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=float)
    for j, name in enumerate(markers):
        x = X[:, j]
        ok = np.isfinite(x)
        row = {
            "marker": name,
            "n": int(ok.sum()),
            "events": int(E[ok].sum()),
            "n_dropped_nan": int((~ok).sum()),
        }
        reason = ""
        if row["n"] < min_patients:
            reason = f"{row['n']} patients with a value (< min_patients={min_patients})"
        elif row["events"] < min_events:
            reason = (
                f"{row['events']} events among patients with a value (< min_events={min_events})"
            )
        elif np.nanstd(x[ok]) == 0:
            reason = "constant marker"
        if reason:
            rows.append({**row, "reason": reason})
            continue
        xs = x[ok]
        z = (xs - xs.mean()) / xs.std(ddof=1)
        df = pd.DataFrame({duration_key: T[ok], event_key: E[ok], name: z})
        try:
            cph = _cox(df, duration_key, event_key, penalizer)
            s = cph.summary.loc[name]
            row.update(
                hr=float(s["exp(coef)"]), hr_lower=float(s["exp(coef) lower 95%"]),
                hr_upper=float(s["exp(coef) upper 95%"]), coef=float(s["coef"]),
                se=float(s["se(coef)"]), p_cox=float(s["p"]), concordance=float(cph.concordance_index_),
            )  # fmt: skip
            uni_fits[name] = cph
        except Exception as exc:  # lifelines raises several types when it cannot converge
            reason = f"Cox fit failed: {type(exc).__name__}: {exc}"[:200]
        high = xs > np.median(xs)
        row["n_high"] = int(high.sum())
        if high.all() or not high.any():
            reason = reason or "median split leaves one side empty (tied values)"
        else:
            lr = logrank_test(
                T[ok][high],
                T[ok][~high],
                event_observed_A=E[ok][high],
                event_observed_B=E[ok][~high],
            )
            row.update(logrank_stat=float(lr.test_statistic), p_logrank=float(lr.p_value))
        if cov is not None and "p_cox" in row:
            dfm = pd.concat([df.reset_index(drop=True), cov[ok].reset_index(drop=True)], axis=1)
            try:
                cphm = _cox(dfm, duration_key, event_key, penalizer)
                sm = cphm.summary.loc[name]
                row.update(hr_adj=float(sm["exp(coef)"]), p_adj=float(sm["p"]))
                multi_fits[name] = cphm
            except Exception as exc:
                reason = reason or f"multivariable Cox failed: {type(exc).__name__}"
        rows.append({**row, "reason": reason})

    cols = ["n", "events", "n_dropped_nan", "hr", "hr_lower", "hr_upper", "coef", "se", "p_cox",
            "concordance", "logrank_stat", "p_logrank", "n_high"]  # fmt: skip
    if cov is not None:
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
    if cov is not None:
        table["q_adj"] = benjamini_hochberg(table["p_adj"])
    table["called"] = table["q_cox"] < fdr
    table["reason"] = table["reason"].fillna("").astype(str)
    table = table.sort_values("p_cox", na_position="last")
    table.index.name = None
    adata.uns[key_added] = table
    adata.uns[f"{key_added}_params"] = {
        "fdr": fdr,
        "patients": "validation"
        if patients is None and DISCOVERY_SPLIT in adata.obs
        else str(patients or "all"),
        "tested_patients": list(map(str, sub.obs_names)),
        "covariates": list(covariates),
        "duration_key": duration_key,
        "event_key": event_key,
        "penalizer": penalizer,
    }
    logger.info(
        "added adata.uns[%r] (%d markers, %d called at q < %g)",
        key_added,
        len(table),
        int(table["called"].sum()),
        fdr,
    )
    if cv_top and cv_folds >= 2:
        cv = _cross_validated(
            sub,
            table,
            X,
            markers,
            T,
            E,
            cov,
            duration_key,
            event_key,
            cv_folds,
            cv_top,
            penalizer,
            seed,
        )
        adata.uns[SURVIVAL_CV] = cv
        logger.info("added adata.uns[%r] (%d-fold concordance)", SURVIVAL_CV, cv_folds)
    if return_fitters:
        return table, {"univariable": uni_fits, "multivariable": multi_fits}
    return table


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


def split_patients(
    patients: Sequence[str],
    events: Sequence[int],
    *,
    validation_fraction: float = 0.5,
    seed: int = 0,
) -> dict[str, str]:
    """Split patients into discovery and validation, stratified by event status.

    Returns
    -------
    Mapping patient id → ``"discovery"`` / ``"validation"``.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    patients = np.asarray([str(p) for p in patients])
    events = np.asarray(events)
    out = {}
    for e in np.unique(events):
        ids = patients[events == e]
        ids = ids[rng.permutation(len(ids))]
        n_val = int(round(validation_fraction * len(ids)))
        out.update({p: VALIDATION for p in ids[:n_val]})
        out.update({p: DISCOVERY for p in ids[n_val:]})
    return out


def outcome_groups(time: pd.Series, event: pd.Series) -> pd.Series:
    """Short vs long survivors around the median follow-up (for fitting phenotypes).

    ``"short"``: event before the median time; ``"long"``: followed at least to the median;
    censored before the median: unknown (``None``).
    """
    med = float(np.median(time))
    short = (event.astype(int) == 1) & (time < med)
    long_ = time >= med
    return pd.Series(
        np.where(short, "short", np.where(long_, "long", None)), index=time.index, dtype=object
    )


def discover(
    adatas: Sequence[AnnData],
    clinical: pd.DataFrame | str | PathLike,
    *,
    validation_fraction: float = 0.5,
    group_key: str | None = None,
    covariates: Sequence[str] | None = None,
    marker_kwargs: Mapping | None = None,
    spatial_kwargs: Mapping | None = None,
    survival_kwargs: Mapping | None = None,
    patient_key: str = "patient_id",
    slide_key: str = "slide",
    duration_key: str = "time",
    event_key: str = "event",
    on_unmatched: str = "raise",
    seed: int = 0,
    return_model: bool = False,
):
    """From per-slide region AnnData and a clinical table to an honest ranked marker table.

    1. Check the clinical table; split patients into discovery and validation (stratified by
       event, seeded) *before* looking at any marker.
    2. Fit feature-uniqueness phenotypes (``tl.markers``) on the discovery patients' slides,
       grouped by ``group_key`` or, by default, short vs long survival around the discovery
       median (patients censored before it are left out of the fit, logged); apply them to
       every slide.
    3. Spatial markers per slide (``tl.spatial``), the patient-level cohort (``tl.cohort``).
    4. Survival screen on the validation patients only (``tl.survival``).

    Parameters
    ----------
    adatas
        Per-slide region AnnData (``uns["slide_id"]`` matches the clinical ``slide`` column).
    clinical
        Clinical table (DataFrame or CSV path).
    validation_fraction
        Share of patients held out for testing.
    group_key
        Clinical column defining the outcome groups for the phenotype fit (default: survival).
    covariates
        Clinical covariates for the multivariable Cox (default: ``grade`` and ``age`` where
        present).
    marker_kwargs, spatial_kwargs, survival_kwargs
        Passed to ``tl.markers``, ``tl.spatial`` and ``tl.survival``.
    patient_key, slide_key, duration_key, event_key
        Clinical column names.
    on_unmatched
        See ``tl.cohort``.
    seed
        Seed of the split (and default seed of the steps).
    return_model
        Also return the fitted ``FeatureUniqueness`` (to phenotype new slides).

    Returns
    -------
    The cohort AnnData with ``obs["discovery_split"]``, ``uns["survival_screen"]``,
    ``uns["survival_cv"]`` and ``uns["discovery"]`` (who was used where, the phenotype model's
    summary); every slide gets its phenotypes and spatial markers. With ``return_model=True``,
    ``(cohort, model)``.
    """
    from workbench.tl._markers import markers, slide_id_of
    from workbench.tl._spatial import spatial

    clin = validate_clinical(
        clinical,
        patient_key=patient_key,
        slide_key=slide_key,
        duration_key=duration_key,
        event_key=event_key,
    )
    adatas = list(adatas)
    ids = [slide_id_of(a) for a in adatas]
    by_slide = clin.set_index(slide_key)
    matched = [i for i, s in enumerate(ids) if s in by_slide.index]
    if len(matched) < len(ids):
        lost = [ids[i] for i in range(len(ids)) if i not in set(matched)]
        if on_unmatched == "raise":
            raise ClinicalTableError(
                f"{len(lost)} slide(s) have no row in the clinical table ({', '.join(lost[:10])}); "
                "fix the IDs or pass on_unmatched='drop'"
            )
        logger.warning(
            "discover: dropped %d slide(s) without a clinical row: %s", len(lost), lost[:10]
        )
    pat = clin.drop_duplicates(patient_key).set_index(patient_key)
    split = split_patients(
        pat.index, pat[event_key], validation_fraction=validation_fraction, seed=seed
    )
    if (
        sum(v == VALIDATION for v in split.values()) < 2
        or sum(v == DISCOVERY for v in split.values()) < 2
    ):
        raise ClinicalTableError(
            f"{len(pat)} patient(s) cannot be split into discovery and validation sets"
        )
    disc = pat[[split[p] == DISCOVERY for p in pat.index]]
    if group_key is None:
        groups_by_patient = outcome_groups(disc[duration_key], disc[event_key])
    else:
        if group_key not in clin:
            raise ClinicalTableError(f"group_key {group_key!r} is not a clinical column")
        groups_by_patient = disc[group_key]
    n_unknown = int(groups_by_patient.isna().sum())
    if n_unknown:
        logger.info(
            "discover: %d discovery patient(s) have no outcome group (censored early); not used to fit",
            n_unknown,
        )
    fit_slides, fit_groups, other = [], [], []
    for i in matched:
        p = by_slide.loc[ids[i], patient_key]
        if split[p] == DISCOVERY and pd.notna(groups_by_patient.get(p)):
            fit_slides.append(adatas[i])
            fit_groups.append(groups_by_patient[p])
        else:
            other.append(adatas[i])
    mk = {"random_state": seed, **(marker_kwargs or {})}
    model = markers(fit_slides, fit_groups, apply_to=other, **mk)
    sk = {"seed": seed, **(spatial_kwargs or {})}
    for i in matched:
        spatial(adatas[i], **sk)
    co = cohort(
        [adatas[i] for i in matched], clin, patient_key=patient_key, slide_key=slide_key,
        duration_key=duration_key, event_key=event_key, on_unmatched="drop", split=split,
    )  # fmt: skip
    if covariates is None:
        covariates = [c for c in ("grade", "age") if c in co.obs]
    sv = {"covariates": covariates, "seed": seed, **(survival_kwargs or {})}
    survival(co, patients=VALIDATION, **sv)
    co.uns["discovery"] = {
        "validation_fraction": validation_fraction,
        "seed": seed,
        "group_key": group_key or "survival (short/long around the discovery median)",
        "discovery_patients": [p for p, v in split.items() if v == DISCOVERY],
        "validation_patients": [p for p, v in split.items() if v == VALIDATION],
        "fit_slides": list(model.slide_ids_fit_),
        "model": repr(model),
        "phenotypes": list(model.phenotypes_),
    }
    logger.info("added adata.uns['discovery'] (patients used for fitting vs testing)")
    return (co, model) if return_model else co

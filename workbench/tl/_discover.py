"""The honest discovery pipeline: per-slide regions + clinical table → ranked marker families.

:func:`discover` chains ``tl.markers`` → ``tl.spatial`` → ``tl.aggregate`` →
``tl.marker_families`` → ``tl.survival`` so that no patient is tested on phenotypes chosen
with its own outcome, in one of two ways:

* **single split** (``folds=None``): the patients are split into a discovery half, whose
  slides and outcomes fit the phenotypes, and a validation half, which is tested;
* **cross-fitting** (``folds=k``): the patients are split into ``k`` folds; the phenotypes
  of fold ``f`` are fitted on the other ``k - 1`` folds and score fold ``f`` only, so every
  patient is tested, each by phenotypes that never saw it. The folds' phenotypes are matched
  by centroid correspondence in the raw feature space (:func:`match_phenotypes`), so that
  ``phenotype_2`` means the same tissue pattern in every fold.

Both split before anything is fitted, stratified by event (and site, when known).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import CROSSFIT_FOLD, PHENOTYPE, SITE
from workbench._errors import ClinicalTableError, MarkerError, OptionError, remedy
from workbench.io._clinical import validate_clinical
from workbench.tl._survival import DISCOVERY, VALIDATION

logger = logging.getLogger(__name__)


def _strata(events: Sequence[int], strata: Sequence | None) -> np.ndarray:
    events = np.asarray(events).astype(int).astype(str)
    if strata is None:
        return events
    return np.char.add(np.char.add(events, "|"), np.asarray(strata).astype(str))


def split_patients(
    patients: Sequence[str],
    events: Sequence[int],
    *,
    validation_fraction: float = 0.5,
    seed: int = 0,
    strata: Sequence | None = None,
) -> dict[str, str]:
    """Split patients into discovery and validation, stratified by event status.

    Parameters
    ----------
    patients, events
        Patient ids and their event indicators.
    validation_fraction
        Share of each stratum held out for validation.
    seed
        Seed of the shuffle.
    strata
        A further stratification variable aligned with ``patients`` (e.g. the site).

    Returns
    -------
    dict
        Mapping patient id → ``"discovery"`` / ``"validation"``.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    patients = np.asarray([str(p) for p in patients])
    labels = _strata(events, strata)
    out = {}
    for lab in np.unique(labels):
        ids = patients[labels == lab]
        ids = ids[rng.permutation(len(ids))]
        n_val = int(round(validation_fraction * len(ids)))
        out.update({p: VALIDATION for p in ids[:n_val]})
        out.update({p: DISCOVERY for p in ids[n_val:]})
    return out


def _option_value(option: str, value) -> str:
    return remedy(f"{option}={value}", f"--{option.replace('_', '-')} {value}")


def fold_patients(
    patients: Sequence[str],
    events: Sequence[int],
    *,
    folds: int = 5,
    seed: int = 0,
    strata: Sequence | None = None,
) -> dict[str, int]:
    """Assign patients to ``folds`` cross-fitting folds, stratified by event (and ``strata``).

    Within each stratum the shuffled patients are dealt round-robin, continuing where the
    previous stratum stopped, so fold sizes differ by at most one.

    Returns
    -------
    dict
        Mapping patient id → fold index (0 … folds - 1).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    patients = np.asarray([str(p) for p in patients])
    if len(patients) < 2 * folds:
        raise ClinicalTableError(
            f"{len(patients)} patient(s) are too few for {folds} cross-fitting folds "
            f"(at least {2 * folds}); use fewer folds or "
            + remedy("folds=None (one split)", "leave out --folds (one split)")
        )
    rng = np.random.default_rng(seed)
    labels = _strata(events, strata)
    out, start = {}, 0
    for lab in np.unique(labels):
        ids = patients[labels == lab]
        ids = ids[rng.permutation(len(ids))]
        for i, p in enumerate(ids):
            out[p] = int((start + i) % folds)
        start += len(ids)
    return out


def outcome_groups(
    time: pd.Series, event: pd.Series, *, within: pd.Series | None = None, min_group: int = 4
) -> pd.Series:
    """Short vs long survivors around the median follow-up (for fitting phenotypes).

    ``"short"``: event before the median time; ``"long"``: followed at least to the median;
    censored before the median: unknown (``None``).

    Parameters
    ----------
    time, event
        Follow-up and event indicator (1 event, 0 censored) per patient.
    within
        Optional group per patient (e.g. the site): the median is then taken within each
        group, so that a group whose patients live longer (another case mix) does not make
        its slides "long" as a whole. Groups smaller than ``min_group`` use the overall
        median.
    min_group
        Smallest group with a median of its own.

    Returns
    -------
    pandas.Series
        ``"short"``, ``"long"`` or ``None`` per patient, on the index of ``time``.
    """
    time = pd.Series(time).astype(float)
    event = pd.Series(event, index=time.index).astype(int)
    med = pd.Series(float(np.median(time)), index=time.index)
    if within is not None:
        within = pd.Series(within, index=time.index).astype(str)
        for _, idx in within.groupby(within).groups.items():
            if len(idx) >= min_group:
                med[idx] = float(np.median(time[idx]))
    short = (event == 1) & (time < med)
    long_ = time >= med
    return pd.Series(
        np.where(short, "short", np.where(long_, "long", None)), index=time.index, dtype=object
    )


def match_phenotypes(
    models: Sequence, *, tolerance: float = 1.0
) -> tuple[list[dict], pd.DataFrame]:
    """Match the phenotypes of several fitted ``FeatureUniqueness`` models (one per fold).

    Each phenotype's centroid is mapped back to the raw feature space and divided by the
    folds' mean feature scale. Folds are matched in turn to the groups found so far (Hungarian
    assignment on centroid distance); a pair closer than ``tolerance`` times the mean of the
    two territory radii is the same phenotype, anything else starts a new group. Groups are
    named ``phenotype_1``, ``phenotype_2`` … by the number of folds that found them, then by
    their mean rank within the folds.

    Parameters
    ----------
    models
        Fitted :class:`~workbench.tl.FeatureUniqueness` models, one per fold.
    tolerance
        How close two centroids must be to match, in units of the mean territory radius.

    Returns
    -------
    names : list of dict
        Per model, its phenotype name → the matched name.
    table : pandas.DataFrame
        One row per matched phenotype: ``n_folds``, ``folds``, ``mean_rank``,
        ``max_distance`` (to the group centroid, in units of the radius).

    Raises
    ------
    workbench.MarkerError
        ``models`` is empty.
    """
    from scipy.optimize import linear_sum_assignment

    if not models:
        raise MarkerError("no models to match")
    scale = np.mean([m.scale_ for m in models], axis=0)
    groups: list[dict] = []
    for f, model in enumerate(models):
        cents = model.feature_centroids() / scale
        radii = np.asarray(model.radius_, dtype=float)
        if not groups:
            for i in range(len(cents)):
                groups.append({"members": [(f, i)], "cents": [cents[i]], "radii": [radii[i]]})
            continue
        gc = np.array([np.mean(g["cents"], axis=0) for g in groups])
        gr = np.array([np.mean(g["radii"]) for g in groups])
        cost = np.linalg.norm(cents[:, None, :] - gc[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(cost)
        taken = set()
        for i, g in zip(rows, cols, strict=True):
            if cost[i, g] <= tolerance * (radii[i] + gr[g]) / 2:
                groups[g]["members"].append((f, i))
                groups[g]["cents"].append(cents[i])
                groups[g]["radii"].append(radii[i])
                taken.add(i)
        for i in range(len(cents)):
            if i not in taken:
                groups.append({"members": [(f, i)], "cents": [cents[i]], "radii": [radii[i]]})
    order = sorted(
        range(len(groups)),
        key=lambda g: (-len(groups[g]["members"]), np.mean([i for _, i in groups[g]["members"]])),
    )
    names: list[dict] = [{} for _ in models]
    rows = []
    for rank, g in enumerate(order):
        new = f"phenotype_{rank + 1}"
        grp = groups[g]
        centre = np.mean(grp["cents"], axis=0)
        spread = max(
            float(np.linalg.norm(c - centre) / r) if r > 0 else 0.0
            for c, r in zip(grp["cents"], grp["radii"], strict=True)
        )
        for f, i in grp["members"]:
            names[f][models[f].phenotypes_[i]] = new
        rows.append(
            {
                "phenotype": new,
                "n_folds": len(grp["members"]),
                "folds": ";".join(str(f) for f, _ in grp["members"]),
                "mean_rank": float(np.mean([i + 1 for _, i in grp["members"]])),
                "max_distance": spread,
            }
        )
    return names, pd.DataFrame(rows).set_index("phenotype")


def _fit_groups(
    pat: pd.DataFrame, who: Sequence[str], group_key, duration_key, event_key, site_key
) -> pd.Series:
    sub = pat.loc[list(who)]
    if group_key is not None:
        return sub[group_key]
    within = sub[site_key] if site_key else None
    return outcome_groups(sub[duration_key], sub[event_key], within=within)


def _model_kwargs(marker_kwargs: Mapping | None, seed: int) -> tuple[dict, str]:
    mk = {"random_state": seed, **(marker_kwargs or {})}
    key_added = mk.pop("key_added", PHENOTYPE)
    for bad in ("apply_to", "slide_ids"):
        if bad in mk:
            raise ValueError(f"marker_kwargs may not set {bad!r}: tl.discover chooses the slides")
    return mk, key_added


def _single_split(adatas, patient_of, split, groups, marker_kwargs, seed):
    from workbench.tl._markers import FeatureUniqueness

    mk, key_added = _model_kwargs(marker_kwargs, seed)
    fit, fit_groups = [], []
    for a, p in zip(adatas, patient_of, strict=True):
        if split[p] == DISCOVERY and pd.notna(groups.get(p)):
            fit.append(a)
            fit_groups.append(groups[p])
    model = FeatureUniqueness(**mk).fit(fit, fit_groups)
    for a in adatas:
        model.transform(a, key_added=key_added)
    logger.info("added obs[%r] and uns['feature_uniqueness'] to %d slides", key_added, len(adatas))
    return model


def _crossfit(adatas, patient_of, pat, fold_of, folds, groups_for, marker_kwargs, seed, tol):
    from tqdm.auto import tqdm

    from workbench.tl._markers import FeatureUniqueness

    mk, key_added = _model_kwargs(marker_kwargs, seed)
    models = []
    for f in tqdm(range(folds), desc="cross-fitting phenotypes", leave=False):
        train = [p for p in pat.index if fold_of[p] != f]
        groups = groups_for(train)
        fit = [(a, groups[p]) for a, p in zip(adatas, patient_of, strict=True) if p in groups]
        fit = [(a, g) for a, g in fit if pd.notna(g)]
        models.append(FeatureUniqueness(**mk).fit([a for a, _ in fit], [g for _, g in fit]))
    names, matching = match_phenotypes(models, tolerance=tol)
    for model, mapping in zip(models, names, strict=True):
        model.rename_phenotypes(mapping)
    for a, p in zip(adatas, patient_of, strict=True):
        models[fold_of[p]].transform(a, key_added=key_added)
    logger.info(
        "added obs[%r] to %d slides, each from the phenotypes of the folds it is not in "
        "(%d matched phenotypes)", key_added, len(adatas), len(matching),
    )  # fmt: skip
    return models, matching


def discover(
    adatas: Sequence[AnnData],
    clinical,
    *,
    folds: int | None = None,
    validation_fraction: float = 0.5,
    group_key: str | None = None,
    covariates: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    dropna: bool = False,
    site_key: str | None = None,
    center_features_by_site: bool = False,
    families: bool = True,
    family_threshold: float = 0.7,
    match_tolerance: float = 1.0,
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

    1. Check the clinical table (covariates and site included) and match it to the slides;
       split the patients (stratified by event and site) *before* looking at any marker:
       a discovery/validation split, or ``folds`` cross-fitting folds.
    2. Fit feature-uniqueness phenotypes (``tl.markers``) on the discovery patients' slides
       (each fold: on the other folds' slides), grouped by ``group_key`` or, by default,
       short vs long survival around the fitting patients' median (within each site when
       ``site_key`` is given; patients censored before it are left out of the fit, logged).
    3. Spatial markers per slide (``tl.spatial``), the patient-level cohort (``tl.aggregate``),
       marker families (``tl.marker_families``, outcome-blind).
    4. Survival screen (``tl.survival``) of the patients no phenotype model has seen: the
       validation half, or everyone with cross-fitting; with a site, stratified by site and
       with each marker's site association.

    Parameters
    ----------
    adatas
        Per-slide region AnnData (``uns["slide_id"]`` matches the clinical ``slide`` column).
    clinical
        A :class:`~workbench.io.Cohort` (its table and column names are used), a DataFrame or
        the path of a CSV file (made into one by :meth:`Cohort.from_clinical
        <workbench.io.Cohort.from_clinical>`; ids stay text). Slides and rows are joined by
        :meth:`Cohort.match <workbench.io.Cohort.match>`.
    folds
        ``None``: one discovery/validation split; an integer ``k >= 2``: cross-fitting.
    validation_fraction
        Share of patients held out for testing (single split).
    group_key
        Clinical column defining the outcome groups for the phenotype fit (default: survival).
    covariates
        Clinical covariates for the multivariable Cox (default: ``grade`` and ``age`` where
        present); numeric and complete unless declared ``categorical`` / ``dropna=True``.
    categorical
        Covariates that are categories (one-hot encoded).
    dropna
        Leave out patients with a missing covariate (logged) instead of raising.
    site_key
        Clinical column with each slide's site (batch), or ``"tcga"`` to read the tissue
        source site from TCGA barcodes. Turns the site guard on (see ``tl.survival``).
    center_features_by_site
        Centre and scale the region features within each site before the phenotypes are
        fitted (``tl.center_by_site``; needs ``site_key``).
    families
        Group the markers into families and report them (``uns["survival_families"]``).
    family_threshold
        Absolute Spearman rho at which markers join a family.
    match_tolerance
        Cross-fitting: how close (in territory radii) two folds' phenotypes must be to match.
    marker_kwargs, spatial_kwargs, survival_kwargs
        Passed to ``tl.FeatureUniqueness``, ``tl.spatial`` and ``tl.survival``.
    patient_key, slide_key, duration_key, event_key
        Clinical column names of a DataFrame or CSV (a Cohort brings its own).
    on_unmatched
        ``"raise"`` (default): slides without a clinical row, or clinical slides without an
        AnnData, raise :class:`~workbench.UnmatchedSlidesError` naming them; ``"drop"``: they
        are left out (logged).
    seed
        Seed of the split/folds (and default seed of the steps).
    return_model
        Also return the fitted ``FeatureUniqueness`` (a list of them with cross-fitting).

    Returns
    -------
    anndata.AnnData or tuple
        The cohort AnnData with ``obs["discovery_split"]`` (and ``obs["crossfit_fold"]``),
        ``uns["survival_screen"]``, ``uns["survival_families"]``, ``uns["marker_families"]``,
        ``uns["survival_cv"]``, ``uns["phenotype_exemplars"]`` (crops of typical regions per
        phenotype, :func:`~workbench.tl.phenotype_exemplars`) and ``uns["discovery"]`` (who
        was used where, the phenotype models, the cross-fitting phenotype matching); every
        slide gets its phenotypes and spatial markers. With ``return_model=True``,
        ``(cohort, model or models)``.
    """
    from workbench.io._cohort import Cohort
    from workbench.tl._aggregate import aggregate
    from workbench.tl._families import marker_families
    from workbench.tl._markers import slide_id_of
    from workbench.tl._spatial import spatial
    from workbench.tl._survival import survival

    if on_unmatched not in ("raise", "drop"):
        raise OptionError(f"on_unmatched must be 'raise' or 'drop', got {on_unmatched!r}")
    if folds is not None and (not isinstance(folds, int | np.integer) or folds < 2):
        raise ValueError(f"folds must be None (one split) or an integer >= 2, got {folds!r}")
    if center_features_by_site and not site_key:
        raise ValueError("center_features_by_site=True needs site_key=")
    cohort = Cohort.from_clinical(
        clinical,
        slide_key=slide_key,
        patient_key=patient_key,
        duration_key=duration_key,
        event_key=event_key,
    )
    if not cohort.slide_key:
        raise ClinicalTableError(
            "tl.discover needs a table of slides (one row per slide): give "
            + remedy("slide_key=", "--slide-key")
        )
    if not cohort.has_survival:
        raise ClinicalTableError(
            f"tl.discover needs survival: the clinical table has no {duration_key!r}/"
            f"{event_key!r} columns (it has {list(cohort.clinical.columns)}); name them with "
            + remedy("duration_key=/event_key=", "--duration-key/--event-key")
        )
    keys = dict(patient_key=cohort.patient_key, slide_key=cohort.slide_key,
                duration_key=cohort.duration_key, event_key=cohort.event_key)  # fmt: skip
    patient_key, slide_key = keys["patient_key"], keys["slide_key"]
    duration_key, event_key = keys["duration_key"], keys["event_key"]
    if covariates is None:
        covariates = [c for c in ("grade", "age") if c in cohort.clinical.columns]
    clin = validate_clinical(
        cohort.clinical, **keys, covariates=covariates, categorical=categorical, dropna=dropna,
        site_key=site_key,
    )  # fmt: skip
    if site_key is not None and site_key not in clin.columns:
        site_key = SITE  # derived from TCGA barcodes
    adatas = list(adatas)
    ids = [slide_id_of(a) for a in adatas]
    # slides whose rows validate_clinical(dropna=True) left out go quietly (logged there)
    excused = set(cohort.slide_ids) - set(clin[slide_key])
    keep = [i for i, s in enumerate(ids) if s not in excused]
    cohort = cohort._with_clinical(clin)
    by_slide = cohort.match([ids[i] for i in keep], on_unmatched=on_unmatched)  # given ids
    adatas = [adatas[i] for i in keep if ids[i] in by_slide.index]
    ids = [slide_id_of(a) for a in adatas]
    clin = clin[clin[slide_key].isin(by_slide[slide_key])]  # in table order
    patient_of = [str(by_slide.loc[s, patient_key]) for s in ids]
    pat = clin.drop_duplicates(patient_key).set_index(patient_key)
    strata = pat[site_key] if site_key else None
    if center_features_by_site:
        from workbench.tl._site import center_by_site

        fk = (marker_kwargs or {}).get("feature_key", "X_focus")
        key = center_by_site(adatas, [by_slide.loc[s, site_key] for s in ids], feature_key=fk)
        marker_kwargs = {**(marker_kwargs or {}), "feature_key": key}

    def groups_for(who):
        return _fit_groups(pat, who, group_key, duration_key, event_key, site_key)

    if group_key is not None and group_key not in clin:
        raise ClinicalTableError(f"group_key {group_key!r} is not a clinical column")
    record: dict = {"seed": seed, "group_key": group_key or (
        "survival (short/long around the fitting patients' median"
        + (f", within {site_key!r})" if site_key else ")")
    )}  # fmt: skip
    if folds is None:
        split = split_patients(
            pat.index, pat[event_key], validation_fraction=validation_fraction, seed=seed,
            strata=strata,
        )  # fmt: skip
        n_val = sum(v == VALIDATION for v in split.values())
        if n_val < 2 or len(split) - n_val < 2:
            raise ClinicalTableError(
                f"{len(pat)} patient(s) cannot be split into discovery and validation sets of at "
                f"least 2 patients each ({n_val} would be validation with "
                f"{_option_value('validation_fraction', validation_fraction)}); the screen needs "
                "at least 4 patients with survival, and tens of patients (with events) to find "
                "anything. Add patients"
            )
        disc = [p for p in pat.index if split[p] == DISCOVERY]
        groups = groups_for(disc)
        n_unknown = int(groups.isna().sum())
        if n_unknown:
            logger.info(
                "discover: %d discovery patient(s) have no outcome group (censored early); "
                "not used to fit", n_unknown,
            )  # fmt: skip
        model = _single_split(adatas, patient_of, split, groups, marker_kwargs, seed)
        record.update(
            mode="split", validation_fraction=validation_fraction,
            discovery_patients=disc,
            validation_patients=[p for p in pat.index if split[p] == VALIDATION],
            fit_slides=list(model.slide_ids_fit_), model=repr(model),
            phenotypes=list(model.phenotypes_),
        )  # fmt: skip
        fold_of = None
    else:
        fold_of = fold_patients(pat.index, pat[event_key], folds=folds, seed=seed, strata=strata)
        model, matching = _crossfit(
            adatas, patient_of, pat, fold_of, folds, groups_for, marker_kwargs, seed,
            match_tolerance,
        )  # fmt: skip
        split = {p: VALIDATION for p in pat.index}
        record.update(
            mode="crossfit", folds=int(folds), discovery_patients=[],
            validation_patients=list(pat.index),
            models=[repr(m) for m in model], matching=matching.reset_index(),
            phenotypes=list(matching.index),
        )  # fmt: skip
    sk = {"seed": seed, **(spatial_kwargs or {})}
    for a in adatas:
        spatial(a, **sk)
    co = aggregate(
        adatas, cohort._with_clinical(clin), on_unmatched="drop", split=split,
        site_key=site_key, categorical=categorical,
    )  # fmt: skip
    if fold_of is not None:
        co.obs[CROSSFIT_FOLD] = [int(fold_of[p]) for p in co.obs_names]
    if families:
        marker_families(co, threshold=family_threshold)
    sv = {"covariates": covariates, "categorical": categorical, "seed": seed,
          "families": families, **(survival_kwargs or {})}  # fmt: skip
    survival(co, patients=VALIDATION, **sv)
    record["site_key"] = site_key or ""
    record["center_features_by_site"] = bool(center_features_by_site)
    co.uns["discovery"] = record
    from workbench.tl._exemplars import PHENOTYPE_EXEMPLARS, phenotype_exemplars

    co.uns[PHENOTYPE_EXEMPLARS] = phenotype_exemplars(
        adatas, key=(marker_kwargs or {}).get("key_added", PHENOTYPE)
    )
    logger.info("added adata.uns['discovery'] (patients used for fitting vs testing)")
    return (co, model) if return_model else co


__all__ = [
    "discover",
    "fold_patients",
    "match_phenotypes",
    "outcome_groups",
    "split_patients",
]

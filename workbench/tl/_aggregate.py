"""Per-slide markers to a patient-level AnnData (:func:`aggregate`): one observation per
patient, spatial markers as variables.

The clinical table is an :class:`~workbench.io.Cohort`, checked first
(:func:`~workbench.io.validate_clinical`: every problem found is reported at once, by count
and by name, in a :class:`~workbench.ClinicalTableError`) and joined to the slides by
:meth:`~workbench.io.Cohort.match`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import (
    DISCOVERY_SPLIT,
    FEATURE_UNIQUENESS,
    SITE,
    SLIDE_ID,
    SPATIAL_MARKERS,
)
from workbench._errors import ClinicalTableError, OptionError
from workbench.io._clinical import validate_clinical
from workbench.io._cohort import Cohort, slide_id
from workbench.tl._markers import slide_id_of

logger = logging.getLogger(__name__)

DISCOVERY, VALIDATION = "discovery", "validation"


def _marker_table(
    adatas: Sequence[AnnData] | pd.DataFrame, key: str, slide_ids: Sequence[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, set[str]]:
    """Slides × markers values, marker annotations (if known), and slides used to fit phenotypes."""
    if isinstance(adatas, pd.DataFrame):
        return adatas.apply(pd.to_numeric, errors="coerce").astype(float), None, set()
    adatas = list(adatas)
    if slide_ids is not None and len(slide_ids) != len(adatas):
        raise ClinicalTableError(f"got {len(slide_ids)} slide_ids for {len(adatas)} slides")
    rows, annots, fit_slides = {}, [], set()
    for i, a in enumerate(adatas):
        sid = str(slide_ids[i]) if slide_ids is not None else slide_id_of(a)
        if key not in a.uns:
            raise ClinicalTableError(f"slide {sid} has no uns[{key!r}]; run tl.spatial on it first")
        table = a.uns[key]
        rows[sid] = table["value"].astype(float)
        annots.append(table.drop(columns=["value", "reason"], errors="ignore"))
        # A slide "chose" the phenotypes when the model that phenotyped it was fitted on it
        # (with cross-fitting no slide did: each was scored by a model fitted on others).
        fu = a.uns.get(FEATURE_UNIQUENESS, {})
        if sid in {str(s) for s in fu.get("params", {}).get("fit_slides", [])}:
            fit_slides.add(sid)
    if len(rows) != len(adatas):
        raise ClinicalTableError("slide ids are not unique; set uns['slide_id'] or pass slide_ids=")
    values = pd.DataFrame(rows).T
    annot = pd.concat(annots)
    annot = annot[~annot.index.duplicated()].reindex(values.columns)
    return values, annot, fit_slides


def aggregate(
    slides: Sequence[AnnData] | pd.DataFrame,
    clinical: Cohort | pd.DataFrame | str | PathLike,
    *,
    key: str = SPATIAL_MARKERS,
    slide_ids: Sequence[str] | None = None,
    patient_key: str = "patient_id",
    slide_key: str | None = "slide",
    duration_key: str = "time",
    event_key: str = "event",
    on_unmatched: str = "raise",
    how: str = "mean",
    split: Mapping[str, str] | None = None,
    covariates: Sequence[str] = (),
    categorical: Sequence[str] = (),
    dropna: bool = False,
    site_key: str | None = None,
) -> AnnData:
    """Per-slide markers to one observation per patient, with the patient's clinical row.

    The clinical table becomes an :class:`~workbench.io.Cohort` (a CSV is read by
    :func:`~workbench.io.read_clinical`: ids stay text), is checked by
    :func:`~workbench.io.validate_clinical`, and is joined to the slides by
    :meth:`Cohort.match <workbench.io.Cohort.match>`, the one matching rule.

    Parameters
    ----------
    slides
        Per-slide region AnnData carrying ``uns[key]`` (from ``tl.spatial``), or a DataFrame of
        markers indexed by slide id (or by patient id when ``slide_key`` is ``None``).
    clinical
        A :class:`~workbench.io.Cohort` (its table and column names are used), a DataFrame or
        the path of a CSV file (made into one with :meth:`Cohort.from_clinical
        <workbench.io.Cohort.from_clinical>`).
    key
        ``uns`` key of the per-slide marker table.
    slide_ids
        Slide ids aligned with ``slides`` (default ``uns["slide_id"]``).
    patient_key, slide_key, duration_key, event_key
        Clinical column names of a DataFrame or CSV (``slide_key=None``: one row per patient,
        markers indexed by patient id).
    on_unmatched
        ``"raise"`` (default): slides without a clinical row, or rows without a slide, raise
        :class:`~workbench.UnmatchedSlidesError` naming them; ``"drop"``: they are left out,
        logged and recorded in ``uns["cohort"]``.
    how
        How a patient's slides are combined: ``"mean"``, ``"median"`` or ``"max"`` (NaN skipped).
    split
        Patient id → ``"discovery"``/``"validation"``. By default, when the phenotypes were
        fitted by ``tl.markers``, patients with a slide that its own phenotype model was
        fitted on are ``"discovery"`` and the rest ``"validation"``.
    covariates, categorical, dropna, site_key
        Checked by :func:`~workbench.io.validate_clinical` (numeric and complete covariates
        unless declared categorical / dropped; a complete site column, ``"tcga"`` to derive it
        from TCGA barcodes). ``categorical`` and ``site_key`` are recorded for ``tl.survival``.

    Returns
    -------
    AnnData
        One obs per patient: ``obs`` holds the clinical columns, ``n_slides``, ``slides`` and,
        when known, ``obs["discovery_split"]``; ``X`` = markers (NaN where undefined); ``var``
        = marker kind (``family``) / phenotype / ``n_missing``; ``uns["cohort"]`` = counts,
        the ids left out (``dropped_slides``, ``dropped_rows``, ``dropped_patients``), the
        column names, ``site_key`` and ``categorical``.
    """
    if on_unmatched not in ("raise", "drop"):
        raise OptionError(f"on_unmatched must be 'raise' or 'drop', got {on_unmatched!r}")
    if how not in ("mean", "median", "max"):
        raise OptionError(f"how must be 'mean', 'median' or 'max', got {how!r}")
    cohort = Cohort.from_clinical(
        clinical,
        slide_key=slide_key,
        patient_key=patient_key,
        duration_key=duration_key,
        event_key=event_key,
    )
    slide_key, patient_key = cohort.slide_key, cohort.patient_key
    duration_key = cohort.duration_key or duration_key
    event_key = cohort.event_key or event_key
    clin = validate_clinical(
        cohort.clinical,
        patient_key=patient_key,
        slide_key=slide_key,
        duration_key=duration_key,
        event_key=event_key,
        covariates=covariates,
        categorical=categorical,
        dropna=dropna,
        site_key=site_key,
    )
    if site_key is not None and site_key not in clin.columns:
        site_key = SITE  # derived from TCGA barcodes
    join = slide_key or patient_key
    values, annot, fit_slides = _marker_table(slides, key, slide_ids)
    values.index = values.index.astype(str)
    # rows left out by dropna=True (logged there): their slides go too
    excused = set(cohort.slide_ids) - set(clin[join].astype(str))
    if excused:
        values = values[[s not in excused and slide_id(s) not in excused for s in values.index]]
    matched = cohort._with_clinical(clin).match(values.index, on_unmatched=on_unmatched)
    order = {s: i for i, s in enumerate(clin[join].astype(str))}
    matched = matched.iloc[np.argsort([order[str(s)] for s in matched[join]], kind="stable")]
    per_slide = values.loc[matched.index].set_axis(matched[patient_key].to_numpy())
    clin = matched.reset_index(drop=True)
    agg = per_slide.groupby(level=0, sort=False).agg(how)
    patients = agg.index
    first = clin.drop_duplicates(patient_key).set_index(patient_key).loc[patients]
    obs = first.drop(columns=[slide_key] if slide_key else [])
    obs["n_slides"] = clin.groupby(patient_key).size().loc[patients].astype(int)
    if slide_key:
        obs["slides"] = clin.groupby(patient_key)[slide_key].agg(";".join).loc[patients]
    if split is None and fit_slides:
        chose = set(clin.loc[clin[join].isin(fit_slides), patient_key])
        split = {p: DISCOVERY if p in chose else VALIDATION for p in patients}
    if split is not None:
        lab = pd.Series({str(k): v for k, v in split.items()}).reindex(patients)
        bad = sorted(set(lab.dropna()) - {DISCOVERY, VALIDATION})
        if bad:
            raise ValueError(f"split values must be 'discovery' or 'validation', got {bad}")
        obs[DISCOVERY_SPLIT] = pd.Categorical(
            lab.fillna(VALIDATION), categories=[DISCOVERY, VALIDATION]
        )
    obs.index = obs.index.astype(str)
    obs.index.name = None
    var = pd.DataFrame(index=agg.columns.astype(str))
    if annot is not None:
        for col in annot.columns:
            var[col] = annot[col].astype(str).to_numpy()
    var["n_missing"] = agg.isna().sum().to_numpy().astype(int)
    out = AnnData(X=agg.to_numpy(dtype=np.float64), obs=obs, var=var)
    out.uns["cohort"] = {
        "n_patients": int(out.n_obs),
        "n_slides": int(len(clin)),
        "dropped_slides": list(matched.attrs["unmatched_slides"]),
        "dropped_rows": list(matched.attrs["unmatched_rows"]),
        "dropped_patients": list(matched.attrs["unmatched_patients"]),
        "aggregate": how,
        "duration_key": duration_key,
        "event_key": event_key,
        "patient_key": patient_key,
        "site_key": site_key or "",
        "categorical": list(categorical),
    }
    logger.info(
        "aggregate: %d patients x %d markers from %d %s; added adata.uns['cohort']",
        out.n_obs, out.n_vars, len(clin), f"slides (how={how})" if slide_key else "rows",
    )  # fmt: skip
    return out


def cohort(*args, **kwargs) -> AnnData:
    """Deprecated name of :func:`aggregate` (kept for one release).

    Parameters
    ----------
    *args, **kwargs
        Passed to :func:`aggregate` (``aggregate=`` is passed as ``how=``).

    Returns
    -------
    AnnData
        What :func:`aggregate` returns.
    """
    warnings.warn(
        "tl.cohort is now tl.aggregate (per-slide markers -> one obs per patient; "
        "aggregate= is now how=); tl.cohort will be removed in the next release",
        FutureWarning,
        stacklevel=2,
    )
    if "aggregate" in kwargs:
        kwargs["how"] = kwargs.pop("aggregate")
    return aggregate(*args, **kwargs)


def read_slides(folder: str | PathLike, *, pattern: str = "*.h5ad") -> list[AnnData]:
    """Read every per-slide AnnData in a folder (sorted by name).

    A slide without ``uns["slide_id"]`` gets its file stem, which is how ``tl.extract_cohort``
    names its outputs.

    Parameters
    ----------
    folder
        Folder holding one ``.h5ad`` per slide.
    pattern
        Glob pattern of the files; hidden files (``.*``, e.g. temporary files of a killed
        writer) are skipped.

    Returns
    -------
    list of AnnData
        One per file, in file-name order, each with ``uns["slide_id"]`` set.
    """
    import anndata

    from workbench.io import list_results

    paths = list_results(folder, pattern)  # hidden and half-written files are never results
    if not paths:
        raise FileNotFoundError(f"no {pattern} files in {folder}")
    out = []
    for p in paths:
        a = anndata.read_h5ad(p)
        a.uns.setdefault(SLIDE_ID, p.stem)
        out.append(a)
    logger.info("read %d slide AnnData from %s", len(out), folder)
    return out

"""Checking a clinical table: one place for the rules every step relies on.

:func:`validate_clinical` is used by :class:`workbench.io.Cohort` when a cohort is built and by
the discovery tools in :mod:`workbench.tl`; every problem found is reported at once, by count
and by name, in a :class:`~workbench.ClinicalTableError`.

Covariates (columns used to adjust a survival model) follow two rules:

* a covariate is **numeric** unless it is declared in ``categorical=``: a text value in a
  numeric covariate is an error naming the patients (it is never silently one-hot encoded);
* a **missing** covariate value is an error naming the patients and columns, unless
  ``dropna=True`` is passed, which leaves those patients out and logs who they were.

The **site** (batch: hospital, lab, scanner) is a column named by ``site_key``; with
``site_key="tcga"`` it is derived from TCGA barcodes (:func:`tcga_site`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from workbench._constants import CLINICAL_REQUIRED, SITE, TCGA_SITE
from workbench._errors import ClinicalTableError

logger = logging.getLogger(__name__)

_TCGA = re.compile(r"^TCGA-([A-Z0-9]{2})-[A-Z0-9]{4}", re.IGNORECASE)


def _names(values: Sequence, limit: int = 10) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def tcga_site(barcodes: Sequence[str] | pd.Series) -> pd.Series:
    """Tissue source site of TCGA barcodes: the two characters after ``TCGA-``.

    ``"TCGA-A2-A0T2-01Z-00-DX1"`` → ``"A2"`` (characters 6-7): the hospital or lab that
    provided the sample, the usual batch variable of TCGA slides.

    Parameters
    ----------
    barcodes
        Patient, sample or slide barcodes (a file name such as ``TCGA-A2-A0T2-01Z-00-DX1.svs``
        works too).

    Returns
    -------
    pandas.Series
        The site codes (same index as ``barcodes`` when it is a Series).

    Raises
    ------
    workbench.ClinicalTableError
        Naming the values that are not TCGA barcodes.
    """
    series = barcodes if isinstance(barcodes, pd.Series) else pd.Series(list(barcodes))
    text = series.astype(str).str.strip()
    match = text.str.extract(_TCGA, expand=False)
    bad = text[match.isna()]
    if len(bad):
        raise ClinicalTableError(
            f"{len(bad)} value(s) are not TCGA barcodes ({_names(bad.unique())}); a TCGA "
            "barcode starts 'TCGA-<site>-<participant>' (e.g. TCGA-A2-A0T2). Put the site in a "
            "column of its own and pass site_key='<column>' instead"
        )
    return match.str.upper().rename(SITE)


#: Columns read as text by :func:`read_clinical` unless told otherwise (ids such as ``007``).
ID_COLUMNS = ("patient_id", "slide")


def _text_encoding_problem(head: bytes) -> str | None:
    """Why the first bytes of a file are not UTF-8 text a CSV reader can take, or ``None``."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        head and head.count(b"\x00") * 4 > len(head)
    ):
        return "is UTF-16 text (Excel's 'Unicode Text')"
    return None


def read_clinical(
    path: str | PathLike, *, id_columns: Sequence[str | None] = ID_COLUMNS
) -> pd.DataFrame:
    """Read a clinical CSV with its id columns kept as text: the one reader of clinical files.

    Patient and slide ids are read as written (``007`` stays ``007`` and is not ``7``; ``001``
    matches slide ``001``). Rows with no value at all (the trailing ``,,,`` rows a spreadsheet
    leaves) are ignored; a UTF-8 byte-order mark is accepted.

    Parameters
    ----------
    path
        The CSV file (comma-separated, UTF-8, a header line, one row per slide).
    id_columns
        Columns read as text (``None`` entries are skipped); the default is
        ``("patient_id", "slide")``.

    Returns
    -------
    pandas.DataFrame
        The table (the id columns as ``str``, other columns as pandas infers them).

    Raises
    ------
    workbench.ClinicalTableError
        The file is missing, a folder, empty, not UTF-8 (e.g. UTF-16: save it as UTF-8
        CSV) or not CSV.
    """
    path_text = str(path)
    p = Path(path)
    if p.is_dir():
        raise ClinicalTableError(f"{path_text!r} is a folder; give the clinical CSV file")
    if not p.exists():
        raise ClinicalTableError(
            f"cannot read the clinical table: no clinical table at {path_text!r}; check the path"
        )
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise ClinicalTableError(f"cannot read the clinical table {path_text!r}: {exc}") from None
    problem = _text_encoding_problem(head)
    if problem:
        raise ClinicalTableError(
            f"the clinical table {path_text!r} {problem}; save it as UTF-8 CSV (Excel: "
            "File > Save As > 'CSV UTF-8 (Comma delimited)')"
        )
    dtype = {c: str for c in id_columns if c}
    try:
        df = pd.read_csv(p, dtype=dtype, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ClinicalTableError(
            f"the clinical table {path_text!r} is empty: it needs a header line naming the "
            f"columns ({', '.join(CLINICAL_REQUIRED)} …) and one row per slide"
        ) from None
    except UnicodeDecodeError:
        raise ClinicalTableError(
            f"the clinical table {path_text!r} is not UTF-8 text; save it as UTF-8 CSV (Excel: "
            "File > Save As > 'CSV UTF-8 (Comma delimited)')"
        ) from None
    except (OSError, pd.errors.ParserError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClinicalTableError(
            f"cannot read the clinical table {path_text!r} as CSV ({detail}); save it as "
            "comma-separated text with a header line"
        ) from None
    empty = df.isna().all(axis=1)
    if empty.any():
        logger.info("clinical: ignored %d empty row(s) of %s", int(empty.sum()), path_text)
        df = df[~empty].reset_index(drop=True)
    return df


def _looks_headerless(columns: Sequence) -> bool:
    """Whether a table's column names look like a row of data (numbers, or 0/1 flags)."""
    numeric = pd.to_numeric(pd.Series([str(c) for c in columns]), errors="coerce").notna()
    return len(columns) > 0 and numeric.mean() >= 0.5


def covariate_frame(
    table: pd.DataFrame,
    covariates: Sequence[str],
    *,
    categorical: Sequence[str] = (),
    ids: Sequence[str] | pd.Index | None = None,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Covariates as model-ready numbers, and the problems found, by kind.

    Parameters
    ----------
    table
        Rows = patients (or slides), columns include ``covariates``.
    covariates
        Covariate columns; numeric unless listed in ``categorical``.
    categorical
        Covariates to one-hot encode (first level dropped).
    ids
        Row names used in messages (default: the index).

    Returns
    -------
    design : pandas.DataFrame
        One float column per numeric covariate and one 0/1 column per non-reference level
        of each categorical one (rows with a missing value hold NaN).
    problems : dict
        Maps ``"missing"``, ``"text"``, ``"unknown"`` to messages.
    """
    covariates = list(dict.fromkeys(covariates))
    categorical = list(dict.fromkeys(categorical))
    problems: dict[str, list[str]] = {"missing": [], "text": [], "unknown": []}
    extra = [c for c in categorical if c not in covariates]
    if extra:
        raise ValueError(
            f"categorical={extra} names column(s) that are not covariates {covariates}; "
            "list every categorical column among the covariates too"
        )
    unknown = [c for c in covariates if c not in table.columns]
    if unknown:
        problems["unknown"].append(
            f"covariate column(s) {unknown} are not in the table; it has {list(table.columns)}"
        )
        return pd.DataFrame(index=table.index), problems
    ids = pd.Index(table.index if ids is None else ids).astype(str)
    parts = []
    for col in covariates:
        raw = table[col]
        missing = raw.isna().to_numpy()
        if col in categorical:
            dummies = pd.get_dummies(raw.astype("category"), prefix=col, drop_first=True)
            dummies = dummies.astype(float)
            dummies[missing] = np.nan
            parts.append(dummies)
        else:
            values = raw.astype(float) if raw.dtype == bool else pd.to_numeric(raw, errors="coerce")
            text = values.isna().to_numpy() & ~missing
            if text.any():
                shown = [f"{v!r} (patient {i})" for v, i in zip(raw[text], ids[text], strict=True)]
                problems["text"].append(
                    f"covariate {col!r} has {int(text.sum())} non-numeric value(s): "
                    f"{_names(shown, 5)}. Fix them, or declare categorical=[{col!r}] if "
                    f"{col!r} is a category"
                )
            finite = np.isfinite(values.to_numpy(dtype=float)) | values.isna().to_numpy()
            if not finite.all():
                problems["text"].append(
                    f"covariate {col!r} has {int((~finite).sum())} infinite value(s) "
                    f"(patients {_names(ids[~finite])})"
                )
            parts.append(values.astype(float).rename(col).to_frame())
        if missing.any():
            problems["missing"].append(
                f"covariate {col!r} is missing for {int(missing.sum())} patient(s) "
                f"({_names(ids[missing])})"
            )
    design = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=table.index)
    return design, problems


def _resolve_site(
    df: pd.DataFrame, site_key: str | None, patient_key: str, slide_key: str | None
) -> str | None:
    """Make sure the site column exists (derived from TCGA barcodes for ``site_key='tcga'``)."""
    if site_key is None or site_key in df.columns:
        return site_key
    if site_key != TCGA_SITE:
        raise ClinicalTableError(
            f"site_key={site_key!r} is not a column of the clinical table {list(df.columns)}; "
            f"name the site column, or pass site_key={TCGA_SITE!r} to read the tissue source "
            "site from TCGA barcodes"
        )
    source = patient_key
    if not df[patient_key].astype(str).str.match(_TCGA).all() and slide_key:
        source = slide_key
    df[SITE] = tcga_site(df[source]).to_numpy()
    logger.info(
        "clinical: site = TCGA tissue source site of %r (%d sites)", source, df[SITE].nunique()
    )
    return SITE


def validate_clinical(
    clinical: pd.DataFrame | str | PathLike,
    *,
    patient_key: str = "patient_id",
    slide_key: str | None = "slide",
    duration_key: str | None = "time",
    event_key: str | None = "event",
    covariates: Sequence[str] = (),
    categorical: Sequence[str] = (),
    dropna: bool = False,
    site_key: str | None = None,
    require_events: bool = True,
) -> pd.DataFrame:
    """Check a clinical table and return a clean copy (``time`` float, ``event`` 0/1 int).

    Parameters
    ----------
    clinical
        A DataFrame or the path of a CSV file, one row per slide (or per patient when
        ``slide_key`` is ``None``).
    patient_key, slide_key, duration_key, event_key
        Column names; ``duration_key``/``event_key`` may be ``None`` for a table without
        survival (e.g. a cohort used only for training).
    covariates
        Columns that will adjust survival models; each must be numeric and complete, unless
        declared categorical / ``dropna=True`` (see the module docstring).
    categorical
        Covariates that are categories (text or codes), one-hot encoded where they are used.
    require_events
        Whether a table in which every ``event`` is 0 is a problem (it is for survival models;
        a cohort used only for training accepts it).
    dropna
        Leave out the rows whose covariates are missing (logged, and listed in
        ``df.attrs["dropped_missing_covariates"]`` (patients) and ``df.attrs["dropped_slides"]``)
        instead of raising.
    site_key
        Column holding the site (batch) of each row; ``"tcga"`` derives a ``"site"`` column
        from TCGA barcodes in the patient (else slide) column. Must be complete.

    Returns
    -------
    pandas.DataFrame
        The checked table.

    Raises
    ------
    workbench.ClinicalTableError
        Listing every problem (an empty or headerless file, missing columns, non-numeric or
        NaN or negative times, events other than 0/1, no events, duplicated slides,
        patients whose rows disagree on time/event/covariates/site, text or missing
        covariates, missing sites).
    """
    if not isinstance(clinical, pd.DataFrame):
        clinical = read_clinical(clinical, id_columns=(patient_key, slide_key))
    df = clinical.copy()
    survival = [k for k in (duration_key, event_key) if k]
    required = [patient_key, *survival] + ([slide_key] if slide_key else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = (
            " The first line looks like data rather than column names: add a header line."
            if _looks_headerless(df.columns)
            else ""
        )
        raise ClinicalTableError(
            f"the clinical table misses column(s) {missing}; it has {list(df.columns)}. "
            f"Rename them or pass patient_key=/slide_key=/duration_key=/event_key= "
            f"(the defaults are {list(CLINICAL_REQUIRED)}).{hint}"
        )
    if df.empty:
        raise ClinicalTableError("the clinical table has no rows")
    problems: list[str] = []
    df[patient_key] = df[patient_key].astype(str)
    if slide_key:
        df[slide_key] = df[slide_key].astype(str)

    time = event = None
    if duration_key:
        time = pd.to_numeric(df[duration_key], errors="coerce")
        bad_type = df[patient_key][time.isna() & df[duration_key].notna()]
        if len(bad_type):
            problems.append(
                f"{len(bad_type)} non-numeric {duration_key!r} value(s) "
                f"(patients {_names(bad_type)})"
            )
        nan_time = df[patient_key][df[duration_key].isna()]
        if len(nan_time):
            problems.append(
                f"{len(nan_time)} missing {duration_key!r} value(s) (patients {_names(nan_time)})"
            )
        neg = df[patient_key][time < 0]
        if len(neg):
            problems.append(
                f"{len(neg)} negative {duration_key!r} value(s) (patients {_names(neg)})"
            )
        inf = df[patient_key][np.isinf(time.to_numpy(dtype=float))]
        if len(inf):
            problems.append(
                f"{len(inf)} infinite {duration_key!r} value(s) (patients {_names(inf)}); give "
                "the follow-up time, with event 0 for a patient still alive at the last visit"
            )
        if require_events and len(time) and (time.fillna(-1) == 0).all():
            problems.append(
                f"every {duration_key!r} is 0, so there is no follow-up to model; the column "
                "should hold the time from diagnosis to the event or the last visit"
            )
    if event_key:
        raw_event = df[event_key]
        if raw_event.dtype == bool:
            event = raw_event.astype(float)
        else:
            event = pd.to_numeric(raw_event, errors="coerce")
        bad_event = df[patient_key][~event.isin([0, 1])]
        if len(bad_event):
            problems.append(
                f"{len(bad_event)} {event_key!r} value(s) not 0/1 (patients {_names(bad_event)}); "
                "use 1 = event observed, 0 = censored"
            )
        elif event.sum() == 0 and require_events:
            problems.append(f"no events: every {event_key!r} is 0, so survival cannot be modelled")

    if slide_key:
        dup = df[slide_key][df[slide_key].duplicated()].unique()
        if len(dup):
            problems.append(f"{len(dup)} slide(s) listed more than once ({_names(dup)})")
    else:
        dup = df[patient_key][df[patient_key].duplicated()].unique()
        if len(dup):
            problems.append(f"{len(dup)} duplicate patient id(s) ({_names(dup)})")

    site_key = _resolve_site(df, site_key, patient_key, slide_key)
    if site_key:
        no_site = df[patient_key][df[site_key].isna()]
        if len(no_site):
            problems.append(
                f"the site column {site_key!r} is missing for {len(no_site)} row(s) "
                f"(patients {_names(no_site)})"
            )
        df[site_key] = df[site_key].astype(str).where(df[site_key].notna())

    design, cov_problems = covariate_frame(
        df, covariates, categorical=categorical, ids=df[patient_key]
    )
    problems += cov_problems["unknown"] + cov_problems["text"]
    drop_rows = pd.Series(False, index=df.index)
    if cov_problems["missing"]:
        if dropna:
            drop_rows = design.isna().any(axis=1)
        else:
            problems += [
                m + "; fill it, or pass dropna=True to leave those patients out"
                for m in cov_problems["missing"]
            ]
    if not problems:
        if duration_key:
            df[duration_key] = time.astype(float)
        if event_key:
            df[event_key] = event.astype(int)
        for col in covariates:
            if col not in categorical:
                df[col] = design[col]
        agree = [*survival, *covariates, *([site_key] if site_key else [])]
        if agree:
            per_patient = df[~drop_rows].groupby(patient_key)[agree].nunique(dropna=False)
            clash = per_patient[(per_patient > 1).any(axis=1)]
            if len(clash):
                cols = "/".join(repr(c) for c in agree if (clash[c] > 1).any())
                problems.append(
                    f"{len(clash)} patient(s) whose rows disagree on {cols} ({_names(clash.index)})"
                )
    if problems:
        raise ClinicalTableError("the clinical table has problems:\n  - " + "\n  - ".join(problems))
    dropped: list[str] = []
    dropped_slides: list[str] = []
    if drop_rows.any():
        dropped = sorted(set(df.loc[drop_rows, patient_key]))
        dropped_slides = sorted(df.loc[drop_rows, slide_key]) if slide_key else []
        logger.warning(
            "clinical: dropna=True left out %d patient(s) with missing covariates: %s",
            len(dropped),
            _names(dropped),
        )
        df = df[~drop_rows].copy()
        if df.empty:
            raise ClinicalTableError("every row has a missing covariate; nothing is left")
    df.attrs["dropped_missing_covariates"] = dropped
    df.attrs["dropped_slides"] = dropped_slides
    return df


__all__ = ["covariate_frame", "read_clinical", "tcga_site", "validate_clinical"]

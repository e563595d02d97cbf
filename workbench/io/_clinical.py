"""Checking a clinical table: one place for the rules every step relies on.

:func:`validate_clinical` is used by :class:`workbench.io.Cohort` when a cohort is built and by
the discovery tools in :mod:`workbench.tl`; every problem found is reported at once, by count
and by name, in a :class:`~workbench.ClinicalTableError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import pandas as pd

from workbench._constants import CLINICAL_REQUIRED
from workbench._errors import ClinicalTableError


def _names(values: Sequence, limit: int = 10) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def validate_clinical(
    clinical: pd.DataFrame | str | PathLike,
    *,
    patient_key: str = "patient_id",
    slide_key: str | None = "slide",
    duration_key: str | None = "time",
    event_key: str | None = "event",
    require_events: bool = True,
) -> pd.DataFrame:
    """Check a clinical table and return a clean copy (``time`` float, ``event`` 0/1 int).

    Parameters
    ----------
    clinical
        A DataFrame or the path of a CSV file, one row per slide (or per patient when
        ``slide_key`` is ``None``).
    patient_key, slide_key, duration_key, event_key
        Column names. ``duration_key=None, event_key=None`` checks a table without survival
        (a cohort that is only used for training on a label column).
    require_events
        Whether a table in which every ``event`` is 0 is a problem (it is for survival models;
        a cohort used only for training accepts it).

    Returns
    -------
    The checked table; raises :class:`~workbench.ClinicalTableError` listing every problem
    (missing columns, non-numeric or NaN or negative times, events other than 0/1, no events,
    duplicated slides, patients whose rows disagree on time/event).
    """
    if not isinstance(clinical, pd.DataFrame):
        try:
            clinical = pd.read_csv(clinical)
        except (OSError, pd.errors.ParserError) as exc:
            raise ClinicalTableError(f"cannot read the clinical table {clinical!s}: {exc}") from exc
    df = clinical.copy()
    survival = duration_key is not None or event_key is not None
    if survival and (duration_key is None or event_key is None):
        raise ValueError("give both duration_key and event_key, or neither (no survival)")
    required = [patient_key] + ([duration_key, event_key] if survival else [])
    required += [slide_key] if slide_key else []
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ClinicalTableError(
            f"the clinical table misses column(s) {missing}; it has {list(df.columns)}. "
            f"Rename them or pass patient_key=/slide_key=/duration_key=/event_key= "
            f"(the defaults are {list(CLINICAL_REQUIRED)})"
        )
    if df.empty:
        raise ClinicalTableError("the clinical table has no rows")
    problems: list[str] = []
    df[patient_key] = df[patient_key].astype(str)
    if slide_key:
        df[slide_key] = df[slide_key].astype(str)

    if survival:
        time = pd.to_numeric(df[duration_key], errors="coerce")
        bad_type = df[patient_key][time.isna() & df[duration_key].notna()]
        if len(bad_type):
            problems.append(
                f"{len(bad_type)} non-numeric {duration_key!r} value(s) (patients {_names(bad_type)})"
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
    if not problems and survival:
        df[duration_key] = time.astype(float)
        df[event_key] = event.astype(int)
        per_patient = df.groupby(patient_key)[[duration_key, event_key]].nunique()
        clash = per_patient.index[(per_patient > 1).any(axis=1)]
        if len(clash):
            problems.append(
                f"{len(clash)} patient(s) whose rows disagree on {duration_key!r}/{event_key!r} "
                f"({_names(clash)})"
            )
    if problems:
        raise ClinicalTableError("the clinical table has problems:\n  - " + "\n  - ".join(problems))
    return df


__all__ = ["validate_clinical"]

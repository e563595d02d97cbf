"""Kaplan-Meier curves of a survival model's predicted risk groups on held-out patients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from workbench._errors import ClinicalTableError, OptionError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["risk_group_cuts", "risk_groups"]

_LABELS = {2: ("low risk", "high risk"), 3: ("low risk", "intermediate risk", "high risk")}
_COLOURS = {"low risk": "C0", "intermediate risk": "C2", "high risk": "C3"}


def _finite(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0 or not np.isfinite(arr).all():
        raise OptionError(f"{name} must be a non-empty array of finite numbers")
    return arr


def risk_group_cuts(train_risk, groups: int = 2) -> np.ndarray:
    """Cut-points of ``groups`` equally filled risk groups, chosen on training risks.

    Parameters
    ----------
    train_risk
        Risks of the patients a model was trained on (never the held-out patients').
    groups
        2 (cut at the median) or 3 (cut at the tertiles).

    Returns
    -------
    numpy.ndarray
        The ``groups - 1`` increasing cut-points; a risk above cut-point ``j`` (and at or below
        the next) falls in group ``j + 1`` (0 = lowest risk).
    """
    if groups not in _LABELS:
        raise OptionError(f"groups must be 2 (median) or 3 (tertiles), got {groups!r}")
    train = _finite(train_risk, "train_risk")
    return np.quantile(train, np.arange(1, groups) / groups)


def _assign(risk: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    # Count of cut-points strictly below each risk: ties at a cut go to the lower group.
    return np.searchsorted(cuts, risk, side="left")


def _from_frame(data: pd.DataFrame) -> tuple[np.ndarray, ...]:
    missing = [c for c in ("time", "event", "risk") if c not in data.columns]
    if missing:
        raise OptionError(
            f"data lacks column(s) {missing}; risk_groups reads an out-of-fold table with "
            "columns patient, time, event, risk (and optionally fold)"
        )
    fold = data["fold"].to_numpy() if "fold" in data.columns else None
    return data["risk"].to_numpy(), data["time"].to_numpy(), data["event"].to_numpy(), fold


def risk_groups(
    risk=None,
    time=None,
    event=None,
    *,
    data: pd.DataFrame | None = None,
    train_risk=None,
    groups: int = 2,
    time_unit: str | None = None,
    ci: bool = True,
    at_risk: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Kaplan-Meier curves of held-out patients split into predicted risk groups.

    The cut-points (the median, or the tertiles with ``groups=3``) are chosen on the
    **training** patients' risks and then applied to the held-out ``risk``: they are never
    chosen on the held-out risks themselves, so the separation of the curves is not tuned on
    the patients it is shown on. Where the training risks come from:

    * ``train_risk`` an array: the training patients' risks of the model that scored ``risk``
      (one cut for every held-out patient);
    * ``train_risk`` a mapping ``{fold: array}`` (with a ``fold`` column or array): each fold's
      held-out patients are cut on the risks of that fold's training patients;
    * ``train_risk`` ``None`` with a ``fold`` column in ``data``: each fold is cut on the other
      folds' out-of-fold risks (its training patients, scored by the other folds' models; this
      assumes the fold models' risks are on a comparable scale — pass the mapping to be exact).

    With neither ``train_risk`` nor folds there is nothing honest to cut on and
    :class:`~workbench.OptionError` is raised.

    Parameters
    ----------
    risk, time, event
        Held-out patients' predicted risks (higher = shorter survival), follow-up times and
        event indicators (1 = event, 0 = censored); ignored when ``data`` is given.
    data
        Out-of-fold table (the ``oof_`` layout of survival cross-validation): columns
        ``patient``, ``time``, ``event``, ``risk`` and optionally ``fold``.
    train_risk
        The training patients' risks: an array, or a mapping from fold to array (see above).
    groups
        2 (low / high risk, cut at the median) or 3 (low / intermediate / high, tertiles).
    time_unit
        Unit of the follow-up times (``"months"``), shown on the time axis.
    ci
        Draw confidence bands.
    at_risk
        Add the numbers at risk of each group below the axis (lifelines'
        ``add_at_risk_counts``).
    ax
        Axes to draw on (a new figure's when ``None``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; the title gives the multivariate log-rank p between the groups.
    """
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import multivariate_logrank_test

    if groups not in _LABELS:
        raise OptionError(f"groups must be 2 (median) or 3 (tertiles), got {groups!r}")
    if data is not None:
        risk, time, event, fold = _from_frame(data)
    else:
        if risk is None or time is None or event is None:
            raise OptionError("risk_groups needs risk, time and event arrays, or data=")
        fold = None
    risk = _finite(risk, "risk")
    T = np.asarray(time, dtype=float).ravel()
    E = np.asarray(event, dtype=float).ravel()
    if not (len(risk) == len(T) == len(E)):
        raise OptionError(
            f"risk, time and event differ in length ({len(risk)}, {len(T)}, {len(E)})"
        )
    if not np.isfinite(T).all() or (T < 0).any():
        raise ClinicalTableError("follow-up times must be finite and non-negative")
    if not np.isin(E, (0, 1)).all():
        raise ClinicalTableError("events must be 0 (censored) or 1 (event)")
    E = E.astype(int)

    if isinstance(train_risk, Mapping):
        if fold is None:
            raise OptionError("train_risk given per fold, but data has no 'fold' column")
        group = np.empty(len(risk), dtype=int)
        for f in np.unique(fold).tolist():  # plain Python values: readable in messages
            if f not in train_risk:
                raise OptionError(f"train_risk has no training risks for fold {f!r}")
            sel = fold == f
            group[sel] = _assign(risk[sel], risk_group_cuts(train_risk[f], groups))
        source = "each fold's training risks"
    elif train_risk is not None:
        group = _assign(risk, risk_group_cuts(train_risk, groups))
        source = "training risks"
    elif fold is not None:
        group = np.empty(len(risk), dtype=int)
        for f in np.unique(fold):
            sel = fold == f
            if sel.all():
                raise OptionError(
                    "data holds one fold only: pass train_risk (the training patients' risks)"
                )
            group[sel] = _assign(risk[sel], risk_group_cuts(risk[~sel], groups))
        source = "the other folds' risks"
    else:
        raise OptionError(
            "risk_groups needs train_risk (the training patients' risks) or a 'fold' column "
            "to choose its cut-points; it never cuts on the held-out risks themselves"
        )

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    fitters = []
    for g, label in enumerate(_LABELS[groups]):
        sel = group == g
        if sel.any():
            km = KaplanMeierFitter(label=label).fit(T[sel], E[sel])
            km.plot_survival_function(ax=ax, ci_show=ci, color=_COLOURS[label])
            fitters.append(km)
    present = np.unique(group)
    if len(present) >= 2:
        p = float(multivariate_logrank_test(T, group, E).p_value)
        stat = f"log-rank p = {p:.2g}"
    else:
        stat = "one group only: no log-rank test"
    ax.set_title(
        f"{groups} predicted risk groups (n = {len(risk)}), {stat}\n"
        f"cut-points ({'median' if groups == 2 else 'tertiles'}) from {source}",
        fontsize=9,
    )
    ax.set_xlabel(f"time ({time_unit})" if time_unit else "time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    if at_risk and fitters:
        add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    return ax

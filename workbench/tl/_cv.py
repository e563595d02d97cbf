"""Patient splits that do what was asked, and cross-validation figures a reviewer accepts.

The rules the trainer follows (and the CLI reports):

- A *validation share* ``v`` holds out 1 in ``round(1 / v)`` patients of every class (stratified
  group folds, a patient's slides together). When a class has fewer patients than that, the
  split cannot be made as asked and :class:`~workbench.OptionError` says so with the counts
  (it used to hold out a much larger share silently: half of 8 slides for ``v = 0.01``).
- ``k`` *folds* are exactly ``k`` folds. More folds than patients, or a class with a single
  patient, is refused with the counts; a fold that holds fewer than two slides or patients of
  a class is made as asked, with a :class:`~workbench.SplitWarning` naming the folds and the
  counts (its own AUC is then undefined or noisy; the pooled out-of-fold AUC uses every slide).
- A patient whose slides carry different labels cannot be put on one side of a stratified
  split: refused (:class:`~workbench.ClinicalTableError` naming them) or, on request, dropped.
- The pooled out-of-fold AUC comes with a bootstrap interval that resamples *patients* (all of
  a patient's slides at once), averaged over the repeats of repeated cross-validation.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from workbench._errors import ClinicalTableError, OptionError, SplitWarning, remedy

logger = logging.getLogger(__name__)

ON_CONFLICT = ("raise", "drop")
#: File the out-of-fold predictions are saved in, beside the checkpoint.
OOF_FILE = "oof_predictions.csv"


def _names(values, most: int = 8) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - most} more" if len(values) > most else ""
    return ", ".join(values[:most]) + more


def conflicting_patients(labels: Sequence, patients: Sequence) -> dict[str, list[str]]:
    """Patients whose slides carry more than one label value.

    Parameters
    ----------
    labels
        One label value per slide.
    patients
        The patient of each slide.

    Returns
    -------
    dict
        ``{patient: sorted distinct labels}`` for every patient with two or more labels.
    """
    seen: dict[str, set] = {}
    for lab, pat in zip(labels, patients, strict=True):
        seen.setdefault(str(pat), set()).add(str(lab))
    return {p: sorted(v) for p, v in seen.items() if len(v) > 1}


def conflict_error(conflicts: dict[str, list[str]], label: str | None) -> ClinicalTableError:
    """The error for patients carrying conflicting labels (names them and the way out)."""
    shown = "; ".join(f"{p} ({', '.join(v)})" for p, v in list(conflicts.items())[:8])
    more = f" and {len(conflicts) - 8} more" if len(conflicts) > 8 else ""
    return ClinicalTableError(
        f"{len(conflicts)} patient(s) carry conflicting {label or 'label'!r} labels across their "
        f"slides: {shown}{more}; a patient must sit on one side of a split. Fix the table, or "
        + remedy("pass on_conflict='drop'", "add --on-conflicting-labels drop")
        + " to leave them out"
    )


def _class_patients(y: np.ndarray, groups: Sequence) -> dict[int, int]:
    """Distinct patients per class index."""
    out: dict[int, set] = {}
    for c, g in zip(np.asarray(y).tolist(), groups, strict=True):
        out.setdefault(int(c), set()).add(str(g))
    return {c: len(v) for c, v in sorted(out.items())}


def _counts_text(counts: dict[int, int], classes: Sequence | None) -> str:
    def name(c: int) -> str:
        return str(classes[c]) if classes is not None and c < len(classes) else str(c)

    return ", ".join(f"{name(c)!r}: {n}" for c, n in counts.items())


def _stratified_group_folds(y, groups, n_splits: int, seed: int) -> list:
    from sklearn.model_selection import StratifiedGroupKFold

    with warnings.catch_warnings():  # sklearn warns when a class is rare; we check ourselves
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=int(n_splits), shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), np.asarray(y), np.asarray(groups)))


def _folds(k: int) -> str:
    """``folds=5`` for Python, ``--folds 5`` for the command line (:func:`remedy`)."""
    return remedy(f"folds={k}", f"--folds {k}")


def _option(option: str, value) -> str:
    """``validation=0.2`` for Python, ``--validation 0.2`` on the command line."""
    return remedy(f"{option}={value}", f"--{option.replace('_', '-')} {value}")


def holdout_folds_for(share: float) -> int:
    """How many stratified folds a validation share makes (its held-out part is one of them)."""
    return max(2, int(round(1.0 / float(share))))


def check_holdout(
    y, groups, share: float, *, classes: Sequence | None = None, option: str = "validation"
) -> None:
    """Refuse a validation share that these patients cannot give (see the module docstring).

    Raises
    ------
    OptionError
        A class has fewer patients than ``round(1 / share)`` (the message names the counts and
        the smallest share that works).
    """
    need = holdout_folds_for(share)
    counts = _class_patients(np.asarray(y), groups)
    smallest = min(counts.values())
    if smallest >= need:
        return
    n_patients = len(set(map(str, groups)))
    if smallest < 2:
        raise OptionError(
            f"{_option(option, share)} needs at least 2 patients of every class (one to hold out, "
            f"one to train on); patients per class: {_counts_text(counts, classes)}. Add patients "
            f"or train without {remedy(option, '--' + option.replace('_', '-'))}"
        )
    held = 1.0 / smallest
    raise OptionError(
        f"{_option(option, share)} holds out 1 in {need} patients of each class, but patients per class "
        f"are {_counts_text(counts, classes)} ({n_patients} patients): the split would hold out "
        f"1 in {smallest} ({held:.0%}) instead of what was asked. Ask for "
        f"{remedy(f'{option} >= {held:.2f}', f'--{option.replace(chr(95), chr(45))} {held:.2f} or more')}"
        ", or add patients"
    )


def holdout_split(
    y, groups, share: float, seed: int, *, strict: bool = True, classes: Sequence | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices (train, held) of a stratified patient hold-out of about ``share``.

    With ``strict`` a share the patients cannot give raises (:func:`check_holdout`); without,
    it shrinks to what the smallest class allows, or ``None`` when a class has fewer than two
    patients (used for the inner early-stopping splits of cross-validation, which are reported
    in the progress lines and the fold table).
    """
    y = np.asarray(y)
    need = holdout_folds_for(share)
    if strict:
        check_holdout(y, groups, share, classes=classes)
    else:
        counts = _class_patients(y, groups)
        if len(counts) < 2:
            return None
        need = min(need, min(counts.values()))
        if need < 2:
            return None
    train, held = _stratified_group_folds(y, groups, need, seed)[0]
    return np.asarray(train), np.asarray(held)


def check_folds(y, groups, k: int, *, classes: Sequence | None = None) -> None:
    """Refuse ``k`` folds that these patients cannot give.

    Raises
    ------
    OptionError
        Fewer patients than folds, or a class with a single patient (a fold's training part
        would lack that class).
    """
    counts = _class_patients(np.asarray(y), groups)
    n_patients = len(set(map(str, groups)))
    if int(k) > n_patients:
        raise OptionError(
            f"{_folds(k)} needs at least {k} patients (one per fold); there are {n_patients} "
            f"(per class: {_counts_text(counts, classes)}). Ask for "
            + remedy(f"folds <= {n_patients}", f"--folds {n_patients} or fewer")
        )
    if min(counts.values()) < 2:
        raise OptionError(
            f"{_folds(k)}: every class needs at least 2 patients, so that each fold's training "
            f"part holds every class; patients per class: {_counts_text(counts, classes)}"
        )


def make_folds(
    y, groups, k: int, seed: int, *, classes: Sequence | None = None, warn: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exactly ``k`` stratified patient folds ``(train, test)``; never fewer than asked.

    Issues one :class:`~workbench.SplitWarning` naming every fold that holds fewer than two
    slides or patients of a class (with the counts).

    Raises
    ------
    OptionError
        See :func:`check_folds`; or a fold came out empty or without every class in its
        training part (named).
    """
    y = np.asarray(y)
    groups = np.asarray([str(g) for g in groups])
    check_folds(y, groups, k, classes=classes)
    folds = _stratified_group_folds(y, groups, k, seed)
    n_classes = int(y.max()) + 1

    def name(c: int) -> str:
        return str(classes[c]) if classes is not None and c < len(classes) else str(c)

    thin = []
    for i, (tr, te) in enumerate(folds, start=1):
        if len(te) == 0:
            raise OptionError(f"{_folds(k)}: fold {i} came out empty; ask for fewer folds")
        missing = sorted(set(range(n_classes)) - set(y[tr].tolist()))
        if missing:
            raise OptionError(
                f"{_folds(k)}: the training part of fold {i} has no slide of class(es) "
                f"{[name(c) for c in missing]}; ask for fewer folds"
            )
        parts = []
        for c in range(n_classes):
            sel = y[te] == c
            n_slides, n_pat = int(sel.sum()), len(set(groups[te][sel].tolist()))
            if n_slides < 2 or n_pat < 2:
                parts.append(f"{n_slides} slide(s) of {n_pat} patient(s) of {name(c)!r}")
        if parts:
            thin.append(f"fold {i}: {', '.join(parts)}")
    if thin and warn:
        counts = _class_patients(y, groups)
        warnings.warn(
            f"{k} folds over patients per class {_counts_text(counts, classes)}: "
            f"{'; '.join(thin)}. Those folds' own AUC is undefined or rests on one slide; read "
            "the pooled out-of-fold AUC (every slide, once per repeat), or ask for fewer folds",
            SplitWarning,
            stacklevel=4,
        )
    return [(np.asarray(tr), np.asarray(te)) for tr, te in folds]


# ----------------------------------------------------------------------------- pooled figures
def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half), as ``sklearn.metrics.roc_auc_score``."""
    from scipy.stats import rankdata

    n1 = int(positive.sum())
    n0 = len(positive) - n1
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _auc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """AUC (one-vs-rest macro for several classes), or ``None`` when a class is missing.

    The same numbers as ``roc_auc_score`` (``multi_class="ovr"``, macro), computed from ranks:
    the bootstrap calls it thousands of times.
    """
    n_classes = probs.shape[1]
    present = np.bincount(y, minlength=n_classes)
    if (present == 0).any() or len(y) == 0:
        return None
    if n_classes == 2:
        return _binary_auc(y == 1, probs[:, 1])
    return float(np.mean([_binary_auc(y == c, probs[:, c]) for c in range(n_classes)]))


def _weighted_auc(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of many weighted copies of one set of predictions at once.

    ``weights`` is ``(B, n)``: how often each row is drawn in each of ``B`` bootstrap samples.
    A pair of a positive and a negative row counts the product of their weights (ties one
    half), so weight ``k`` is exactly ``k`` copies of the row. ``nan`` where a class is absent.
    """
    n_classes = probs.shape[1]
    per_class = []
    for c in [1] if n_classes == 2 else range(n_classes):
        pos = y == c
        sp, sn = probs[pos, c], probs[~pos, c]
        cmp = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
        wp, wn = weights[:, pos], weights[:, ~pos]
        den = wp.sum(1) * wn.sum(1)
        num = ((wp @ cmp) * wn).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append(np.where(den > 0, num / den, np.nan))
    return np.mean(per_class, axis=0)


def _weighted_balanced_accuracy(y: np.ndarray, pred: np.ndarray, weights: np.ndarray):
    """Balanced accuracy of many weighted copies (``(B, n)`` weights): mean recall over the
    classes with weight."""
    recalls, present = [], []
    for c in np.unique(y):
        sel = y == c
        w = weights[:, sel]
        total = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(total > 0, (w * (pred[sel] == c)).sum(1) / total, 0.0))
        present.append(total > 0)
    present = np.asarray(present, dtype=float)
    return (np.asarray(recalls) * present).sum(0) / np.maximum(present.sum(0), 1)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (``balanced_accuracy_score``)."""
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def pooled_summary(
    y: np.ndarray,
    probs: np.ndarray,
    patients: Sequence,
    repeats: Sequence[int],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Pooled out-of-fold figures with a patient bootstrap interval.

    Parameters
    ----------
    y
        ``(n,)`` class index of every out-of-fold prediction (a slide appears once per repeat).
    probs
        ``(n, n_classes)`` out-of-fold probabilities.
    patients
        The patient of every row.
    repeats
        The repeat of every row.
    n_boot
        Bootstrap resamples of the patients (0: no interval).
    level
        Coverage of the interval.
    seed
        Seeds the resampling.

    Returns
    -------
    dict
        ``auc`` (one-vs-rest macro for several classes), ``balanced_accuracy``, ``accuracy``
        (each the mean over repeats of the pooled figure of that repeat), ``auc_ci`` and
        ``balanced_accuracy_ci`` (``[low, high]`` percentile intervals from resampling
        patients with replacement, every slide of a drawn patient in every repeat), ``auc_by_repeat``,
        ``n_boot``, ``level``.
    """
    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=float)
    patients = np.asarray([str(p) for p in patients])
    repeats = np.asarray(repeats, dtype=int)
    rep_ids = sorted(set(repeats.tolist()))
    pred = probs.argmax(1)

    def figures(rows_by_repeat: list[np.ndarray]) -> tuple[float | None, float]:
        aucs, baccs = [], []
        for rows in rows_by_repeat:
            a = _auc(y[rows], probs[rows])
            if a is None:
                return None, float("nan")
            aucs.append(a)
            baccs.append(_balanced_accuracy(y[rows], pred[rows]))
        return float(np.mean(aucs)), float(np.mean(baccs))

    by_repeat = [np.flatnonzero(repeats == r) for r in rep_ids]
    auc, balanced = figures(by_repeat)
    out = {
        "auc": auc,
        "balanced_accuracy": balanced,
        "accuracy": float(np.mean([(pred[r] == y[r]).mean() for r in by_repeat])),
        "auc_by_repeat": [_auc(y[r], probs[r]) for r in by_repeat],
        "auc_ci": None,
        "balanced_accuracy_ci": None,
        "n_boot": int(n_boot),
        "level": float(level),
    }
    if n_boot <= 0 or auc is None:
        return out
    unique = sorted(set(patients.tolist()))
    index = {p: i for i, p in enumerate(unique)}
    pid = np.asarray([index[p] for p in patients])
    rng = np.random.default_rng(seed)
    n_pat = len(unique)
    aucs, baccs = [], []
    for start in range(0, int(n_boot), 250):  # draws in blocks: bounded memory
        b = min(250, int(n_boot) - start)
        draws = rng.integers(0, n_pat, (b, n_pat))
        times = np.zeros((b, n_pat))
        np.add.at(times, (np.repeat(np.arange(b), n_pat), draws.ravel()), 1.0)
        auc_b = np.zeros(b)
        bacc_b = np.zeros(b)
        for rows in by_repeat:  # a drawn patient brings all its slides, in every repeat
            w = times[:, pid[rows]]
            auc_b += _weighted_auc(y[rows], probs[rows], w)
            bacc_b += _weighted_balanced_accuracy(y[rows], pred[rows], w)
        ok = np.isfinite(auc_b)
        aucs.extend((auc_b[ok] / len(by_repeat)).tolist())
        baccs.extend((bacc_b[ok] / len(by_repeat)).tolist())
    if len(aucs) >= max(20, n_boot // 10):
        lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
        out["auc_ci"] = [float(np.percentile(aucs, lo)), float(np.percentile(aucs, hi))]
        out["balanced_accuracy_ci"] = [
            float(np.percentile(baccs, lo)),
            float(np.percentile(baccs, hi)),
        ]
    out["n_boot_used"] = len(aucs)
    return out


# ----------------------------------------------------------------------------- survival
def censoring_survival(train_time, train_event, at) -> np.ndarray:
    """Kaplan–Meier estimate of the censoring survival ``G(t) = P(C > t)`` at ``at``.

    Parameters
    ----------
    train_time, train_event
        Follow-up times and events (1 event, 0 censored) of the patients the estimate is
        fitted on (a censoring is the "event" of this estimate).
    at
        Times to evaluate ``G`` at (right-continuous: a censoring at ``t`` counts at ``t``).

    Returns
    -------
    numpy.ndarray
        ``G`` at each of ``at``.
    """
    t = np.asarray(train_time, dtype=float)
    c = 1 - np.asarray(train_event, dtype=int)
    times = np.unique(t[c == 1])
    at_risk = np.asarray([(t >= u).sum() for u in times], dtype=float)
    censored = np.asarray([((t == u) & (c == 1)).sum() for u in times], dtype=float)
    steps = np.cumprod(1.0 - censored / np.maximum(at_risk, 1.0))
    at = np.asarray(at, dtype=float)
    idx = np.searchsorted(times, at, side="right") - 1
    return np.where(idx >= 0, steps[np.clip(idx, 0, None)], 1.0) if len(times) else np.ones_like(at)


def _pair_concordance(time, event, risk, weight, counts=None):
    """``sum w_i [r_i > r_j] + w_i / 2 [r_i = r_j]`` over comparable pairs, over ``sum w_i``:
    ``i`` an event, ``T_i < T_j`` or (``T_i = T_j`` and ``j`` censored). ``counts``
    ``(b, n)``: patient multiplicities of ``b`` bootstrap draws (returns ``(b,)``)."""
    time, risk = np.asarray(time, float), np.asarray(risk, float)
    event = np.asarray(event, int).astype(bool)
    comp = event[:, None] & (
        (time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~event[None, :])
    )
    score = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    wc = comp * np.asarray(weight, float)[:, None]
    if counts is None:
        den = wc.sum()
        return None if den <= 0 else float((wc * score).sum() / den)
    m = np.asarray(counts, float)
    den = np.einsum("bi,ij,bj->b", m, wc, m)
    num = np.einsum("bi,ij,bj->b", m, wc * score, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def uno_tau(time, train_time, train_event) -> float:
    """The default truncation of :func:`uno_concordance`: the largest of ``time`` that the
    censoring estimate of the training part still covers (at most the largest training time
    and with ``G > 0``)."""
    time = np.asarray(time, dtype=float)
    g = censoring_survival(train_time, train_event, time)
    ok = (time <= np.max(train_time)) & (g > 0)
    return float(time[ok].max()) if ok.any() else float("-inf")


def uno_concordance(
    time, event, risk, train_time, train_event, *, tau: float | None = None, counts=None
):
    """Uno's C (inverse-probability-of-censoring weighted concordance) of risk scores.

    ``C = sum_ij D_i G(T_i)^-2 [T_i < T_j, T_i < tau] ([r_i > r_j] + [r_i = r_j] / 2) /
    sum_ij D_i G(T_i)^-2 [T_i < T_j, T_i < tau]`` (an event ``i`` is also comparable with a
    patient censored at the same time), with ``G`` the Kaplan–Meier estimate of the censoring
    distribution of the *training* patients (:func:`censoring_survival`): the definition of
    scikit-survival's ``concordance_index_ipcw``. Higher risk = shorter survival.

    Parameters
    ----------
    time, event, risk
        One entry per test patient.
    train_time, train_event
        The training patients' follow-up, for the censoring distribution.
    tau
        Truncation time; ``None``: :func:`uno_tau` (the largest test time the censoring
        estimate covers).
    counts
        Optional ``(b, n)`` patient multiplicities (bootstrap draws): one C per draw.

    Returns
    -------
    float or None (or numpy.ndarray with ``counts``)
        Uno's C; ``None`` (``nan`` per draw) without a comparable pair.
    """
    time = np.asarray(time, dtype=float)
    if tau is None:
        tau = uno_tau(time, train_time, train_event)
    g = censoring_survival(train_time, train_event, time)
    keep = (time < tau) & (g > 0)
    w = np.zeros(len(time))
    w[keep] = 1.0 / g[keep] ** 2
    return _pair_concordance(time, event, risk, w, counts)


def _draws(n: int, n_boot: int, rng) -> np.ndarray:
    draws = rng.integers(0, n, (n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), draws.ravel()), 1.0)
    return counts


def _interval(values, level: float, n_boot: int):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < max(20, n_boot // 10):
        return None
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return [float(np.percentile(values, lo)), float(np.percentile(values, hi))]


def survival_fold_figures(
    time, event, risk, train_time, train_event, *, n_boot=1000, level=0.95, seed=0
) -> dict:
    """Harrell's and Uno's C of one test fold (patients), with patient-bootstrap intervals.

    Parameters
    ----------
    time, event, risk
        The fold's test patients.
    train_time, train_event
        The fold's training patients (Uno's censoring distribution).
    n_boot, level, seed
        Bootstrap resamples of the test patients, coverage, seed.

    Returns
    -------
    dict
        ``harrell_c``, ``harrell_c_ci``, ``uno_c``, ``uno_c_ci``, ``tau``.
    """
    tau = uno_tau(time, train_time, train_event)
    out = {
        "harrell_c": _pair_concordance(time, event, risk, np.ones(len(time))),
        "uno_c": uno_concordance(time, event, risk, train_time, train_event, tau=tau),
        "tau": tau if np.isfinite(tau) else None,
        "harrell_c_ci": None,
        "uno_c_ci": None,
    }
    if n_boot > 0 and len(time) > 1:
        m = _draws(len(time), int(n_boot), np.random.default_rng(seed))
        h = _pair_concordance(time, event, risk, np.ones(len(time)), m)
        u = uno_concordance(time, event, risk, train_time, train_event, tau=tau, counts=m)
        out["harrell_c_ci"] = _interval(h, level, n_boot)
        out["uno_c_ci"] = _interval(u, level, n_boot)
    return out


def pooled_survival_summary(
    time, event, risk, patients, repeats, *, n_boot=1000, level=0.95, seed=0
) -> dict:
    """Pooled out-of-fold Harrell's C with a patient-bootstrap interval.

    Parameters
    ----------
    time, event, risk
        One row per patient and repeat (out-of-fold patient risks).
    patients, repeats
        The patient and repeat of every row.
    n_boot, level, seed
        Bootstrap resamples of the patients (a drawn patient counts in every repeat).

    Returns
    -------
    dict
        ``harrell_c`` (mean over repeats of the pooled C of each repeat), ``harrell_c_ci``,
        ``harrell_c_by_repeat``, ``n_boot``, ``level``.
    """
    time, event, risk = (np.asarray(a, dtype=float) for a in (time, event, risk))
    patients = np.asarray([str(p) for p in patients])
    repeats = np.asarray(repeats, dtype=int)
    unique = sorted(set(patients.tolist()))
    index = {p: i for i, p in enumerate(unique)}
    by_repeat = [np.flatnonzero(repeats == r) for r in sorted(set(repeats.tolist()))]
    per = [_pair_concordance(time[r], event[r], risk[r], np.ones(len(r))) for r in by_repeat]
    out = {
        "harrell_c": None if any(c is None for c in per) else float(np.mean(per)),
        "harrell_c_by_repeat": per,
        "harrell_c_ci": None,
        "n_boot": int(n_boot),
        "level": float(level),
    }
    if n_boot > 0 and out["harrell_c"] is not None:
        m = _draws(len(unique), int(n_boot), np.random.default_rng(seed))
        total = np.zeros(int(n_boot))
        for r in by_repeat:
            pid = np.asarray([index[p] for p in patients[r]])
            total += _pair_concordance(time[r], event[r], risk[r], np.ones(len(r)), m[:, pid])
        out["harrell_c_ci"] = _interval(total / len(by_repeat), level, n_boot)
    return out


__all__ = [
    "OOF_FILE",
    "ON_CONFLICT",
    "check_folds",
    "check_holdout",
    "conflicting_patients",
    "holdout_split",
    "make_folds",
    "pooled_summary",
    "pooled_survival_summary",
    "survival_fold_figures",
    "uno_concordance",
]

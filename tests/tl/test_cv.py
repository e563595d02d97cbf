"""Patient splits that do what was asked, and the pooled cross-validation figures."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import OptionError, SplitWarning
from workbench.tl._cv import (
    check_folds,
    check_holdout,
    conflicting_patients,
    holdout_split,
    make_folds,
    pooled_summary,
)


def test_conflicting_patients_are_found():
    labels = ["a", "a", "b", "b", "a", "b"]
    patients = ["P1", "P1", "P2", "P3", "P3", "P4"]
    assert conflicting_patients(labels, patients) == {"P3": ["a", "b"]}
    assert conflicting_patients(["a", "b"], ["P1", "P2"]) == {}


def test_a_tiny_validation_share_is_refused_not_silently_enlarged():
    # 8 slides of 8 patients, 2 classes of 4: 0.01 asked 1 in 100; the old split held out half
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    groups = [f"P{i}" for i in range(8)]
    with pytest.raises(OptionError, match=r"validation=0.01 holds out 1 in 100.*'a': 4, 'b': 4"):
        check_holdout(y, groups, 0.01, classes=["a", "b"])
    with pytest.raises(OptionError, match=r"validation >= 0.25"):
        check_holdout(y, groups, 0.2, classes=["a", "b"])
    check_holdout(y, groups, 0.25)  # 1 in 4 of each class: fine
    train, held = holdout_split(y, groups, 0.25, seed=0)
    assert len(held) == 2 and sorted(y[held].tolist()) == [0, 1]
    with pytest.raises(OptionError, match="at least 2 patients of every class"):
        check_holdout(np.array([0, 1, 1]), ["a", "b", "c"], 0.5)
    # the inner (not strict) split shrinks instead, or gives up
    assert holdout_split(y, groups, 0.01, seed=0, strict=False) is not None
    assert holdout_split(np.array([0, 1, 1]), ["a", "b", "c"], 0.5, 0, strict=False) is None


def test_folds_are_exactly_what_was_asked_and_thin_folds_are_named():
    # 2 patients of class 'x', 6 of 'y': 4 folds are 4 folds (the old code ran 2)
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    groups = [f"P{i}" for i in range(8)]
    with pytest.warns(SplitWarning, match=r"4 folds over patients per class 'x': 2, 'y': 6.*fold"):
        folds = make_folds(y, groups, 4, seed=0, classes=["x", "y"])
    assert len(folds) == 4
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(8))  # every slide tested once
    for tr, te in folds:
        assert set(y[tr].tolist()) == {0, 1}  # every training part holds both classes
        assert not {groups[i] for i in tr} & {groups[i] for i in te}
    with pytest.raises(OptionError, match=r"folds=9 needs at least 9 patients.*there are 8"):
        check_folds(y, groups, 9)
    with pytest.raises(OptionError, match="every class needs at least 2 patients"):
        check_folds(np.array([0, 1, 1, 1]), ["a", "b", "c", "d"], 2)


def test_balanced_folds_do_not_warn():
    import warnings

    y = np.array([0, 1] * 8)
    groups = [f"P{i}" for i in range(16)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)
        folds = make_folds(y, groups, 4, seed=1)
    assert len(folds) == 4


def test_pooled_summary_matches_sklearn_and_resamples_patients():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    n = 40
    y = np.array([0, 1] * (n // 2))
    p1 = np.clip(0.5 + 0.15 * (2 * y - 1) + rng.normal(0, 0.3, n), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], 1)
    patients = [f"P{i}" for i in range(n)]
    s = pooled_summary(y, probs, patients, [1] * n, n_boot=300, seed=0)
    assert np.isclose(s["auc"], roc_auc_score(y, p1))
    assert np.isclose(s["balanced_accuracy"], balanced_accuracy_score(y, probs.argmax(1)))
    lo, hi = s["auc_ci"]
    assert lo < s["auc"] < hi and hi - lo > 0.05
    # Five slides per patient with the same prediction: resampling patients (not slides) gives
    # the very same interval; a slide-level bootstrap would be about sqrt(5) narrower.
    rows = np.repeat(np.arange(n), 5)
    dup = pooled_summary(
        y[rows], probs[rows], [patients[i] for i in rows], [1] * (5 * n), n_boot=300, seed=0
    )
    assert np.isclose(dup["auc"], s["auc"])
    assert np.allclose(dup["auc_ci"], s["auc_ci"])


def test_pooled_summary_averages_repeats():
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 0, 1, 1])
    a = np.array([0.1, 0.6, 0.4, 0.9])  # AUC 0.75
    b = np.array([0.1, 0.2, 0.8, 0.9])  # AUC 1.0
    p = np.concatenate([a, b])
    probs = np.stack([1 - p, p], 1)
    s = pooled_summary(np.tile(y, 2), probs, ["A", "B", "C", "D"] * 2, [1] * 4 + [2] * 4,
                       n_boot=0)  # fmt: skip
    assert s["auc_by_repeat"] == [roc_auc_score(y, a), roc_auc_score(y, b)]
    assert np.isclose(s["auc"], 0.875) and s["auc_ci"] is None


def test_rank_auc_and_balanced_accuracy_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from workbench.tl._cv import _auc, _balanced_accuracy

    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    probs[:10] = np.round(probs[:10], 1)  # ties
    probs /= probs.sum(1, keepdims=True)
    assert np.isclose(_auc(y, probs), roc_auc_score(y, probs, multi_class="ovr"))
    yb = (y == 1).astype(int)
    pb = np.stack([1 - probs[:, 1], probs[:, 1]], 1)
    assert np.isclose(_auc(yb, pb), roc_auc_score(yb, pb[:, 1]))
    assert _auc(np.zeros(5, int), pb[:5]) is None
    pred = probs.argmax(1)
    assert np.isclose(_balanced_accuracy(y, pred), balanced_accuracy_score(y, pred))


def test_weighted_bootstrap_equals_copying_the_drawn_rows():
    from workbench.tl._cv import (
        _auc,
        _balanced_accuracy,
        _weighted_auc,
        _weighted_balanced_accuracy,
    )

    rng = np.random.default_rng(7)
    for n_classes in (2, 3):
        y = rng.integers(0, n_classes, 30)
        probs = rng.dirichlet(np.ones(n_classes), 30).round(2)
        pred = probs.argmax(1)
        draws = rng.integers(0, 30, (5, 30))
        weights = np.stack([np.bincount(d, minlength=30) for d in draws]).astype(float)
        got = _weighted_auc(y, probs, weights)
        bacc = _weighted_balanced_accuracy(y, pred, weights)
        for b, d in enumerate(draws):
            ref = _auc(y[d], probs[d])
            assert (ref is None and np.isnan(got[b])) or np.isclose(got[b], ref)
            assert np.isclose(bacc[b], _balanced_accuracy(y[d], pred[d]))

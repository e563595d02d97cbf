"""Temperature scaling and the expected calibration error (workbench.tl._calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench._reliability import reliability_table
from workbench.tl import expected_calibration_error, fit_temperature
from workbench.tl._calibration import (
    model_temperature,
    nll_at_temperature,
    softmax_with_temperature,
)


def _overconfident(n: int = 400, scale: float = 4.0, seed: int = 0):
    """Binary logits whose *true* probabilities are sigmoid(z); the model reports scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    logits = np.stack([np.zeros(n), scale * z], axis=1)
    return logits, y


def test_overconfident_logits_get_a_temperature_above_one_and_a_lower_ece():
    logits, y = _overconfident(scale=4.0)
    fit = fit_temperature(logits, y)
    assert fit.status == "fitted" and fit.n == len(y)
    assert fit.temperature > 2.5  # the truth is 4; a finite sample lands near it
    assert abs(fit.temperature - 4.0) < 1.0
    before = softmax_with_temperature(logits, 1.0)
    after = softmax_with_temperature(logits, fit.temperature)
    ece_before = expected_calibration_error(y, before)
    ece_after = expected_calibration_error(y, after)
    assert ece_after < 0.5 * ece_before
    # the prediction never changes, only the probabilities
    assert (before.argmax(1) == after.argmax(1)).all()


def test_fitted_nll_is_never_worse_than_leaving_the_model_alone():
    for seed, scale in [(0, 4.0), (1, 0.3), (2, 1.0), (3, 10.0)]:
        logits, y = _overconfident(n=60, scale=scale, seed=seed)
        fit = fit_temperature(logits, y)
        assert fit.nll_after <= fit.nll_before + 1e-12
        assert np.isclose(fit.nll_before, nll_at_temperature(logits, y, 1.0))
        assert np.isclose(fit.nll_after, nll_at_temperature(logits, y, fit.temperature))
        # and it is the minimum over a grid of temperatures
        grid = np.exp(np.linspace(np.log(0.06), np.log(90), 400))
        best = min(nll_at_temperature(logits, y, t) for t in grid)
        assert fit.nll_after <= best + 1e-4
    under = fit_temperature(*_overconfident(n=300, scale=0.3, seed=5))
    assert under.temperature < 1.0  # an under-confident model is sharpened


def test_separable_or_tiny_sets_keep_temperature_one():
    logits = np.array([[2.0, -1.0], [-3.0, 4.0], [1.0, 0.5]])
    fit = fit_temperature(logits, [0, 1, 0])
    assert fit.status == "separable" and fit.temperature == 1.0
    one_class = fit_temperature(logits, [0, 0, 0])
    assert one_class.status == "too_few" and one_class.temperature == 1.0
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(logits, [0, 1])
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])


def test_ece_matches_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)  # over-estimates the positive class
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    counts = counts[counts > 0]
    reference = float(np.sum(counts / len(p) * np.abs(prob_true - prob_pred)))
    assert np.isclose(expected_calibration_error(y, p), reference)
    # two columns give the same as the positive-class probability
    assert np.isclose(expected_calibration_error(y, np.stack([1 - p, p], 1)), reference)
    table = reliability_table(y, p)
    assert np.allclose(table["frequency"], prob_true) and np.allclose(
        table["confidence"], prob_pred
    )
    assert table["count"].sum() == 500


def test_ece_hand_checked_and_multiclass_top_label():
    # every slide said 0.9 positive, half are: gap 0.4 in one bin
    assert np.isclose(expected_calibration_error([1, 0, 1, 0], [0.9, 0.9, 0.9, 0.9]), 0.4)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    # top-label: confidences 0.8, 0.6, 0.8; right, wrong, right
    expected = (2 / 3) * abs(1.0 - 0.8) + (1 / 3) * abs(0.0 - 0.6)
    assert np.isclose(expected_calibration_error([0, 1, 2], probs), expected)
    with pytest.raises(ValueError, match="within"):
        expected_calibration_error([0, 1], [1.5, 0.2])


def test_softmax_with_temperature_and_model_temperature():
    z = np.array([[0.0, 2.0], [1.0, -1.0]])
    assert np.allclose(softmax_with_temperature(z, 2.0), softmax_with_temperature(z / 2.0))
    assert np.allclose(softmax_with_temperature(z[0]), [1 / (1 + np.e**2), 1 / (1 + np.e**-2)])
    with pytest.raises(ValueError, match="positive"):
        softmax_with_temperature(z, 0.0)

    class M:
        pass

    m = M()
    assert model_temperature(m) == 1.0  # nothing recorded: an old checkpoint
    m.checkpoint_extra_ = {"calibration": {"temperature": 2.5}}
    assert model_temperature(m) == 2.5
    m.calibration_ = {"temperature": 1.7}
    assert model_temperature(m) == 1.7
    m.calibration_ = {"temperature": -1}
    assert model_temperature(m) == 1.0

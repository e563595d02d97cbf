"""pl.reliability: the reliability diagram draws reliability_table's numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from workbench._reliability import reliability_table  # noqa: E402
from workbench.pl import reliability  # noqa: E402
from workbench.tl import expected_calibration_error  # noqa: E402


def test_reliability_draws_the_binned_numbers_and_the_ece():
    rng = np.random.default_rng(0)
    raw = rng.random(200)
    y = (rng.random(200) < raw).astype(int)
    sharp = np.clip(raw * 1.6 - 0.3, 0, 1)  # over-confident
    fig, ax = plt.subplots()
    out = reliability(y, raw, raw=sharp, ax=ax)
    assert out is ax
    lines = ax.get_lines()
    assert len(lines) == 3  # diagonal, calibrated, raw
    table = reliability_table(y, raw)
    np.testing.assert_allclose(lines[1].get_xdata(), table["confidence"])
    np.testing.assert_allclose(lines[1].get_ydata(), table["frequency"])
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"calibrated (ECE {expected_calibration_error(y, raw):.3f})" in texts
    assert f"raw (ECE {expected_calibration_error(y, sharp):.3f})" in texts
    assert "positive class" in ax.get_xlabel() and "200 slides" in ax.get_title()
    plt.close(fig)


def test_reliability_multiclass_uses_the_top_probability():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    ax = reliability([0, 2, 2], probs, title=None)
    assert ax.get_xlabel() == "top predicted probability" and ax.get_title() == ""
    np.testing.assert_allclose(sorted(ax.get_lines()[1].get_ydata()), [0.0, 1.0, 1.0])
    plt.close(ax.figure)

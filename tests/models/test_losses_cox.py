"""The Cox partial-likelihood loss against lifelines (Efron) and a plain numpy Breslow."""

import numpy as np
import pytest
import torch

from workbench.models import cox_partial_likelihood

torch.set_num_threads(1)


def _table(seed=0, n=60):
    """One covariate with a real effect, integer times (so many ties), a third censored."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = np.ceil(rng.exponential(scale=np.exp(-0.8 * x)) * 4)  # ties on purpose
    e = (rng.uniform(size=n) > 0.3).astype(float)
    return x, t, e


def _fit_beta(x, t, e, ties):
    xt, tt, et = (torch.tensor(a, dtype=torch.float64) for a in (x, t, e))
    beta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [beta],
        lr=1,
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = cox_partial_likelihood(beta * xt, tt, et, ties=ties)
        loss.backward()
        return loss

    opt.step(closure)
    return float(beta.detach())


def _breslow_numpy(beta, x, t, e):
    """Minus the Breslow log partial likelihood, one event at a time (no vectorising)."""
    r = beta * x
    total = 0.0
    for i in np.flatnonzero(e == 1):
        total += r[i] - np.log(np.exp(r[t >= t[i]]).sum())
    return -total / e.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_cox_efron_matches_lifelines_coxphfitter(seed):
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    x, t, e = _table(seed)
    assert len(np.unique(t[e == 1])) < (e == 1).sum()  # the table has tied event times
    cph = lifelines.CoxPHFitter().fit(
        pd.DataFrame({"x": x, "time": t, "event": e}), "time", "event"
    )
    ref = float(cph.params_["x"])
    assert abs(_fit_beta(x, t, e, "efron") - ref) < 1e-4
    # and the likelihood itself, at lifelines' optimum
    ours = cox_partial_likelihood(
        torch.tensor(ref * x), torch.tensor(t), torch.tensor(e), ties="efron"
    )
    assert float(ours) * e.sum() == pytest.approx(-cph.log_likelihood_, rel=1e-6)


def test_cox_breslow_matches_numpy_reference():
    from scipy.optimize import minimize_scalar

    x, t, e = _table(2)
    for beta in (-1.0, 0.0, 0.7):
        ours = cox_partial_likelihood(
            torch.tensor(beta * x), torch.tensor(t), torch.tensor(e), ties="breslow"
        )
        assert float(ours) == pytest.approx(_breslow_numpy(beta, x, t, e), rel=1e-10)
    ref = minimize_scalar(lambda b: _breslow_numpy(b, x, t, e), tol=1e-12).x
    assert abs(_fit_beta(x, t, e, "breslow") - ref) < 1e-4
    # with ties the two methods differ; without ties they agree
    assert abs(_fit_beta(x, t, e, "efron") - ref) > 1e-3
    u = t + np.arange(len(t)) * 1e-6
    a = cox_partial_likelihood(torch.tensor(0.5 * x), torch.tensor(u), torch.tensor(e))
    b = cox_partial_likelihood(
        torch.tensor(0.5 * x), torch.tensor(u), torch.tensor(e), ties="breslow"
    )
    assert float(a) == pytest.approx(float(b), rel=1e-12)


def test_cox_orientation_higher_risk_dies_first():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    e = torch.ones(4)
    right = cox_partial_likelihood(torch.tensor([3.0, 2.0, 1.0, 0.0]), t, e)
    wrong = cox_partial_likelihood(torch.tensor([0.0, 1.0, 2.0, 3.0]), t, e)
    assert float(right) < float(wrong)


def test_cox_stable_for_huge_risks_and_safe_without_events():
    risk = torch.tensor([1000.0, 999.0, -1000.0], requires_grad=True)
    t = torch.tensor([1.0, 1.0, 2.0])
    for ties in ("efron", "breslow"):
        loss = cox_partial_likelihood(risk, t, torch.tensor([1.0, 1.0, 0.0]), ties=ties)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(risk.grad).all()
        risk.grad = None
    none = cox_partial_likelihood(risk, t, torch.zeros(3))
    assert float(none.detach()) == 0.0 and none.requires_grad
    none.backward()
    assert torch.equal(risk.grad, torch.zeros(3))


def test_cox_gradient_matches_finite_differences():
    x, t, e = _table(3, n=20)
    r = torch.tensor(0.3 * x, requires_grad=True)
    f = lambda v: cox_partial_likelihood(v, torch.tensor(t), torch.tensor(e))  # noqa: E731
    assert torch.autograd.gradcheck(f, (r,))


def test_cox_rejects_bad_input():
    with pytest.raises(ValueError, match="ties"):
        cox_partial_likelihood(torch.zeros(2), torch.ones(2), torch.ones(2), ties="exact")
    with pytest.raises(ValueError, match="one entry per patient"):
        cox_partial_likelihood(torch.zeros(2), torch.ones(3), torch.ones(2))

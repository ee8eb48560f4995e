from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from models.btyd import BGNBDClassifier, bgnbd_log_likelihood, simulate_bgnbd
from models.metrics import auc


def _brute_force_likelihood(params, x, t_x, T, grid=1500):
    """The BG/NBD likelihood of one customer by averaging the conditional likelihood over quantile
    grids of lambda ~ Gamma(r, alpha) and p ~ Beta(a, b) (a numerical expectation)."""
    r, alpha, a, b = params
    q = (np.arange(grid) + 0.5) / grid
    lam = stats.gamma.ppf(q, r, scale=1 / alpha)[:, None]
    p = stats.beta.ppf(q, a, b)[None, :]
    alive = (1 - p) ** x * lam**x * np.exp(-lam * T)
    dead = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0
    return np.log(np.mean(alive + dead))


@pytest.mark.parametrize("x,t_x,T", [(0, 0.0, 30.0), (2, 20.0, 40.0), (5, 35.0, 36.0)])
def test_likelihood_matches_numerical_integration(x, t_x, T):
    params = np.array([0.8, 6.0, 0.9, 2.2])
    closed = bgnbd_log_likelihood(params, np.array([x], float), np.array([t_x]), np.array([T]))[0]
    assert closed == pytest.approx(_brute_force_likelihood(params, x, t_x, T), abs=2e-3)


def test_fit_recovers_the_parameters_of_simulated_bgnbd_data():
    true = {"r": 0.6, "alpha": 12.0, "a": 0.8, "b": 2.6}
    T = np.random.default_rng(5).uniform(60, 240, 30_000)
    X, _ = simulate_bgnbd(30_000, T, seed=7, **true)
    fit = BGNBDClassifier().fit(X).params_
    assert fit["r"] == pytest.approx(true["r"], rel=0.12)
    assert fit["alpha"] == pytest.approx(true["alpha"], rel=0.2)
    assert fit["a"] == pytest.approx(true["a"], rel=0.3)
    assert fit["b"] == pytest.approx(true["b"], rel=0.3)


def test_holdout_purchase_probability_is_calibrated_and_ranks():
    X, y = simulate_bgnbd(20_000, 120.0, 0.7, 15.0, 0.7, 2.0, seed=3, horizon=30)
    m = BGNBDClassifier(horizon_days=30).fit(X)
    p = m.predict_purchase_probability(X)
    assert abs(p.mean() - y.mean()) < 0.01
    assert auc(y, p) > 0.7


def test_known_closed_forms():
    m = BGNBDClassifier().fit(simulate_bgnbd(3000, 100.0, 0.5, 10.0, 0.7, 2.5, seed=0)[0])
    # no repeat purchase: alive for sure
    assert m.probability_alive(np.array([[0, 0, 50.0]]))[0] == 1.0
    # long silence after many purchases: probably dead
    assert m.probability_alive(np.array([[10, 10.0, 200.0]]))[0] < 0.2
    # E[X(t)] is increasing and starts at 0
    e = m.expected_purchases(np.array([0.0, 10.0, 100.0]))
    assert e[0] == pytest.approx(0.0, abs=1e-12) and e[0] < e[1] < e[2]
    # E[X(t)] agrees with a simulation of new customers
    X, _ = simulate_bgnbd(40_000, 100.0, seed=11, **m.params_)
    assert X[:, 0].mean() == pytest.approx(float(m.expected_purchases(100.0)), rel=0.05)


def test_bad_summaries_are_rejected():
    with pytest.raises(ValueError, match="t_x <= T"):
        BGNBDClassifier().fit(np.array([[1, 50.0, 10.0]]))
    with pytest.raises(ValueError, match="shape"):
        BGNBDClassifier().fit(np.zeros((3, 2)))

"""training.bayes: the Bayes posterior under the generative model, checked on data drawn from that
very model (calibrated, and better with visits than with orders alone), and the visit grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.bayes import (
    SESSION_RATE_LINK,
    Grid,
    counts_on_grid,
    posterior_joint,
    posterior_orders,
    visits,
)

PRIOR = {"r": 0.8, "alpha": 32.0, "lam_mean": 0.025, "k": 1.0, "beta": 700.0, "m": 0.05, "m_s": 0.1,
         "a_s": 1.5, "b_s": 1.5 / 0.08}


def _poisson_process(rng, rate_before, rate_after, start, churn, end):
    """Event times on [start, end): rate_before until churn, rate_after from it."""
    out = []
    for a, b, rate in ((start, np.minimum(churn, end), rate_before), (np.maximum(churn, start), end, rate_after)):
        span = np.maximum(b - a, 0.0)
        n = rng.poisson(rate * span)
        out.append((np.repeat(np.arange(len(n)), n), np.repeat(a, n) + rng.random(n.sum()) * np.repeat(span, n)))
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


@pytest.fixture(scope="module")
def simulated():
    """Persons drawn from the prior: sign-up, rate, churn age, orders and visits over [0, c + H)."""
    rng = np.random.default_rng(7)
    n, c, H = 2500, 120.0, 30.0
    s = np.where(rng.random(n) < 0.3, rng.random(n) * c, -rng.random(n) * 1000.0)
    lam = rng.gamma(PRIOR["r"], 1.0 / PRIOR["alpha"], n)
    hazard = rng.gamma(PRIOR["k"], 1.0 / PRIOR["beta"], n)
    churn = s + rng.exponential(1.0, n) / hazard
    u = rng.gamma(PRIOR["a_s"], 1.0 / PRIOR["b_s"], n)
    sess = u * (lam / PRIOR["lam_mean"]) ** SESSION_RATE_LINK
    A = np.clip(s, 0.0, None)
    op, ot = _poisson_process(rng, lam, PRIOR["m"] * lam, A, churn, np.full(n, c + H))
    vp, vt = _poisson_process(rng, sess, PRIOR["m_s"] * sess, A, churn, np.full(n, c))
    y = np.zeros(n, bool)
    y[op[ot >= c]] = True
    grid = Grid(c, H)
    obs = ot < c
    oh = counts_on_grid(op[obs], ot[obs], n, grid.half_edges)
    vh = counts_on_grid(vp, vt, n, grid.half_edges)
    return {"grid": grid, "oh": oh, "vh": vh, "A": A, "s": s, "y": y, "active": churn > c}


def _calibrated(p, y, bins=4, tol=0.035):
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    for b in range(bins):
        mk = idx == b
        assert abs(p[mk].mean() - y[mk].mean()) < tol, (b, p[mk].mean(), y[mk].mean())


def test_orders_posterior_is_calibrated_and_ranks_buyers(simulated):
    d = simulated
    p, active = posterior_orders(d["grid"], d["oh"], d["A"], d["s"], PRIOR)
    assert p.shape == d["y"].shape and np.all((p >= 0) & (p <= 1))
    _calibrated(p, d["y"])
    # it beats the raw order count, and its P(active) tracks the true state
    assert roc_auc_score(d["y"], p) > roc_auc_score(d["y"], d["oh"].sum(axis=1)) + 0.01
    assert roc_auc_score(d["active"], active) > 0.75


def test_visits_add_what_they_say_about_churn(simulated):
    d = simulated
    p_o, a_o = posterior_orders(d["grid"], d["oh"], d["A"], d["s"], PRIOR)
    p_j, a_j = posterior_joint(d["grid"], d["oh"], d["vh"], d["A"], d["s"], PRIOR)
    _calibrated(p_j, d["y"])
    assert roc_auc_score(d["active"], a_j) > roc_auc_score(d["active"], a_o) + 0.02
    assert roc_auc_score(d["y"], p_j) > roc_auc_score(d["y"], p_o)
    # with no visit information at all the joint posterior is the orders posterior (lambda on a grid)
    p_0, _ = posterior_joint(d["grid"], d["oh"], np.zeros_like(d["vh"]), d["A"], d["s"],
                             {**PRIOR, "a_s": 1e6, "b_s": 1e12})  # visit rate ~1e-6 a day
    assert np.abs(p_0 - p_o).max() < 0.02


def test_more_silent_exposure_lowers_the_posterior():
    grid = Grid(100.0, 30.0)
    oh = np.zeros((3, len(grid.half_edges) - 1))
    oh[:, 10] = 1  # one order on day 2.5
    s = np.array([0.0, 0.0, 60.0])
    A = s.copy()
    p, active = posterior_orders(grid, oh[[0, 0, 0]] * [[1], [0], [0]], A, s, PRIOR)
    assert p[0] > p[1]  # an order raises the rate
    assert p[2] > p[1] and active[2] > active[1]  # 40 silent days say less than 100


def test_visits_group_events_and_skip_wechat_and_lone_logins():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    ev = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "a", "b"],
        "event_type": ["app_open", "view_item", "login", "wechat_message", "view_item", "login"],
        "occurred_at": [t0, t0 + pd.Timedelta(minutes=5), t0 + pd.Timedelta(hours=5),
                        t0 + pd.Timedelta(hours=9), t0 + pd.Timedelta(hours=12), t0],
    })
    v = visits(ev)
    assert v["customer_id"].tolist() == ["a", "a"]
    assert v["t"].tolist() == [t0, t0 + pd.Timedelta(hours=12)]

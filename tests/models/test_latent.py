"""models.latent.LatentState: the empirical-Bayes latent-state posterior, on customers drawn from the
story it tells (rate, churn from sign-up, a residual rate after churn), written as the feature
columns features.compute stores."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.gbm import ChurnModel, PropensityModel
from models.latent import NAMES, LatentState


def _times(rng, rate_before, rate_after, a, churn, b):
    """Per person, sorted event times on [a, b): rate_before until churn, rate_after after."""
    out = []
    for i in range(len(a)):
        t = []
        for lo, hi, r in ((a[i], min(churn[i], b), rate_before[i]), (max(churn[i], a[i]), b, rate_after[i])):
            if hi > lo:
                t.append(lo + rng.random(rng.poisson(r * (hi - lo))) * (hi - lo))
        out.append(np.sort(np.concatenate(t)) if t else np.zeros(0))
    return out


def _world(n=2500, seed=0, c=150.0, H=30.0):
    """Feature rows at cutoff c (history from 0) and the label: an order in [c, c + H)."""
    rng = np.random.default_rng(seed)
    signup = np.where(rng.random(n) < 0.3, rng.random(n) * c, -rng.random(n) * 1000.0)
    lam = rng.gamma(0.8, 0.025 / 0.8, n)
    churn = signup + rng.exponential(1.0, n) / rng.gamma(1.0, 1 / 700.0, n)
    visit = rng.gamma(1.5, 0.08 / 1.5, n) * (lam / 0.025) ** 0.4
    a = np.clip(signup, 0.0, None)
    orders = _times(rng, lam, 0.05 * lam, a, churn, c + H)
    events = _times(rng, visit * 2.5, visit * 0.25, a, churn, c)
    rows = []
    for i in range(n):
        o = orders[i][orders[i] < c]
        e = events[i]
        rows.append({
            **{f"orders_{w}d": int((o >= c - w).sum()) for w in (7, 30, 90, 180)},
            "orders_total": len(o),
            "days_since_last_order": c - o[-1] if len(o) else 999.0,
            "order_span_days": o[-1] - o[0] if len(o) > 1 else 0.0,
            "tenure_days": c - signup[i],
            **{f"events_{w}d": int((e >= c - w).sum()) for w in (7, 30, 90)},
            "events_total": len(e),
            "days_since_last_event": c - e[-1] if len(e) else 999.0,
            "event_span_days": e[-1] - e[0] if len(e) > 1 else 0.0,
        })
    y = np.array([((t >= c) & (t < c + H)).any() for t in orders]).astype(int)
    return pd.DataFrame(rows), y, churn > c


@pytest.fixture(scope="module")
def world():
    return _world()


def test_the_fitted_prior_recovers_the_story_and_the_posterior_ranks_buyers(world):
    X, y, active = world
    ls = LatentState(list(X.columns)).fit(X.to_numpy(float))
    prior = ls.prior()
    assert prior["r"] / prior["alpha"] == pytest.approx(0.025, rel=0.3)  # mean purchase rate
    assert 0.01 < prior["m"] < 0.2  # a churned customer keeps a small share of the rate
    Z = ls.transform(X.to_numpy(float))
    assert Z.shape == (len(X), 3) and np.isfinite(Z).all()
    assert ((Z[:, :2] >= 0) & (Z[:, :2] <= 1)).all()
    assert roc_auc_score(y, Z[:, 0]) > roc_auc_score(y, X["orders_30d"]) + 0.02
    assert roc_auc_score(active, Z[:, 1]) > 0.75
    assert abs(Z[:, 0].mean() - y.mean()) < 0.05  # roughly calibrated


def test_orders_only_columns_work_and_the_fit_is_reused_for_the_same_rows(world):
    X, y, _ = world
    cols = [c for c in X.columns if not c.startswith("event")]
    M = X[cols].to_numpy(float)
    first = LatentState(cols).fit(M, seed=3)
    assert not first.use_events and first.n_evaluations_ > 0
    again = LatentState(cols).fit(M, seed=3)
    assert not hasattr(again, "n_evaluations_")  # from the cache
    np.testing.assert_array_equal(first.params, again.params)
    assert roc_auc_score(y, again.transform(M)[:, 0]) > 0.6
    assert not LatentState.applicable(["orders_7d", "orders_total"])


@pytest.mark.parametrize("cls", [PropensityModel, ChurnModel])
def test_customer_models_add_the_posterior_only_when_asked(cls, world):
    X, y, _ = world
    label = y if cls is PropensityModel else 1 - y
    off = cls(n_estimators=20).fit(X, label)
    assert not set(NAMES) & set(off.model_feature_names_)
    on = cls(n_estimators=20, latent_state=True).fit(X, label)
    assert set(NAMES) <= set(on.model_feature_names_)
    back = pickle.loads(pickle.dumps(on))  # MLflow stores the estimator pickled
    np.testing.assert_allclose(back.predict_proba(X.head(1)), on.predict_proba(X.head(1)))
    with pytest.raises(ValueError, match="latent_state"):
        cls(latent_state="yes").fit(X, label)

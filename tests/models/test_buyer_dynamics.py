"""models.derived.BuyerDynamics and what the propensity/churn models and the next-best-offer model
gained in session 2 (derived buyer figures, shrinkage toward the default offer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.btyd import BGNBDClassifier, simulate_bgnbd
from models.derived import BuyerDynamics
from models.gbm import ChurnModel, PropensityModel
from models.offpolicy import NextBestOfferModel


def _customers(n=3000, seed=0):
    """Feature columns of BG/NBD customers: (x, t_x, T) written the way features.compute stores them."""
    X, y = simulate_bgnbd(n, 120.0, 0.6, 12.0, 0.8, 2.5, seed=seed, horizon=30)
    rng = np.random.default_rng(seed)
    x, t_x, T = X[:, 0], X[:, 1], X[:, 2]
    frame = pd.DataFrame({
        "orders_total": x + 1, "order_days_total": x + 1, "order_span_days": t_x,
        "days_since_last_order": T - t_x, "orders_30d": rng.poisson(0.5, n), "orders_90d": rng.poisson(1.5, n),
        "events_total": rng.poisson(20, n), "event_span_days": rng.uniform(0, 150, n),
        "days_since_last_event": rng.exponential(10, n), "events_30d": rng.poisson(4, n),
        "events_90d": rng.poisson(12, n),
    })
    return frame, y, X


def test_bgnbd_figures_match_the_classifier_fitted_on_the_same_summary():
    frame, _, X = _customers()
    dyn = BuyerDynamics(list(frame.columns)).fit(frame.to_numpy(dtype=float), seed=0)
    bg = BGNBDClassifier(horizon_days=30).fit(X)
    assert dyn.bg_params == pytest.approx(tuple(bg.params_[k] for k in ("r", "alpha", "a", "b")), rel=1e-6)
    out = pd.DataFrame(dyn.transform(frame.to_numpy(dtype=float)), columns=dyn.names())
    np.testing.assert_allclose(out["bg_p_alive"], bg.probability_alive(X), rtol=1e-9)
    np.testing.assert_allclose(out["bg_p_buy_30d"], bg.predict_purchase_probability(X), rtol=1e-9)
    # overdue = days since the last order x purchase days per day as a buyer
    np.testing.assert_allclose(out["order_overdue"], (X[:, 0] + 1) / np.maximum(X[:, 2], 1) * (X[:, 2] - X[:, 1]))


def test_missing_inputs_skip_the_figures_that_need_them():
    frame, _, _ = _customers(500)
    orders_only = BuyerDynamics(["orders_total", "orders_30d", "orders_90d"])
    assert orders_only.names() == ["order_trend"]
    assert BuyerDynamics(["a", "b"]).names() == []
    events = BuyerDynamics(["events_total", "event_span_days", "days_since_last_event"])
    assert events.names() == ["event_rate", "event_overdue"]
    # non-buyers: BG/NBD figures are missing (NaN), not a made-up P(alive)
    dyn = BuyerDynamics(list(frame.columns)).fit(frame.to_numpy(dtype=float))
    none = frame.head(3).copy()
    none[["orders_total", "order_days_total", "order_span_days"]] = 0
    none["days_since_last_order"] = 999.0
    out = pd.DataFrame(dyn.transform(none.to_numpy(dtype=float)), columns=dyn.names())
    assert out["bg_p_alive"].isna().all() and (out["order_rate"] == 0).all()


@pytest.mark.parametrize("cls", [PropensityModel, ChurnModel])
def test_customer_models_see_the_derived_figures_and_can_turn_them_off(cls):
    frame, y, _ = _customers(2000)
    y = y if cls is PropensityModel else 1 - y
    on = cls(n_estimators=40, random_state=1).fit(frame, y)
    assert "bg_p_alive" in on.model_feature_names_ and "event_overdue" in on.model_feature_names_
    assert on.feature_importances_.shape == (len(on.model_feature_names_),)
    off = cls(n_estimators=40, random_state=1, buyer_dynamics=False).fit(frame, y)
    assert off.model_feature_names_ == list(frame.columns)
    p = on.predict_proba(frame)[:, 1]
    assert np.all((p > 0) & (p < 1))
    # the serving path (engine): _design on a float matrix in feature_names_in_ order, then the booster
    M = frame[list(on.feature_names_in_)].to_numpy(dtype=float)
    np.testing.assert_allclose(on._raw_proba(on._design(M, list(on.feature_names_in_))), p)
    with pytest.raises(Exception, match="buyer_dynamics"):
        cls(buyer_dynamics="yes").fit(frame, y)


def _offer_data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    X["offer"] = rng.integers(0, 6, n)
    # offer 1 converts best for everyone; offer 4 a little better where a > 1
    p = 0.05 + 0.10 * (X["offer"] == 1) + 0.12 * ((X["offer"] == 4) & (X["a"] > 1))
    y = (rng.random(n) < p).astype(int)
    return X, y.to_numpy()


def test_next_best_offer_shrinks_toward_its_default_offer():
    X, y = _offer_data()
    kw = dict(n_estimators=60, num_leaves=4, min_child_samples=50, random_state=0)
    free = NextBestOfferModel(min_relative_uplift=0.0, **kw).fit(X, y, propensity=np.full(len(X), 1 / 6))
    assert free.default_offer_ == 1
    strict = NextBestOfferModel(min_relative_uplift=10.0, **kw).fit(X, y, propensity=np.full(len(X), 1 / 6))
    assert (strict.predict(X) == strict.default_offer_).all()
    v = free.offer_values(X)
    np.testing.assert_array_equal(free.predict(X), v.argmax(axis=1))
    mid = NextBestOfferModel(min_relative_uplift=0.3, **kw).fit(X, y, propensity=np.full(len(X), 1 / 6))
    vm = mid.offer_values(X)
    moved = mid.predict(X) != mid.default_offer_
    rows = np.flatnonzero(moved)
    assert np.all(vm[rows, mid.predict(X)[rows]] > 1.3 * vm[rows, mid.default_offer_])
    with pytest.raises(Exception, match="min_relative_uplift"):
        NextBestOfferModel(min_relative_uplift=-1, **kw).fit(X, y, propensity=np.full(len(X), 1 / 6))

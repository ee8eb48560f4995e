"""One contract test over every estimator of ``models`` (scikit-learn's contract): discovered, not
listed by hand, so a new estimator is checked the day it lands."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone

import models.btyd
import models.gbm
import models.offpolicy
import models.rfm
from models._validation import EstimatorInputError, NotFittedError


def _discover():
    out = []
    for mod in (models.btyd, models.gbm, models.offpolicy, models.rfm):
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if (issubclass(cls, BaseEstimator) and cls.__module__ == mod.__name__
                    and not cls.__name__.startswith("_")):
                out.append(cls)
    return sorted(set(out), key=lambda c: c.__name__)


ESTIMATORS = _discover()


def _data(cls, seed=0, n=1200):
    rng = np.random.default_rng(seed)
    if cls is models.btyd.BGNBDClassifier:
        X, y = models.btyd.simulate_bgnbd(n, 90.0, 0.5, 10.0, 0.7, 2.5, seed=seed, horizon=30)
        return (X, y), {}, X
    if cls is models.rfm.RFMClassifier:
        X = np.column_stack([rng.exponential(30, n), rng.poisson(3, n), rng.gamma(2, 50, n)])
        y = (rng.random(n) < 1 / (1 + X[:, 0] / 20)).astype(int)
        return (X, y), {}, X
    if cls is models.offpolicy.BestSingleOfferBaseline:
        off = rng.integers(0, 6, n)
        return (off, (off == 2) * 1.0 + rng.random(n), np.full(n, 1 / 6)), {}, None
    if cls is models.offpolicy.FixedHourBaseline:
        return (), {}, None
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    if cls is models.offpolicy.NextBestOfferModel:
        X["offer"] = rng.integers(0, 6, n)
        y = (rng.random(n) < 0.1 + 0.3 * (X["offer"] == (X["a"] > 0) * 2)).astype(int)
        return (X, y), {"propensity": np.full(n, 1 / 6)}, X
    if cls is models.offpolicy.SendTimeModel:
        X["send_hour"] = rng.integers(8, 22, n)
        y = (rng.random(n) < 0.1 + 0.4 * (np.abs(X["send_hour"] - 15) < 3)).astype(int)
        return (X, y), {"propensity": np.full(n, 1 / 14)}, X
    y = (rng.random(n) < 1 / (1 + np.exp(-X["a"].to_numpy()))).astype(int)
    return (X, y), {}, X


def _small(est):
    if "n_estimators" in est.get_params():
        est.set_params(n_estimators=20)
    return est


def _output(est, X):
    if X is None:
        return est.predict(7)
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X)
    return est.predict(X)


def test_discovery_finds_every_family():
    names = {c.__name__ for c in ESTIMATORS}
    assert {"PropensityModel", "ChurnModel", "NextBestOfferModel", "SendTimeModel", "BGNBDClassifier",
            "RFMClassifier", "BestSingleOfferBaseline", "FixedHourBaseline"} <= names


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_sklearn_contract(cls):
    est = _small(cls())
    params = est.get_params()
    # __init__ stores parameters unchanged; get_params/set_params round trip; clone keeps them
    assert set(params) == set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert clone(est).get_params() == params
    est.set_params(**params)
    assert est.get_params() == params
    args, kwargs, X = _data(cls)
    # fit returns self and learns trailing-underscore attributes only
    before = set(vars(est))
    assert est.fit(*args, **kwargs) is est
    learnt = set(vars(est)) - before
    assert learnt and all(a.endswith("_") for a in learnt), learnt
    out = _output(est, X)
    # deterministic with a seed: a clone fitted on the same data predicts the same
    other = clone(est).fit(*args, **kwargs)
    np.testing.assert_allclose(_output(other, X), out)
    # pickling keeps predictions
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(_output(again, X), out)
    if X is not None and hasattr(est, "predict_proba"):
        p = est.predict_proba(X)
        assert p.shape == (len(X), 2)
        assert np.all((p >= 0) & (p <= 1))
        np.testing.assert_allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize("cls", [c for c in ESTIMATORS if "n_estimators" in c().get_params()],
                         ids=lambda c: c.__name__)
def test_bad_parameter_message_names_parameter_and_class(cls):
    args, kwargs, _ = _data(cls)
    with pytest.raises(EstimatorInputError, match=rf"The 'learning_rate' parameter of {cls.__name__} must be"):
        cls(learning_rate=-1.0).fit(*args, **kwargs)


@pytest.mark.parametrize("cls", [models.gbm.PropensityModel, models.rfm.RFMClassifier,
                                 models.btyd.BGNBDClassifier], ids=lambda c: c.__name__)
def test_unfitted_use_is_a_clear_error(cls):
    _, _, X = _data(cls)
    with pytest.raises(NotFittedError, match="not fitted"):
        cls().predict_proba(X)


def test_predict_checks_feature_names_and_count():
    args, _, X = _data(models.gbm.PropensityModel)
    m = models.gbm.PropensityModel(n_estimators=5).fit(*args)
    with pytest.raises(EstimatorInputError, match="lacks"):
        m.predict_proba(X.drop(columns=["a"]).assign(z=1.0))
    with pytest.raises(EstimatorInputError, match="features"):
        m.predict_proba(np.zeros((3, 2)))


def test_offpolicy_models_need_propensities_and_action_column():
    (X, y), _, _ = _data(models.offpolicy.NextBestOfferModel)
    with pytest.raises(EstimatorInputError, match="propensity"):
        models.offpolicy.NextBestOfferModel(n_estimators=5).fit(X, y)
    with pytest.raises(EstimatorInputError, match="in \\(0, 1\\]"):
        models.offpolicy.NextBestOfferModel(n_estimators=5).fit(X, y, propensity=np.zeros(len(y)))
    with pytest.raises(EstimatorInputError, match="offer_column"):
        models.offpolicy.NextBestOfferModel(n_estimators=5).fit(X.drop(columns=["offer"]), y,
                                                                propensity=np.full(len(y), 0.5))


def test_ipw_corrects_a_logging_policy_that_favours_a_bad_offer():
    """The logging policy sends offer 0 mostly to customers who like it; a naive fit thinks offer
    0 is best for everyone; inverse-propensity weighting recovers that offer 1 is better for
    customers with a < 0 (whom the logger rarely gives offer 1)."""
    rng = np.random.default_rng(1)
    n = 20_000
    X = pd.DataFrame({"a": rng.normal(size=n)})
    p0 = np.where(X["a"] > 0, 0.9, 0.5)  # logging prob of offer 0 (context dependent)
    offer = np.where(rng.random(n) < p0, 0, 1)
    prop = np.where(offer == 0, p0, 1 - p0)
    p_conv = np.where(offer == 0, 0.10, np.where(X["a"] < 0, 0.16, 0.04))
    y = (rng.random(n) < p_conv).astype(int)
    X["offer"] = offer
    # min_relative_uplift=0: this test is about the IPW-corrected values, not the shrinkage toward
    # the default offer (offer 1's 60 % uplift for a < 0 is below the default threshold of 100 %)
    m = models.offpolicy.NextBestOfferModel(catalog=_two_offers(), n_estimators=60, num_leaves=4,
                                            min_relative_uplift=0.0).fit(X, y, propensity=prop)
    test = pd.DataFrame({"a": [-1.0, 1.0], "offer": 0})
    assert m.predict(test).tolist() == [1, 0]


def _two_offers():
    from core.catalog import Catalog, Offer, OfferKind

    return Catalog(offers=(Offer(id="x", kind=OfferKind.CONTENT), Offer(id="y", kind=OfferKind.CONTENT)))


def test_send_time_model_finds_each_customers_hour_from_its_activity_profile():
    rng = np.random.default_rng(2)
    n = 12_000
    peak = rng.choice([9, 13, 20], n)
    X = pd.DataFrame(np.full((n, 6), 0.1), columns=[f"act_share_h{b:02d}" for b in range(0, 24, 4)])
    X.iloc[np.arange(n), peak // 4] = 0.5
    X["act_peak_hour"] = peak
    hours = rng.choice(np.arange(8, 22), n, p=np.where(np.arange(8, 22) == 10, 0.35, 0.05))
    prop = np.where(hours == 10, 0.35, 0.05)
    d = np.abs(hours - peak)
    y = (rng.random(n) < 0.05 + 0.3 * np.exp(-0.5 * (d / 1.5) ** 2)).astype(int)
    X["send_hour"] = hours
    m = models.offpolicy.SendTimeModel(hour_profile=tuple(c for c in X.columns if c.startswith("act_share")),
                                       reference_hours=("act_peak_hour",), n_estimators=40).fit(X, y, propensity=prop)
    rows = X.iloc[[int(np.flatnonzero(peak == h)[0]) for h in (9, 13, 20)]]
    assert np.abs(m.predict(rows) - np.array([9, 13, 20])).max() <= 1


def test_send_time_without_the_raw_hour_picks_the_hour_nearest_the_customers_own():
    # trees score in steps: many candidate hours tie, and a tie must go to the nearest hour
    rng = np.random.default_rng(4)
    n = 8000
    X = pd.DataFrame({"noise": rng.normal(size=n), "ref": rng.uniform(8.0, 21.0, n)})
    hours = rng.integers(8, 22, n)
    d = np.abs(hours - X["ref"].to_numpy())
    y = (rng.random(n) < 0.05 + 0.3 * np.exp(-0.5 * (d / 2.0) ** 2)).astype(int)
    X["send_hour"] = hours
    m = models.offpolicy.SendTimeModel(reference_hours=("ref",), hour_as_feature=False, n_estimators=30,
                                       num_leaves=4).fit(X, y, propensity=np.full(n, 1 / 14))
    rows = X.head(400)
    nearest = np.clip(np.floor(rows["ref"].to_numpy() + 0.5), 8, 21)
    assert (m.predict(rows) == nearest).all()
    scores = m.hour_scores(rows)
    assert (scores == scores.max(axis=1, keepdims=True)).sum(axis=1).max() > 1  # ties do occur


def test_next_best_offer_two_stage_learns_clicks_then_conversions():
    rng = np.random.default_rng(3)
    n = 20_000
    X = pd.DataFrame({"a": rng.normal(size=n), "offer": rng.integers(0, 2, n)})
    p_click = np.where(X["offer"] == (X["a"] > 0), 0.3, 0.1)
    clicked = (rng.random(n) < p_click).astype(int)
    y = clicked * (rng.random(n) < 0.5)
    m = models.offpolicy.NextBestOfferModel(catalog=_two_offers(), n_estimators=150, learning_rate=0.1,
                                            num_leaves=4, min_child_samples=50).fit(
        X, y, propensity=np.full(n, 0.5), clicked=clicked)
    assert hasattr(m, "conversion_model_")
    p = m.conversion_matrix(pd.DataFrame({"a": [-1.0, 1.0], "offer": 0}))
    np.testing.assert_allclose(p, [[0.15, 0.05], [0.05, 0.15]], atol=0.03)
    with pytest.raises(EstimatorInputError, match="click"):
        m.fit(X, np.ones(n, dtype=int), propensity=np.full(n, 0.5), clicked=clicked)

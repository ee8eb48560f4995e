"""The one-row paths of the serving hot path give bit-identical numbers to the vector code:
``BuyerDynamics.transform`` / ``transform_row``, the customer models' and the off-policy models'
``_design`` on one row, and the engine's single-row LightGBM entry (also from many threads)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from models.derived import _BG, _EVENTS, BuyerDynamics
from models.gbm import PropensityModel
from models.offpolicy import NextBestOfferModel, SendTimeModel

_COLUMNS = [*_BG, "orders_30d", "orders_90d", *_EVENTS, "events_30d", "events_90d", "other"]


def _bits(a: np.ndarray) -> np.ndarray:
    """The exact bit patterns (NaN == NaN, 0.0 != -0.0)."""
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _rows(n: int, seed: int, special: bool = True) -> np.ndarray:
    """Feature rows of every kind: buyers, non-buyers (cold start), fractional and huge counts, NaN,
    +-inf, signed zeros, negative days."""
    rng = np.random.default_rng(seed)
    orders = rng.choice([0.0, 1.0, 2.0, 5.0, 40.0, 0.5, 1.5], n)
    M = np.column_stack([
        orders,  # orders_total
        np.where(rng.random(n) < 0.2, orders * rng.uniform(0, 2, n), orders),  # order_days_total
        rng.exponential(200, n) * (orders > 0),  # order_span_days
        rng.exponential(60, n),  # days_since_last_order
        rng.poisson(0.5, n).astype(float), rng.poisson(1.5, n).astype(float),  # orders_30d/90d
        rng.poisson(20, n) * (rng.random(n) < 0.8), rng.uniform(0, 400, n), rng.exponential(10, n),  # events
        rng.poisson(4, n).astype(float), rng.poisson(12, n).astype(float),
        rng.normal(size=n),  # other
    ])
    if not special:  # what a fit sees (no infinities)
        return M
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -3.0, 1e300, -1e300, 1.0, 1e-300])
    hit = rng.random(M.shape) < 0.08
    M[hit] = rng.choice(special, hit.sum())
    return M


def _fitted(columns, seed=0) -> BuyerDynamics:
    return BuyerDynamics(list(columns)).fit(_rows(3000, 100 + seed, special=False)[:, [_COLUMNS.index(c) for c in columns]],
                                            seed=seed)


@pytest.mark.parametrize("columns", [
    _COLUMNS,
    [c for c in _COLUMNS if c not in ("events_30d", "events_90d")],
    ["orders_total", "orders_30d", "orders_90d", "other"],  # no BG/NBD, no events
    list(_EVENTS) + ["other"],
    ["other"],  # no derived figure at all
])
def test_transform_of_one_row_equals_the_vector_transform(columns):
    with np.errstate(all="ignore"):
        dyn = _fitted(columns)
        if set(_BG) <= set(columns):
            assert dyn.bg_params is not None
        M = _rows(4000, 7)[:, [_COLUMNS.index(c) for c in columns]]
        M[:5] = np.nan  # a customer with no history at all
        whole = dyn.transform(M)
        one = np.concatenate([dyn.transform(M[i:i + 1]) for i in range(len(M))])
        bare = BuyerDynamics(list(columns))  # unfitted: no BG/NBD parameters
        whole_bare = bare.transform(M)
        one_bare = np.concatenate([bare.transform(M[i:i + 1]) for i in range(len(M))])
    assert one.shape == whole.shape == (len(M), len(dyn.names()))
    np.testing.assert_array_equal(_bits(one), _bits(whole))
    np.testing.assert_array_equal(_bits(one_bare), _bits(whole_bare))
    if dyn.names():
        assert dyn.transform_row(M[10].tolist()) is not None  # the row path really answered


def test_transform_row_leaves_a_division_by_zero_to_the_vector_code():
    dyn = BuyerDynamics(list(_BG))
    dyn.bg_params = (0.5, 10.0, 0.6, 0.5)  # b + x - 1 == 0 at x = 0.5
    row = [1.5, 20.0, 5.0, 3.0]  # _BG order; x = order_days_total - 1 = 0.5
    assert dyn.transform_row(row) is None
    with np.errstate(all="ignore"):
        one = dyn.transform(np.array([row]))
        whole = dyn.transform(np.array([row, row]))
    np.testing.assert_array_equal(_bits(one[0]), _bits(whole[0]))


def _frame(n=2000, seed=0):
    M = _rows(n, seed, special=False)
    frame = pd.DataFrame(M, columns=_COLUMNS)
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3 + 0.3 * (np.nan_to_num(M[:, 0]) > 1)).astype(int)
    return frame, y


def _forbidden(*args, **kwargs):
    raise AssertionError("the vector path answered one row")


def test_customer_model_design_and_single_row_predict_equal_the_vector_path(monkeypatch):
    from serving.engine import _SingleRow

    with np.errstate(all="ignore"):
        frame, y = _frame()
        est = PropensityModel(n_estimators=30, random_state=0).fit(frame, y)
        names = list(est.feature_names_in_)
        M = _rows(1500, 3)
        design = est._design(M, names)
        with monkeypatch.context() as mp:  # the one-row path really answers (no vector column_stack)
            mp.setattr(np, "column_stack", _forbidden)
            one = np.concatenate([est._design(M[i:i + 1], names) for i in range(len(M))])
    np.testing.assert_array_equal(_bits(one), _bits(design))
    fast = _SingleRow.of(est)
    assert fast is not None
    expect = est._raw_proba(design)
    np.testing.assert_array_equal(np.concatenate([fast(design[i:i + 1]) for i in range(len(M))]), expect)
    # from many threads at once (the engine decides in up to 8): per-thread buffers, same numbers
    got = np.full(len(M), np.nan)

    def work(rows):
        for i in rows:
            got[i] = fast(design[i:i + 1])[0]

    threads = [threading.Thread(target=work, args=(range(k, len(M), 8),)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(got, expect)
    with pytest.raises(Exception, match="expects"):
        fast(design[:1, :-1])


def test_offpolicy_designs_of_one_row_equal_the_vector_path(monkeypatch):
    with np.errstate(all="ignore"):
        frame, y = _frame(3000, 1)
        rng = np.random.default_rng(1)
        frame["offer"] = rng.integers(0, 6, len(frame)).astype(float)
        frame["send_hour"] = rng.integers(0, 24, len(frame)).astype(float)
        for c in ("home", "sports", "beauty"):
            frame[f"order_share_{c}"] = rng.dirichlet(np.ones(3), len(frame))[:, 0]
        frame["activity_h0"], frame["activity_h1"] = rng.random(len(frame)), rng.random(len(frame))
        frame["peak_hour"] = rng.integers(0, 24, len(frame)).astype(float)
        prop = np.full(len(frame), 1 / 6)
        nbo = NextBestOfferModel(n_estimators=20, value_column="other", random_state=0).fit(frame, y,
                                                                                            propensity=prop)
        stm = SendTimeModel(n_estimators=20, hour_profile=("activity_h0", "activity_h1"),
                            reference_hours=("peak_hour",), hour_as_feature=False,
                            random_state=0).fit(frame, y, propensity=prop)
        M = frame.to_numpy(dtype=float)
        M[rng.random(M.shape) < 0.05] = np.nan
        M[:20, frame.columns.get_loc("offer")] = [-1, 99, np.inf, -np.inf, *range(16)]
        for est in (nbo, stm):
            names = list(est.feature_names_in_)
            whole = est._design(M, names)
            one = np.concatenate([est._design(M[i:i + 1], names) for i in range(len(M))])
            np.testing.assert_array_equal(_bits(one), _bits(whole))
        with monkeypatch.context() as mp:  # a valid offer code: the one-row path answers (no np.clip)
            mp.setattr(np, "clip", _forbidden)
            nbo._design(M[20:21], list(nbo.feature_names_in_))

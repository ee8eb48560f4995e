"""The policy context's derived columns (active-hour fit, inverse order value) and the funnel
model's focused prior (lighter shrinkage of the per-level weights on the columns that carry a
level's effect)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from policies import context as pc
from policies.arms import ArmSpace
from policies.context import (
    CONTEXT_COLUMNS,
    DERIVED_FEATURES,
    FIT_HOURS,
    context_matrix,
    hour_fit,
    kappa_from_resultant,
)
from policies.funnel import OFFER_FOCUS, OPEN_FOCUS, FunnelRewardModel
from policies.glm import FactorGLM

ARMS = ArmSpace.build(slots=(8, 12, 20))


def test_kappa_grows_with_the_resultant_length():
    r = np.linspace(0.0, 0.999, 200)
    k = kappa_from_resultant(r)
    assert k[0] == 0.0 and (np.diff(k) >= 0).all() and k.max() <= 50.0
    # a known value: R = 0.9 is a von Mises concentration of about 5.3
    assert kappa_from_resultant(np.array([0.9]))[0] == pytest.approx(5.3, abs=0.2)


def test_hour_fit_peaks_at_the_mean_hour_and_is_flat_without_concentration():
    fit = hour_fit(np.array([20.0, 9.0, 12.0, np.nan]), np.array([0.9, 0.6, 0.0, 0.9]), hours=tuple(range(24)))
    assert fit.shape == (4, 24)
    assert fit[0].argmax() == 20 and fit[0, 20] == pytest.approx(1.0)
    assert fit[0, 19] == pytest.approx(fit[0, 21])  # symmetric around the mean hour
    assert fit[0, 8] < 0.05  # far from the active hours
    assert fit[1].argmax() == 9
    # a wider pattern falls off more slowly
    assert fit[1, 12] > fit[0, 23]
    # no concentration (no events): every hour fits equally
    assert np.allclose(fit[2], 1.0)
    # wraps around midnight
    late = hour_fit(np.array([23.5]), np.array([0.9]), hours=(1, 22))
    assert late[0, 0] == pytest.approx(late[0, 1], rel=1e-9)


def test_context_matrix_appends_the_derived_columns():
    n = 3
    raw = (*pc.LOG_FEATURES, *pc.RAW_FEATURES, *pc.CYCLIC_FEATURES, *pc.RECENCY_FEATURES, *pc.CONTACT_FEATURES)
    frame = pd.DataFrame({c: np.zeros(n) for c in raw})
    # the hour fit follows the activity of events and orders together, not the events' own mean
    frame["act_hour_mean"] = [16.0, 4.0, 9.0]
    frame["act_hour_concentration"] = [0.9, 0.9, 0.9]
    frame["act_order_hour_mean"] = [10.0, 20.0, np.nan]
    frame["act_order_hour_concentration"] = [0.9, 0.9, np.nan]
    frame["avg_order_value"] = [50.0, 5.0, np.nan]
    X = context_matrix(frame)
    assert X.shape == (n, len(CONTEXT_COLUMNS)) and np.isfinite(X).all()
    col = {c: i for i, c in enumerate(CONTEXT_COLUMNS)}
    assert set(DERIVED_FEATURES) <= set(col)
    assert X[0, col["hour_fit_h10"]] == pytest.approx(1.0)
    assert X[0, col["hour_fit_h20"]] < 0.01
    assert X[1, col["hour_fit_h20"]] == pytest.approx(1.0)
    assert np.allclose(X[2, [col[f"hour_fit_h{h:02d}"] for h in FIT_HOURS]], 1.0)  # unknown: flat
    assert X[:, col["inv_avg_order_value"]].tolist() == pytest.approx([2.0, 100.0 / 15.0, 1.0])


def test_factor_glm_takes_a_prior_per_context_column():
    cells = np.array([[0, 1], [0, 2]])
    level = np.array([5.0, 100.0, 1.0, 100.0])  # intercept entry is replaced by intercept_ridge
    g = FactorGLM(3, cells, 3, ridge=10.0, level_ridge=level, intercept_ridge=1e-3)
    prior = np.diag(g.precision).reshape(3, 4)
    assert prior[0].tolist() == [1e-3, 10.0, 10.0, 10.0]  # base block: ridge
    assert prior[1].tolist() == prior[2].tolist() == [1e-3, 100.0, 1.0, 100.0]
    scalar = FactorGLM(3, cells, 3, ridge=10.0, level_ridge=100.0, intercept_ridge=1e-3)
    assert np.diag(scalar.precision).reshape(3, 4)[1].tolist() == [1e-3, 100.0, 100.0, 100.0]


def test_focus_ridge_relaxes_only_the_named_columns_of_the_level_blocks():
    d = len(CONTEXT_COLUMNS)
    m = FunnelRewardModel(ARMS, d, ridge=10.0, level_ridge=100.0, offer_ridge=1000.0, focus_ridge=30.0)
    col = {c: 1 + i for i, c in enumerate(CONTEXT_COLUMNS)}
    open_prior = np.diag(m.open.precision).reshape(m.open.n_blocks, m.open.d1)
    offer_prior = np.diag(m.click.precision).reshape(m.click.n_blocks, m.click.d1)
    assert open_prior[1, col["hour_fit_h12"]] == 30.0 and open_prior[1, col["orders_90d"]] == 100.0
    assert open_prior[0, col["hour_fit_h12"]] == 10.0  # the shared block keeps the base ridge
    assert offer_prior[1, col["inv_avg_order_value"]] == 30.0 and offer_prior[1, col["orders_90d"]] == 1000.0
    assert all(c in CONTEXT_COLUMNS for c in OPEN_FOCUS + OFFER_FOCUS)
    # without focus, or on another context, the level prior is uniform
    for model in (FunnelRewardModel(ARMS, d, ridge=10.0, level_ridge=100.0, offer_ridge=1000.0),
                  FunnelRewardModel(ARMS, 5, ridge=10.0, level_ridge=100.0, offer_ridge=1000.0, focus_ridge=30.0)):
        p = np.diag(model.open.precision).reshape(model.open.n_blocks, model.open.d1)
        assert (p[1:, 1:] == 100.0).all()


def test_a_focused_column_lets_the_open_model_learn_a_per_slot_hour_effect():
    """Opens depend on how well the slot fits the customer's active hours (through the slot's own
    hour_fit column): with the focused prior the per-slot weights pick up the effect's full size,
    and the predicted open probabilities are far closer to the truth than under the uniform heavy
    level prior (which shrinks every per-slot difference towards the average slot)."""
    rng = np.random.default_rng(3)
    n, d = 4000, len(CONTEXT_COLUMNS)
    col = {c: i for i, c in enumerate(CONTEXT_COLUMNS)}
    X = rng.normal(size=(n, d))
    peak = rng.choice([8.0, 12.0, 20.0], n) + rng.normal(0, 1, n)
    fit = hour_fit(peak, np.full(n, 0.9), hours=FIT_HOURS)
    X[:, [col[f"hour_fit_h{h:02d}"] for h in FIT_HOURS]] = fit
    slot_fit = fit[:, [FIT_HOURS.index(s) for s in ARMS.slots]]  # (n, S)
    send = np.flatnonzero(ARMS.is_send)
    arm = rng.choice(send, n)
    s = ARMS.slot_level[arm].astype(int)

    def truth(f):
        return 1 / (1 + np.exp(-(-1.5 + 2.0 * (2 * f - 1))))

    opened = rng.random(n) < truth(slot_fit[np.arange(n), s])
    from policies.funnel import Feedback

    fb = Feedback(opened, np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n))
    Z = (X - X.mean(0)) / X.std(0)
    err = {}
    for focus in (None, 3.0):
        m = FunnelRewardModel(ARMS, d, ridge=10.0, level_ridge=1000.0, focus_ridge=focus)
        m.add(Z, arm, np.zeros(n), np.ones(n), feedback=fb)
        eta = m.open.linear_predictor(np.hstack([np.ones((n, 1)), Z]))[:, : len(ARMS.slots)]  # first channel
        err[focus] = np.abs(1 / (1 + np.exp(-eta)) - truth(slot_fit)).mean()
    assert err[3.0] < 0.7 * err[None], err


def test_send_cost_raises_the_bar_a_send_must_clear():
    """``send_cost`` (the opportunity a send uses up) lowers every send arm's uplift by exactly
    that amount; with a prohibitive cost the greedy policy keeps only the floor on sends."""
    from policies.bandits import make_policy
    from policies.funnel import Feedback

    rng = np.random.default_rng(0)
    n = 3000
    X = rng.normal(size=(n, 3))
    arm = rng.integers(1, ARMS.n_arms, n)
    opened = rng.random(n) < 0.3
    clicked = opened & (rng.random(n) < 0.3)
    converted = clicked & (rng.random(n) < 0.3)
    fb = Feedback(opened, clicked, converted, np.zeros(n, bool), np.where(converted, 80.0, 0.0))
    base = make_policy("greedy", ARMS, seed=1).fit(X, arm, np.zeros(n), feedback=fb)
    costly = make_policy("greedy", ARMS, seed=1, send_cost=0.5).fit(X, arm, np.zeros(n), feedback=fb)
    diff = base.predict_reward(X[:50]) - costly.predict_reward(X[:50])
    assert np.allclose(diff[:, 0], 0.0) and np.allclose(diff[:, 1:], 0.5)
    E = np.ones((50, ARMS.n_arms), dtype=bool)
    assert base.distribution(X[:50], E)[:, 0].mean() < 0.5  # sending pays without the cost
    prohibitive = make_policy("greedy", ARMS, seed=1, send_cost=1e6).fit(X, arm, np.zeros(n), feedback=fb)
    d = prohibitive.distribution(X[:50], E)
    assert np.allclose(d[:, 0], 1.0 - prohibitive.floor + prohibitive.floor / ARMS.n_arms)


@pytest.mark.parametrize("params", [{"focus_ridge": 0.0}, {"focus_ridge": -1.0}, {"send_cost": -0.1},
                                    {"online_weight": 0.0}, {"online_weight": 1.5}])
def test_bad_focus_send_cost_and_online_weight_are_rejected(params):
    from core.errors import InputError
    from policies.bandits import make_policy

    with pytest.raises(InputError, match=next(iter(params))):
        make_policy("thompson", ARMS, **params)


def test_online_weight_tempers_every_update_after_the_warm_start():
    """The first update (the warm start) counts fully; later (on-policy) feedback counts
    ``online_weight`` per row: the same batch moves the posterior less, and a weight of 1 is the
    plain update."""
    from policies.bandits import make_policy
    from policies.funnel import Feedback

    rng = np.random.default_rng(1)
    n = 4000
    X = rng.normal(size=(n, 3))
    arm = rng.integers(1, ARMS.n_arms, n)

    def feedback(p_open):
        opened = rng.random(n) < p_open
        return Feedback(opened, np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n))

    warm, online = feedback(0.1), feedback(0.5)  # the world changed after the warm start
    moved, warm_means = {}, {}
    for weight in (1.0, 0.25):
        p = make_policy("greedy", ARMS, seed=1, online_weight=weight).fit(X, arm, np.zeros(n), feedback=warm)
        warm_means[weight] = p.model_.open.mean.copy()
        p.update(X, arm, np.zeros(n), feedback=online)
        moved[weight] = np.abs(p.model_.open.mean[0] - warm_means[weight][0])  # the intercept
    assert np.allclose(warm_means[0.25], warm_means[1.0])  # the warm start is not tempered
    assert moved[0.25] < 0.6 * moved[1.0], moved


def _random_inputs(seed: int, n: int, specials: np.ndarray) -> tuple[np.random.Generator, dict]:
    """(the generator, n customers' input features): normal values at three scales, ~30 % of them
    replaced by ``specials`` (NaN, infinities, signed zeros, branch boundaries)."""
    rng = np.random.default_rng(seed)
    feats = {}
    for name in pc._IN_NAMES:
        v = rng.normal(0, 1, n) * rng.choice([1.0, 30.0, 1000.0])
        hit = rng.random(n) < 0.3
        v[hit] = rng.choice(specials, int(hit.sum()))
        feats[name] = v
    return rng, feats


@pytest.mark.parametrize("n", [0, 1, 2, 9])
def test_the_mapping_path_equals_the_frame_path_bit_for_bit(monkeypatch, n):
    """The serving path (a mapping of arrays, gathered once, filled once, in blocks of customers)
    gives the same bits as the frame path, NaN, infinities and signed zeros included, in a
    C-contiguous (n, d) matrix."""
    monkeypatch.setattr(pc, "_BLOCK", 4)  # several blocks of customers
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e308, 0.53, 0.85, 1.0, 24.0])
    rng, feats = _random_inputs(n, n, specials)
    feats["orders_90d"] = rng.integers(0, 5, n)  # an int column
    with np.errstate(all="ignore"):
        fast = context_matrix(feats)
        ref = context_matrix(pd.DataFrame(feats))
    assert fast.shape == (n, len(CONTEXT_COLUMNS)) and fast.flags.c_contiguous
    assert np.array_equal(fast.view(np.uint64), ref.view(np.uint64))


def test_one_customer_kappa_equals_the_vector_path():
    """A single customer's concentration evaluates only its branch (in Python floats but for the
    powers): the same bits as the vector path, on every branch and at the branch boundaries."""
    rng = np.random.default_rng(0)
    r = np.concatenate([rng.random(3000), [0.0, -0.0, 0.53, np.nextafter(0.53, 0), 0.85, np.nextafter(0.85, 0),
                                          1.0 - 1e-9, 1.0, 2.0, -1.0, np.inf, -np.inf]])
    vector = pc._kappa(r)
    one = np.concatenate([pc._kappa(r[i:i + 1]) for i in range(len(r))])
    assert np.array_equal(one.view(np.uint64), vector.view(np.uint64))
    assert (vector == kappa_from_resultant(r)).all()
    # a scalar in: a numpy scalar out, as before
    scalar = kappa_from_resultant(0.9)
    assert type(scalar) is np.float64 and scalar == pc._kappa(np.array([0.9, 0.1]))[0]
    # NaN (which kappa_from_resultant turns into 0 first) stays NaN on both paths
    assert np.isnan(pc._kappa(np.array([np.nan]))).all() and np.isnan(pc._kappa(np.array([np.nan, 0.5])))[0]


def test_one_customer_context_equals_its_row_of_the_batch():
    """A single decide's context (one-value arrays, int64 and float64: Python floats and one numpy
    call per transcendental function) is its row of the batch's, bit for bit, on every kappa
    branch, clip bound, signed zero and infinity; a column it cannot take as one number (text,
    lists) takes the general path."""
    n = 2000
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e308, 0.53, 0.85, 1.0 - 1e-9, 1.0, 24.0,
                         400.0, 365.0, 30.0, 15.0, 12.0, 1e-300])
    rng, feats = _random_inputs(3, n, specials)
    for name in ("orders_90d", "sends_7d", "sends_1d"):
        feats[name] = rng.integers(0, 5, n)  # int columns, as the online read gives them
    with np.errstate(all="ignore"):
        batch = context_matrix(feats)
        for i in range(n):
            one = context_matrix({k: v[i:i + 1] for k, v in feats.items()})
            assert one.shape == (1, len(CONTEXT_COLUMNS)) and one.flags.c_contiguous
            assert np.array_equal(one.view(np.uint64), batch[i:i + 1].view(np.uint64)), i
    row = {k: v[:1] for k, v in feats.items()}
    text = {**row, "orders_90d": np.array(["3"], dtype=object)}  # coerced as a frame does
    assert np.array_equal(context_matrix(text), context_matrix(pd.DataFrame(text)))
    with pytest.raises(ValueError):  # not one value per column: not silently joined
        context_matrix({**row, "orders_180d": np.zeros(0), "sends_7d": np.zeros(2)})
    listed = {k: v.tolist() for k, v in row.items()}  # lists, not arrays: the same
    assert np.array_equal(context_matrix(listed).view(np.uint64), batch[:1].view(np.uint64))


def test_one_customer_contact_features_equal_the_vector_path():
    """ContactFeatures of one customer (a single decide) count and date its sends in Python: the
    same arrays as the vector path, at the window edges, with sends after ``at``, on every channel,
    none at all, and past the Python path's size."""
    day = 86_400 * 10**9
    t = 1_767_225_600 * 10**9
    rng = np.random.default_rng(9)
    edges = np.array([0, 1, day - 1, day, day + 1, 7 * day - 1, 7 * day, 7 * day + 1, 30 * day, -1, -day])
    for k in [0, 1, 2, 3, 5, 8, 20, 64, 65, 200]:
        for _ in range(20):
            back = np.where(rng.random(k) < 0.5, rng.choice(edges, k), rng.integers(-2 * day, 40 * day, k))
            at, ch = t - back, rng.integers(0, len(pc.CH), k)
            one = pc.ContactFeatures.of_sends(np.array(["a"], object), np.zeros(k, np.int64), ch, at)
            # the vector path: the same sends of the first of two customers
            two = pc.ContactFeatures.of_sends(np.array(["a", "b"], object), np.zeros(k, np.int64), ch, at)
            got, want = one.arrays(t), two.arrays(t)
            assert list(got) == list(want) == list(pc.CONTACT_FEATURES)
            for name in got:
                assert got[name].dtype == np.float64 and got[name].shape == (1,), name
                assert got[name].view(np.uint64).tolist() == want[name][:1].view(np.uint64).tolist(), (k, name)
    # a time given as a timestamp, not ns: the same
    cf = pc.ContactFeatures.of_sends(np.array(["a"], object), np.zeros(2, np.int64), [0, 2], [t - day, t - 3 * day])
    assert cf.arrays(pd.Timestamp(t, tz="UTC"))["days_since_contact_" + pc.CH[2]].tolist() == [3.0]

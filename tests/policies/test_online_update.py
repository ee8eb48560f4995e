"""The update rule of the policies' own feedback: the first update (the off-policy warm start)
is weighted by ``weighting``, every later one by ``online_weighting`` when it is set ('ips': the
exact logged propensity, self-normalised and capped; off by default)."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from policies.arms import ArmSpace
from policies.bandits import make_policy
from tests.policies._helpers import SyntheticFunnel

ARMS = ArmSpace.build(slots=(9, 13, 19))


def _skewed_log(world: SyntheticFunnel, rows: np.ndarray, seed: int):
    """A logger that picks arm 1 with probability 0.9 and spreads the rest uniformly."""
    rng = np.random.default_rng(seed)
    k = ARMS.n_arms
    p = np.full((len(rows), k), 0.1 / (k - 1))
    p[:, 1] = 0.9
    a = (rng.random(len(rows))[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, k - 1)
    r, fb = world.feedback(rows, a)
    return a, r, fb, p[np.arange(len(rows)), a]


def test_online_ips_leaves_the_warm_start_unweighted_and_weights_the_policys_own_feedback():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6000, 3))
    world = SyntheticFunnel(ARMS, X, seed=3)
    first, second = np.arange(3000), np.arange(3000, 6000)
    a1, r1, fb1, p1 = _skewed_log(world, first, seed=1)
    a2, r2, fb2, p2 = _skewed_log(world, second, seed=2)
    prior = {"ridge": 1.0, "level_ridge": 1.0, "offer_ridge": 1.0, "focus_ridge": None, "seed": 0}

    assert make_policy("thompson", ARMS).online_weighting is None  # off by default: plain updates
    online = make_policy("thompson", ARMS, online_weighting="ips", **prior).initialise(X)
    # the same updates, weighted by hand: a constant propensity is weight 1 under IPS
    by_hand = make_policy("thompson", ARMS, weighting="ips", online_weighting=None, **prior).initialise(X)
    naive = make_policy("thompson", ARMS, **prior).initialise(X)

    online.update(X[first], a1, r1, p1, feedback=fb1)
    by_hand.update(X[first], a1, r1, np.full(len(first), 0.5), feedback=fb1)
    naive.update(X[first], a1, r1, p1, feedback=fb1)
    # the warm start is not importance-weighted
    assert np.allclose(online.predict_reward(X), naive.predict_reward(X), atol=1e-10)
    assert np.allclose(online.predict_reward(X), by_hand.predict_reward(X), atol=1e-10)

    for pol in (online, by_hand, naive):
        pol.update(X[second], a2, r2, p2, feedback=fb2)
    # the policy's own feedback is: rows logged with a small propensity count more
    assert np.allclose(online.predict_reward(X), by_hand.predict_reward(X), atol=1e-8)
    assert not np.allclose(online.predict_reward(X), naive.predict_reward(X), atol=1e-3)


def test_online_ips_corrects_a_skewed_log_of_the_policy_itself():
    """A misspecified model, a uniform warm start, then a batch logged by a policy that sends
    email mostly where it pays: the IPS-weighted update keeps the arms' mean rewards under a
    uniform target closer to the truth than the naive one."""
    rng = np.random.default_rng(0)
    arms = ArmSpace.build(channels=["email", "sms"], offers=["pct10"], slots=(10,))
    n = 20_000
    X = rng.normal(size=(2 * n, 1))
    true = np.column_stack([np.zeros(2 * n), np.where(X[:, 0] > 1.0, 2.0, 0.0), np.full(2 * n, 0.2)])
    uniform = np.full((n, 3), 1 / 3)
    p_email = np.where(X[n:, 0] > 1.0, 0.9, 0.05)
    skewed = np.column_stack([np.full(n, 0.05), p_email, 0.95 - p_email])
    p = np.vstack([uniform[: n // 10], skewed])
    Xs = np.vstack([X[: n // 10], X[n:]])
    ts = true[np.r_[0 : n // 10, n : 2 * n]]
    a = (rng.random(len(p))[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, 2)
    r = ts[np.arange(len(a)), a] + rng.normal(0, 0.1, len(a))
    prop = p[np.arange(len(a)), a]
    warm, own = np.arange(n // 10), np.arange(n // 10, len(a))
    target = true[:, 1].mean()
    est = {}
    for w in ("none", "ips"):
        pol = make_policy("greedy", arms, model="linear", ridge=1.0, factors=("channel",), max_weight=1e6,
                          online_weighting=w).initialise(X)
        pol.update(Xs[warm], a[warm], r[warm], prop[warm]).update(Xs[own], a[own], r[own], prop[own])
        est[w] = pol.predict_reward(X)[:, 1].mean()
    assert abs(est["ips"] - target) < 0.5 * abs(est["none"] - target), (est, target)


def test_online_weighting_is_validated_and_needs_propensities():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(InputError, match="online_weighting"):
        make_policy("thompson", ARMS, online_weighting="dr").initialise(X)
    world = SyntheticFunnel(ARMS, X, seed=0)
    a = np.zeros(20, dtype=np.int64)
    r, fb = world.feedback(np.arange(20), a)
    pol = make_policy("thompson", ARMS, online_weighting="ips").initialise(X)
    pol.update(X, a, r, None, feedback=fb)  # the warm start is unweighted: no propensities needed
    with pytest.raises(InputError, match="propensities"):
        pol.update(X, a, r, None, feedback=fb)


def test_online_parts_keep_the_other_funnel_models_at_the_warm_start():
    """With ``online_parts`` only the named funnel GLMs learn from the updates after the warm
    start (the default: open and unsubscribe); the warm start itself fits them all, and None
    updates every one."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(6000, 3))
    world = SyntheticFunnel(ARMS, X, seed=4)
    first, second = np.arange(3000), np.arange(3000, 6000)
    a1 = rng.integers(0, ARMS.n_arms, len(first))
    r1, fb1 = world.feedback(first, a1)
    a2 = rng.integers(0, ARMS.n_arms, len(second))
    r2, fb2 = world.feedback(second, a2)
    names = ("open", "click", "convert", "unsubscribe", "order_value")
    assert make_policy("thompson", ARMS).online_parts == ("open", "unsubscribe")
    means = {}
    for parts in (None, ("open", "unsubscribe")):
        pol = make_policy("thompson", ARMS, seed=0, online_parts=parts).initialise(X)
        pol.update(X[first], a1, r1, feedback=fb1)
        warm = {k: getattr(pol.model_, k).mean.copy() for k in names}
        pol.update(X[second], a2, r2, feedback=fb2)
        means[parts] = {k: (warm[k], getattr(pol.model_, k).mean.copy()) for k in names}
    for k in names:  # the warm start is the same either way
        assert np.allclose(means[None][k][0], means[("open", "unsubscribe")][k][0])
        assert not np.allclose(means[None][k][0], means[None][k][1])  # the default learns everywhere
    frozen = means[("open", "unsubscribe")]
    for k in ("click", "convert", "order_value"):
        assert np.array_equal(frozen[k][0], frozen[k][1]), k
    for k in ("open", "unsubscribe"):
        assert not np.allclose(frozen[k][0], frozen[k][1]), k
        assert np.allclose(frozen[k][1], means[None][k][1])  # the named ones learn as by default


@pytest.mark.parametrize("parts", [["opens"], "open", ["open", "value"]])
def test_online_parts_are_validated(parts):
    with pytest.raises(InputError, match="online_parts"):
        make_policy("thompson", ARMS, online_parts=parts)

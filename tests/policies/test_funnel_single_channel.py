"""The funnel's best arm of a customer who may be contacted on one channel (computed on that
channel's cells only) is the arm the argmax over every arm's sampled uplift picks."""

from __future__ import annotations

import numpy as np

from policies.arms import ArmSpace
from policies.bandits import make_policy
from tests.policies._helpers import SyntheticFunnel

ARMS = ArmSpace.build(slots=(9, 13, 19))


def test_one_channel_customers_get_the_full_argmax():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 3))
    policy = make_policy("greedy", ARMS, ridge=1.0, level_ridge=1.0, offer_ridge=1.0)
    a = rng.integers(0, ARMS.n_arms, 3000)
    r, fb = SyntheticFunnel(ARMS, X, seed=3).feedback(np.arange(3000), a)
    policy.fit(X, a, r, feedback=fb)
    n = 900
    Z = (X[:n] - policy.center_) / policy.scale_
    Z[n // 2:] = Z[0]  # repeated customers: equal uplifts across rows
    nc, no, ns = len(ARMS.channels), len(ARMS.offers), len(ARMS.slots)
    ch = np.zeros((n, nc, 1, 1), dtype=bool)
    ch[np.arange(n), rng.integers(0, nc, n)] = True  # one channel each ...
    ch[rng.random(n) < 0.3, rng.integers(0, nc)] = True  # ... or two, sometimes
    ch[rng.random(n) < 0.05] = False  # or none (no-send only)
    slots = rng.random((n, 1, 1, ns)) < np.where(rng.random((n, 1, 1, 1)) < 0.5, 1.0, 0.6)  # all or some hours
    offers = rng.random((n, 1, no, 1)) < 0.8
    offers[~offers.any(axis=2)[:, 0, 0], 0, 0, 0] = True
    E = np.ones((n, ARMS.n_arms), dtype=bool)
    E[:, 1:] = (ch & slots & offers).reshape(n, -1)
    E[::4, 0] = E[::4, 1:].any(axis=1) == 0  # no-send not allowed for some (when something else is)
    single = np.count_nonzero(E[:, 1:].reshape(n, nc, no, ns).any(axis=(2, 3)), axis=1) == 1
    assert single.sum() > n // 3 and (~single).sum() > n // 10
    fast = policy.model_.sample_best_arms(Z, E, 16, np.random.default_rng(5))
    means = policy.model_.sample_means(Z, None, 16, np.random.default_rng(5))
    slow = np.where(E[None], means, -np.inf).argmax(axis=2)
    assert fast is not None and np.array_equal(fast, slow)
    # all rows one-channel, and none
    for rows in (np.flatnonzero(single), np.flatnonzero(~single)):
        part = policy.model_.sample_best_arms(Z[rows], E[rows], 16, np.random.default_rng(5))
        assert np.array_equal(part, slow[:, rows])

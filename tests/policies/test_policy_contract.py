"""One contract test over every policy class (river-style): each declares its test parameters;
every one must keep the invariants of a logged, seeded, picklable policy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from core.errors import InputError
from policies.arms import ArmSpace
from policies.bandits import POLICIES, make_policy
from policies.base import Policy
from tests.policies._helpers import SyntheticFunnel, synthetic_rewards

ARMS = ArmSpace.build(slots=(9, 13, 19))


def _all_policy_classes() -> list[type[Policy]]:
    seen, todo = [], list(Policy.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: c.__name__)


CASES = [(cls, params) for cls in _all_policy_classes() for params in cls.test_params()]


def _ids(case):
    cls, params = case
    return f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in params.items()) or 'default'}"


def _problem(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    E = rng.random((n, ARMS.n_arms)) < 0.4
    E[:, 0] = True
    E[: n // 10, 1:] = False  # some customers may only get no-send
    return X, E


def _check_distribution(dist: np.ndarray, E: np.ndarray) -> None:
    assert dist.shape == E.shape
    assert np.allclose(dist.sum(axis=1), 1.0, atol=1e-9)
    assert (dist[~E] == 0.0).all(), "ineligible arms must have probability exactly 0"
    assert (dist[E] > 0.0).all() and (dist[E] <= 1.0).all(), "eligible arms must have probability in (0, 1]"


def test_every_registered_policy_is_discovered():
    classes = _all_policy_classes()
    assert set(POLICIES.values()) <= set(classes)
    assert {"thompson", "linucb", "epsilon_greedy", "softmax", "greedy", "random"} <= set(POLICIES)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_policy_contract(case):
    cls, params = case
    X, E = _problem(300, seed=1)
    policy = cls(ARMS, seed=7, **params)
    # parameters are stored unchanged; clone round-trips them
    for k, v in params.items():
        assert getattr(policy, k) == v
    assert policy.clone().get_params() == policy.get_params()

    # before any feedback
    dist = policy.distribution(X, E)
    _check_distribution(dist, E)

    # decide: chosen arm eligible, logged propensity = its probability
    dec = policy.decide(X, E)
    rows = np.arange(len(X))
    assert E[rows, dec.arm].all()
    assert np.allclose(dec.propensity, dec.distribution[rows, dec.arm])
    assert ((dec.propensity > 0) & (dec.propensity <= 1)).all()
    _check_distribution(dec.distribution, E)

    # update returns self, keeps the invariants
    world = SyntheticFunnel(ARMS, X, seed=3)
    rewards, feedback = world.feedback(rows, dec.arm)
    fb = feedback if policy.needs_feedback else None
    assert policy.update(X, dec.arm, rewards, dec.propensity, feedback=fb) is policy
    _check_distribution(policy.distribution(X, E), E)

    # same seed, same call sequence -> same decisions
    twin = cls(ARMS, seed=7, **params)
    d1 = twin.decide(X, E)
    twin.update(X, d1.arm, rewards, d1.propensity, feedback=fb)
    assert (d1.arm == dec.arm).all()
    assert np.array_equal(twin.decide(X, E).arm, policy.decide(X, E).arm)
    a = cls(ARMS, seed=7, **params)
    b = cls(ARMS, seed=7, **params)
    for p in (a, b):
        p.update(X, dec.arm, rewards, dec.propensity, feedback=fb)
    assert np.array_equal(a.decide(X, E).arm, b.decide(X, E).arm)
    assert np.array_equal(a.distribution(X, E), b.distribution(X, E))

    # pickling keeps everything, including the generator state
    c = pickle.loads(pickle.dumps(a))
    assert np.array_equal(c.distribution(X, E), a.distribution(X, E))
    assert np.array_equal(c.decide(X, E).arm, a.decide(X, E).arm)

    # a single customer works like a batch row
    one = policy.distribution(X[:1], E[:1])
    _check_distribution(one, E[:1])


@pytest.mark.parametrize("name", ["thompson", "linucb", "epsilon_greedy", "softmax", "greedy"])
def test_learning_policies_find_the_best_arms(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 4))
    E = np.ones((4000, ARMS.n_arms), dtype=bool)
    truth = synthetic_rewards(ARMS, X, seed=5)
    policy = make_policy(name, ARMS, seed=1, model="linear", ridge=1.0)
    for lo in range(0, 4000, 500):
        xs, es = X[lo: lo + 500], E[lo: lo + 500]
        dec = policy.decide(xs, es)
        r = truth[lo: lo + 500][np.arange(len(xs)), dec.arm] + rng.normal(0, 0.3, len(xs))
        policy.update(xs, dec.arm, r, dec.propensity)
    Xt = rng.normal(size=(1000, 4))
    Et = np.ones((1000, ARMS.n_arms), dtype=bool)
    tt = synthetic_rewards(ARMS, Xt, seed=5)
    value = (policy.distribution(Xt, Et) * tt).sum(axis=1).mean()
    uniform = tt.mean(axis=1).mean()
    best = tt.max(axis=1).mean()
    assert (value - uniform) / (best - uniform) > 0.6, (value, uniform, best)


def test_update_is_incremental_and_exact():
    X, E = _problem(600, seed=4)
    truth = synthetic_rewards(ARMS, X, seed=2)
    arms = np.random.default_rng(0).integers(0, ARMS.n_arms, 600)
    r = truth[np.arange(600), arms]
    whole = make_policy("greedy", ARMS, model="linear", ridge=1.0).fit(X, arms, r)
    parts = make_policy("greedy", ARMS, model="linear", ridge=1.0).initialise(X)  # the same scaler as `whole`
    parts.update(X[:250], arms[:250], r[:250]).update(X[250:], arms[250:], r[250:])
    assert np.allclose(whole.predict_reward(X), parts.predict_reward(X), atol=1e-8)


def test_ips_weighting_corrects_a_skewed_logging_policy():
    """A misspecified model fitted on a skewed log: IPS weighting recovers the arms' mean rewards
    under a uniform target better than an unweighted fit."""
    rng = np.random.default_rng(0)
    arms = ArmSpace.build(channels=["email", "sms"], offers=["pct10"], slots=(10,))
    n = 20_000
    X = rng.normal(size=(n, 1))
    # true reward of email is non-linear in x; sms is flat
    true = np.column_stack([np.zeros(n), np.where(X[:, 0] > 1.0, 2.0, 0.0), np.full(n, 0.2)])
    # the logger sends email mostly to x > 1
    p_email = np.where(X[:, 0] > 1.0, 0.9, 0.05)
    p = np.column_stack([np.full(n, 0.05), p_email, 0.95 - p_email])
    a = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    r = true[np.arange(n), a] + rng.normal(0, 0.1, n)
    prop = p[np.arange(n), a]
    target_email = true[:, 1].mean()
    est = {}
    for w in ("none", "ips"):
        pol = make_policy("greedy", arms, model="linear", ridge=1.0, weighting=w, factors=("channel",), max_weight=1e6).fit(X, a, r, prop)
        est[w] = pol.predict_reward(X)[:, 1].mean()
    assert abs(est["ips"] - target_email) < abs(est["none"] - target_email)


def test_bad_inputs_are_rejected_with_clear_messages():
    X, E = _problem(10, seed=0)
    p = make_policy("thompson", ARMS)
    with pytest.raises(InputError, match="'context'.*2-d"):
        p.distribution(X[0], E)
    with pytest.raises(InputError, match="'context'.*finite"):
        p.distribution(np.full_like(X, np.nan), E)
    with pytest.raises(InputError, match="'eligible'.*shape"):
        p.distribution(X, E[:, :5])
    bad = E.copy()
    bad[3] = False
    with pytest.raises(InputError, match="at least one arm"):
        p.decide(X, bad)
    with pytest.raises(InputError, match="'eligible'.*bool"):
        p.decide(X, E.astype(int))
    p.decide(X, E)
    with pytest.raises(InputError, match="4 columns"):
        p.decide(X[:, :3], E)
    with pytest.raises(InputError, match="'propensities'.*\\(0, 1\\]"):
        p.update(X, np.zeros(10, dtype=int), np.zeros(10), np.zeros(10))
    with pytest.raises(InputError, match="'arms'"):
        p.update(X, np.full(10, 10_000), np.zeros(10), np.ones(10))
    with pytest.raises(InputError, match="'scores'.*None"):
        p.decide(X, E, scores=np.zeros((10, ARMS.n_arms)))
    with pytest.raises(InputError, match="'floor'"):
        make_policy("greedy", ARMS, floor=0.0).decide(X, E)
    with pytest.raises(InputError, match="unknown policy"):
        make_policy("nope", ARMS)
    with pytest.raises(InputError, match="bad parameters"):
        make_policy("thompson", ARMS, temperature=3)


def test_model_scores_are_inputs_the_policy_learns_to_use():
    rng = np.random.default_rng(1)
    n = 3000
    X = rng.normal(size=(n, 2))
    truth = synthetic_rewards(ARMS, rng.normal(size=(n, 3)), seed=3)  # not learnable from X alone
    scores = (truth + rng.normal(0, 0.05, truth.shape))[:, :, None]  # a good model's predictions
    E = np.ones((n, ARMS.n_arms), dtype=bool)
    with_scores = make_policy("greedy", ARMS, n_scores=1, model="linear", ridge=1.0)
    without = make_policy("greedy", ARMS, model="linear", ridge=1.0)
    a = rng.integers(0, ARMS.n_arms, n)
    r = truth[np.arange(n), a] + rng.normal(0, 0.2, n)
    with_scores.fit(X, a, r, scores=scores)
    without.fit(X, a, r)
    v_with = (with_scores.distribution(X, E, scores) * truth).sum(axis=1).mean()
    v_without = (without.distribution(X, E) * truth).sum(axis=1).mean()
    assert v_with > v_without + 0.1


@pytest.mark.parametrize("name", ["thompson", "greedy"])
def test_funnel_policies_learn_from_funnel_events(name):
    """The funnel model learns open, click and conversion from events (not from the noisy reward)
    and finds arms far better than uniform."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12_000, 3))
    E = np.ones((12_000, ARMS.n_arms), dtype=bool)
    world = SyntheticFunnel(ARMS, X, seed=4)
    # burn-in: uniform until the first 2000 observations (a cold funnel model predicts losses everywhere)
    policy = make_policy(name, ARMS, seed=1, ridge=1.0, level_ridge=1.0, offer_ridge=1.0, burn_in=2000)
    for lo in range(0, 12_000, 2000):
        rows = np.arange(lo, lo + 2000)
        dec = policy.decide(X[rows], E[rows])
        r, fb = world.feedback(rows, dec.arm)
        policy.update(X[rows], dec.arm, r, dec.propensity, feedback=fb)
    truth = world.expected
    value = (policy.distribution(X, E) * truth).sum(axis=1).mean()
    uniform, best = truth.mean(axis=1).mean(), truth.max(axis=1).mean()
    assert (value - uniform) / (best - uniform) > 0.6, (value, uniform, best)


def test_funnel_policy_needs_feedback():
    X, E = _problem(10, seed=0)
    p = make_policy("thompson", ARMS)
    with pytest.raises(InputError, match="'feedback'"):
        p.update(X, np.zeros(10, dtype=int), np.zeros(10), np.ones(10))
    with pytest.raises(InputError, match="n_scores"):
        make_policy("greedy", ARMS, n_scores=1)


def test_funnel_fast_argmax_equals_the_full_one():
    """Thompson sampling's factorised argmax (eligibility = (channel, slot) x offer) picks exactly
    the arms the argmax over every arm's sampled uplift picks, from the same draws."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3))
    world = SyntheticFunnel(ARMS, X, seed=2)
    policy = make_policy("greedy", ARMS, ridge=1.0, level_ridge=1.0, offer_ridge=1.0)
    a = rng.integers(0, ARMS.n_arms, 3000)
    r, fb = world.feedback(np.arange(3000), a)
    policy.fit(X, a, r, feedback=fb)
    Z = (X[:500] - policy.center_) / policy.scale_
    nc, no, ns = len(ARMS.channels), len(ARMS.offers), len(ARMS.slots)
    cs = rng.random((500, nc, 1, ns)) < 0.6
    of = rng.random((500, 1, no, 1)) < 0.7
    E = np.ones((500, ARMS.n_arms), dtype=bool)
    E[:, 1:] = (cs & of).reshape(500, -1)
    fast = policy.model_.sample_best_arms(Z, E, 8, np.random.default_rng(5))
    means = policy.model_.sample_means(Z, None, 8, np.random.default_rng(5))
    slow = np.where(E[None], means, -np.inf).argmax(axis=2)
    assert fast is not None and np.array_equal(fast, slow)
    E[0, 5] = not E[0, 5]  # no longer factorises
    assert policy.model_.sample_best_arms(Z, E, 8, np.random.default_rng(5)) is None


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_rows_with_one_eligible_arm_get_exactly_what_the_model_path_gives(case):
    """A call whose every row allows one arm answers without the reward model (a single decide
    mostly is such a row): the same numbers as normalising the model's preferences."""
    from policies.base import _normalise

    cls, params = case
    X, _ = _problem(300, seed=4)
    policy = cls(ARMS, seed=7, **params)
    a = np.random.default_rng(3).integers(0, ARMS.n_arms, 300)
    r, fb = SyntheticFunnel(ARMS, X, seed=2).feedback(np.arange(300), a)
    policy.fit(X, a, r, propensities=np.full(300, 1.0 / ARMS.n_arms), feedback=fb)
    rng = np.random.default_rng(5)
    for n in (1, 1, 7):
        E = np.zeros((n, ARMS.n_arms), dtype=bool)
        E[np.arange(n), rng.integers(0, ARMS.n_arms, n)] = True
        x = X[rng.integers(0, 300, n)]
        Z = policy._prepare(x, "test")
        pref = policy._preferences(Z, E, None) if policy.learns else None
        full = _normalise(pref, E, policy._exploration_share())
        dist = policy.distribution(x, E)
        assert np.array_equal(dist, full) and np.array_equal(dist, E.astype(float))


def test_blocked_fast_argmax_and_normalisation_equal_the_unblocked_ones(monkeypatch):
    """best_arms_from and the normalisation work on blocks of rows (temporaries in cache): the
    same arms and the same bits as one block of every row."""
    import policies.base as base
    import policies.funnel as funnel

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    a = rng.integers(0, ARMS.n_arms, 2000)
    r, fb = SyntheticFunnel(ARMS, X, seed=2).feedback(np.arange(2000), a)
    policy = make_policy("thompson", ARMS, ridge=1.0, level_ridge=1.0, offer_ridge=1.0).fit(X, a, r, feedback=fb)
    nc, no, ns = len(ARMS.channels), len(ARMS.offers), len(ARMS.slots)
    E = np.ones((700, ARMS.n_arms), dtype=bool)
    E[:, 1:] = ((rng.random((700, nc, 1, ns)) < 0.6) & (rng.random((700, 1, no, 1)) < 0.7)).reshape(700, -1)
    E[::3, 0] = False
    E[~E.any(axis=1), 0] = True
    Z = (X[:700] - policy.center_) / policy.scale_
    draws = policy._draws()
    one_block = policy.model_.best_arms_from(Z, E, draws)
    dist = policy.distribution(X[:700], E)
    for i in range(0, 700, 37):  # one customer (its own factorisation check): the same arms
        assert np.array_equal(policy.model_.best_arms_from(Z[i:i + 1], E[i:i + 1], draws), one_block[:, i:i + 1])
    odd = E[:1].copy()
    odd[0, 1:] = False
    odd[0, [1, 1 + ns + 1]] = True  # (sms, offer 0, slot 0), (sms, offer 1, slot 1), (email, offer 0, slot 0):
    odd[0, 1 + ns * no] = True  # 3 cells, 2 offers, 3 arms: not their product
    assert policy.model_.best_arms_from(Z[:1], odd, draws) is None
    monkeypatch.setattr(funnel, "_BLOCK_CELLS", 3 * nc * ns * policy.n_draws)  # 3 rows a block
    monkeypatch.setattr(base, "_NORMALISE_ROWS", 64)
    assert np.array_equal(policy.model_.best_arms_from(Z, E, draws), one_block)
    assert np.array_equal(policy.distribution(X[:700], E).view(np.uint64), dist.view(np.uint64))

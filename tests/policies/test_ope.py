"""Off-policy evaluation: validators, closed forms, SNIPS/DR sanity, cross-fitting, coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsRegressor

from core.errors import InputError
from policies import validation as v
from policies.ope import (
    LoggedFeedback,
    SyntheticBandit,
    cross_fit_rewards,
    doubly_robust,
    evaluate,
    evaluate_frame,
    greedy_target,
    importance_weights,
    ips,
    snips,
    softmax_target,
    uniform_target,
)

WORLD = SyntheticBandit(n_actions=5, dim_context=4, seed=7)


def explore_greedy(x, q):
    """The target of the coverage tests: 80% on the truly best action, 20% uniform."""
    return 0.8 * greedy_target(q) + 0.2 / q.shape[1]


def frame_of(fb: LoggedFeedback) -> pd.DataFrame:
    df = pd.DataFrame(fb.context, columns=fb.context_names)
    df["action"] = [fb.actions[a] for a in fb.action]
    df["reward"] = fb.reward
    df["propensity"] = fb.propensity
    return df


# -- validators ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0.5, 0.0, 0.2], r"in \(0, 1\].*first at row 1: 0.0"),
        ([0.5, 1.5], r"in \(0, 1\].*row 1: 1.5"),
        ([-0.1, 0.5], r"row 0: -0.1"),
        ([0.5, float("nan")], "missing or non-finite values \\(first at row 1\\)"),
        (pd.Series(["0.5", "high"]), "must be numeric; got 'high' at row 1"),
        ([[0.5, 0.5]], "one-dimensional"),
    ],
)
def test_check_propensities_rejects_what_is_not_a_probability(values, message):
    with pytest.raises(InputError, match=message):
        v.check_propensities(values, "p_log")


def test_check_propensities_accepts_one_and_numeric_strings():
    assert v.check_propensities(pd.Series(["1", "0.25"])).tolist() == [1.0, 0.25]


def test_check_target_probabilities_allows_zero_but_not_outside_unit_interval():
    assert v.check_target_probabilities([0.0, 1.0]).tolist() == [0.0, 1.0]
    with pytest.raises(InputError, match=r"'pi' column must hold probabilities in \[0, 1\]"):
        v.check_target_probabilities([0.2, 1.01], "pi")
    with pytest.raises(InputError, match="non-finite"):
        v.check_target_probabilities([np.inf], "pi")


def test_check_action_distribution_shapes_ranges_and_sums():
    good = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert v.check_action_distribution(good, 2, 2) is not None
    with pytest.raises(InputError, match=r"shape \(n, K\) = \(3, 2\); got \(2, 2\)"):
        v.check_action_distribution(good, 3, 2)
    with pytest.raises(InputError, match="sum to 1; 1 rows do not, first at row 1 \\(sum 0.9\\)"):
        v.check_action_distribution([[0.5, 0.5], [0.6, 0.3]], 2, 2)
    with pytest.raises(InputError, match=r"in \[0, 1\]; row 0"):
        v.check_action_distribution([[1.5, -0.5]], 1, 2)
    with pytest.raises(InputError, match="non-finite"):
        v.check_action_distribution([[np.nan, 1.0]], 1, 2)


def test_check_actions_codes_and_unknown_actions():
    codes, actions = v.check_actions(["b", "a", "b"])
    assert actions == ("a", "b") and codes.tolist() == [1, 0, 1]
    codes, actions = v.check_actions([3, 1], actions=[1, 2, 3])  # compared as strings
    assert codes.tolist() == [2, 0]
    with pytest.raises(InputError, match="unknown|does not know.*row 1: 'z'"):
        v.check_actions(["a", "z"], actions=["a", "b"], name="arm")
    with pytest.raises(InputError, match="'arm' column has 1 missing"):
        v.check_actions(["a", None], name="arm")
    with pytest.raises(InputError, match="names 'a' twice"):
        v.check_action_list(["a", "a"])


def test_check_columns_lengths_and_settings():
    with pytest.raises(InputError, match="has no column 'propensity'.*columns: action, reward"):
        v.check_columns(pd.DataFrame({"action": [1], "reward": [1]}), ["action", "propensity"])
    with pytest.raises(InputError, match="same number of rows; got reward=3, propensity=2"):
        v.check_lengths(reward=[1, 2, 3], propensity=[1, 1])
    with pytest.raises(InputError, match="bootstrap"):
        v.check_bootstrap(5, 0.95)
    with pytest.raises(InputError, match="confidence level"):
        v.check_bootstrap(100, 1.0)
    with pytest.raises(InputError, match="needs at least 10 rows"):
        v.check_folds(5, 9)
    with pytest.raises(InputError, match="missing or non-finite values \\(first at row 1\\)"):
        v.check_context([[1.0], [np.nan]], 2)


def test_public_entries_validate():
    fb, q = WORLD.sample(200, seed=0)
    with pytest.raises(InputError, match="exactly one"):
        evaluate(fb)
    with pytest.raises(InputError, match="exactly one"):
        evaluate(fb, target_prob=np.ones(fb.n), target_distribution=uniform_target(fb.n, 5))
    with pytest.raises(InputError, match="same number of rows"):
        evaluate(fb, target_prob=np.ones(fb.n - 1))
    with pytest.raises(InputError, match="sum to 1"):
        evaluate(fb, target_distribution=np.full((fb.n, 5), 0.3))
    with pytest.raises(InputError, match="reward_model must be one of"):
        evaluate(fb, target_distribution=uniform_target(fb.n, 5), reward_model="forest")
    with pytest.raises(InputError, match="LoggedFeedback"):
        evaluate(frame_of(fb), target_prob=np.ones(fb.n))
    with pytest.raises(InputError, match=r"'propensity' column must hold probabilities in \(0, 1\]"):
        ips([1.0, 2.0], [0.5, 0.0], [1.0, 1.0])
    with pytest.raises(InputError, match="same number of rows"):
        LoggedFeedback.from_arrays(["a", "b"], [1.0], [0.5, 0.5])
    with pytest.raises(InputError, match="no rows"):
        LoggedFeedback.from_arrays([], [], [])


def test_from_frame_picks_numeric_context_and_fills_gaps():
    df = pd.DataFrame({
        "arm": ["x", "y", "x", "y"], "r": [1.0, 0.0, 2.0, 1.0], "p": [0.5, 0.5, 0.5, 0.5],
        "age": [30.0, np.nan, 50.0, 40.0], "vip": [True, False, True, False], "city": ["a", "b", "c", "d"],
        "pi_new": [1.0, 0.0, 1.0, 0.0],
    })
    fb = LoggedFeedback.from_frame(df, action_col="arm", reward_col="r", propensity_col="p", exclude=["pi_new"])
    assert fb.context_names == ("age", "vip")
    assert fb.context[1, 0] == 40.0  # the median of the others
    assert fb.actions == ("x", "y") and fb.action.tolist() == [0, 1, 0, 1]
    with pytest.raises(InputError, match="must be numeric"):
        LoggedFeedback.from_frame(df, action_col="arm", reward_col="r", propensity_col="p", context_cols=["city"])
    with pytest.raises(InputError, match="has no column 'reward'"):
        LoggedFeedback.from_frame(df, action_col="arm", propensity_col="p")


# -- closed forms ----------------------------------------------------------------------------------


def test_ips_equals_the_closed_form_exactly():
    r = np.array([1.0, 0.0, 2.0])
    p = np.array([0.5, 0.25, 0.8])
    pi = np.array([1.0, 0.5, 0.4])
    assert ips(r, p, pi) == 1.0  # (2*1 + 2*0 + 0.5*2) / 3
    assert snips(r, p, pi) == 3.0 / 4.5
    fb = LoggedFeedback.from_arrays(["a", "b", "a"], r, p)
    rep = evaluate(fb, target_prob=pi, n_bootstrap=50)
    assert rep.ips.value == 1.0 and rep.snips.value == 3.0 / 4.5
    assert rep.max_weight == 2.0 and rep.ess == 4.5**2 / 8.25


def test_ips_matches_the_formula_on_random_logs():
    fb, q = WORLD.sample(3000, seed=1)
    dist = softmax_target(q, 0.1)
    pi = dist[np.arange(fb.n), fb.action]
    rep = evaluate(fb, target_distribution=dist, n_bootstrap=100)
    assert rep.ips.value == float(np.mean(pi / fb.propensity * fb.reward))
    assert rep.snips.value == pytest.approx(np.sum(pi / fb.propensity * fb.reward) / np.sum(pi / fb.propensity))
    assert np.array_equal(importance_weights(fb.propensity, pi), pi / fb.propensity)
    assert rep.ips.ci_low <= rep.ips.value <= rep.ips.ci_high


def test_evaluating_the_logging_policy_gives_the_logged_mean():
    fb, q = WORLD.sample(2000, seed=2)
    logging = WORLD.logging_distribution(fb.context, q)
    rep = evaluate(fb, target_distribution=logging, n_bootstrap=100)
    assert rep.ips.value == pytest.approx(fb.reward.mean(), abs=1e-12)
    assert rep.snips.value == pytest.approx(fb.reward.mean(), abs=1e-12)
    assert rep.ess == pytest.approx(fb.n) and rep.max_weight == pytest.approx(1.0)
    assert rep.dr.value == pytest.approx(fb.reward.mean(), abs=0.02)


def test_dr_with_a_zero_model_is_ips_and_with_a_good_model_is_tighter():
    fb, q = WORLD.sample(2000, seed=3)
    dist = explore_greedy(fb.context, q)
    pi = dist[np.arange(fb.n), fb.action]
    assert doubly_robust(fb.reward, fb.propensity, fb.action, dist, np.zeros_like(q)) == pytest.approx(
        ips(fb.reward, fb.propensity, pi), abs=1e-12)
    # with a good (cross-fitted ridge) reward model, DR's interval is much narrower than IPS's
    world = SyntheticBandit(n_actions=5, dim_context=4, reward="continuous", noise=0.05, seed=7)
    fb, q = world.sample(5000, seed=9)
    rep = evaluate(fb, target_distribution=explore_greedy(fb.context, q), n_bootstrap=300)
    truth = world.policy_value(explore_greedy)
    assert rep.dr.ci_high - rep.dr.ci_low < 0.7 * (rep.ips.ci_high - rep.ips.ci_low)
    assert rep.dr.covers(truth) and rep.ips.covers(truth)


def test_snips_is_scale_free_and_ess_counts_uniform_weights():
    fb, q = WORLD.sample(500, seed=4)
    rep = evaluate(fb, target_prob=fb.propensity * 0.5, n_bootstrap=50)
    assert rep.snips.value == pytest.approx(fb.reward.mean())  # constant weights cancel
    assert rep.ips.value == pytest.approx(0.5 * fb.reward.mean())
    assert rep.ess == pytest.approx(fb.n)
    assert rep.dr is None and "full distribution" in rep.dr_reason


def test_a_target_that_never_takes_the_logged_actions():
    fb = LoggedFeedback.from_arrays(["a"] * 20, np.ones(20), np.full(20, 0.5), actions=["a", "b"])
    rep = evaluate(fb, target_distribution=np.tile([0.0, 1.0], (20, 1)), n_bootstrap=50, n_folds=2)
    assert rep.ips.value == 0.0 and rep.ess == 0.0
    assert np.isnan(rep.snips.value)
    assert rep.as_dict()["snips"]["value"] != rep.as_dict()["snips"]["value"]  # NaN: null in JSON


# -- intervals, seeds, reward models ------------------------------------------------------------------


def test_same_seed_same_report_and_levels_nest():
    fb, q = WORLD.sample(1500, seed=5)
    dist = explore_greedy(fb.context, q)
    a = evaluate(fb, target_distribution=dist, n_bootstrap=200, seed=11)
    b = evaluate(fb, target_distribution=dist, n_bootstrap=200, seed=11)
    c = evaluate(fb, target_distribution=dist, n_bootstrap=200, seed=12)
    assert a == b
    assert a.dr != c.dr  # other folds and resamples
    wide = evaluate(fb, target_distribution=dist, n_bootstrap=200, seed=11, level=0.99)
    narrow = evaluate(fb, target_distribution=dist, n_bootstrap=200, seed=11, level=0.5)
    for key in ("ips", "snips", "dr"):
        w, n_ = getattr(wide, key), getattr(narrow, key)
        assert w.ci_low < n_.ci_low <= getattr(a, key).value <= n_.ci_high < w.ci_high


def test_cross_fitting_never_predicts_a_row_from_itself():
    # rewards are pure noise, unique contexts: a 1-nearest-neighbour model would return each row's
    # own reward if it had seen it; cross-fitted, its prediction is unrelated to it
    rng = np.random.default_rng(0)
    n = 400
    fb = LoggedFeedback.from_arrays(np.array(["a", "b"])[rng.integers(0, 2, n)], rng.normal(size=n),
                                    np.full(n, 0.5), rng.normal(size=(n, 2)))
    q = cross_fit_rewards(fb, KNeighborsRegressor(n_neighbors=1), n_folds=4, seed=0)
    own = q[np.arange(n), fb.action]
    assert q.shape == (n, 2)
    assert abs(np.corrcoef(own, fb.reward)[0, 1]) < 0.2
    assert not np.allclose(own, fb.reward)


def test_reward_models_fit_the_truth_roughly():
    world = SyntheticBandit(n_actions=3, dim_context=3, reward="continuous", noise=0.05, seed=1)
    fb, q = world.sample(3000, seed=0)
    truth = world.policy_value(lambda x, qq: greedy_target(qq))
    err = {}
    for model in ("ridge", "mean", "lightgbm"):
        q_hat = cross_fit_rewards(fb, model, n_folds=3, seed=0)
        assert q_hat.shape == (fb.n, 3)
        err[model] = np.sqrt(np.mean((q_hat - q) ** 2))
        rep = evaluate(fb, target_distribution=greedy_target(q), reward_model=model, n_folds=3, n_bootstrap=100)
        assert rep.reward_model == model
        assert abs(rep.dr.value - truth) < 0.03
    mean_model = cross_fit_rewards(fb, "mean", n_folds=3, seed=0)
    assert all(len(np.unique(mean_model[:, k])) <= 3 for k in range(3))  # one mean per action and fold
    assert err["ridge"] < 0.5 * np.std(q) and err["lightgbm"] < 0.5 * np.std(q)
    assert err["ridge"] < err["mean"] and err["lightgbm"] < err["mean"]


def test_evaluate_frame_with_a_target_column_or_distribution():
    fb, q = WORLD.sample(1000, seed=6)
    df = frame_of(fb)
    df["pi_new"] = 1.0 / fb.n_actions
    by_col = evaluate_frame(df, target_column="pi_new", n_bootstrap=100)
    by_dist = evaluate_frame(df.drop(columns="pi_new"), target_distribution=uniform_target(fb.n, 5), n_bootstrap=100)
    assert by_col.ips.value == pytest.approx(by_dist.ips.value, abs=1e-12)
    assert by_col.dr is None and by_dist.dr is not None
    with pytest.raises(InputError, match="has no column 'pi_x'"):
        evaluate_frame(df, target_column="pi_x")


# -- correctness against truth -------------------------------------------------------------------------


def test_intervals_cover_the_true_value_in_at_least_18_of_20_seeds():
    truth = WORLD.policy_value(explore_greedy)
    logging_value = WORLD.policy_value(lambda x, q: WORLD.logging_distribution(x, q))
    assert truth - logging_value > 0.03  # the target really differs from the logging policy
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(20):
        fb, q = WORLD.sample(2000, seed=seed)
        rep = evaluate(fb, target_distribution=explore_greedy(fb.context, q), n_bootstrap=300, seed=seed)
        for key in covered:
            covered[key] += getattr(rep, key).covers(truth)
    assert min(covered.values()) >= 18, covered


def test_the_ridge_reward_model_is_sklearns_ridge_per_action():
    from sklearn.linear_model import Ridge

    from policies.ope import _fit_predict_ridge

    rng = np.random.default_rng(0)
    x, a = rng.normal(size=(600, 4)), rng.integers(0, 3, 600)
    r = rng.normal(size=600) + 2 * x[:, 0] * (a == 1)
    x_new = rng.normal(size=(50, 4))
    mu, sd = x.mean(axis=0), x.std(axis=0)
    expected = np.column_stack([Ridge(alpha=3.0).fit(((x - mu) / sd)[a == k], r[a == k]).predict((x_new - mu) / sd)
                                for k in range(3)])
    np.testing.assert_allclose(_fit_predict_ridge(x, a, r, x_new, 4, 3.0)[:, :3], expected, atol=1e-10)
    assert np.allclose(_fit_predict_ridge(x, a, r, x_new, 4, 3.0)[:, 3], r.mean())  # never logged: overall mean


def test_studentized_intervals_lean_towards_the_long_tail_of_rare_big_rewards():
    rng = np.random.default_rng(3)
    n = 3000
    r = (rng.random(n) < 0.02) * rng.lognormal(5.0, 1.0, n)  # 2% convert, heavy-tailed order values
    fb = LoggedFeedback.from_arrays(rng.choice(["a", "b"], n), r, np.full(n, 0.5))
    t = evaluate(fb, target_prob=np.full(n, 0.5), n_bootstrap=2000)
    pct = evaluate(fb, target_prob=np.full(n, 0.5), n_bootstrap=2000, ci="percentile")
    assert t.ci == "studentized" and pct.ci == "percentile"
    assert t.ips.value == pct.ips.value
    assert t.ips.ci_high - t.ips.value > 1.2 * (t.ips.value - t.ips.ci_low)  # skewed to the right
    assert t.ips.ci_high > pct.ips.ci_high
    with pytest.raises(InputError, match="ci must be one of"):
        evaluate(fb, target_prob=np.full(n, 0.5), ci="bca")


def test_tiny_samples_fall_back_to_percentiles_instead_of_infinite_intervals():
    fb = LoggedFeedback.from_arrays(["a", "b", "a"], [0.0, 0.0, 5.0], [0.5, 0.5, 0.5])
    rep = evaluate(fb, target_prob=[0.5, 0.5, 0.5], n_bootstrap=200)
    assert np.isfinite([rep.ips.ci_low, rep.ips.ci_high]).all()
    assert rep.ips.ci_low <= rep.ips.value <= rep.ips.ci_high

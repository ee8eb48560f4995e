"""Off-policy evaluation: the value of a target policy estimated from data logged by another one.

Works on any logged-feedback table (ours or another system's): one row per logged round with the
action taken, the reward observed and the logging policy's probability of that action
(``propensity``), plus any context columns. Estimators, for n rounds with importance weights
``w_i = pi(a_i | x_i) / propensity_i``:

* IPS (inverse propensity scoring): ``mean(w_i r_i)``; unbiased when the logging policy gave
  every action the target takes a positive probability.
* SNIPS (self-normalised IPS): ``sum(w_i r_i) / sum(w_i)``; slightly biased, far less variance.
* DR (doubly robust): ``mean(sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)))`` with a reward
  model ``q`` cross-fitted over K folds (the model for a fold is fitted on the other folds only),
  so the correction term stays unbiased. Needs the target's full distribution over actions.

Each comes with a bootstrap confidence interval (seeded; rows resampled with replacement; the
cross-fitted reward predictions held fixed across resamples). The default interval is the
studentized bootstrap (bootstrap-t: each resample's estimate is divided by its own standard error,
the delta-method one for SNIPS): marketing rewards are rare and large (a few percent convert, order
values are heavy-tailed), so the estimate is strongly right-skewed and percentile intervals
under-cover; bootstrap-t corrects the skew to second order. ``ci="percentile"`` is available.
The report carries the effective sample size ``(sum w)^2 / sum w^2`` and the largest weight, the
two numbers that say whether the estimate can be trusted at all.

Public entries validate their input once through :mod:`policies.validation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import InputError
from policies.validation import (
    check_action_distribution,
    check_actions,
    check_bootstrap,
    check_columns,
    check_context,
    check_folds,
    check_lengths,
    check_not_empty,
    check_propensities,
    check_rewards,
    check_target_probabilities,
)

RewardModel = Any  # "ridge", "lightgbm", "mean", or a scikit-learn regressor
REWARD_MODELS = ("ridge", "lightgbm", "mean")


# -- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedFeedback:
    """n logged rounds, validated. Build it with :meth:`from_frame` or :meth:`from_arrays`.

    action: (n,) int64 codes into ``actions``; reward: (n,) float64; propensity: (n,) float64 in
    (0, 1]; actions: the K possible actions (strings); context: (n, d) float64, d may be 0;
    context_names: (d,) names of the context columns.
    """

    action: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    actions: tuple[str, ...]
    context: np.ndarray
    context_names: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return len(self.action)

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @classmethod
    def from_arrays(
        cls,
        action,
        reward,
        propensity,
        context=None,
        *,
        actions: Sequence | None = None,
        context_names: Sequence[str] | None = None,
    ) -> LoggedFeedback:
        """From arrays: action (n,) labels, reward (n,), propensity (n,), context (n, d) or None.
        ``actions`` fixes the action list (default: the sorted distinct logged actions)."""
        n = check_lengths(action=action, reward=reward, propensity=propensity)
        check_not_empty(n)
        codes, action_list = check_actions(action, actions)
        x = check_context(context, n)
        names = tuple(context_names) if context_names is not None else tuple(f"x{j}" for j in range(x.shape[1]))
        if len(names) != x.shape[1]:
            raise InputError(f"context_names has {len(names)} names for {x.shape[1]} context columns")
        return cls(codes, check_rewards(reward), check_propensities(propensity), action_list, x, names)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        action_col: str = "action",
        reward_col: str = "reward",
        propensity_col: str = "propensity",
        context_cols: Sequence[str] | Literal["auto"] | None = "auto",
        exclude: Sequence[str] = (),
        actions: Sequence | None = None,
    ) -> LoggedFeedback:
        """From a table with one row per logged round.

        ``context_cols``: the context columns for the DR reward model; ``"auto"`` takes every
        numeric or boolean column except the action, reward and propensity columns and
        ``exclude``; None uses no context. Missing context values are filled with the column's
        median (the reward model only controls variance; the estimate stays unbiased).
        """
        check_columns(frame, [action_col, reward_col, propensity_col])
        if context_cols == "auto":
            skip = {action_col, reward_col, propensity_col, *exclude}
            context_cols = [
                c for c in frame.columns
                if c not in skip and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
            ]
        names = list(context_cols or [])
        check_columns(frame, names)
        context = None
        if names:
            ctx = frame[names]
            check_context(ctx.iloc[:0], 0, name="the context")  # numeric columns only
            ctx = ctx.astype(np.float64)
            ctx = ctx.fillna(ctx.median()).fillna(0.0)  # an all-missing column becomes 0
            context = ctx.to_numpy()
        n = len(frame)
        check_not_empty(n)
        codes, action_list = check_actions(frame[action_col], actions, name=action_col)
        return cls(
            codes,
            check_rewards(frame[reward_col], reward_col),
            check_propensities(frame[propensity_col], propensity_col),
            action_list,
            check_context(context, n),
            tuple(map(str, names)),
        )


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its bootstrap confidence interval (reward units per round)."""

    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}

    def covers(self, truth: float) -> bool:
        return self.ci_low <= truth <= self.ci_high


@dataclass(frozen=True)
class OPEReport:
    """What :func:`evaluate` found. ``dr`` is None when the target's full distribution was not
    given (``dr_reason`` says why). ``ess``: effective sample size of the importance weights;
    ``max_weight``: the largest weight; ``logged_value``: mean logged reward (the logging
    policy's own value, for reference)."""

    ips: Estimate
    snips: Estimate
    dr: Estimate | None
    ess: float
    max_weight: float
    n: int
    n_actions: int
    logged_value: float
    level: float
    n_bootstrap: int
    seed: int
    ci: str = "studentized"
    reward_model: str | None = None
    dr_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: keys ips, snips, dr (each {value, ci_low, ci_high} or null), ess,
        max_weight, n, and the settings."""
        return {
            "ips": self.ips.as_dict(),
            "snips": self.snips.as_dict(),
            "dr": None if self.dr is None else self.dr.as_dict(),
            "dr_reason": self.dr_reason,
            "ess": self.ess,
            "max_weight": self.max_weight,
            "n": self.n,
            "n_actions": self.n_actions,
            "logged_value": self.logged_value,
            "level": self.level,
            "n_bootstrap": self.n_bootstrap,
            "ci": self.ci,
            "seed": self.seed,
            "reward_model": self.reward_model,
            **self.extra,
        }


# -- target policies ---------------------------------------------------------------------------------


def uniform_target(n: int, n_actions: int) -> np.ndarray:
    """(n, K) uniform distribution over K actions."""
    return np.full((n, n_actions), 1.0 / n_actions)


def greedy_target(scores: np.ndarray) -> np.ndarray:
    """(n, K) greedy distribution on (n, K) scores: all mass on the best action, ties split evenly.
    NaN scores never win (a row of NaN is uniform)."""
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    best = s == s.max(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True)


def softmax_target(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(n, K) softmax of (n, K) scores at ``temperature`` (> 0)."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# -- estimators --------------------------------------------------------------------------------------


def importance_weights(propensity, target_prob) -> np.ndarray:
    """(n,) weights pi(a_i|x_i) / propensity_i."""
    p = check_propensities(propensity)
    t = check_target_probabilities(target_prob)
    check_lengths(propensity=p, target_probability=t)
    return t / p


def ips(reward, propensity, target_prob) -> float:
    """IPS estimate: mean over rounds of w_i r_i (closed form; no interval)."""
    w = importance_weights(propensity, target_prob)
    r = check_rewards(reward)
    check_lengths(reward=r, propensity=w)
    check_not_empty(len(r))
    return float(np.mean(w * r))


def snips(reward, propensity, target_prob) -> float:
    """Self-normalised IPS: sum w_i r_i / sum w_i (NaN if every weight is 0)."""
    w = importance_weights(propensity, target_prob)
    r = check_rewards(reward)
    check_lengths(reward=r, propensity=w)
    check_not_empty(len(r))
    return float(np.sum(w * r) / np.sum(w)) if np.sum(w) > 0 else float("nan")


def _dr_terms(reward, weight, action, target_dist, q_hat) -> np.ndarray:
    """(n,) per-round DR terms (internal: inputs already validated)."""
    rows = np.arange(len(reward))
    direct = np.einsum("ij,ij->i", target_dist, q_hat)
    return direct + weight * (reward - q_hat[rows, action])


def doubly_robust(reward, propensity, action, target_distribution, q_hat) -> float:
    """DR estimate with given reward predictions.

    reward, propensity: (n,); action: (n,) int codes in [0, K); target_distribution, q_hat: (n, K).
    """
    r = check_rewards(reward)
    p = check_propensities(propensity)
    a = np.asarray(action)
    n = check_lengths(reward=r, propensity=p, action=a)
    check_not_empty(n)
    q = np.asarray(q_hat, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != n or not np.isfinite(q).all():
        raise InputError(f"q_hat must be a finite (n, K) array with n={n}; got shape {q.shape}")
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= q.shape[1]:
        raise InputError(f"action must be integer codes in [0, {q.shape[1]})")
    d = check_action_distribution(target_distribution, n, q.shape[1])
    w = d[np.arange(n), a] / p
    return float(np.mean(_dr_terms(r, w, a, d, q)))


# -- the reward model, cross-fitted ------------------------------------------------------------------


def _folds(n: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(n, dtype=np.int64)
    fold[rng.permutation(n)] = np.arange(n) % n_folds
    return fold


def _fit_predict_ridge(x_tr, a_tr, r_tr, x_te, n_actions: int, alpha: float) -> np.ndarray:
    """Per-action ridge regressions on standardised context (unpenalised intercept, as
    sklearn's Ridge, solved in closed form); arms with too few rows fall back to their mean shrunk
    towards the overall mean."""
    overall = float(r_tr.mean())
    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
    sd[sd == 0] = 1.0
    z_tr, z_te = (x_tr - mu) / sd, (x_te - mu) / sd
    d = z_tr.shape[1]
    order = np.argsort(a_tr, kind="stable")
    bounds = np.searchsorted(a_tr[order], np.arange(n_actions + 1))
    coef = np.zeros((d, n_actions))  # q(x, k) = intercept[k] + z(x) @ coef[:, k]
    intercept = np.full(n_actions, overall)
    for k in range(n_actions):
        rows = order[bounds[k]:bounds[k + 1]]
        m = len(rows)
        if m == 0:
            continue
        if d == 0 or m < d + 5:
            intercept[k] = (r_tr[rows].sum() + overall) / (m + 1)
            continue
        z, y = z_tr[rows], r_tr[rows]
        zm, ym = z.mean(axis=0), y.mean()
        zc = z - zm
        coef[:, k] = np.linalg.solve(zc.T @ zc + alpha * np.eye(d), zc.T @ (y - ym))
        intercept[k] = ym - zm @ coef[:, k]
    return z_te @ coef + intercept


def _fit_predict_lightgbm(x_tr, a_tr, r_tr, x_te, n_actions: int, seed: int) -> np.ndarray:
    import lightgbm as lgb

    model = lgb.LGBMRegressor(
        n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=40, reg_lambda=1.0,
        subsample=0.8, subsample_freq=1, colsample_bytree=0.9, random_state=seed, n_jobs=1,
        deterministic=True, verbose=-1,
    )
    d = x_tr.shape[1]
    model.fit(np.column_stack([x_tr, a_tr]), r_tr, categorical_feature=[d])
    n_te = len(x_te)
    stacked = np.column_stack([np.tile(x_te, (n_actions, 1)), np.repeat(np.arange(n_actions), n_te)])
    return model.predict(stacked).reshape(n_actions, n_te).T


def _fit_predict_estimator(estimator, x_tr, a_tr, r_tr, x_te, n_actions: int) -> np.ndarray:
    from sklearn.base import clone

    eye = np.eye(n_actions)
    model = clone(estimator).fit(np.column_stack([x_tr, eye[a_tr]]), r_tr)
    n_te = len(x_te)
    stacked = np.column_stack([np.tile(x_te, (n_actions, 1)), np.repeat(eye, n_te, axis=0)])
    return np.asarray(model.predict(stacked), dtype=np.float64).reshape(n_actions, n_te).T


def _check_reward_model(reward_model) -> str:
    if isinstance(reward_model, str):
        if reward_model not in REWARD_MODELS:
            raise InputError(f"reward_model must be one of {', '.join(REWARD_MODELS)} or a scikit-learn regressor; "
                             f"got {reward_model!r}")
        return reward_model
    if not (hasattr(reward_model, "fit") and hasattr(reward_model, "predict")):
        raise InputError(f"reward_model must be one of {', '.join(REWARD_MODELS)} or a scikit-learn regressor; "
                         f"got {type(reward_model).__name__}")
    return type(reward_model).__name__


def cross_fit_rewards(
    feedback: LoggedFeedback, reward_model: RewardModel = "ridge", *, n_folds: int = 5, alpha: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """(n, K) predicted reward of every action for every round, each row predicted by a model
    fitted on the other folds only (seeded fold assignment).

    reward_model: ``"ridge"`` (one ridge regression per action on the standardised context, with
    ``alpha``; arms with few rows fall back to their shrunk mean), ``"mean"`` (per-action mean,
    no context), ``"lightgbm"`` (one LightGBM regressor on context + action as a categorical), or
    any scikit-learn regressor (cloned per fold; fed the context and the action one-hot).
    """
    _check_reward_model(reward_model)
    check_folds(n_folds, feedback.n)
    return _cross_fit(feedback, reward_model, n_folds, alpha, seed)


def _cross_fit(fb: LoggedFeedback, reward_model, n_folds: int, alpha: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    fold = _folds(fb.n, n_folds, rng)
    x = fb.context if reward_model != "mean" else np.zeros((fb.n, 0))
    q = np.empty((fb.n, fb.n_actions))
    for k in range(n_folds):
        tr, te = fold != k, fold == k
        if reward_model in ("ridge", "mean"):
            q[te] = _fit_predict_ridge(x[tr], fb.action[tr], fb.reward[tr], x[te], fb.n_actions, alpha)
        elif reward_model == "lightgbm":
            q[te] = _fit_predict_lightgbm(x[tr], fb.action[tr], fb.reward[tr], x[te], fb.n_actions, seed)
        else:
            q[te] = _fit_predict_estimator(reward_model, x[tr], fb.action[tr], fb.reward[tr], x[te], fb.n_actions)
    if not np.isfinite(q).all():
        raise InputError("the reward model predicted non-finite rewards")
    return q


# -- the bootstrap -----------------------------------------------------------------------------------


def _bootstrap_sums(columns: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, m) sums of each of the m columns of ``columns`` (n, m) over B resamples of the rows."""
    n = columns.shape[0]
    out = np.empty((n_bootstrap, columns.shape[1]))
    chunk = max(1, min(n_bootstrap, 4_000_000 // max(n, 1)))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        out[start:start + b] = counts @ columns
    return out


CI_METHODS = ("studentized", "percentile")


def _mean_and_se(s1: np.ndarray, s2: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of a mean from the sums of t and t^2 over n rows."""
    m = s1 / n
    var = np.maximum(s2 / n - m * m, 0.0) * n / max(n - 1, 1)
    return m, np.sqrt(var / n)


def _ratio_and_se(sums: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """SNIPS and its delta-method standard error from the sums of (wr, w, w^2, w^2 r, w^2 r^2):
    the linearisation is u_i = w_i (r_i - theta) / mean(w)."""
    swr, sw, sw2, sw2r, sw2r2 = (sums[..., j] for j in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = swr / sw
        wbar = sw / n
        var_u = np.maximum(sw2r2 - 2 * theta * sw2r + theta * theta * sw2, 0.0) / n / (wbar * wbar)
    return theta, np.sqrt(var_u * n / max(n - 1, 1) / n)


def _interval(value: float, se: float, boot: np.ndarray, boot_se: np.ndarray, level: float, method: str) -> Estimate:
    """Bootstrap interval of ``value``. ``studentized`` (bootstrap-t): the quantiles of
    (theta*_b - theta) / se*_b, scaled by the sample's se; second-order accurate, so it copes with
    the skew of rare, large rewards far better than percentiles. ``percentile``: the quantiles of
    theta*_b (also the fallback when too many resamples have no spread to studentize)."""
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    if not np.isfinite(value):
        return Estimate(float(value), float("nan"), float("nan"))
    keep = np.isfinite(boot)
    if method == "studentized" and np.isfinite(se):
        if se == 0.0:
            return Estimate(float(value), float(value), float(value))
        diff = boot[keep] - value
        bse = boot_se[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(bse > 0, diff / np.where(bse > 0, bse, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        if len(t):
            with np.errstate(invalid="ignore"):
                t_lo, t_hi = np.quantile(t, [lo_q, hi_q])
            if np.isfinite(t_lo) and np.isfinite(t_hi):
                return Estimate(float(value), float(value - t_hi * se), float(value - t_lo * se))
            # too many resamples with no spread at all (tiny samples): percentiles instead
    if not keep.any():
        return Estimate(float(value), float("nan"), float("nan"))
    lo, hi = np.quantile(boot[keep], [lo_q, hi_q])
    return Estimate(float(value), float(lo), float(hi))


# -- the public entry ------------------------------------------------------------------------------


def evaluate(
    feedback: LoggedFeedback,
    *,
    target_prob=None,
    target_distribution=None,
    reward_model: RewardModel = "ridge",
    n_folds: int = 5,
    alpha: float = 1.0,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    ci: Literal["studentized", "percentile"] = "studentized",
    seed: int = 0,
) -> OPEReport:
    """Estimate a target policy's value (mean reward per round) from logged feedback.

    Give the target either as ``target_distribution`` (n, K): its probability of every action of
    ``feedback.actions`` per round (IPS, SNIPS and DR), or as ``target_prob`` (n,): its
    probability of each logged action (IPS and SNIPS; DR is then None, with ``dr_reason``).
    Intervals at ``level`` from ``n_bootstrap`` resamples, ``ci="studentized"`` (bootstrap-t,
    default) or ``"percentile"``. Same seed, same result.
    """
    if not isinstance(feedback, LoggedFeedback):
        raise InputError(f"feedback must be a LoggedFeedback; got {type(feedback).__name__}")
    if (target_prob is None) == (target_distribution is None):
        raise InputError("give the target policy as exactly one of target_prob (n,) or target_distribution (n, K)")
    check_bootstrap(n_bootstrap, level)
    if ci not in CI_METHODS:
        raise InputError(f"ci must be one of {', '.join(CI_METHODS)}; got {ci!r}")
    model_name = _check_reward_model(reward_model)
    n = feedback.n
    dist = None
    if target_distribution is not None:
        dist = check_action_distribution(target_distribution, n, feedback.n_actions)
        pi = dist[np.arange(n), feedback.action]
        check_folds(n_folds, n)
    else:
        pi = check_target_probabilities(target_prob)
        check_lengths(feedback=feedback.action, target_prob=pi)
    r = feedback.reward
    w = pi / feedback.propensity
    wr = w * r
    sum_w = float(w.sum())

    # per-row columns whose sums give every estimate and its standard error, in the sample and
    # in each resample: wr, w, w^2, w^2 r, (wr)^2 [, dr, dr^2]
    columns = [wr, w, w * w, w * wr, wr * wr]
    if dist is not None:
        q_hat = _cross_fit(feedback, reward_model, n_folds, alpha, seed)
        dr = _dr_terms(r, w, feedback.action, dist, q_hat)
        columns += [dr, dr * dr]
    data = np.column_stack(columns)
    full = data.sum(axis=0)
    boot = _bootstrap_sums(data, n_bootstrap, np.random.default_rng([seed, 2]))

    _, ips_se = _mean_and_se(full[0], full[4], n)
    ips_b, ips_bse = _mean_and_se(boot[:, 0], boot[:, 4], n)
    ips_est = _interval(float(wr.mean()), float(ips_se), ips_b, ips_bse, level, ci)
    _, sn_se = _ratio_and_se(full[:5], n)
    sn_b, sn_bse = _ratio_and_se(boot[:, :5], n)
    snips_est = _interval(float(wr.sum() / sum_w) if sum_w > 0 else float("nan"), float(sn_se), sn_b, sn_bse,
                          level, ci)
    dr_est, reason = None, None
    if dist is not None:
        _, dr_se = _mean_and_se(full[5], full[6], n)
        dr_b, dr_bse = _mean_and_se(boot[:, 5], boot[:, 6], n)
        dr_est = _interval(float(dr.mean()), float(dr_se), dr_b, dr_bse, level, ci)
    else:
        reason = "DR needs the target's full distribution over actions; only the logged action's probability was given"
    sum_w2 = float(np.sum(w * w))
    return OPEReport(
        ips=ips_est,
        snips=snips_est,
        dr=dr_est,
        ess=sum_w * sum_w / sum_w2 if sum_w2 > 0 else 0.0,
        max_weight=float(w.max()),
        n=n,
        n_actions=feedback.n_actions,
        logged_value=float(r.mean()),
        level=float(level),
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
        ci=ci,
        reward_model=model_name if dist is not None else None,
        dr_reason=reason,
    )


def evaluate_frame(
    frame: pd.DataFrame,
    *,
    target_column: str | None = None,
    target_distribution=None,
    actions: Sequence | None = None,
    action_col: str = "action",
    reward_col: str = "reward",
    propensity_col: str = "propensity",
    context_cols: Sequence[str] | Literal["auto"] | None = "auto",
    **kwargs,
) -> OPEReport:
    """:func:`evaluate` straight from a logged-feedback table. The target is ``target_column``
    (its probability of each logged action; IPS and SNIPS only) or ``target_distribution``
    (n, K) over ``actions`` (default: the sorted distinct logged actions)."""
    if (target_column is None) == (target_distribution is None):
        raise InputError("give the target policy as exactly one of target_column or target_distribution")
    exclude = [target_column] if target_column is not None else []
    if target_column is not None:
        check_columns(frame, [target_column])
    fb = LoggedFeedback.from_frame(
        frame, action_col=action_col, reward_col=reward_col, propensity_col=propensity_col,
        context_cols=context_cols, exclude=exclude, actions=actions,
    )
    if target_column is not None:
        return evaluate(fb, target_prob=check_target_probabilities(frame[target_column], target_column), **kwargs)
    return evaluate(fb, target_distribution=target_distribution, **kwargs)


# -- a synthetic logged-feedback generator with a known truth (obp-style) ---------------------------


@dataclass(frozen=True)
class SyntheticBandit:
    """Logged feedback from a known world, so that every estimate can be checked against truth.

    Context x ~ N(0, I_d). The expected reward of action k is ``sigmoid(x . theta_k + b_k)`` (a
    conversion probability; ``reward="binary"`` draws Bernoulli rewards, ``"continuous"`` adds
    Gaussian noise of ``noise`` sd instead), with theta, b drawn once from ``seed``. The logging
    policy is ``(1 - floor) softmax(logging_beta * logit) + floor / K`` (the expected reward in
    place of the logit for an injected reward function): non-uniform, known, every
    propensity >= floor / K. ``reward_function`` (context -> (n, K) expected reward) and
    ``logging_policy`` (context, expected reward -> (n, K)) can be injected instead.
    """

    n_actions: int = 5
    dim_context: int = 4
    reward: Literal["binary", "continuous"] = "binary"
    noise: float = 0.3
    logging_beta: float = 1.0
    floor: float = 0.1
    seed: int = 0
    reward_function: Callable[[np.ndarray], np.ndarray] | None = None
    logging_policy: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def _params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0])
        theta = rng.normal(0.0, 0.8, size=(self.dim_context, self.n_actions))
        bias = rng.normal(-1.5, 0.6, size=self.n_actions)
        return theta, bias

    def logits(self, context: np.ndarray) -> np.ndarray:
        theta, bias = self._params()
        return context @ theta + bias

    def expected_reward(self, context: np.ndarray) -> np.ndarray:
        """(n, K) true expected reward of every action."""
        if self.reward_function is not None:
            return np.asarray(self.reward_function(context), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-self.logits(context)))

    def logging_distribution(self, context: np.ndarray, q: np.ndarray | None = None) -> np.ndarray:
        """(n, K) the logging policy's probabilities."""
        q = self.expected_reward(context) if q is None else q
        if self.logging_policy is not None:
            return np.asarray(self.logging_policy(context, q), dtype=np.float64)
        score = self.logits(context) if self.reward_function is None else q
        soft = softmax_target(self.logging_beta * score)
        return (1 - self.floor) * soft + self.floor / self.n_actions

    def contexts(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng([self.seed, seed, 1]).normal(size=(n, self.dim_context))

    def sample(self, n: int, seed: int) -> tuple[LoggedFeedback, np.ndarray]:
        """n logged rounds and their (n, K) true expected rewards. Same seeds, same data."""
        x = self.contexts(n, seed)
        q = self.expected_reward(x)
        pi0 = self.logging_distribution(x, q)
        rng = np.random.default_rng([self.seed, seed, 2])
        cum = pi0.cumsum(axis=1)
        a = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), self.n_actions - 1)
        qa = q[np.arange(n), a]
        r = (rng.random(n) < qa).astype(np.float64) if self.reward == "binary" else qa + rng.normal(0, self.noise, n)
        fb = LoggedFeedback(
            action=a.astype(np.int64), reward=r, propensity=pi0[np.arange(n), a],
            actions=tuple(f"a{k}" for k in range(self.n_actions)), context=x,
            context_names=tuple(f"x{j}" for j in range(self.dim_context)),
        )
        return fb, q

    def policy_value(self, target: Callable[[np.ndarray, np.ndarray], np.ndarray], n: int = 200_000,
                     seed: int = 10**6) -> float:
        """True value of a target policy (context, expected reward -> (n, K) distribution),
        by Monte Carlo over ``n`` fresh contexts (exact expectation over actions and rewards)."""
        x = self.contexts(n, seed)
        q = self.expected_reward(x)
        return float(np.mean(np.sum(target(x, q) * q, axis=1)))


# -- reading logged tables and evaluating our own policies -------------------------------------------

#: suffixes read as our SQLite decision log
LOG_SUFFIXES = (".sqlite", ".sqlite3", ".db")


FUNNEL_COLUMNS = ("opened", "clicked", "converted", "unsubscribed", "value")


@dataclass(frozen=True)
class LoggedTable:
    """A logged-feedback table as read from a file.

    frame: one row per logged round (action, reward, propensity and context columns);
    eligible: for our decision log, per row the arms the logging policy could take (positive
    probability, i.e. what the guardrails allowed), else None; events: for our decision log, the
    attributed funnel events per row (FUNNEL_COLUMNS), else None; source: "csv", "parquet" or
    "decision_log"; not_matured: decisions of the log left out because their attribution window
    was still open (their outcomes may not all be in yet).
    """

    frame: pd.DataFrame
    source: str
    eligible: list[list[str]] | None = None
    events: pd.DataFrame | None = None
    not_matured: int = 0
    keys: pd.DataFrame | None = None  # decision log: decision_id and decided_at per row (aligned)
    file_rows: np.ndarray | None = None  # CSV/Parquet: the file's row (0-based) of each frame row

    def in_file_order(self) -> pd.DataFrame:
        """The frame in the file's own row order (for error messages that name a file row)."""
        if self.file_rows is None:
            return self.frame
        return self.frame.iloc[np.argsort(self.file_rows, kind="stable")].reset_index(drop=True)


def read_logged_table(path, *, reward_config=None, as_of=None) -> LoggedTable:
    """A logged-feedback table from a CSV (also .csv.gz, .tsv), Parquet or our SQLite decision log.

    For a decision log, the rows are the decisions whose attribution window has closed by
    ``as_of`` (default: now; give it for a simulated log dated in the future); the frame has
    ``action``, ``reward`` (policies.reward under ``reward_config``), ``propensity`` and one
    column per numeric context key; eligibility and funnel events come alongside.

    Rows come in a canonical order that does not depend on the file's row order (so seeded folds
    and bootstrap resamples give the same estimate for the same rows in any order): a decision
    log by (decided_at, decision_id); a table by decision_id (and decided_at) when it has them,
    else by a hash of each row's values (equal rows are interchangeable).
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    name = p.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz", ".tsv")):
            frame, source = pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ","), "csv"
        elif name.endswith((".parquet", ".pq")):
            frame, source = pd.read_parquet(p), "parquet"
        elif name.endswith(LOG_SUFFIXES):
            return _read_decision_log(p, reward_config, as_of)
        else:
            raise InputError(f"{p}: unknown file type; give a .csv, .parquet or SQLite decision log (.sqlite, .db)")
    except InputError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise InputError(f"{p}: cannot read it as {p.suffix.lstrip('.') or 'a table'}: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise InputError(f"{p}: the file has no rows")
    order = canonical_permutation(frame)
    return LoggedTable(frame.iloc[order].reset_index(drop=True), source, file_rows=order)


def canonical_permutation(frame: pd.DataFrame) -> np.ndarray:
    """Row positions that put ``frame`` in an order independent of its row order."""
    keys = [c for c in ("decided_at", "decision_id") if c in frame.columns]
    if "decision_id" in keys:
        return np.lexsort([frame[c].astype(str).to_numpy() for c in reversed(keys)])
    h = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return np.argsort(h, kind="stable")


def canonical_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` re-ordered independently of its row order (see :func:`read_logged_table`)."""
    return frame.iloc[canonical_permutation(frame)].reset_index(drop=True)


def _read_decision_log(path, reward_config, as_of) -> LoggedTable:
    import sqlite3

    from policies.log import DecisionLog, context_frame

    with open(path, "rb") as fh:
        header = fh.read(16)
    if not header.startswith(b"SQLite format 3"):
        raise InputError(f"{path}: not an SQLite file")
    from datetime import UTC, datetime

    as_of = datetime.now(UTC) if as_of is None else as_of
    log = DecisionLog(path, synchronous="NORMAL")
    try:
        joined = log.joined(reward_config, now=as_of, parse_json=["context", "distribution"])
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: cannot read the decision log: {exc}") from None
    finally:
        log.close()
    if joined.empty:
        raise InputError(f"{path}: the decision log is empty")
    if not joined["matured"].any():
        raise InputError(
            f"{path}: no decision's attribution window has closed by {as_of.isoformat()} (decisions from "
            f"{joined['decided_at'].min().isoformat()} to {joined['decided_at'].max().isoformat()}); "
            "give a later --as-of"
        )
    skipped = int((~joined["matured"]).sum())
    joined = joined[joined["matured"]]
    # canonical row order (decision time, then id): not the log's insertion order, which
    # concurrent writers make arbitrary; seeded folds and resamples then depend on the rows only
    us = joined["decided_at"].to_numpy("datetime64[us]").view(np.int64)
    joined = joined.iloc[np.lexsort([joined["decision_id"].astype(str).to_numpy(), us])].reset_index(drop=True)
    ctx = context_frame(joined)
    ctx = ctx[[c for c in ctx.columns if c not in ("action", "reward", "propensity")]]
    ctx = ctx.apply(pd.to_numeric, errors="coerce") if not ctx.empty else ctx
    ctx = ctx.loc[:, ctx.notna().any()] if not ctx.empty else ctx
    frame = pd.DataFrame({
        "action": joined["action"],
        "reward": joined["reward"],
        "propensity": joined["propensity"],
    })
    frame = pd.concat([frame, ctx.astype(np.float64)], axis=1)
    eligible = [[a for a, p in d.items() if p > 0] for d in joined["distribution"]]
    return LoggedTable(frame, "decision_log", eligible, joined[list(FUNNEL_COLUMNS)].reset_index(drop=True),
                       skipped, joined[["decision_id", "decided_at"]].reset_index(drop=True))


def eligibility_matrix(eligible_lists, actions: Sequence[str]) -> np.ndarray:
    """(n, K) bool from per-row lists of eligible action ids (ids outside ``actions`` ignored)."""
    index = {a: k for k, a in enumerate(actions)}
    out = np.zeros((len(eligible_lists), len(actions)), dtype=bool)
    for i, arms in enumerate(eligible_lists):
        for a in arms:
            k = index.get(a)
            if k is not None:
                out[i, k] = True
    return out


def _parse_arm_ids(actions: Sequence[str]):
    """An ArmSpace holding every logged arm id (each 'no_send' or 'channel|offer|hour')."""
    from core.catalog import DEFAULT_CATALOG
    from core.types import CHANNELS, NO_SEND
    from policies.arms import ArmSpace

    channels, offers, slots = set(), set(), set()
    for a in actions:
        if a == NO_SEND:
            continue
        parts = a.split("|")
        if len(parts) != 3 or parts[0] not in {c.value for c in CHANNELS} or parts[1] not in DEFAULT_CATALOG.ids \
                or not parts[2].isdigit():
            raise InputError(
                f"our policies evaluate logs whose actions are arm ids ('no_send' or 'channel|offer|hour' with an "
                f"offer of the catalog); got the action {a!r}"
            )
        channels.add(parts[0])
        offers.add(parts[1])
        slots.add(int(parts[2]))
    if not channels:
        raise InputError("the log holds no send at all; our policies need at least one logged send arm")
    return ArmSpace(
        channels=tuple(c for c in CHANNELS if c.value in channels),
        offers=tuple(o for o in DEFAULT_CATALOG.ids if o in offers),
        slots=tuple(sorted(slots)),
    )


def policy_target(
    name: str,
    feedback: LoggedFeedback,
    *,
    eligible: np.ndarray | None = None,
    events: pd.DataFrame | None = None,
    n_folds: int = 5,
    seed: int = 0,
    params: dict | None = None,
) -> tuple[LoggedFeedback, np.ndarray]:
    """The distribution of one of our policies (``policies.bandits.POLICIES``) on logged rounds,
    cross-fitted: for each of ``n_folds`` folds the policy learns (``fit``) from the other folds'
    feedback, then gives its (n_fold, K) distribution on this fold. So the estimate is the value
    of the policy trained on (K-1)/K of the log, never judged on what it learned from.

    ``feedback.actions`` must be arm ids; ``eligible`` (n, K) bool over ``feedback.actions``
    (default: every logged arm) is what the guardrails allowed per round. Returns the feedback
    re-coded onto the policy's ArmSpace and the (n, K') target distribution over its arm ids.
    ``events`` (n rows of FUNNEL_COLUMNS, as our decision log has them) feed policies whose
    reward model learns from the funnel; without them such a policy uses its linear reward
    model (``model="linear"``) instead.
    """
    from policies.bandits import make_policy

    space = _parse_arm_ids(feedback.actions)
    check_folds(n_folds, feedback.n)
    to_space = np.asarray(space.index(list(feedback.actions)), dtype=np.int64)
    fb = LoggedFeedback(to_space[feedback.action], feedback.reward, feedback.propensity, space.ids,
                        feedback.context, feedback.context_names)
    mask = np.zeros((fb.n, space.n_arms), dtype=bool)
    if eligible is None:
        mask[:, to_space] = True
    else:
        eligible = np.asarray(eligible, dtype=bool)
        if eligible.shape != (feedback.n, feedback.n_actions):
            raise InputError(f"eligible must have shape ({feedback.n}, {feedback.n_actions}); got {eligible.shape}")
        mask[:, to_space] = eligible
    mask[np.arange(fb.n), fb.action] = True  # the logged arm was eligible by definition
    x = fb.context if fb.context.shape[1] else np.ones((fb.n, 1))
    fold = _folds(fb.n, n_folds, np.random.default_rng([seed, 3]))
    params = dict(params or {})
    funnel = None
    if events is not None:
        from policies.funnel import Feedback

        if len(events) != fb.n:
            raise InputError(f"events must have {fb.n} rows; got {len(events)}")
        funnel = Feedback.from_frame(events)
    elif getattr(make_policy(name, space, seed=seed, **params), "needs_feedback", False):
        params.setdefault("model", "linear")  # no funnel events in this table
    dist = np.empty((fb.n, space.n_arms))
    for k in range(n_folds):
        tr, te = fold != k, fold == k
        policy = make_policy(name, space, seed=seed, **params)
        extra = {"feedback": funnel.take(np.flatnonzero(tr))} if getattr(policy, "needs_feedback", False) else {}
        policy.fit(x[tr], fb.action[tr], fb.reward[tr], fb.propensity[tr], **extra)
        dist[te] = policy.distribution(x[te], mask[te])
    return fb, dist

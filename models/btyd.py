"""Buy-till-you-die baseline: the BG/NBD model of repeat purchasing (Fader, Hardie & Lee, 2005).

While alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each
purchase they drop out for good with probability p ~ Beta(a, b). The model is fitted by maximum
likelihood on each customer's summary ``(x, t_x, T)``: x repeat purchases, t_x the time of the last
purchase and T the time of the cutoff, both measured from the first purchase (days). A customer
with no purchase yet is treated as born at sign-up with x = 0 (one Poisson-gamma exposure).

``lifetimes`` (the usual library) is unmaintained and not in the lock, so this is a short,
tested implementation on scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1
from sklearn.base import BaseEstimator, ClassifierMixin

from models._validation import check_fitted, check_matrix, check_number, check_vector, param_error


def bgnbd_log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood. params = (r, alpha, a, b); x, t_x, T: (n,). Returns (n,)."""
    r, alpha, a, b = params
    ln_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    ln_a2 = betaln(a, b + x) - betaln(a, b)
    ln_a3 = -(r + x) * np.log(alpha + T)
    has = x > 0
    xm = np.where(has, x, 1.0)
    ln_a4 = np.log(a) - np.log(b + xm - 1.0) - (r + x) * np.log(alpha + t_x)
    ln_a4 = np.where(has, ln_a4, -np.inf)
    return ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)


def _neg_ll(log_params, x, t_x, T, weights, penalizer):
    params = np.exp(log_params)
    ll = bgnbd_log_likelihood(params, x, t_x, T)
    return -(weights * ll).sum() / weights.sum() + penalizer * np.sum(params**2)


class BGNBDClassifier(ClassifierMixin, BaseEstimator):
    """BG/NBD as a binary classifier: P(at least one purchase in the next ``horizon_days``).

    X: (n, 3) with columns (x: repeat purchases, t_x: days from first purchase to the last one,
    T: days from first purchase to the cutoff). ``y`` is ignored: the model is fitted on the
    purchase history alone, as the classic model is. ``predict_proba`` returns (n, 2).

    Fitted attributes: ``params_`` = {r, alpha, a, b}, ``log_likelihood_`` (mean per customer).
    """

    def __init__(self, horizon_days: float = 30.0, penalizer: float = 0.0, max_iter: int = 500):
        self.horizon_days = horizon_days
        self.penalizer = penalizer
        self.max_iter = max_iter

    def _validate_params(self):
        check_number(self.horizon_days, "horizon_days", self, low=0.0, low_inclusive=False)
        check_number(self.penalizer, "penalizer", self, low=0.0)
        check_number(self.max_iter, "max_iter", self, integer=True, low=1)

    def _summary(self, X):
        arr, _ = check_matrix(X, self)
        if arr.shape[1] != 3:
            raise param_error("X", self, "of shape (n, 3): x, t_x, T", f"shape {arr.shape}")
        if np.isnan(arr).any():
            raise param_error("X", self, "free of NaN", "NaN values")
        x, t_x, T = arr[:, 0], arr[:, 1], arr[:, 2]
        if (x < 0).any() or (t_x < 0).any() or (t_x - 1e-9 > T).any():
            raise param_error("X", self, "x >= 0, 0 <= t_x <= T", "values outside that range")
        return x, t_x, T

    def fit(self, X, y=None, sample_weight=None):
        self._validate_params()
        x, t_x, T = self._summary(X)
        w = np.ones_like(x) if sample_weight is None else check_vector(
            sample_weight, x.size, self, "sample_weight", nonnegative=True)
        # identical summaries share one likelihood term: collapse them (T is often a few values)
        keys = np.stack([x, t_x, T], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        ww = np.bincount(inv.reshape(-1), weights=w, minlength=uniq.shape[0])
        ux, ut, uT = uniq[:, 0], uniq[:, 1], uniq[:, 2]
        scale = max(float(np.mean(T)), 1.0)
        best = None
        for start in (np.log([0.5, scale / 2, 1.0, 1.0]), np.log([1.0, scale, 0.5, 3.0])):
            res = minimize(_neg_ll, start, args=(ux, ut, uT, ww, self.penalizer), method="L-BFGS-B",
                           bounds=[(-9, 9)] * 4, options={"maxiter": self.max_iter})
            if best is None or res.fun < best.fun:
                best = res
        r, alpha, a, b = np.exp(best.x)
        self.params_ = {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}
        self.log_likelihood_ = float(-best.fun)
        self.converged_ = bool(best.success)
        self.n_features_in_ = 3
        self.classes_ = np.array([0, 1])
        return self

    def _p(self):
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def probability_alive(self, X) -> np.ndarray:
        """(n,) P(still alive at the cutoff | x, t_x, T)."""
        check_fitted(self, "params_")
        x, t_x, T = self._summary(X)
        r, alpha, a, b = self._p()
        xm = np.where(x > 0, x, 1.0)
        odds = (a / (b + xm - 1.0)) * np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
        return np.where(x > 0, 1.0 / (1.0 + odds), 1.0)

    def predict_purchase_probability(self, X, horizon_days: float | None = None) -> np.ndarray:
        """(n,) P(at least one purchase in (T, T + h]): alive, and the Poisson clock (posterior
        rate Gamma(r + x, alpha + T)) rings within h."""
        check_fitted(self, "params_")
        h = self.horizon_days if horizon_days is None else horizon_days
        x, _, T = self._summary(X)
        r, alpha, _, _ = self._p()
        p_alive = self.probability_alive(X)
        p_none_if_alive = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + h)))
        return p_alive * (1.0 - p_none_if_alive)

    def expected_purchases(self, t) -> np.ndarray:
        """E[X(t)]: expected repeat purchases in (0, t] of a new customer (the paper's eq. 9)."""
        check_fitted(self, "params_")
        r, alpha, a, b = self._p()
        t = np.asarray(t, dtype=np.float64)
        z = t / (alpha + t)
        return (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1.0, z))

    def predict_proba(self, X) -> np.ndarray:
        p = self.predict_purchase_probability(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_purchase_probability(X) >= 0.5).astype(np.int64)


def simulate_bgnbd(n: int, T: float | np.ndarray, r: float, alpha: float, a: float, b: float,
                   seed: int = 0, horizon: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw n customers from a BG/NBD process observed for T days after their first purchase.

    Returns (X, y): X (n, 3) = (x, t_x, T) over (0, T]; y (n,) = 1 when they buy in (T, T + horizon].
    Used by the tests to check that the fit recovers known parameters.
    """
    rng = np.random.default_rng(seed)
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    y = np.zeros(n)
    t = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    end = T + horizon
    while alive.any():
        idx = np.flatnonzero(alive)
        t[idx] += rng.exponential(1.0 / lam[idx])
        in_cal = t[idx] <= T[idx]
        in_hold = (t[idx] > T[idx]) & (t[idx] <= end[idx])
        cal = idx[in_cal]
        x[cal] += 1
        t_x[cal] = t[cal]
        y[idx[in_hold]] = 1
        dead = (~in_cal) | (rng.random(idx.size) < p[idx])
        alive[idx[dead]] = False
    return np.column_stack([x, t_x, T]), y

"""A Bayesian linear reward model over (customer context, arm), factorised by arm attribute.

The expected reward of arm a for a customer with (standardised) context x is

    r(x, a) = x . (theta_base + sum_f theta_{f, level_f(a)}) + s(x, a) . theta_scores

where x carries an intercept, f runs over the arm's factors (channel, offer, send slot; optionally
channel x offer, channel x slot) and no-send has only the base block. The base block is the
customer's organic value (shared by every arm), so the factor blocks learn the uplift of a send
and its parts; ``s(x, a)`` are optional model scores per arm (say a next-best-offer model's
predicted value) whose weights the model learns, so a better score model helps directly and a bad
one is ignored.

The parameters have a Gaussian posterior (ridge prior, noise variance estimated from residuals),
kept as sufficient statistics, so an update is incremental and exact: A = ridge*I + sum w phi
phi^T, b = sum w phi r. Everything is vectorised over customers and arms without building the
(n, K, p) design tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import linalg

from policies.arms import ArmSpace

FACTORS: tuple[str, ...] = ("channel", "offer", "slot", "channel_offer", "channel_slot")


def factor_levels(arms: ArmSpace, factor: str) -> tuple[np.ndarray, int]:
    """(K,) level of each arm for ``factor`` (-1 for no-send) and the number of levels."""
    cl, ol, sl = (arms.channel_level.astype(np.int64), arms.offer_level.astype(np.int64),
                  arms.slot_level.astype(np.int64))
    nc, no, ns = len(arms.channels), len(arms.offers), len(arms.slots)
    if factor == "channel":
        return cl, nc
    if factor == "offer":
        return ol, no
    if factor == "slot":
        return sl, ns
    if factor == "channel_offer":
        return np.where(cl >= 0, cl * no + ol, -1), nc * no
    if factor == "channel_slot":
        return np.where(cl >= 0, cl * ns + sl, -1), nc * ns
    raise ValueError(f"unknown factor {factor!r}; choose from {FACTORS}")


class LinearRewardModel:
    """Gaussian-posterior linear model of reward given context (n, d) and arm.

    ``n_features`` is d (without intercept; one is added). ``n_scores`` is m, the number of model
    scores per (customer, arm) given as (n, K, m).
    """

    def __init__(self, arms: ArmSpace, n_features: int, factors: Sequence[str] = ("channel", "offer", "slot"),
                 n_scores: int = 0, ridge: float = 1.0, noise_floor: float = 1e-6):
        self.arms = arms
        self.n_features = int(n_features)
        self.factors = tuple(factors)
        self.n_scores = int(n_scores)
        self.ridge = float(ridge)
        self.noise_floor = float(noise_floor)
        K = arms.n_arms
        blocks = [np.zeros(K, dtype=np.int64)]  # base block 0 for every arm
        offset = 1
        for f in self.factors:
            lv, n_levels = factor_levels(arms, f)
            blocks.append(np.where(lv >= 0, offset + lv, -1))
            offset += n_levels
        self.n_blocks = offset
        self.arm_blocks = np.column_stack(blocks)  # (K, 1 + F), -1 where inactive
        inc = np.zeros((K, self.n_blocks))
        for j in range(self.arm_blocks.shape[1]):
            act = self.arm_blocks[:, j] >= 0
            inc[np.nonzero(act)[0], self.arm_blocks[act, j]] = 1.0
        self.incidence = inc  # (K, B)
        self.d1 = self.n_features + 1
        self.p = self.n_blocks * self.d1 + self.n_scores
        self.A = np.zeros((self.p, self.p))  # data part of the precision (without the ridge)
        self.b = np.zeros(self.p)
        self.sum_w = 0.0
        self.sum_wr2 = 0.0
        self.n_obs = 0
        self._solved: tuple | None = None

    # -- design ------------------------------------------------------------------------------
    def _block_slice(self, block: int) -> slice:
        return slice(block * self.d1, (block + 1) * self.d1)

    @staticmethod
    def with_intercept(Z: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((Z.shape[0], 1)), Z])

    # -- learning ------------------------------------------------------------------------------
    def add(self, Z: np.ndarray, arms: np.ndarray, rewards: np.ndarray, weights: np.ndarray,
            scores: np.ndarray | None = None) -> None:
        """Accumulate n observations. Z: (n, d) standardised context; arms: (n,) int; rewards,
        weights: (n,); scores: (n, m) scores of the chosen arms (or None when m = 0)."""
        X1 = self.with_intercept(Z)
        ms = self._block_slice(self.n_blocks).start  # first score coefficient
        for a in np.unique(arms):
            rows = arms == a
            Xa, wa, ra = X1[rows], weights[rows], rewards[rows]
            Xw = Xa * wa[:, None]
            G = Xw.T @ Xa
            c = Xw.T @ ra
            active = [int(j) for j in self.arm_blocks[a] if j >= 0]
            for j in active:
                sj = self._block_slice(j)
                self.b[sj] += c
                for k in active:
                    self.A[sj, self._block_slice(k)] += G
                if self.n_scores:
                    Sa = scores[rows]
                    cross = Xw.T @ Sa
                    self.A[sj, ms:] += cross
                    self.A[ms:, sj] += cross.T
            if self.n_scores:
                Sa = scores[rows]
                self.A[ms:, ms:] += (Sa * wa[:, None]).T @ Sa
                self.b[ms:] += (Sa * wa[:, None]).T @ ra
        self.sum_w += float(weights.sum())
        self.sum_wr2 += float((weights * rewards**2).sum())
        self.n_obs += len(rewards)
        self._solved = None

    def discount(self, factor: float) -> None:
        """Forget old evidence: multiply the sufficient statistics by ``factor`` in (0, 1]."""
        if factor < 1.0:
            self.A *= factor
            self.b *= factor
            self.sum_w *= factor
            self.sum_wr2 *= factor
            self._solved = None

    def _solve(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, lower Cholesky factor R of the precision A + ridge*I, noise variance)."""
        if self._solved is None:
            P = self.A + self.ridge * np.eye(self.p)
            R = linalg.cholesky(P, lower=True)
            mu = linalg.cho_solve((R, True), self.b)
            if self.sum_w > 0:
                rss = self.sum_wr2 - 2.0 * mu @ self.b + mu @ self.A @ mu
                noise = max(rss / self.sum_w, self.noise_floor)
            else:
                noise = 1.0
            self._solved = (mu, R, float(noise))
        return self._solved

    @property
    def coef(self) -> np.ndarray:
        return self._solve()[0]

    @property
    def noise(self) -> float:
        return self._solve()[2]

    # -- prediction ------------------------------------------------------------------------------
    def _arm_weights(self, theta: np.ndarray) -> np.ndarray:
        """theta (..., p) -> per-arm context weights (..., K, d1)."""
        blocks = theta[..., : self.n_blocks * self.d1].reshape(*theta.shape[:-1], self.n_blocks, self.d1)
        return np.einsum("kb,...bd->...kd", self.incidence, blocks)

    def mean(self, Z: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """(n, K) posterior mean reward. scores: (n, K, m) or None."""
        mu = self._solve()[0]
        out = self.with_intercept(Z) @ self._arm_weights(mu).T
        if self.n_scores:
            out += scores @ mu[-self.n_scores:]
        return out

    def draw(self, n_draws: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """(n_draws, p) parameters drawn from the posterior (covariance noise * A^-1, times
        ``scale``**2)."""
        mu, R, noise = self._solve()
        z = rng.standard_normal((self.p, n_draws))
        # cov = noise * P^-1 = noise * R^-T R^-1  ->  theta = mu + sqrt(noise) * R^-T z
        dev = linalg.solve_triangular(R, z, lower=True, trans="T")
        return mu[None, :] + (scale * np.sqrt(noise)) * dev.T

    def means_from(self, Z: np.ndarray, scores: np.ndarray | None, thetas: np.ndarray) -> np.ndarray:
        """(M, n, K) mean rewards under parameter draws ``thetas`` (M, p) from :meth:`draw`."""
        W = self._arm_weights(thetas)  # (M, K, d1)
        X1 = self.with_intercept(Z)
        M, K = W.shape[0], W.shape[1]
        out = (X1 @ W.reshape(M * K, self.d1).T).reshape(X1.shape[0], M, K).transpose(1, 0, 2)
        if self.n_scores:
            out = out + np.einsum("nkj,mj->mnk", scores, thetas[:, -self.n_scores:])
        return out

    def sample_means(self, Z: np.ndarray, scores: np.ndarray | None, n_draws: int,
                     rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """(n_draws, n, K) mean rewards under parameters drawn from the posterior."""
        return self.means_from(Z, scores, self.draw(n_draws, rng, scale))

    def std(self, Z: np.ndarray, scores: np.ndarray | None = None, chunk: int | None = None) -> np.ndarray:
        """(n, K) posterior standard deviation of the mean reward, sqrt(noise * phi^T P^-1 phi)."""
        _, R, noise = self._solve()
        Rinv = linalg.solve_triangular(R, np.eye(self.p), lower=True)  # (p, p)
        X1 = self.with_intercept(Z)
        n, K = X1.shape[0], self.arms.n_arms
        chunk = chunk or max(1, int(4_000_000 // (K * self.p)))  # keeps (chunk, K, p) near 32 MB
        out = np.empty((n, K))
        cols = [Rinv[:, self._block_slice(j)] for j in range(self.n_blocks)]  # each (p, d1)
        score_cols = Rinv[:, -self.n_scores:] if self.n_scores else None
        for lo in range(0, n, chunk):
            Xc = X1[lo: lo + chunk]
            U = np.stack([Xc @ c.T for c in cols], axis=1)  # (c, B, p)
            V = np.einsum("kb,cbp->ckp", self.incidence, U)  # (c, K, p)
            if self.n_scores:
                V += np.einsum("ckj,pj->ckp", scores[lo: lo + chunk], score_cols)
            out[lo: lo + chunk] = np.sqrt(noise * np.einsum("ckp,ckp->ck", V, V))
        return out

"""A generalised linear model over factor blocks, with a Gaussian (Laplace) posterior.

Rows fall into cells (say the (channel, send slot) of a message); each cell switches on a few
parameter blocks (a base block shared by all cells plus one block per factor level), and every
block is a weight vector over the context (with intercept). So the linear predictor of row i in
cell c is ``x_i . sum_{b in blocks(c)} theta_b``: factorised, shared across cells, cheap.

Families: ``logistic`` (Bernoulli, logit link) and ``gaussian`` (identity link, known noise
variance estimated at the first fit). Learning is Bayesian and incremental: the posterior after a
batch (mode and precision from a few Newton steps, the Laplace approximation) is the prior of the
next batch, so daily updates cost only the new rows (assumed-density filtering).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import numpy as np
from scipy import linalg
from scipy.special import expit


def _one_blas_thread():
    """Small dense factorisations (p of a few hundred) run faster on one BLAS thread, and much
    faster when the machine is busy (threads of a parallel BLAS wait for each other)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class FactorGLM:
    """GLM over ``n_features`` (+ intercept) with cells (n_cells, F) of active blocks (-1: none).
    Block 0 is the base block (the one every cell shares)."""

    def __init__(self, n_features: int, cell_blocks: np.ndarray, n_blocks: int, ridge: float = 1.0,
                 family: Literal["logistic", "gaussian"] = "logistic", max_iter: int = 8,
                 intercept_ridge: float = 1e-4, tol: float = 1e-3,
                 level_ridge: float | np.ndarray | None = None):
        self.d1 = int(n_features) + 1
        self.cell_blocks = np.asarray(cell_blocks, dtype=np.int64)
        self.n_cells = self.cell_blocks.shape[0]
        self.n_blocks = int(n_blocks)
        self.p = self.n_blocks * self.d1
        self.family = family
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        inc = np.zeros((self.n_cells, self.n_blocks))
        for j in range(self.cell_blocks.shape[1]):
            act = self.cell_blocks[:, j] >= 0
            inc[np.nonzero(act)[0], self.cell_blocks[act, j]] = 1.0
        self.incidence = inc
        self.mean = np.zeros(self.p)
        # prior precision: slopes of the base block ``ridge``, slopes of the factor-level blocks
        # ``level_ridge`` (shrinks per-level differences harder; a (d1,) array gives every context
        # column of the level blocks its own prior precision), intercepts ``intercept_ridge`` (a
        # nearly flat prior: no pull towards p = 0.5)
        level = float(ridge) if level_ridge is None else level_ridge
        prior = np.tile(np.broadcast_to(np.asarray(level, dtype=np.float64), (self.d1,)), self.n_blocks)
        prior[: self.d1] = float(ridge)
        prior[:: self.d1] = float(intercept_ridge)
        self.precision = np.diag(prior)
        self.noise = None  # gaussian only
        self.n_obs = 0
        self._chol = None

    # -- design helpers ---------------------------------------------------------------------------
    def _sl(self, b: int) -> slice:
        return slice(b * self.d1, (b + 1) * self.d1)

    def cell_weights(self, theta: np.ndarray) -> np.ndarray:
        """theta (..., p) -> per-cell context weights (..., n_cells, d1)."""
        blocks = theta.reshape(*theta.shape[:-1], self.n_blocks, self.d1)
        return np.matmul(self.incidence, blocks)

    def _eta(self, X1: np.ndarray, cells: np.ndarray, theta: np.ndarray) -> np.ndarray:
        W = self.cell_weights(theta)  # (n_cells, d1)
        out = np.empty(X1.shape[0])
        for c in np.unique(cells):
            rows = cells == c
            out[rows] = X1[rows] @ W[c]
        return out

    def _accumulate(self, X1, cells, curvature, residual) -> tuple[np.ndarray, np.ndarray]:
        """sum_i curvature_i phi_i phi_i^T and sum_i residual_i phi_i."""
        H = np.zeros((self.p, self.p))
        g = np.zeros(self.p)
        for c in np.unique(cells):
            rows = cells == c
            Xc = X1[rows]
            G = (Xc * curvature[rows, None]).T @ Xc
            v = Xc.T @ residual[rows]
            active = [int(b) for b in self.cell_blocks[c] if b >= 0]
            for j in active:
                g[self._sl(j)] += v
                for k in active:
                    H[self._sl(j), self._sl(k)] += G
        return H, g

    # -- learning ------------------------------------------------------------------------------------
    def update(self, X1: np.ndarray, cells: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
               max_iter: int | None = None) -> None:
        """Bayesian update on a batch: prior = current posterior, posterior = Laplace
        approximation at the mode (Newton steps). X1: (n, d1) context with intercept; cells: (n,)
        int; y: (n,) 0/1 (logistic) or real (gaussian); weights: (n,) or None."""
        n = len(y)
        if n == 0:
            return
        with _one_blas_thread():
            self._update(X1, cells, np.asarray(y, dtype=np.float64),
                         np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64), max_iter)

    def _update(self, X1, cells, y, w, max_iter) -> None:
        n = len(y)
        m0, P0 = self.mean.copy(), self.precision.copy()
        theta = m0.copy()
        if self.family == "gaussian":
            if self.noise is None:
                self.noise = max(float(np.average((y - np.average(y, weights=w)) ** 2, weights=w)), 1e-6)
            H, g = self._accumulate(X1, cells, w / self.noise, w * y / self.noise)
            P = P0 + H
            theta = linalg.cho_solve(linalg.cho_factor(P, lower=True), P0 @ m0 + g)
        else:
            P = P0
            # the first batch starts from the prior and needs a few Newton steps; later batches start
            # at the previous mode, where one or two suffice
            iters = max_iter or (self.max_iter if self.n_obs == 0 else 3)
            for _ in range(iters):
                eta = self._eta(X1, cells, theta)
                p = expit(eta)
                H, g = self._accumulate(X1, cells, w * p * (1 - p), w * (y - p))
                P = P0 + H
                step = linalg.cho_solve(linalg.cho_factor(P, lower=True), g - P0 @ (theta - m0))
                theta = theta + step
                if np.max(np.abs(step)) < self.tol:
                    break
            # the precision stays the one of the last Newton step (at the mode up to ``tol``)
        self.mean, self.precision = theta, P
        self.n_obs += n
        self._chol = None

    # -- prediction -------------------------------------------------------------------------------------
    def linear_predictor(self, X1: np.ndarray) -> np.ndarray:
        """(n, n_cells) posterior-mean linear predictor of every cell."""
        return X1 @ self._mean_cell_weights().T

    def _mean_cell_weights(self) -> np.ndarray:
        """cell_weights(mean), computed once per posterior: ``mean`` is replaced, never modified in
        place, by an update, so the cache is keyed on its identity (it holds a reference, so a new
        array cannot reuse the address)."""
        cached = self.__dict__.get("_mean_weights")
        if cached is None or cached[0] is not self.mean:
            cached = (self.mean, self.cell_weights(self.mean))
            self._mean_weights = cached
        return cached[1]

    def draw_cell_weights(self, n_draws: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """(n_draws, n_cells, d1) per-cell context weights of parameters drawn from the posterior
        (covariance precision^-1 times ``scale``**2)."""
        if self._chol is None:
            with _one_blas_thread():
                self._chol = linalg.cholesky(self.precision, lower=True)
        z = rng.standard_normal((self.p, n_draws))
        dev = linalg.solve_triangular(self._chol, z, lower=True, trans="T")  # precision^-1/2 z
        thetas = self.mean[None, :] + scale * dev.T  # (M, p)
        return self.cell_weights(thetas)

    @staticmethod
    def predictors(X1: np.ndarray, W: np.ndarray) -> np.ndarray:
        """(M, n, n_cells) linear predictors of context X1 (n, d1) under cell weights W (M, n_cells,
        d1): one GEMM (n, d1) @ (d1, M * n_cells)."""
        M, cells, d1 = W.shape
        out = X1 @ W.reshape(M * cells, d1).T
        return out.reshape(X1.shape[0], M, cells).transpose(1, 0, 2)

    @staticmethod
    def row_predictors(X1: np.ndarray, W: np.ndarray) -> np.ndarray:
        """:meth:`predictors` as (n, M, n_cells): the same GEMM, in the layout it produces."""
        M, cells, d1 = W.shape
        return (X1 @ W.reshape(M * cells, d1).T).reshape(X1.shape[0], M, cells)

    def sample_linear_predictors(self, X1: np.ndarray, n_draws: int, rng: np.random.Generator,
                                 scale: float = 1.0) -> np.ndarray:
        """(n_draws, n, n_cells) linear predictors under parameters drawn from the posterior."""
        return self.predictors(X1, self.draw_cell_weights(n_draws, rng, scale))

"""The RFM rule a marketer would write: score recency, frequency and monetary value 1..5 by
quintile, add the three scores, and read the probability off the observed rate of each total
score in the training data."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from models._validation import (
    check_binary_target,
    check_fitted,
    check_matrix,
    check_number,
    check_vector,
    param_error,
)


class RFMClassifier(ClassifierMixin, BaseEstimator):
    """RFM score rule as a classifier.

    X: (n, 3) = (recency: days since the last order, frequency: orders, monetary: revenue) over
    the lookback at the cutoff; NaN recency (never ordered) scores lowest. Each column is cut into
    ``n_bins`` quantile bins learned in ``fit`` (recency reversed: recent is good); the RFM score
    is their sum, and ``predict_proba`` is the smoothed training rate of ``y`` per score.
    """

    def __init__(self, n_bins: int = 5, smoothing: float = 1.0):
        self.n_bins = n_bins
        self.smoothing = smoothing

    def _check_X(self, X):
        arr, _ = check_matrix(X, self)
        if arr.shape[1] != 3:
            raise param_error("X", self, "of shape (n, 3): recency, frequency, monetary", f"shape {arr.shape}")
        return arr

    def _scores(self, arr):
        total = np.zeros(arr.shape[0], dtype=np.int64)
        for j, edges in enumerate(self.edges_):
            col = arr[:, j]
            if j == 0:  # recency: small is good; unknown (no order) is worst
                col = np.where(np.isnan(col), np.inf, col)
                s = self.n_bins - np.searchsorted(edges, col, side="right")
            else:
                col = np.nan_to_num(col, nan=0.0)
                s = 1 + np.searchsorted(edges, col, side="right")
            total += np.clip(s, 1, self.n_bins)
        return total

    def fit(self, X, y, sample_weight=None):
        check_number(self.n_bins, "n_bins", self, integer=True, low=2, high=20)
        check_number(self.smoothing, "smoothing", self, low=0.0)
        arr = self._check_X(X)
        y = check_binary_target(y, arr.shape[0], self)
        w = np.ones_like(y) if sample_weight is None else check_vector(
            sample_weight, y.size, self, "sample_weight", nonnegative=True)
        qs = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.edges_ = []
        for j in range(3):
            col = arr[:, j]
            col = col[~np.isnan(col)]
            edges = np.unique(np.quantile(col, qs)) if col.size else np.zeros(0)
            self.edges_.append(edges)
        score = self._scores(arr)
        n_scores = 3 * self.n_bins + 1
        pos = np.bincount(score, weights=w * y, minlength=n_scores)
        cnt = np.bincount(score, weights=w, minlength=n_scores)
        self.base_rate_ = float((w * y).sum() / w.sum())
        a = self.smoothing
        self.rate_by_score_ = (pos + a * self.base_rate_) / (cnt + a)
        self.n_features_in_ = 3
        self.classes_ = np.array([0, 1])
        return self

    def rfm_score(self, X) -> np.ndarray:
        """(n,) int RFM total score in [3, 3 * n_bins]."""
        check_fitted(self, "edges_")
        return self._scores(self._check_X(X))

    def predict_proba(self, X) -> np.ndarray:
        check_fitted(self, "rate_by_score_")
        p = self.rate_by_score_[self.rfm_score(X)]
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

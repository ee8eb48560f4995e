"""Evaluation metrics of the four model families, as plain numpy functions.

Binary models (propensity, churn): AUC, log-loss, expected calibration error, lift@k.
Policy models (next-best-offer, send-time): the value of a choice per row read off a matrix of
(true or estimated) values per action, and the share of a baseline-to-oracle gap a model closes.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _prepare(y_true, y_score):
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true and y_score differ in length: {y.shape[0]} vs {s.shape[0]}")
    return y, s


def auc(y_true, y_score) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    y, s = _prepare(y_true, y_score)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true, y_prob, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of binary labels under probabilities ``y_prob``."""
    y, p = _prepare(y_true, y_prob)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def brier(y_true, y_prob) -> float:
    y, p = _prepare(y_true, y_prob)
    return float(np.mean((p - y) ** 2))


def calibration_curve(y_true, y_prob, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-mass bins of predicted probability: (mean predicted, observed rate, count) per bin."""
    y, p = _prepare(y_true, y_prob)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, min(n_bins, max(1, p.size)))
    pred = np.array([p[b].mean() for b in bins if b.size])
    obs = np.array([y[b].mean() for b in bins if b.size])
    cnt = np.array([b.size for b in bins if b.size])
    return pred, obs, cnt


def ece(y_true, y_prob, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |observed rate - mean prediction| over
    ``n_bins`` equal-mass bins of the predicted probability."""
    pred, obs, cnt = calibration_curve(y_true, y_prob, n_bins)
    return float(np.sum(cnt * np.abs(obs - pred)) / cnt.sum())


def lift_at_k(y_true, y_score, k: float = 0.1) -> float:
    """Positive rate among the top ``k`` share of rows by score, over the overall positive rate."""
    y, s = _prepare(y_true, y_score)
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1]; got {k}")
    base = y.mean()
    if base == 0:
        return float("nan")
    top = max(1, int(round(k * y.size)))
    idx = np.argsort(-s, kind="stable")[:top]
    return float(y[idx].mean() / base)


def gain_curve(y_true, y_score, n_points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gain: (share of rows targeted, share of positives captured)."""
    y, s = _prepare(y_true, y_score)
    order = np.argsort(-s, kind="stable")
    captured = np.concatenate([[0.0], np.cumsum(y[order])]) / max(y.sum(), 1e-12)
    frac = np.linspace(0, 1, n_points)
    return frac, captured[np.round(frac * y.size).astype(int)]


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over all thresholds."""
    y, s = _prepare(y_true, y_score)
    order = np.argsort(-s, kind="stable")
    tp = np.concatenate([[0.0], np.cumsum(y[order])])
    fp = np.concatenate([[0.0], np.cumsum(1 - y[order])])
    return fp / max(fp[-1], 1e-12), tp / max(tp[-1], 1e-12)


def binary_report(y_true, y_prob, k: float = 0.1) -> dict[str, float]:
    """The metrics every binary model and baseline is judged by, on the same rows."""
    y, p = _prepare(y_true, y_prob)
    return {
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "ece": ece(y, p),
        "brier": brier(y, p),
        f"lift_at_{int(round(k * 100))}": lift_at_k(y, p, k),
        "positive_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "n": int(y.size),
    }


def value_of_choice(values: np.ndarray, choice: np.ndarray) -> float:
    """Mean over rows of ``values[i, choice[i]]``. values: (n, K); choice: (n,) int in [0, K)."""
    values = np.asarray(values, dtype=np.float64)
    choice = np.asarray(choice, dtype=np.int64)
    return float(values[np.arange(values.shape[0]), choice].mean())


def gap_closed(model: float, baseline: float, oracle: float) -> float:
    """Share of the baseline-to-oracle gap the model closes (1 = as good as the oracle)."""
    gap = oracle - baseline
    if not np.isfinite(gap) or abs(gap) < 1e-15:
        return float("nan")
    return float((model - baseline) / gap)

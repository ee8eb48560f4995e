"""Pictures a data scientist would rather look at: ROC, calibration, lift/gain, feature importance,
the local-hour heatmap of send-time, the tuning history. Each returns a matplotlib Figure."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def roc_figure(y: np.ndarray, scores: dict[str, np.ndarray], title: str):
    from models.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        fpr, tpr = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(y: np.ndarray, probs: dict[str, np.ndarray], title: str, n_bins: int = 10):
    from models.metrics import calibration_curve, ece

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    hi = 0.0
    for name, p in probs.items():
        pred, obs, _ = calibration_curve(y, p, n_bins)
        hi = max(hi, pred.max(), obs.max())
        ax.plot(pred, obs, marker="o", label=f"{name} (ECE {ece(y, p, n_bins):.3f})")
    ax.plot([0, hi], [0, hi], ls=":", c="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def gain_figure(y: np.ndarray, scores: dict[str, np.ndarray], title: str):
    from models.metrics import gain_curve

    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    base = max(float(np.mean(y)), 1e-12)
    for name, s in scores.items():
        frac, cap = gain_curve(y, s)
        ax1.plot(frac, cap, label=name)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(frac > 0, cap / np.where(frac > 0, frac, 1), np.nan)
        ax2.plot(frac[5:], lift[5:], label=name)
    ax1.plot([0, 1], [0, 1], ls=":", c="grey")
    ax1.set(xlabel="share of customers targeted (by score)", ylabel="share of positives captured",
            title=f"{title}: cumulative gain")
    ax2.axhline(1.0, ls=":", c="grey")
    ax2.set(xlabel="share of customers targeted", ylabel="lift", title=f"lift (positive rate {base:.3f})")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importance_figure(names: list[str], gains: np.ndarray, title: str, top: int = 25):
    plt = _plt()
    order = np.argsort(gains)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(order) + 1.2))
    total = max(float(np.sum(gains)), 1e-12)
    ax.barh([names[i] for i in order], np.asarray(gains)[order] / total)
    ax.set(xlabel="share of total gain", title=title)
    fig.tight_layout()
    return fig


def hour_heatmap_figure(hours: tuple[int, ...], matrix: np.ndarray, row_labels: list[str], title: str):
    """matrix: (rows, H) e.g. mean P(open) per channel (rows) and local send hour (columns)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(hours), 0.5 * len(row_labels) + 1.5))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(hours)), [f"{h:02d}" for h in hours])
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set(xlabel="local send hour", title=title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def tuning_figure(trials, history: list[tuple[int, float]], title: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(trials):
        done = trials[trials["state"] == "COMPLETE"]
        pruned = trials[trials["state"] == "PRUNED"]
        ax.scatter(done["number"], done["value"], label="complete", s=18)
        if len(pruned):
            ax.scatter(pruned["number"], [np.nan] * len(pruned), label=f"pruned ({len(pruned)})")
    if history:
        n, v = zip(*history, strict=True)
        ax.step(n, v, where="post", c="k", label="best so far")
    ax.set(xlabel="trial", ylabel="validation log-loss", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bar_figure(labels: list[str], values: list[float], title: str, ylabel: str, ref: float | None = None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(labels) + 1), 4.2))
    ax.bar(labels, values, color=["C0" if i == 0 else "C7" for i in range(len(labels))])
    if ref is not None:
        ax.axhline(ref, ls=":", c="k")
    lo = min(values + ([ref] if ref is not None else []))
    hi = max(values + ([ref] if ref is not None else []))
    pad = 0.1 * (hi - lo if hi > lo else abs(hi) + 1e-9)
    ax.set_ylim(lo - pad if lo > 0.3 * hi else min(0, lo - pad), hi + pad)
    ax.set(title=title, ylabel=ylabel)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    return fig

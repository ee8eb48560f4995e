from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from models.metrics import auc, ece, gap_closed, lift_at_k, log_loss, value_of_choice


def test_auc_and_log_loss_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(rng.random(500) * 0.5 + 0.3 * y, 0.01, 0.99)
    p[:50] = 0.5  # ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p))
    assert np.isnan(auc(np.ones(4), np.arange(4)))


def test_ece_is_zero_for_calibrated_bins_and_positive_otherwise():
    y = np.array([0, 0, 0, 1] * 25 + [1, 1, 1, 0] * 25)
    p = np.array([0.25] * 100 + [0.75] * 100)
    assert ece(y, p, n_bins=2) == pytest.approx(0.0)
    assert ece(y, np.full(200, 0.9), n_bins=2) == pytest.approx(0.4)


def test_lift_at_k():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    s = np.arange(10)[::-1]
    assert lift_at_k(y, s, k=0.2) == pytest.approx(5.0)
    assert lift_at_k(y, -s, k=0.2) == pytest.approx(0.0)


def test_policy_value_and_gap_closed():
    v = np.array([[1.0, 2.0], [3.0, 0.0]])
    assert value_of_choice(v, np.array([1, 0])) == pytest.approx(2.5)
    assert gap_closed(model=2.0, baseline=1.0, oracle=3.0) == pytest.approx(0.5)

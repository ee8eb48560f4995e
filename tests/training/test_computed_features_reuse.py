"""training.data.ComputedFeatures reuses computed rows (cutoffs shared by propensity and churn,
sends shared by next-best-offer and send-time) and returns exactly what features_as_of returns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.compute import ProfileData, features_as_of
from training.data import ComputedFeatures


def _entity(ids, times):
    return pd.DataFrame({"customer_id": ids, "event_timestamp": pd.to_datetime(times, utc=True)})


def test_rows_at_shared_cutoffs_are_computed_once_and_equal_features_as_of(synthetic_ws, monkeypatch):
    data = ProfileData.load(synthetic_ws.profiles)
    src = ComputedFeatures(data=data)
    ids = data.profiles["customer_id"].to_numpy()
    c1, c2 = pd.Timestamp("2026-04-01", tz="UTC"), pd.Timestamp("2026-05-01", tz="UTC")
    ent = _entity(np.concatenate([ids[:300], ids[100:400]]), [c1] * 300 + [c2] * 300)
    ent.index = ent.index + 1000  # the caller's index is kept
    got = src.training_set("propensity_v1", ent)
    assert list(got.index) == list(ent.index)
    names = [n for n in src.feature_names("propensity_v1")]
    want = features_as_of(data, ent["event_timestamp"].reset_index(drop=True), customer_ids=ent["customer_id"].to_numpy())
    pd.testing.assert_frame_equal(got[names].reset_index(drop=True), want[names], check_dtype=False)
    # a subset at the same cutoffs (churn's rows) is served from the cache: nothing is recomputed
    calls = []
    real = src._compute
    monkeypatch.setattr(src, "_compute", lambda *a: calls.append(a) or real(*a))
    sub = ent.iloc[::3]
    again = src.training_set("churn_v1", sub)
    assert calls == []
    pd.testing.assert_frame_equal(again[names], got.loc[sub.index, names])
    # a new customer at a known cutoff: only that customer is computed
    src.training_set("churn_v1", _entity([ids[500]], [c1]))
    assert len(calls) == 1 and list(calls[0][0]) == [ids[500]]


def test_many_timestamps_are_kept_whole_for_the_next_identical_request(synthetic_ws, monkeypatch):
    data = ProfileData.load(synthetic_ws.profiles)
    src = ComputedFeatures(data=data)
    ids = data.profiles["customer_id"].to_numpy()[:200]
    times = pd.Timestamp("2026-03-01", tz="UTC") + pd.to_timedelta(np.arange(200) * 3, unit="h")
    ent = _entity(ids, times)
    a = src.training_set("offer_v1", ent)
    calls = []
    real = src._compute
    monkeypatch.setattr(src, "_compute", lambda *x: calls.append(x) or real(*x))
    b = src.training_set("send_time_v1", ent)
    assert calls == []
    common = [c for c in a.columns if c in b.columns]
    pd.testing.assert_frame_equal(a[common], b[common])
    src.training_set("send_time_v1", ent.iloc[:-1])  # different rows: computed afresh
    assert len(calls) == 1
    want = features_as_of(data, ent["event_timestamp"], customer_ids=ids)
    np.testing.assert_allclose(b["act_order_hour_mean"].to_numpy(), want["act_order_hour_mean"].to_numpy())

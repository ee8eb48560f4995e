"""The time split never leaks: nothing after the test cutoff is seen while fitting or tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from training.data import History, plan_split
from training.pipeline import TrainConfig, build_binary, build_sends, open_context


def test_plan_split_windows_end_before_the_next_cutoff():
    s = plan_split("2026-01-01", "2026-06-30", horizon_days=30)
    assert s.test == pd.Timestamp("2026-05-31", tz="UTC")
    assert s.valid + s.horizon <= s.test
    assert all(c + s.horizon <= s.valid for c in s.train)
    assert all(c - s.history_start >= pd.Timedelta(days=28) for c in s.train)


def test_plan_split_refuses_unknown_labels_and_short_histories():
    with pytest.raises(InputError, match="ends after the history"):
        plan_split("2026-01-01", "2026-06-30", cutoff="2026-06-15", horizon_days=30)
    with pytest.raises(InputError, match="too short"):
        plan_split("2026-05-01", "2026-06-30", horizon_days=30)


def test_no_training_row_sees_the_future(synthetic_ws):
    """Plant orders after the test cutoff for a set of customers: train/valid features and labels
    must not change; only test labels may."""
    ctx = open_context(synthetic_ws, TrainConfig(trials=0, track=False), print)
    before = build_binary(ctx, "propensity")
    cut = ctx.split.test
    hist = ctx.history
    planted = pd.DataFrame({"customer_id": hist.profiles["customer_id"].iloc[:300],
                            "order_id": [f"future{i}" for i in range(300)],
                            "ordered_at": cut + pd.Timedelta(hours=5), "amount": 999.0, "quantity": 1,
                            "category": "apparel", "offer": None})
    from features.compute import ProfileData
    from training.data import ComputedFeatures

    data = ProfileData.load(synthetic_ws.profiles)
    data2 = ProfileData.from_frames(data.profiles, pd.concat([data.orders, planted], ignore_index=True),
                                    data.events, data.engagements)
    ctx.history = History.from_profile_data(data2)
    ctx.history.end = hist.end
    ctx.source = ComputedFeatures(data=data2)
    after = build_binary(ctx, "propensity")
    for part in ("train", "valid"):
        pd.testing.assert_frame_equal(before.X[part], after.X[part])
        np.testing.assert_array_equal(before.y[part], after.y[part])
    pd.testing.assert_frame_equal(before.X["test"], after.X["test"])  # features stop at the cutoff
    assert after.y["test"].sum() > before.y["test"].sum()  # the planted orders are test labels


def test_logged_sends_are_split_by_time_with_outcomes_closed(synthetic_ws):
    ctx = open_context(synthetic_ws, TrainConfig(trials=0, track=False), print)
    d = build_sends(ctx, "send-time")
    day = pd.Timedelta(days=1)
    assert (d.sends["train"]["sent_at"] + day <= ctx.split.valid).all()
    assert (d.sends["valid"]["sent_at"] + day <= ctx.split.test).all()
    assert (d.sends["test"]["sent_at"] > ctx.split.test).all()

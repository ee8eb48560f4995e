"""The session-2 features: purchase days and spans, event span, 90-day activity, order hours and
the combined active-hour estimate (hand-made case of tests/features/conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import FeatureConfig, ProfileData, features_as_of
from features.services import service_features
from tests.features.conftest import T


def _row(data: ProfileData, cid: str, at: str) -> pd.Series:
    return features_as_of(data, at, [cid]).iloc[0]


def test_purchase_days_and_order_span_count_only_orders_before_the_snapshot(hand):
    one = _row(hand, "a", "2026-03-11 00:00")  # only the 03-01 order
    assert (one.order_days_total, one.order_span_days) == (1, 0.0)
    two = _row(hand, "a", "2026-03-21 00:00")  # 03-01 10:00 and 03-20 10:00
    assert two.order_days_total == 2 and two.order_span_days == pytest.approx(19.0)
    # the buyer's age in days is the span plus the recency
    assert two.order_span_days + two.days_since_last_order == pytest.approx(20 - 10 / 24)
    none = _row(hand, "c", "2026-03-21 00:00")
    assert (none.order_days_total, none.order_span_days) == (0, 0.0)


def test_two_orders_on_one_day_are_one_purchase_day():
    frames = {
        "profiles": pd.DataFrame({"customer_id": ["x"], "timezone": ["UTC"], "signup_at": [T("2026-01-01")]}),
        "orders": pd.DataFrame({"customer_id": ["x"] * 3, "amount": [10.0, 20.0, 30.0],
                                "ordered_at": [T("2026-02-01 08:00"), T("2026-02-01 20:00"), T("2026-02-03 09:00")]}),
    }
    data = ProfileData.from_frames(**frames)
    r = features_as_of(data, "2026-02-10", ["x"]).iloc[0]
    assert (r.orders_total, r.order_days_total) == (3, 2)
    assert r.order_span_days == pytest.approx(2 + 1 / 24)
    assert r.order_hour_mean == pytest.approx(np.degrees(np.arctan2(
        np.sin(np.radians(8.5 * 15)) + np.sin(np.radians(20.5 * 15)) + np.sin(np.radians(9.5 * 15)),
        np.cos(np.radians(8.5 * 15)) + np.cos(np.radians(20.5 * 15)) + np.cos(np.radians(9.5 * 15)))) / 15 % 24,
        abs=1e-5)


def test_event_span_and_90_day_window(hand):
    a = _row(hand, "a", "2026-03-21 00:00")  # two events at the same instant
    assert (a.events_total, a.event_span_days, a.events_90d) == (2, 0.0, 2)
    late = _row(hand, "a", "2026-06-01 00:00")  # 03-01 events are 92 days old
    assert late.events_30d == 0 and late.events_90d == 0 and late.events_total == 2


def test_order_hours_join_event_hours_in_local_time(hand):
    a = _row(hand, "a", "2026-03-21 00:00")
    # orders at 10:00 UTC = 18:00 Shanghai; the events at 20:30 local
    assert a.order_hour_mean == pytest.approx(18.5)
    assert a.act_hour_mean == pytest.approx(20.5)
    # 2 events at 20:30 and 2 orders x weight 3 at 18:30: between them, nearer the orders
    assert 18.5 < a.act_order_hour_mean < 19.5
    assert 0.9 < a.act_order_hour_concentration <= 1.0
    same = features_as_of(hand, "2026-03-21", ["a"], config=FeatureConfig(order_hour_weight=0)).iloc[0]
    assert same.act_order_hour_mean == pytest.approx(a.act_hour_mean)


def test_new_features_have_their_defaults_without_history(hand):
    r = features_as_of(hand, "2026-03-21", ["nobody"]).iloc[0]
    assert (r.order_days_total, r.order_span_days, r.event_span_days, r.events_90d) == (0, 0.0, 0.0, 0)
    assert r.order_hour_mean == 12.0 and r.act_order_hour_mean == 12.0 and r.act_order_hour_concentration == 0.0


def test_services_carry_the_new_features_additively():
    for name, wanted in (("propensity_v1", ("order_days_total", "order_span_days", "event_span_days", "events_90d")),
                         ("churn_v1", ("order_days_total", "order_span_days", "event_span_days", "events_90d")),
                         ("send_time_v1", ("act_order_hour_mean", "order_hour_mean")),
                         ("decision_v1", ("act_order_hour_mean", "order_days_total", "event_span_days"))):
        names = service_features(name)
        assert all(w in names for w in wanted), name
    # the session-1 features are all still there
    assert {"act_hour_mean", "act_peak_hour", "orders_total", "days_since_last_order"} <= set(service_features("decision_v1"))

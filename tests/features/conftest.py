"""Fixtures of the feature-store tests: hand-made profiles with known answers, a small synthetic
profiles folder, and ONE applied + materialised Feast repo shared by the session (Feast's import
and apply cost seconds; the tests that need it share it)."""

from __future__ import annotations

import shutil
import warnings

import pandas as pd
import pytest

from core.workspace import Workspace
from features.compute import ProfileData


def T(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


NAT = pd.NaT


def hand_frames() -> dict[str, pd.DataFrame]:
    """Three customers with a known history (times UTC):

    a (Asia/Shanghai): orders 03-01 10:00 (100, beauty, pct10) and 03-20 10:00 (50, home);
       events 03-01 12:30 x2 (20:30 local, a Sunday); email sent 03-10 02:00, opened 03-11 05:00;
       sms sent 03-25 00:00, unsubscribed 03-26.
    b (Europe/London): order 03-05 00:00 (20, no category).
    c (America/Los_Angeles): one event 03-02 03:00 (03-01 19:00 local).
    """
    prof = pd.DataFrame({
        "customer_id": ["a", "b", "c"],
        "crm_id": ["crm-a", "crm-b", "crm-c"],
        "n_crm_records": [1, 2, 1],
        "signup_at": [T("2026-01-01")] * 3,
        "updated_at": [T("2026-01-01")] * 3,
        "city": ["sh", "ldn", "la"],
        "timezone": ["Asia/Shanghai", "Europe/London", "America/Los_Angeles"],
        "consent_sms": [True, False, True], "consent_email": [True, True, False],
        "consent_wechat": [False, False, False], "consent_push": [True, True, True],
        "reachable_sms": [True, True, True], "reachable_email": [True, True, True],
        "reachable_wechat": [False, False, False], "reachable_push": [True, False, True],
        "first_seen_at": [T("2025-12-01"), NAT, NAT], "last_seen_at": [T("2026-03-26")] * 3,
        "n_orders": [2, 1, 0], "n_events": [2, 0, 1], "n_sends": [2, 0, 0],
    })
    orders = pd.DataFrame({
        "customer_id": ["a", "a", "b"], "order_id": ["o1", "o2", "o3"],
        "ordered_at": [T("2026-03-01 10:00"), T("2026-03-20 10:00"), T("2026-03-05")],
        "amount": [100.0, 50.0, 20.0], "quantity": [1, 1, 1],
        "category": ["beauty", "home", None], "offer": ["pct10", None, None],
    })
    events = pd.DataFrame({
        "customer_id": ["a", "a", "c"], "event_id": ["e1", "e2", "e3"],
        "event_type": ["view_item", "view_item", "view_item"],
        "occurred_at": [T("2026-03-01 12:30"), T("2026-03-01 12:30"), T("2026-03-02 03:00")],
        "platform": ["app"] * 3, "category": ["beauty", "beauty", "home"],
    })
    eng = pd.DataFrame({
        "customer_id": ["a", "a"], "send_id": ["s1", "s2"], "channel": ["email", "sms"],
        "offer": ["pct10", None], "sent_at": [T("2026-03-10 02:00"), T("2026-03-25")],
        "delivered_at": [T("2026-03-10 02:00"), NAT], "opened_at": [T("2026-03-11 05:00"), NAT],
        "clicked_at": [NAT, NAT], "converted_at": [NAT, NAT], "conversion_value": [float("nan"), float("nan")],
        "unsubscribed_at": [NAT, T("2026-03-26")], "propensity": [0.1, 0.2], "campaign_id": ["x", "y"],
    })
    return {"profiles": prof, "orders": orders, "events": events, "engagements": eng}


@pytest.fixture
def hand() -> ProfileData:
    return ProfileData.from_frames(**hand_frames())


def write_profiles(folder, frames: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)


@pytest.fixture(scope="session")
def small_profiles(tmp_path_factory):
    """A synthetic profiles folder: 300 customers, 120 days, five time zones."""
    from bench.features import synthetic_profiles

    folder = tmp_path_factory.mktemp("small") / "profiles"
    synthetic_profiles(folder, customers=300, days=120, seed=7)
    return folder


@pytest.fixture(scope="session")
def small_data(small_profiles) -> ProfileData:
    return ProfileData.load(small_profiles)


@pytest.fixture(scope="session")
def feast_store(tmp_path_factory, small_profiles):
    """The small world applied and materialised in a real Feast repo (SQLite online store)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from features.store import FeatureStoreAdapter

    ws = Workspace(tmp_path_factory.mktemp("feast") / "ws").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    store = FeatureStoreAdapter.open(ws)
    store.apply()
    store.materialize()
    return store

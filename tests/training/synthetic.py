"""A tiny, hand-rolled profiles folder (the contract of ``<ws>/profiles``), independent of the
simulator: customers with heterogeneous purchase rates, orders over 180 days and, optionally,
logged campaign sends from a non-uniform logging policy with known propensities."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.catalog import DEFAULT_CATALOG
from core.types import CHANNELS

END = pd.Timestamp("2026-06-30", tz="UTC")


def make_profiles(folder, n: int = 1500, days: int = 180, seed: int = 0, campaigns: bool = True) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = END - pd.Timedelta(days=days)
    ids = np.array([f"c_{i:06d}" for i in range(n)], dtype=object)
    rate = rng.gamma(0.8, 0.04 / 0.8, n)
    churn_day = rng.exponential(400, n)
    tz = rng.choice(["Asia/Shanghai", "Europe/London"], n, p=[0.8, 0.2])
    peak = rng.integers(9, 21, n)
    profiles = pd.DataFrame({
        "customer_id": ids, "crm_id": ids, "n_crm_records": 1,
        "signup_at": start - pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
        "updated_at": start, "city": "x", "timezone": tz,
        **{f"consent_{c}": True for c in ("sms", "email", "wechat", "push")},
        **{f"reachable_{c}": True for c in ("sms", "email", "wechat", "push")},
        "first_seen_at": start, "last_seen_at": END, "n_orders": 0, "n_events": 0, "n_sends": 0,
    })
    rows = []
    for i in range(n):
        k = rng.poisson(rate[i] * min(days, churn_day[i]))
        t = rng.random(k) * min(days, churn_day[i])
        for tt in t:
            rows.append((ids[i], start + pd.Timedelta(days=float(tt)), float(rng.gamma(2, 40)),
                         1, "apparel", None))
    orders = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "amount", "quantity", "category", "offer"])
    orders.insert(1, "order_id", [f"o{i}" for i in range(len(orders))])
    profiles.to_parquet(folder / "profiles.parquet")
    orders.to_parquet(folder / "orders.parquet")
    events = pd.DataFrame({"customer_id": ids[:1], "event_id": ["e0"], "event_type": ["app_open"],
                           "occurred_at": [start + pd.Timedelta(days=1)], "platform": ["app"],
                           "category": [None]})
    events.to_parquet(folder / "events.parquet")
    if not campaigns:
        return
    # sends: each customer ~ every 10 days; logging prefers email, pct10 and 10:00
    n_sends = n * days // 10
    who = rng.integers(0, n, n_sends)
    day = rng.integers(0, days, n_sends)
    p_ch = np.array([0.1, 0.6, 0.2, 0.1])
    p_off = np.array([0.4, 0.1, 0.1, 0.1, 0.2, 0.1])
    hours = np.arange(8, 22)
    p_h = np.where(hours == 10, 0.35, 0.65 / 13)
    ch = rng.choice(4, n_sends, p=p_ch)
    off = rng.choice(6, n_sends, p=p_off)
    hi = rng.choice(len(hours), n_sends, p=p_h)
    offset = np.where(tz[who] == "Europe/London", 1, 8)
    sent = start + pd.to_timedelta(day, unit="D") + pd.to_timedelta(hours[hi] - offset, unit="h")
    d = np.abs(hours[hi] - peak[who])
    p_open = 1 / (1 + np.exp(-(-1.0 - 0.4 * d + 0.5 * (ch == 1))))
    opened = rng.random(n_sends) < p_open
    fav = (np.arange(n)[who] % 6)
    clicked = opened & (rng.random(n_sends) < 0.1 + 0.4 * (off == fav))
    conv = clicked & (rng.random(n_sends) < 0.4)
    hrs = pd.to_timedelta(1, unit="h")
    eng = pd.DataFrame({
        "customer_id": ids[who], "send_id": [f"s{i}" for i in range(n_sends)],
        "channel": np.array([c.value for c in CHANNELS], dtype=object)[ch],
        "offer": np.array(DEFAULT_CATALOG.ids, dtype=object)[off], "sent_at": sent,
        "delivered_at": sent, "opened_at": pd.Series(sent).where(opened) + hrs,
        "clicked_at": pd.Series(sent).where(clicked) + hrs, "converted_at": pd.Series(sent).where(conv) + 2 * hrs,
        "conversion_value": np.where(conv, rng.gamma(2, 40, n_sends), np.nan),
        "unsubscribed_at": pd.NaT, "propensity": 0.5 * p_ch[ch] * p_off[off] * p_h[hi],
        "campaign_id": "cmp",
    })
    eng["unsubscribed_at"] = pd.to_datetime(eng["unsubscribed_at"], utc=True)
    eng.to_parquet(folder / "engagements.parquet")

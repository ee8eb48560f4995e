"""Customer features from the unified profiles: pure pandas/numpy, no Feast.

This module is the ONE definition of every feature. The Feast repo (``features/repo``) serves the
tables computed here; the simulated journey and notebooks call :func:`features_as_of` for the same
values without Feast.

Point-in-time semantics (exact)
-------------------------------
Stored features are snapshots on a grid of UTC times ``S = k * cadence`` (default: every UTC
midnight). The snapshot at ``S`` aggregates exactly the source rows whose own timestamp is
``< S``: an order counts from its ``ordered_at``, a send from its ``sent_at``, an open from its
``opened_at``, a conversion from its ``converted_at``, an unsubscribe from its ``unsubscribed_at``
(so a send made before a cutoff and opened after it counts as sent, not opened). A window feature
``x_{w}d`` at ``S`` covers ``[S - w days, S)``.

Feature tables do not hold one row per customer per day. Each table holds one row per customer
and snapshot at which one of its values changes: the first snapshot after a source row
(it enters the aggregates) and, for window features, the first snapshot after it leaves a window.
Between two rows nothing changes, so "latest row at or before t" (Feast's point-in-time join, and
its online store after materialisation) is exactly the snapshot at ``floor(t)``. A customer's row
is repeated at least every ``heartbeat_days`` (same values), so that lookup never needs to look
further back than that (the Feast views' ttl, which keeps training-set retrieval fast).

Features that depend on the request time (days since the last order / contact / event, tenure,
local hour and weekday of the request) are computed on demand by :func:`on_demand_features` from
the stored timestamps (``*_ts``, epoch seconds) and the request time; Feast runs the same function
in its OnDemandFeatureView.

An empty history yields the documented defaults of :func:`feature_groups` (``FeatureDef.default``),
so a customer without orders has ``orders_30d == 0`` and ``order_share_beauty == 1/6`` whether the
value comes from this module, from Feast's offline store or from a cold-start online read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.catalog import DEFAULT_CATALOG
from core.errors import InputError, WorkspaceError
from core.types import CATEGORIES, CHANNELS

DAY = 86_400  # seconds
_SPAN = np.int64(1) << np.int64(34)  # seconds per customer slot in a sort key (~544 years)
_GRID_BITS = np.int64(24)  # snapshot indices per customer slot in a dedup key

ENTITY = "customer_id"
TIMESTAMP = "event_timestamp"
REQUEST_TIME = "request_time"

FeatureType = Literal["int", "float", "str"]


class FeatureConfig(BaseModel):
    """How features are computed. Defaults suit the simulated world; everything is data."""

    model_config = ConfigDict(frozen=True)

    windows_days: tuple[int, ...] = Field((7, 30, 90, 180), description="RFM windows, days")
    fatigue_days: tuple[int, ...] = Field((1, 7), description="recent-contact windows, days")
    activity_days: tuple[int, ...] = Field((7, 30, 90), description="activity-count windows, days")
    cadence_days: int = Field(1, ge=1, description="snapshot grid step, days (1 = every UTC midnight)")
    heartbeat_days: int = Field(
        7, ge=0,
        description="repeat a customer's latest row at least this often (0: never). Feast's point-in-time "
                    "join then needs to look back only this far (the views' ttl), which keeps training-set "
                    "retrieval fast; values are unchanged (a repeat row holds the same snapshot values)")
    categories: tuple[str, ...] = Field(CATEGORIES, description="product categories with a share feature")
    offers: tuple[str, ...] = Field(DEFAULT_CATALOG.ids, description="offers with a redemption count")
    rate_prior_strength: float = Field(2.0, ge=0.0, description="pseudo-sends behind every smoothed rate")
    open_rate_prior: float = Field(0.2, ge=0.0, le=1.0, description="open rate of a customer never sent to")
    click_rate_prior: float = Field(0.05, ge=0.0, le=1.0, description="click rate of a customer never sent to")
    conversion_rate_prior: float = Field(0.02, ge=0.0, le=1.0, description="conversion rate prior per send")
    share_prior: float = Field(1.0, ge=0.0, description="pseudo-count per bucket behind every share")
    never_days: float = Field(999.0, gt=0.0, description="'days since' value for something that never happened")
    default_timezone: str = Field("Asia/Shanghai", description="time zone of a customer without a valid one")
    chunk_customers: int = Field(100_000, ge=1, description="customers computed at once (bounds memory)")
    order_hour_weight: int = Field(
        3, ge=0, description="weight of an order against one event in the combined active-hour estimate "
                             "(an order is one independent visit; a session writes ~2.5 events at one time)")


# --------------------------------------------------------------------------------------------
# The feature catalogue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDef:
    """One feature: its name (unique across groups), type, value for an empty history, meaning."""

    name: str
    dtype: FeatureType
    default: float | int | str
    description: str


@dataclass(frozen=True)
class FeatureGroup:
    """A set of features stored together (one Feast FeatureView), or computed on demand."""

    name: str
    description: str
    features: tuple[FeatureDef, ...]
    on_demand: bool = False

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


def _f(name: str, dtype: FeatureType, default, description: str) -> FeatureDef:
    return FeatureDef(name, dtype, default, description)


def feature_groups(config: FeatureConfig | None = None) -> tuple[FeatureGroup, ...]:
    """Every feature group, in a fixed order. Names depend on the config's windows, categories and
    offers; with the default config they are stable and documented here."""
    return _feature_groups(config or FeatureConfig())


@lru_cache(maxsize=16)
def _feature_groups(c: FeatureConfig) -> tuple[FeatureGroup, ...]:
    nan = float("nan")
    k_cat = len(c.categories)
    channels = [ch.value for ch in CHANNELS]
    profile = FeatureGroup(
        "customer_profile",
        "Latest unified profile: consent, reachability, time zone. One row per customer, at the first "
        "snapshot after its first appearance (min of signup_at, first_seen_at); the attributes are "
        "the profile's latest values (the CDP keeps no history of consent or time zone).",
        (
            *(_f(f"consent_{ch}", "int", 0, f"opted in to {ch} (0/1)") for ch in channels),
            *(_f(f"reachable_{ch}", "int", 0, f"has a usable {ch} address (0/1)") for ch in channels),
            _f("n_crm_records", "int", 0, "CRM records merged into the customer"),
            _f("timezone", "str", c.default_timezone, "IANA time zone"),
            _f("signup_ts", "float", nan, "signup time, epoch seconds (input of tenure_days)"),
        ),
    )
    rfm = FeatureGroup(
        "rfm",
        "Recency, frequency, monetary value of orders over several windows.",
        (
            *(_f(f"orders_{w}d", "int", 0, f"orders in the last {w} days") for w in c.windows_days),
            *(_f(f"revenue_{w}d", "float", 0.0, f"order value in the last {w} days") for w in c.windows_days),
            _f("orders_total", "int", 0, "orders ever"),
            _f("revenue_total", "float", 0.0, "order value ever"),
            _f("avg_order_value", "float", 0.0, "revenue_total / orders_total (0 without orders)"),
            _f("offer_order_share", "float", 0.0, "share of orders that redeemed an offer"),
            _f("last_order_ts", "float", nan, "last order, epoch seconds (input of days_since_last_order)"),
            _f("order_span_days", "float", 0.0, "days from the first to the last order (0 with < 2 orders); "
               "with days_since_last_order: the customer's age as a buyer"),
            _f("order_days_total", "int", 0, "distinct UTC days with an order"),
        ),
    )
    prefs = FeatureGroup(
        "preferences",
        "Category affinities (orders and item views, smoothed shares) and offer redemptions.",
        (
            *(_f(f"order_share_{cat}", "float", 1.0 / k_cat, f"smoothed share of orders in {cat}")
              for cat in c.categories),
            *(_f(f"view_share_{cat}", "float", 1.0 / k_cat, f"smoothed share of category events in {cat}")
              for cat in c.categories),
            *(_f(f"redeemed_{o}", "int", 0, f"orders that redeemed offer {o}") for o in c.offers),
        ),
    )
    eng_feats: list[FeatureDef] = []
    for ch in channels:
        eng_feats += [
            _f(f"sends_{ch}", "int", 0, f"{ch} sends ever"),
            _f(f"open_rate_{ch}", "float", c.open_rate_prior, f"smoothed {ch} opens per send"),
            _f(f"click_rate_{ch}", "float", c.click_rate_prior, f"smoothed {ch} clicks per send"),
            _f(f"conversion_rate_{ch}", "float", c.conversion_rate_prior, f"smoothed {ch} conversions per send"),
            _f(f"unsubscribed_{ch}", "int", 0, f"unsubscribed from {ch} (0/1)"),
            _f(f"last_contact_{ch}_ts", "float", nan, f"last {ch} send, epoch seconds"),
        ]
    engagement = FeatureGroup(
        "engagement",
        "Campaign history per channel; each outcome counts from its own timestamp.",
        (
            *eng_feats,
            _f("sends_total", "int", 0, "sends ever, all channels"),
            _f("conversions_total", "int", 0, "attributed conversions ever"),
            _f("conversion_value_total", "float", 0.0, "attributed conversion value ever"),
            _f("last_contact_ts", "float", nan, "last send on any channel, epoch seconds"),
        ),
    )
    fatigue = FeatureGroup(
        "fatigue",
        "Recent contact counts (fatigue).",
        (
            *(_f(f"sends_{d}d", "int", 0, f"sends in the last {d} days, all channels") for d in c.fatigue_days),
            *(_f(f"sends_{max(c.fatigue_days)}d_{ch}", "int", 0, f"{ch} sends in the last "
                 f"{max(c.fatigue_days)} days") for ch in channels),
        ),
    )
    activity = FeatureGroup(
        "activity",
        "App/web/WeChat activity: recent and total event counts.",
        (
            *(_f(f"events_{d}d", "int", 0, f"events in the last {d} days") for d in c.activity_days),
            _f("events_total", "int", 0, "events ever"),
            _f("last_event_ts", "float", nan, "last event, epoch seconds (input of days_since_last_event)"),
            _f("event_span_days", "float", 0.0, "days from the first to the last event (0 with < 2 events)"),
        ),
    )
    hours = FeatureGroup(
        "active_hours",
        "When the customer is active, in LOCAL time: hour-of-day shares, mean and peak hour, "
        "weekend share of events; mean local hour of message opens.",
        (
            *(_f(f"act_share_h{b:02d}", "float", 1.0 / 6, f"smoothed share of events at local hours "
                 f"{b:02d}-{b + 4:02d}") for b in range(0, 24, 4)),
            _f("act_hour_mean", "float", 12.0, "circular mean local hour of events (12 without events)"),
            _f("act_hour_concentration", "float", 0.0, "resultant length of event hours, 0 (spread) .. 1"),
            _f("act_peak_hour", "int", 12, "local hour with most events (circularly smoothed)"),
            _f("act_weekend_share", "float", 2.0 / 7, "smoothed share of events on local Sat/Sun"),
            _f("open_hour_mean", "float", 12.0, "circular mean local hour of message opens"),
            _f("opens_total", "int", 0, "message opens ever, all channels"),
            _f("order_hour_mean", "float", 12.0, "circular mean local hour of orders (12 without orders)"),
            _f("act_order_hour_mean", "float", 12.0, "circular mean local hour of events and orders together "
               "(an order weighs order_hour_weight events): the best single estimate of the active hour"),
            _f("act_order_hour_concentration", "float", 0.0, "resultant length of the same hours, 0 .. 1"),
        ),
    )
    request = FeatureGroup(
        "request_features",
        "Computed at request time from the request time and stored timestamps.",
        (
            _f("local_hour", "int", 0, "hour of the request in the customer's time zone"),
            _f("local_weekday", "int", 0, "weekday of the request, local (Monday = 0)"),
            _f("is_weekend", "int", 0, "request on a local Saturday or Sunday (0/1)"),
            _f("utc_offset_hours", "float", 0.0, "customer's UTC offset at the request time, hours"),
            _f("tenure_days", "float", 0.0, "days since signup (0 without signup)"),
            _f("days_since_last_order", "float", c.never_days, "days since the last order"),
            _f("days_since_last_event", "float", c.never_days, "days since the last event"),
            _f("days_since_last_contact", "float", c.never_days, "days since the last send"),
            *(_f(f"days_since_contact_{ch}", "float", c.never_days, f"days since the last {ch} send")
              for ch in channels),
        ),
        on_demand=True,
    )
    return (profile, rfm, prefs, engagement, fatigue, activity, hours, request)


def stored_groups(config: FeatureConfig | None = None) -> tuple[FeatureGroup, ...]:
    return tuple(g for g in feature_groups(config) if not g.on_demand)


def feature_defs(config: FeatureConfig | None = None) -> dict[str, FeatureDef]:
    """Every feature by name (stored and on demand). A new dict each call (callers may edit it)."""
    return dict(_feature_defs(config or FeatureConfig()))


@lru_cache(maxsize=16)
def _feature_defs(c: FeatureConfig) -> dict[str, FeatureDef]:
    return {f.name: f for g in _feature_groups(c) for f in g.features}


#: Stored inputs of the on-demand features (timestamps and the time zone).
ON_DEMAND_INPUTS: tuple[str, ...] = (
    "timezone", "signup_ts", "last_order_ts", "last_event_ts", "last_contact_ts",
    *(f"last_contact_{ch.value}_ts" for ch in CHANNELS),
)


# --------------------------------------------------------------------------------------------
# Input: the profiles folder
# --------------------------------------------------------------------------------------------

_REQUIRED: dict[str, tuple[str, ...]] = {
    "profiles": ("customer_id",),
    "orders": ("customer_id", "ordered_at", "amount"),
    "events": ("customer_id", "occurred_at"),
    "engagements": ("customer_id", "channel", "sent_at"),
}
_OPTIONAL: dict[str, dict[str, str]] = {
    "profiles": {
        "timezone": "str", "signup_at": "ts", "first_seen_at": "ts", "n_crm_records": "int",
        **{f"consent_{k}": "bool" for k in ("sms", "email", "wechat", "push")},
        **{f"reachable_{k}": "bool" for k in ("sms", "email", "wechat", "push")},
    },
    "orders": {"category": "str", "offer": "str", "quantity": "int"},
    "events": {"event_type": "str", "category": "str"},
    "engagements": {
        "offer": "str", "opened_at": "ts", "clicked_at": "ts", "converted_at": "ts",
        "conversion_value": "float", "unsubscribed_at": "ts",
    },
}
_TIMES = {"orders": "ordered_at", "events": "occurred_at", "engagements": "sent_at"}
# CRM consent columns are named after the CDP's push consent; the channel is app_push.
_PROFILE_COLUMN = {"sms": "sms", "email": "email", "wechat": "wechat", "app_push": "push"}


def _utc(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        return s.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    fmt = "mixed" if s.dtype == object or pd.api.types.is_string_dtype(s.dtype) else None
    return pd.to_datetime(s, utc=True, errors="coerce", format=fmt).astype("datetime64[ns, UTC]")


@dataclass(frozen=True)
class ProfileData:
    """The profiles folder in memory: ``profiles`` (one row per customer) and the customer's
    history (``orders``, ``events``, ``engagements``), every frame keyed by ``customer_id`` (str),
    timestamps UTC. Build it with :meth:`load` or :meth:`from_frames` (which validate)."""

    profiles: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame
    engagements: pd.DataFrame

    @classmethod
    def load(cls, folder: str | Path) -> ProfileData:
        """Read ``profiles.parquet`` and the history files from a profiles folder.

        Raises WorkspaceError when ``profiles.parquet`` is missing (run ``decisioning profiles``);
        a missing history file is read as an empty history.
        """
        folder = Path(folder)
        main = folder / "profiles.parquet"
        if not main.is_file():
            raise WorkspaceError(
                f"no profiles in {folder} (missing profiles.parquet): run `decisioning profiles` first"
            )
        frames = {}
        for name in _REQUIRED:
            path = folder / f"{name}.parquet"
            frames[name] = pd.read_parquet(path) if path.is_file() else None
        return cls.from_frames(**frames)

    @classmethod
    def from_frames(
        cls,
        profiles: pd.DataFrame,
        orders: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        engagements: pd.DataFrame | None = None,
    ) -> ProfileData:
        """Validate and normalise frames with the profiles-folder columns (None: empty history).

        Raises InputError naming the frame and the missing column.
        """
        given = {"profiles": profiles, "orders": orders, "events": events, "engagements": engagements}
        out = {}
        for name, frame in given.items():
            cols = _REQUIRED[name] + tuple(_OPTIONAL[name])
            if frame is None:
                frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
            missing = [c for c in _REQUIRED[name] if c not in frame.columns]
            if missing:
                raise InputError(f"{name}: missing column(s) {', '.join(missing)}")
            frame = frame.copy()
            frame["customer_id"] = frame["customer_id"].astype(str)
            for col, kind in _OPTIONAL[name].items():
                if col not in frame.columns:
                    frame[col] = None
                if kind == "ts":
                    frame[col] = _utc(frame[col])
                elif kind == "bool":
                    frame[col] = frame[col].astype("boolean").fillna(False).astype(bool)
                elif kind == "float":
                    frame[col] = pd.to_numeric(frame[col], errors="coerce")
            if name in _TIMES:
                frame[_TIMES[name]] = _utc(frame[_TIMES[name]])
            out[name] = frame
        p = out["profiles"]
        if p["customer_id"].duplicated().any():
            dup = p.loc[p["customer_id"].duplicated(), "customer_id"].iloc[0]
            raise InputError(f"profiles: customer_id {dup!r} appears more than once")
        out["orders"]["amount"] = pd.to_numeric(out["orders"]["amount"], errors="coerce").fillna(0.0)
        return cls(**out)

    @property
    def history_end(self) -> pd.Timestamp | None:
        """The newest timestamp of any history row (None for an empty history)."""
        ends = [self._max(self.orders, "ordered_at"), self._max(self.events, "occurred_at")]
        for col in ("sent_at", "opened_at", "clicked_at", "converted_at", "unsubscribed_at"):
            ends.append(self._max(self.engagements, col))
        ends = [e for e in ends if e is not None]
        return max(ends) if ends else None

    @staticmethod
    def _max(frame: pd.DataFrame, col: str) -> pd.Timestamp | None:
        v = frame[col].max() if len(frame) else pd.NaT
        return None if pd.isna(v) else pd.Timestamp(v)


# --------------------------------------------------------------------------------------------
# Engine: sorted per-customer timelines with running sums
# --------------------------------------------------------------------------------------------


def _seconds(s: pd.Series) -> np.ndarray:
    """UTC timestamps -> int64 epoch seconds (floor); NaT -> INT64 min."""
    ns = s.array.asi8 if isinstance(s.dtype, pd.DatetimeTZDtype) else _utc(s).array.asi8
    out = np.floor_divide(ns, 1_000_000_000)
    out[ns == np.iinfo(np.int64).min] = np.iinfo(np.int64).min
    return out


def _valid_tz(name: object, default: str) -> str:
    if isinstance(name, str) and name:
        try:
            ZoneInfo(name)
            return name
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return default


_OFFSET_CACHE: dict[tuple[str, int], int] = {}
_SMALL = 32  # up to this many rows, UTC offsets come from a per-(zone, quarter hour) cache


def _utc_offsets(seconds: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """UTC offset (seconds) of each epoch second in its row's IANA zone: (n,) -> (n,) int64.

    Bulk: pandas' tz conversion per zone. Small n: a cache keyed by (zone, quarter hour), filled
    by the same pandas conversion (offsets only change at quarter-hour instants), so a single
    request costs microseconds and both paths return the same offsets."""
    n = len(seconds)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    if n <= _SMALL:
        for i in range(n):
            out[i] = _utc_offset(int(seconds[i]), tz[i])
        return out
    codes, zones = pd.factorize(tz)
    for k, zone in enumerate(zones):
        m = codes == k
        utc = pd.DatetimeIndex((seconds[m] * 1_000_000_000).astype("datetime64[ns]"), tz="UTC")
        local = utc.tz_convert(zone).tz_localize(None).asi8
        out[m] = (local - utc.tz_localize(None).asi8) // 1_000_000_000
    return out


def _utc_offset(second: int, zone: str) -> int:
    """UTC offset (seconds) of one epoch second in ``zone``, from the per-(zone, quarter hour) cache."""
    key = (zone, second // 900)
    off = _OFFSET_CACHE.get(key)
    if off is None:
        ts = pd.Timestamp(second * 1_000_000_000, tz="UTC").tz_convert(zone)
        off = int(ts.utcoffset().total_seconds())
        if len(_OFFSET_CACHE) > 100_000:
            _OFFSET_CACHE.clear()
        _OFFSET_CACHE[key] = off
    return off


def _local_parts(seconds: np.ndarray, tz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local hour, weekday (Monday = 0) and UTC offset (hours) of epoch seconds, per row's time
    zone. Shapes (n,) -> three (n,) arrays."""
    local, offset = _local_block(seconds, tz)
    return local[0], local[1], offset


_LOCAL_UNIT = np.array([[3600], [DAY]], dtype=np.int64)  # seconds per hour, per day
_LOCAL_SHIFT = np.array([[0], [3]], dtype=np.int64)  # 1970-01-01 was a Thursday (weekday 3)
_LOCAL_MOD = np.array([[24], [7]], dtype=np.int64)


def _local_block(seconds: np.ndarray, tz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_local_parts` as ``(2, n)`` int64 local hour and weekday (one integer op each for
    both rows) and ``(n,)`` float64 UTC offset in hours."""
    seconds = np.asarray(seconds, dtype=np.int64)
    off = _utc_offsets(seconds, tz)
    local = (np.floor_divide(seconds + off, _LOCAL_UNIT) + _LOCAL_SHIFT) % _LOCAL_MOD
    return local, off / 3600.0


class _Timeline:
    """Rows of one kind (say, e-mail opens) for customers ``0..n-1``, sorted by (customer, time),
    with running sums of per-row weights so that any (customer, time) aggregate is two lookups."""

    def __init__(self, code: np.ndarray, seconds: np.ndarray, n_customers: int,
                 weights: np.ndarray | None = None, counts: np.ndarray | None = None):
        ok = (code >= 0) & (seconds >= 0) & (seconds < _SPAN)
        code, seconds = code[ok], seconds[ok]
        key = code.astype(np.int64) * _SPAN + seconds
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.seconds = seconds[order]
        self.start = np.searchsorted(self.key, np.arange(n_customers + 1, dtype=np.int64) * _SPAN)
        self.weights = None
        if weights is not None:
            # integer weights (money in cents, flags): running sums are exact, so an aggregate does
            # not depend on which other customers share the timeline
            w = np.asarray(weights, dtype=np.int64)[ok][order]
            w = w[:, None] if w.ndim == 1 else w
            self.weights = np.vstack([np.zeros((1, w.shape[1]), np.int64), np.cumsum(w, axis=0, dtype=np.int64)])
        self.counts = None
        if counts is not None:  # small non-negative integer weights (one-hot buckets): exact int32 sums
            c = np.asarray(counts, dtype=np.int32)[ok][order]
            c = c[:, None] if c.ndim == 1 else c
            self.counts = np.vstack([np.zeros((1, c.shape[1]), np.int32), np.cumsum(c, axis=0, dtype=np.int32)])

    def __len__(self) -> int:
        return len(self.key)

    def index(self, code: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Global index of the first row of ``code`` at or after ``seconds`` (so rows before it
        are exactly the customer's rows with time < seconds)."""
        s = np.clip(seconds, 0, _SPAN - 1)
        return np.searchsorted(self.key, code * _SPAN + s, side="left")

    def count(self, code, seconds) -> np.ndarray:
        return self.index(code, seconds) - self.start[code]

    def count_window(self, code, seconds, days: int) -> np.ndarray:
        return self.index(code, seconds) - self.index(code, seconds - days * DAY)

    def sums(self, code, seconds) -> np.ndarray:
        """Running weight sums before ``seconds``: (n, k) int64."""
        return self.weights[self.index(code, seconds)] - self.weights[self.start[code]]

    def sums_window(self, code, seconds, days: int) -> np.ndarray:
        return self.weights[self.index(code, seconds)] - self.weights[self.index(code, seconds - days * DAY)]

    def bucket_counts(self, code, seconds) -> np.ndarray:
        """Running integer bucket counts before ``seconds``: (n, k) int32."""
        return self.counts[self.index(code, seconds)] - self.counts[self.start[code]]

    def last(self, code, seconds) -> np.ndarray:
        """Epoch seconds of the customer's last row before ``seconds`` (NaN if none): (n,) float64."""
        i = self.index(code, seconds)
        has = i > self.start[code]
        out = np.full(len(i), np.nan)
        out[has] = self.seconds[i[has] - 1]
        return out

    def first(self, code, seconds) -> np.ndarray:
        """Epoch seconds of the customer's first row before ``seconds`` (NaN if none): (n,) float64."""
        i = self.index(code, seconds)
        s0 = self.start[code]
        has = i > s0
        out = np.full(len(i), np.nan)
        out[has] = self.seconds[s0[has]]
        return out

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(customer code, epoch seconds) of every row."""
        code = np.repeat(np.arange(len(self.start) - 1), np.diff(self.start))
        return code, self.seconds


def _smoothed(num: np.ndarray, den: np.ndarray, prior: float, strength: float) -> np.ndarray:
    return (num + prior * strength) / (den + strength) if strength > 0 else np.where(den > 0, num / np.maximum(den, 1), prior)


_HOUR_ANGLE = (np.arange(24) + 0.5) * 2 * np.pi / 24.0  # an event in hour h sits at h:30


def _circular_mean_hour(hour_counts: np.ndarray, default: float) -> tuple[np.ndarray, np.ndarray]:
    """Circular mean local hour in [0, 24) and resultant length in [0, 1] from (n, 24) integer
    hour counts (a function of the counts only, so every code path gets the same floats). No
    events, or a resultant of ~0 (no preferred hour): ``default`` and 0."""
    by_hour = np.ascontiguousarray(hour_counts.T)  # (24, n): each hour's counts contiguous
    n = by_hour.sum(axis=0)
    c = np.zeros(by_hour.shape[1])
    s = np.zeros(by_hour.shape[1])
    for h in range(24):  # a fixed order of float operations (a BLAS product may vary with alignment)
        c += by_hour[h] * np.cos(_HOUR_ANGLE[h])
        s += by_hour[h] * np.sin(_HOUR_ANGLE[h])
    length = np.hypot(c, s) / np.maximum(n, 1)
    mean = np.mod(np.round(np.mod(np.arctan2(s, c) * 24.0 / (2 * np.pi), 24.0), 6), 24.0)
    none = (n == 0) | (length < 1e-9)
    return np.where(none, default, mean), np.where(none, 0.0, np.clip(np.round(length, 9), 0.0, 1.0))


def _cents(values: pd.Series) -> np.ndarray:
    """Money -> int64 cents (missing -> 0)."""
    return np.round(pd.to_numeric(values, errors="coerce").fillna(0.0).to_numpy(dtype=np.float64) * 100.0).astype(np.int64)


class _Chunk:
    """All timelines of a contiguous block of customers (codes relative to the block)."""

    def __init__(self, data: ProfileData, config: FeatureConfig):
        c = config
        self.config = c
        prof = data.profiles
        self.ids = prof["customer_id"].to_numpy()
        n = len(prof)
        self.n = n
        index = pd.Index(self.ids)
        self.tz = np.array([_valid_tz(z, c.default_timezone) for z in prof["timezone"]], dtype=object)
        signup = _seconds(prof["signup_at"]).astype(np.float64)
        first = _seconds(prof["first_seen_at"]).astype(np.float64)
        signup[signup < 0] = np.nan
        first[first < 0] = np.nan
        self.signup = signup
        created = np.nan_to_num(np.fmin(signup, first), nan=0.0).astype(np.int64)  # unknown: epoch
        step = config.cadence_days * DAY
        # the profile row, like every row, sits on the snapshot grid: the first snapshot after the
        # customer's first appearance (so it is visible exactly when its first history row is)
        self.profile_at = (np.floor_divide(created, step) + 1) * step

        def codes(frame: pd.DataFrame) -> np.ndarray:
            return index.get_indexer(frame["customer_id"]).astype(np.int64)

        # orders -------------------------------------------------------------------------
        o = data.orders
        oc, os_ = codes(o), _seconds(o["ordered_at"])
        cents = _cents(o["amount"])
        has_offer = o["offer"].notna().to_numpy() & (o["offer"].astype(str) != "")
        self.orders = _Timeline(oc, os_, n, weights=np.column_stack([cents, has_offer]))
        cat_codes = pd.Categorical(o["category"], categories=list(c.categories)).codes
        self.order_cats = _Timeline(oc, os_, n, counts=_onehot(cat_codes, len(c.categories)))
        offer_codes = pd.Categorical(o["offer"], categories=list(c.offers)).codes
        self.redeemed = _Timeline(oc, os_, n, counts=_onehot(offer_codes, len(c.offers)))
        # the first order of each UTC day (distinct purchase days, BG/NBD's repeat-purchase unit)
        okd = (oc >= 0) & (os_ >= 0)
        idx = np.flatnonzero(okd)
        day_key = oc[idx] * np.int64(1 << 31) + os_[idx] // DAY
        order = np.lexsort((os_[idx], day_key))
        k_sorted = day_key[order]
        first_of_day = idx[order][np.concatenate(([True], k_sorted[1:] != k_sorted[:-1]))] if len(idx) else idx
        self.order_days = _Timeline(oc[first_of_day], os_[first_of_day], n)
        ohr = np.zeros(len(o), np.int64)
        ohr[okd], _, _ = _local_parts(os_[okd], self.tz[oc[okd]])
        self.order_hours = _Timeline(oc[okd], os_[okd], n, counts=_onehot(ohr[okd], 24))

        # events -------------------------------------------------------------------------
        e = data.events
        ec, es = codes(e), _seconds(e["occurred_at"])
        vcat = pd.Categorical(e["category"], categories=list(c.categories)).codes
        self.view_cats = _Timeline(ec, es, n, counts=_onehot(vcat, len(c.categories)))
        ok = ec >= 0
        hour = np.zeros(len(e), np.int64)
        wday = np.zeros(len(e), np.int64)
        good = ok & (es >= 0)
        hour[good], wday[good], _ = _local_parts(es[good], self.tz[ec[good]])
        self.events = _Timeline(ec, es, n, counts=np.column_stack([_onehot(hour, 24), (wday >= 5).astype(np.int32)]))

        # engagements --------------------------------------------------------------------
        g = data.engagements
        gc = codes(g)
        chan = g["channel"].astype(str).to_numpy()
        self.sends, self.opens, self.clicks, self.convs, self.unsubs = {}, {}, {}, {}, {}
        sent_s = _seconds(g["sent_at"])
        for ch in CHANNELS:
            m = chan == ch.value
            cm = gc[m]
            self.sends[ch.value] = _Timeline(cm, sent_s[m], n)
            self.opens[ch.value] = _Timeline(cm, _seconds(g["opened_at"][m]), n)
            self.clicks[ch.value] = _Timeline(cm, _seconds(g["clicked_at"][m]), n)
            self.convs[ch.value] = _Timeline(cm, _seconds(g["converted_at"][m]), n)
            self.unsubs[ch.value] = _Timeline(cm, _seconds(g["unsubscribed_at"][m]), n)
        known_ch = np.isin(chan, [ch.value for ch in CHANNELS])
        self.all_sends = _Timeline(gc[known_ch], sent_s[known_ch], n)
        conv_s = _seconds(g["converted_at"])
        value = _cents(g["conversion_value"])
        self.all_convs = _Timeline(gc[known_ch], conv_s[known_ch], n, weights=value[known_ch])
        open_s = _seconds(g["opened_at"])
        om = known_ch & (gc >= 0) & (open_s >= 0)
        ohour = np.zeros(len(g), np.int64)
        ohour[om], _, _ = _local_parts(open_s[om], self.tz[gc[om]])
        self.all_opens = _Timeline(gc[om], open_s[om], n, counts=_onehot(ohour[om], 24))

    # change points -----------------------------------------------------------------------
    def _streams(self, group: str) -> list[tuple[_Timeline, tuple[int, ...]]]:
        c = self.config
        ch = [x.value for x in CHANNELS]
        if group == "rfm":
            return [(self.orders, (0, *c.windows_days))]
        if group == "preferences":
            return [(self.order_cats, (0,)), (self.view_cats, (0,))]
        if group == "engagement":
            return [(t[x], (0,)) for t in (self.sends, self.opens, self.clicks, self.convs, self.unsubs) for x in ch]
        if group == "fatigue":
            return [(self.all_sends, (0, *c.fatigue_days))]
        if group == "activity":
            return [(self.events, (0, *c.activity_days))]
        if group == "active_hours":
            return [(self.events, (0,)), (self.all_opens, (0,)), (self.order_hours, (0,))]
        raise KeyError(group)

    def change_points(self, group: str, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """(code, snapshot seconds) of a group's rows: the snapshot after each source row and, for
        windows, the snapshot after it leaves the window (which may lie after the data's end: the
        values later snapshots take if no new data arrives); plus heartbeat repeats so that no
        customer goes more than ``heartbeat_days`` without a row, from its first row up to
        :func:`view_until` (``horizon`` + the group's longest window)."""
        step = self.config.cadence_days * DAY
        keys = []
        for tl, offsets in self._streams(group):
            code, sec = tl.entries()
            for off in offsets:
                snap = (np.floor_divide(sec + off * DAY, step) + 1)
                keys.append((code << _GRID_BITS) + snap)
        if not keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        k = np.concatenate(keys)
        k.sort()
        k = k[np.concatenate(([True], k[1:] != k[:-1]))]
        code, snap = k >> _GRID_BITS, k & ((np.int64(1) << _GRID_BITS) - 1)
        beat = self.config.heartbeat_days // self.config.cadence_days
        if beat > 0 and len(snap):
            until = view_until(group, horizon, self.config) // step
            same = np.concatenate((code[1:] == code[:-1], [False]))
            nxt = np.concatenate((snap[1:], [0]))
            # between rows: fill gaps longer than a beat; after the last row: up to >= until
            extra = np.where(same, (nxt - snap - 1) // beat, np.maximum((until - snap + beat - 1) // beat, 0))
            total = int(extra.sum())
            if total:
                src = np.repeat(np.arange(len(snap)), extra)
                j = np.arange(total) - np.repeat(np.cumsum(extra) - extra, extra) + 1
                k = np.concatenate((k, (code[src] << _GRID_BITS) + snap[src] + beat * j))
                k.sort()
                code, snap = k >> _GRID_BITS, k & ((np.int64(1) << _GRID_BITS) - 1)
        return code, snap * step

    # values --------------------------------------------------------------------------------
    def values(self, group: str, code: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Features of ``group`` for customers ``code`` (n,) from rows strictly before ``t`` (n,)
        epoch seconds. Returns name -> (n,) array."""
        c = self.config
        out: dict[str, np.ndarray] = {}
        if group == "customer_profile":
            raise KeyError("customer_profile is not a timeline group")
        if group == "rfm":
            for w in c.windows_days:
                out[f"orders_{w}d"] = self.orders.count_window(code, t, w)
            for w in c.windows_days:
                out[f"revenue_{w}d"] = self.orders.sums_window(code, t, w)[:, 0] / 100.0
            n = self.orders.count(code, t)
            s = self.orders.sums(code, t)
            out["orders_total"] = n
            out["revenue_total"] = s[:, 0] / 100.0
            out["avg_order_value"] = np.where(n > 0, s[:, 0] / np.maximum(n, 1) / 100.0, 0.0)
            out["offer_order_share"] = np.where(n > 0, s[:, 1] / np.maximum(n, 1), 0.0)
            out["last_order_ts"] = self.orders.last(code, t)
            first = self.orders.first(code, t)
            out["order_span_days"] = np.where(n > 1, np.round((out["last_order_ts"] - first) / DAY, 6), 0.0)
            out["order_days_total"] = self.order_days.count(code, t)
        elif group == "preferences":
            k = len(c.categories)
            for tl, prefix in ((self.order_cats, "order_share"), (self.view_cats, "view_share")):
                counts = tl.bucket_counts(code, t)
                total = counts.sum(axis=1)
                a = c.share_prior
                for j, cat in enumerate(c.categories):
                    if a > 0:
                        out[f"{prefix}_{cat}"] = (counts[:, j] + a) / (total + a * k)
                    else:
                        out[f"{prefix}_{cat}"] = np.where(total > 0, counts[:, j] / np.maximum(total, 1), 1.0 / k)
            red = self.redeemed.bucket_counts(code, t)
            for j, o in enumerate(c.offers):
                out[f"redeemed_{o}"] = red[:, j]
        elif group == "engagement":
            s = c.rate_prior_strength
            for ch in (x.value for x in CHANNELS):
                sends = self.sends[ch].count(code, t)
                out[f"sends_{ch}"] = sends
                out[f"open_rate_{ch}"] = _smoothed(self.opens[ch].count(code, t), sends, c.open_rate_prior, s)
                out[f"click_rate_{ch}"] = _smoothed(self.clicks[ch].count(code, t), sends, c.click_rate_prior, s)
                out[f"conversion_rate_{ch}"] = _smoothed(self.convs[ch].count(code, t), sends,
                                                         c.conversion_rate_prior, s)
                out[f"unsubscribed_{ch}"] = (self.unsubs[ch].count(code, t) > 0).astype(np.int64)
                out[f"last_contact_{ch}_ts"] = self.sends[ch].last(code, t)
            out["sends_total"] = self.all_sends.count(code, t)
            out["conversions_total"] = self.all_convs.count(code, t)
            out["conversion_value_total"] = self.all_convs.sums(code, t)[:, 0] / 100.0
            out["last_contact_ts"] = self.all_sends.last(code, t)
        elif group == "fatigue":
            for d in c.fatigue_days:
                out[f"sends_{d}d"] = self.all_sends.count_window(code, t, d)
            d = max(c.fatigue_days)
            for ch in (x.value for x in CHANNELS):
                out[f"sends_{d}d_{ch}"] = self.sends[ch].count_window(code, t, d)
        elif group == "activity":
            for d in c.activity_days:
                out[f"events_{d}d"] = self.events.count_window(code, t, d)
            out["events_total"] = self.events.count(code, t)
            out["last_event_ts"] = self.events.last(code, t)
            ne = out["events_total"]
            span = np.round((out["last_event_ts"] - self.events.first(code, t)) / DAY, 6)
            out["event_span_days"] = np.where(ne > 1, span, 0.0)
        elif group == "active_hours":
            n = self.events.count(code, t)
            counts = self.events.bucket_counts(code, t)
            hours, weekend = counts[:, :24], counts[:, 24]
            a = c.share_prior
            for b in range(0, 24, 4):
                nb = hours[:, b:b + 4].sum(axis=1)
                out[f"act_share_h{b:02d}"] = (nb + a) / (n + 6 * a) if a > 0 else np.where(n > 0, nb / np.maximum(n, 1), 1 / 6)
            out["act_hour_mean"], out["act_hour_concentration"] = _circular_mean_hour(hours, 12.0)
            smooth = 2 * hours
            smooth[:, 1:] += hours[:, :-1]
            smooth[:, 0] += hours[:, -1]
            smooth[:, :-1] += hours[:, 1:]
            smooth[:, -1] += hours[:, 0]
            out["act_peak_hour"] = np.where(n > 0, np.argmax(smooth, axis=1), 12).astype(np.int64)
            out["act_weekend_share"] = (weekend + a * 2.0 / 7) / (n + a) if a > 0 else np.where(n > 0, weekend / np.maximum(n, 1), 2 / 7)
            open_hours = self.all_opens.bucket_counts(code, t)
            out["open_hour_mean"], _ = _circular_mean_hour(open_hours, 12.0)
            out["opens_total"] = open_hours.sum(axis=1)
            order_hours = self.order_hours.bucket_counts(code, t)
            out["order_hour_mean"], _ = _circular_mean_hour(order_hours, 12.0)
            both = hours.astype(np.int64) + c.order_hour_weight * order_hours.astype(np.int64)
            out["act_order_hour_mean"], out["act_order_hour_concentration"] = _circular_mean_hour(both, 12.0)
        else:
            raise KeyError(group)
        return out

    def profile_values(self, code: np.ndarray, prof: pd.DataFrame) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for ch in CHANNELS:
            col = _PROFILE_COLUMN[ch.value]
            out[f"consent_{ch.value}"] = prof[f"consent_{col}"].to_numpy()[code].astype(np.int64)
            out[f"reachable_{ch.value}"] = prof[f"reachable_{col}"].to_numpy()[code].astype(np.int64)
        n_crm = pd.to_numeric(prof["n_crm_records"], errors="coerce").fillna(0).to_numpy()
        out["n_crm_records"] = n_crm[code].astype(np.int64)
        out["timezone"] = self.tz[code]
        out["signup_ts"] = self.signup[code]
        return out


def _onehot(codes: np.ndarray, k: int) -> np.ndarray:
    """(n,) codes in [-1, k) -> (n, k) int32 one-hot (row of zeros for -1)."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.zeros((len(codes), k), dtype=np.int32)
    ok = codes >= 0
    out[np.flatnonzero(ok), codes[ok]] = 1
    return out


def _chunks(data: ProfileData, size: int) -> Iterator[tuple[int, ProfileData]]:
    """Split the data into blocks of ``size`` customers (profile order)."""
    n = len(data.profiles)
    if n <= size:
        yield 0, data
        return
    pos = pd.Series(np.arange(n), index=pd.Index(data.profiles["customer_id"]))

    def split(frame: pd.DataFrame):
        p = pos.reindex(frame["customer_id"]).to_numpy()
        block = np.where(np.isnan(p), -1, p // size).astype(np.int64)
        order = np.argsort(block, kind="stable")
        bounds = np.searchsorted(block[order], np.arange(-1, (n + size - 1) // size + 1))
        return frame.iloc[order], bounds

    parts = {k: split(getattr(data, k)) for k in ("orders", "events", "engagements")}
    for b in range(0, (n + size - 1) // size):
        sub = {k: f.iloc[bounds[b + 1]:bounds[b + 2]] for k, (f, bounds) in parts.items()}
        yield b * size, ProfileData(profiles=data.profiles.iloc[b * size:(b + 1) * size], **sub)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureTables:
    """The stored feature tables (group name -> frame with customer_id, event_timestamp and the
    group's features). ``end`` is the snapshot after the newest history row (the state at the
    end of the data); window tables also hold later rows, up to ``end`` + the longest window, where
    rows leave their windows."""

    tables: dict[str, pd.DataFrame]
    start: pd.Timestamp
    end: pd.Timestamp
    config: FeatureConfig


def view_until(group: str, horizon: int, config: FeatureConfig) -> int:
    """Epoch seconds of the last snapshot at which a group's values can still change: the horizon
    (snapshot after the newest data) plus the group's longest window, on the grid."""
    step = config.cadence_days * DAY
    longest = {"rfm": max(config.windows_days), "fatigue": max(config.fatigue_days),
               "activity": max(config.activity_days)}.get(group, 0)
    return horizon + -(-longest * DAY // step) * step


def _horizon(data: ProfileData, config: FeatureConfig) -> int:
    end = data.history_end
    step = config.cadence_days * DAY
    if end is None:
        return 0
    sec = int(pd.Timestamp(end).value // 1_000_000_000)
    return (sec // step + 1) * step


def _frame(ids: np.ndarray, seconds: np.ndarray, values: dict[str, np.ndarray], group: FeatureGroup) -> pd.DataFrame:
    cols = {ENTITY: ids, TIMESTAMP: pd.to_datetime(seconds, unit="s", utc=True).astype("datetime64[ns, UTC]")}
    for f in group.features:
        v = values[f.name]
        cols[f.name] = v.astype(np.int64) if f.dtype == "int" else (v if f.dtype == "str" else v.astype(np.float64))
    return pd.DataFrame(cols)


def _table_chunks(data: ProfileData, config: FeatureConfig, build=None) -> Iterator[tuple[str, object]]:
    """(group name, rows of one block of customers), block after block; ``build(ids, seconds,
    values, group)`` makes the table (default: a pandas frame)."""
    build = build or _frame
    groups = {g.name: g for g in stored_groups(config)}
    horizon = _horizon(data, config)
    for _, chunk_data in _chunks(data, config.chunk_customers):
        ch = _Chunk(chunk_data, config)
        code = np.arange(ch.n)
        created = ch.profile_at
        prof_vals = ch.profile_values(code, chunk_data.profiles)
        yield "customer_profile", build(ch.ids, created, prof_vals, groups["customer_profile"])
        for name in groups:
            if name == "customer_profile":
                continue
            pc, pt = ch.change_points(name, horizon)
            yield name, build(ch.ids[pc], pt, ch.values(name, pc, pt), groups[name])


def _range(horizon: int, starts: list[pd.Timestamp]) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = min(starts) if starts else pd.Timestamp(0, tz="UTC")
    end = pd.Timestamp(horizon, unit="s", tz="UTC") if horizon else start
    return start, max(end, start)


def compute_feature_tables(data: ProfileData, config: FeatureConfig | None = None) -> FeatureTables:
    """Every stored feature group as a change-point table (see the module docstring), in memory.

    Rows: ``customer_profile`` one per customer (at its first appearance); the others one per
    customer and snapshot at which one of the group's values changes, up to the snapshot after the
    newest history row (``end``). Deterministic. For large data use :func:`write_feature_tables`.
    """
    config = config or FeatureConfig()
    parts: dict[str, list[pd.DataFrame]] = {g.name: [] for g in stored_groups(config)}
    for name, frame in _table_chunks(data, config):
        parts[name].append(frame)
    tables = {name: pd.concat(p, ignore_index=True) for name, p in parts.items()}
    start, end = _range(_horizon(data, config), [t[TIMESTAMP].min() for t in tables.values() if len(t)])
    return FeatureTables(tables=tables, start=start, end=end, config=config)


@dataclass(frozen=True)
class FeatureFiles:
    """Feature tables written as Parquet: group name -> path, rows per group, snapshot range, and
    ``valid_until``: with heartbeats (ttl), the last time a point-in-time lookup is exact."""

    paths: dict[str, Path]
    rows: dict[str, int]
    start: pd.Timestamp
    end: pd.Timestamp
    valid_until: pd.Timestamp | None = None


def arrow_schema(group: FeatureGroup):
    """The Parquet schema of a group's table."""
    import pyarrow as pa

    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    return pa.schema([(ENTITY, pa.string()), (TIMESTAMP, pa.timestamp("ns", tz="UTC")),
                      *((f.name, types[f.dtype]) for f in group.features)])


def write_feature_tables(data: ProfileData, folder: str | Path, config: FeatureConfig | None = None) -> FeatureFiles:
    """Compute every stored group and write ``<folder>/<group>.parquet``, one block of customers at
    a time (memory bounded by ``config.chunk_customers``). Same rows as :func:`compute_feature_tables`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = config or FeatureConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups = {g.name: g for g in stored_groups(config)}
    paths = {name: folder / f"{name}.parquet" for name in groups}
    schemas = {name: arrow_schema(g) for name, g in groups.items()}
    writers = {name: pq.ParquetWriter(paths[name].with_suffix(".parquet.tmp"), schemas[name]) for name in groups}
    rows = dict.fromkeys(groups, 0)
    starts: list[pd.Timestamp] = []

    def build(ids, seconds, values, group):  # straight to Arrow: no pandas frame in between
        types = {"int": np.int64, "float": np.float64}
        arrays = [pa.array(ids, type=pa.string()),
                  pa.array(np.asarray(seconds, dtype=np.int64) * 1_000_000_000, type=pa.int64())
                  .cast(pa.timestamp("ns", tz="UTC"))]
        for f in group.features:
            v = values[f.name]
            arrays.append(pa.array(v, type=pa.string()) if f.dtype == "str"
                          else pa.array(np.asarray(v, dtype=types[f.dtype])))
        return pa.Table.from_arrays(arrays, schema=schemas[group.name]), seconds

    try:
        for name, (table, seconds) in _table_chunks(data, config, build):
            if table.num_rows:
                writers[name].write_table(table)
                starts.append(pd.Timestamp(int(np.min(seconds)), unit="s", tz="UTC"))
            rows[name] += table.num_rows
    finally:
        for w in writers.values():
            w.close()
    for path in paths.values():
        path.with_suffix(".parquet.tmp").replace(path)
    start, end = _range(_horizon(data, config), starts)
    valid = end + pd.Timedelta(days=config.heartbeat_days) if config.heartbeat_days else None
    return FeatureFiles(paths=paths, rows=rows, start=start, end=end, valid_until=valid)


def snap(at: pd.Timestamp | np.ndarray | pd.Series, config: FeatureConfig | None = None) -> np.ndarray:
    """Epoch seconds of the latest snapshot at or before each time (the snapshot a request at
    ``at`` is served from)."""
    config = config or FeatureConfig()
    step = config.cadence_days * DAY
    sec = _as_seconds(at)
    return np.floor_divide(sec, step) * step


def _as_seconds(at) -> np.ndarray:
    """One time or a sequence of times (UTC if naive) -> (n,) int64 epoch seconds."""
    if isinstance(at, pd.Series):
        s = at
    elif isinstance(at, pd.Index | np.ndarray | list | tuple):
        s = pd.Series(list(at), dtype=object if len(at) == 0 else None)
    else:
        s = pd.Series([at])
    return _seconds(_utc(s))


def features_as_of(
    data: ProfileData,
    at,
    customer_ids: Sequence[str] | None = None,
    config: FeatureConfig | None = None,
    snapped: bool = True,
) -> pd.DataFrame:
    """Every feature (stored and on demand) of customers as of a time, from the same code that
    computes the Feast tables.

    ``at``: one time (str, Timestamp, datetime; UTC if naive) or one per customer. With
    ``snapped=True`` (default) the stored features come from the snapshot at or before ``at``,
    exactly what Feast serves for a request at ``at``; with ``snapped=False`` they aggregate every
    row strictly before ``at``. On-demand features always use ``at`` as the request time.

    Returns one row per customer (``customer_ids`` order, default every profile), columns
    ``customer_id``, ``known`` (False: not in the profiles, every feature at its default),
    ``request_time`` and every feature.
    """
    config = config or FeatureConfig()
    ids = data.profiles["customer_id"].to_numpy() if customer_ids is None else np.asarray(customer_ids, dtype=object)
    req = _as_seconds(at)
    if len(req) == 1:
        req = np.repeat(req, len(ids))
    if len(req) != len(ids):
        raise InputError(f"'at' must be one time or one per customer; got {len(req)} for {len(ids)} customers")
    if (req == np.iinfo(np.int64).min).any():
        raise InputError("'at' holds a missing or unparseable time")
    step = config.cadence_days * DAY
    t = np.floor_divide(req, step) * step if snapped else req
    index = pd.Index(data.profiles["customer_id"])
    pos = index.get_indexer(pd.Index(ids))
    known = pos >= 0
    defs = feature_defs(config)
    cols: dict[str, np.ndarray] = {}
    wanted = np.unique(pos[known])
    groups = stored_groups(config)
    for f in defs.values():
        cols[f.name] = np.full(len(ids), f.default, dtype=object if f.dtype == "str" else None)
    if len(wanted):
        sub = ProfileData(
            profiles=data.profiles.iloc[wanted],
            orders=data.orders[data.orders["customer_id"].isin(index[wanted])],
            events=data.events[data.events["customer_id"].isin(index[wanted])],
            engagements=data.engagements[data.engagements["customer_id"].isin(index[wanted])],
        )
        rows = np.flatnonzero(known)
        local = pd.Index(index[wanted]).get_indexer(pd.Index(ids[rows]))
        for start, chunk_data in _chunks(sub, config.chunk_customers):
            ch = _Chunk(chunk_data, config)
            m = (local >= start) & (local < start + ch.n)
            r, code, tt = rows[m], local[m] - start, t[rows[m]]
            exists = ch.profile_at[code] <= tt  # as in Feast: no profile row before it exists
            prof = ch.profile_values(code, chunk_data.profiles)
            for name, v in prof.items():
                cols[name][r[exists]] = v[exists]
            for g in groups:
                if g.name == "customer_profile":
                    continue
                for name, v in ch.values(g.name, code, tt).items():
                    cols[name][r] = v
    columns: dict[str, object] = {ENTITY: ids, "known": known,
                                  REQUEST_TIME: pd.to_datetime(req, unit="s", utc=True).astype("datetime64[ns, UTC]")}
    for g in groups:
        for f in g.features:
            v = cols[f.name]
            columns[f.name] = v if f.dtype == "str" else v.astype(np.int64 if f.dtype == "int" else np.float64)
    out = pd.DataFrame(columns)
    demand = on_demand_features(out, config=config)
    return pd.concat([out, demand], axis=1)


def on_demand_features(frame: pd.DataFrame, config: FeatureConfig | None = None) -> pd.DataFrame:
    """Request-time features from ``request_time`` (UTC timestamps or epoch seconds) and the stored
    inputs ``ON_DEMAND_INPUTS`` (a missing or null timestamp means 'never'; a missing time zone the
    default one). Shapes: (n rows) -> (n rows, request_features) in the same index. Feast's
    OnDemandFeatureView runs exactly this function."""
    n = len(frame)
    req = frame[REQUEST_TIME]
    if pd.api.types.is_numeric_dtype(req):
        req_s = req.to_numpy(dtype=np.float64)
    else:
        req_s = _seconds(_utc(req)).astype(np.float64)
    tz = frame["timezone"].to_numpy(dtype=object) if "timezone" in frame else np.full(n, None, object)
    inputs = {
        col: pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64) if col in frame
        else np.full(n, np.nan)
        for col in ON_DEMAND_INPUTS if col != "timezone"
    }
    return pd.DataFrame(on_demand_arrays(req_s, tz, inputs, config), index=frame.index)


@lru_cache(maxsize=8)
def config_from_json(text: str) -> FeatureConfig:
    """A FeatureConfig from its JSON (cached: Feast's transformation rebuilds it on every call)."""
    return FeatureConfig.model_validate_json(text)


def on_demand_dict(inputs: dict[str, list], config: FeatureConfig | None = None) -> dict[str, list]:
    """:func:`on_demand_features` on plain lists (Feast's python-mode transformation): inputs
    ``request_time`` (epoch seconds) and the stored ``ON_DEMAND_INPUTS``, one list each (None for
    missing); returns one list per request feature."""
    req = np.array([np.nan if v is None else v for v in inputs[REQUEST_TIME]], dtype=np.float64)
    n = len(req)
    tz = np.array(inputs.get("timezone", [None] * n), dtype=object)
    stored = {col: np.array([np.nan if v is None else v for v in inputs[col]], dtype=np.float64)
              for col in ON_DEMAND_INPUTS if col != "timezone" and col in inputs}
    return {k: v.tolist() for k, v in on_demand_arrays(req, tz, stored, config).items()}


#: The request features computed from a stored timestamp: name, input, whether 'never' is 0 (else
#: ``never_days``). In :func:`on_demand_arrays`' order, after the local-time ones.
_SINCE: tuple[tuple[str, str, bool], ...] = (
    ("tenure_days", "signup_ts", True),
    ("days_since_last_order", "last_order_ts", False),
    ("days_since_last_event", "last_event_ts", False),
    ("days_since_last_contact", "last_contact_ts", False),
    *((f"days_since_contact_{ch.value}", f"last_contact_{ch.value}_ts", False) for ch in CHANNELS),
)
#: every request feature, in the order of :func:`on_demand_arrays` and of :func:`on_demand_block`'s rows
ON_DEMAND_FEATURES: tuple[str, ...] = (
    "local_hour", "local_weekday", "is_weekend", "utc_offset_hours", *(name for name, _, _ in _SINCE))
#: the stored inputs of :func:`on_demand_block`'s ``since_inputs`` rows, in order
SINCE_INPUTS: tuple[str, ...] = tuple(col for _, col, _ in _SINCE)

_VALID_TZ: dict[tuple[object, str], str] = {}  # (stored zone, default) -> the zone used


@lru_cache(maxsize=8)
def _never(never_days: float) -> np.ndarray:
    """(len(_SINCE), 1): each since-feature's value for 'never' (keyed by a float: hashing the
    whole config costs microseconds)."""
    out = np.array([[0.0 if zero else never_days] for _, _, zero in _SINCE], dtype=np.float64)
    out.flags.writeable = False  # shared by every call
    return out


def on_demand_block(request_seconds: np.ndarray, timezone: np.ndarray, since_inputs: np.ndarray,
                    config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The request features as three blocks: ``(3, n)`` int64 local hour, weekday and weekend flag,
    ``(n,)`` float64 UTC offset (hours), ``(len(SINCE_INPUTS), n)`` float64 days since each stored
    timestamp. ``since_inputs``: the stored ``SINCE_INPUTS`` as rows, float epoch seconds with NaN
    for 'never'. Whole-block numpy operations (elementwise, so each value is bit for bit what a
    per-column computation gives), a few calls whatever n; one row (a single decide) is computed by
    :func:`on_demand_one` (the same values) and only wrapped in arrays here."""
    req_s = np.asarray(request_seconds, dtype=np.float64)
    n = len(req_s)
    if n == 1:
        one = on_demand_one(float(req_s[0]), next(iter(timezone)),
                            np.asarray(since_inputs, dtype=np.float64).reshape(len(SINCE_INPUTS)).tolist(), config)
        if one is not None:
            return (np.array(one[:3], dtype=np.int64).reshape(3, 1), np.array(one[3:4], dtype=np.float64),
                    np.array(one[4:], dtype=np.float64).reshape(len(SINCE_INPUTS), 1))
    tz = np.empty(n, dtype=object)
    default = config.default_timezone
    valid: dict[object, str] = {}  # this call's zones (a bulk read looks each row up here)
    for i, z in enumerate(timezone):
        zone = valid.get(z)
        if zone is None:
            zone = valid[z] = _zone(z, default)
        tz[i] = zone
    # nan_to_num (NaN -> 0, +-inf -> the largest floats) costs ~10 us even on one value: only
    # where a value is not finite
    finite = req_s if np.isfinite(req_s).all() else np.nan_to_num(req_s, nan=0.0)
    whole = np.floor(finite).astype(np.int64)
    hw, offset = _local_block(whole, tz)
    local = np.empty((3, n), dtype=np.int64)
    local[:2] = hw
    np.greater_equal(hw[1], 5, out=local[2])  # is_weekend as 0/1
    # round((req - v) / DAY, 6), NaN -> never, else at least 0: in place (a bulk read's block is
    # 8 x n; fresh temporaries per step cost more than the arithmetic); the same ufuncs, same bits
    since = np.subtract(req_s, np.asarray(since_inputs, dtype=np.float64).reshape(len(SINCE_INPUTS), n))
    np.divide(since, DAY, out=since)
    since.round(6, out=since)  # np.round's own ufuncs (multiply, rint, divide) without its wrappers
    never = np.isnan(since)
    np.maximum(since, 0.0, out=since)
    np.copyto(since, _never(config.never_days), where=never)
    return local, offset, since


def _zone(z: object, default: str) -> str:
    """The time zone a stored zone ``z`` is read in (``default`` when it is not a valid one)."""
    zone = _VALID_TZ.get((z, default))  # across calls: ZoneInfo() costs microseconds
    if zone is None:
        zone = _valid_tz(z, default)
        if len(_VALID_TZ) < 10_000:
            _VALID_TZ[(z, default)] = zone
    return zone


_SINCE_NEVER_IS_ZERO: tuple[bool, ...] = tuple(zero for _, _, zero in _SINCE)


def on_demand_one(request_second: float, timezone: object, since_inputs: list[float],
                  config: FeatureConfig) -> list | None:
    """:func:`on_demand_block` of ONE row (a single decide) as Python numbers, in
    ``ON_DEMAND_FEATURES`` order: local hour, weekday, weekend flag (ints), UTC offset, the days
    since each of ``since_inputs`` (floats); None when the request time is not a finite number
    (the block handles it). ~20 numpy calls on 1-element arrays cost more than all of it.

    Bit for bit the block's values (tested on random rows): the local parts are integer
    arithmetic (floor, floor division and modulo are numpy's for int64), the offset is int /
    3600.0 as numpy divides it; a 'days since' is the block's own IEEE operations in its order,
    (req - v) / DAY * 1e6, rounded half to even (numpy's rint), / 1e6, then np.maximum(x, 0.0),
    which gives +0.0 for a zero of either sign (as ``x if x > 0.0 else 0.0`` does)."""
    if not abs(request_second) < 2.0 ** 62:  # NaN, inf, or past int64 seconds
        return None
    whole = math.floor(request_second)
    off = _utc_offset(whole, _zone(timezone, config.default_timezone))
    weekday = ((whole + off) // DAY + 3) % 7
    out = [(whole + off) // 3600 % 24, weekday, int(weekday >= 5), off / 3600.0]
    never_days = config.never_days
    for v, zero in zip(since_inputs, _SINCE_NEVER_IS_ZERO, strict=True):
        y = (request_second - v) / DAY * 1e6
        if y != y:  # NaN: never happened
            out.append(0.0 if zero else never_days)
            continue
        # round(): half to even, as rint (the zero's sign is moot below); rint(+-inf) is itself
        y = float(round(y)) / 1e6 if math.isfinite(y) else y / 1e6
        out.append(y if y > 0.0 else 0.0)
    return out


def on_demand_arrays(request_seconds: np.ndarray, timezone: np.ndarray, inputs: dict[str, np.ndarray],
                     config: FeatureConfig | None = None) -> dict[str, np.ndarray]:
    """The request features as arrays: ``request_seconds`` (n,) epoch seconds, ``timezone`` (n,)
    IANA names (None/invalid: the default), ``inputs`` the stored ``*_ts`` inputs (n,) float epoch
    seconds with NaN for 'never'. Returns name -> (n,) array. The core of :func:`on_demand_features`,
    callable without pandas frames on the decision path."""
    c = config or FeatureConfig()
    n = len(request_seconds)
    since_inputs = np.full((len(SINCE_INPUTS), n), np.nan)
    for i, col in enumerate(SINCE_INPUTS):
        v = inputs.get(col)
        if v is not None:
            since_inputs[i] = np.asarray(v, dtype=np.float64)
    local, offset, since = on_demand_block(request_seconds, timezone, since_inputs, c)
    out = {"local_hour": local[0], "local_weekday": local[1], "is_weekend": local[2], "utc_offset_hours": offset}
    out.update(zip(ON_DEMAND_FEATURES[4:], since, strict=True))
    return out


def defaults(names: Sequence[str] | None = None, config: FeatureConfig | None = None) -> dict[str, object]:
    """The value of each feature for an empty history (the cold-start values)."""
    defs = feature_defs(config)
    names = list(defs) if names is None else names
    return {n: defs[n].default for n in names}

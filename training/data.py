"""Training data for the four models, built the way production would: time-based.

``--cutoff`` is the last moment the test may see: test features are as of the cutoff and the test
labels fall in (cutoff, cutoff + horizon]. Validation uses the cutoff one horizon earlier, and
training uses earlier cutoffs still, spaced ``step_days`` apart, so that every training label
window ends by the validation cutoff and every validation label window ends by the test cutoff:
nothing after the test cutoff is ever seen while fitting or tuning.

Labels come from the profiles folder (orders, engagements). Features come through a
``FeatureSource`` (the Feast adapter, or the same pure-pandas code without Feast) by FeatureService
name, point-in-time correct at each row's ``event_timestamp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from core.catalog import DEFAULT_CATALOG, Catalog
from core.errors import InputError, WorkspaceError
from core.types import CHANNELS
from core.workspace import Workspace

DAY = pd.Timedelta(days=1)


class FeatureSource(Protocol):
    """What training needs from the feature store (``features.store.FeatureStoreAdapter``)."""

    def training_set(self, service: str, entity_df: pd.DataFrame) -> pd.DataFrame: ...

    def feature_names(self, service: str) -> list[str]: ...


# ---------------------------------------------------------------------------------------------
# The time split
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSplit:
    """Cutoffs (UTC) of a time-based evaluation; each label window is (c, c + horizon]."""

    test: pd.Timestamp
    valid: pd.Timestamp
    train: tuple[pd.Timestamp, ...]
    horizon_days: int
    history_start: pd.Timestamp
    history_end: pd.Timestamp

    @property
    def horizon(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.horizon_days)

    def as_params(self) -> dict[str, str]:
        return {
            "cutoff": self.test.isoformat(),
            "valid_cutoff": self.valid.isoformat(),
            "train_cutoffs": ",".join(c.date().isoformat() for c in self.train),
            "horizon_days": str(self.horizon_days),
            "history_start": self.history_start.isoformat(),
            "history_end": self.history_end.isoformat(),
        }


def _utc(ts) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def plan_split(
    history_start,
    history_end,
    cutoff=None,
    horizon_days: int = 30,
    n_train_cutoffs: int = 4,
    step_days: int = 14,
    min_history_days: int = 28,
) -> TimeSplit:
    """Cutoffs for a time-based evaluation.

    Default cutoff: the last UTC midnight whose label window ends by the history's end. Training
    cutoffs go back from ``valid - horizon`` in steps of ``step_days`` while at least
    ``min_history_days`` of history precede them. Raises InputError when the history is too short.
    """
    start, end = _utc(history_start), _utc(history_end)
    if horizon_days < 1:
        raise InputError(f"--horizon-days must be >= 1; got {horizon_days}")
    h = pd.Timedelta(days=horizon_days)
    test = (end - h).floor("D") if cutoff is None else _utc(cutoff)
    if test + h > end + DAY:
        raise InputError(
            f"the cutoff {test.date()} + {horizon_days} days ends after the history ({end.date()}): "
            f"the test labels would be unknown; use a cutoff <= {(end - h).date()}"
        )
    valid = test - h
    first = valid - h
    train = []
    c = first
    while len(train) < n_train_cutoffs and c - start >= pd.Timedelta(days=min_history_days):
        train.append(c)
        c = c - pd.Timedelta(days=step_days)
    if not train:
        need = 3 * horizon_days + min_history_days
        raise InputError(
            f"history from {start.date()} to {end.date()} is too short for cutoff {test.date()} with a "
            f"{horizon_days}-day horizon: training needs about {need} days before the cutoff plus the "
            f"horizon; use a shorter --horizon-days or a later --cutoff"
        )
    return TimeSplit(test=test, valid=valid, train=tuple(train), horizon_days=horizon_days,
                     history_start=start, history_end=end)


# ---------------------------------------------------------------------------------------------
# The profiles folder, as training needs it
# ---------------------------------------------------------------------------------------------


@dataclass
class History:
    """Profiles and history, typed (timestamps UTC)."""

    profiles: pd.DataFrame
    orders: pd.DataFrame
    engagements: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def load(cls, workspace: Workspace) -> History:
        from features.compute import ProfileData

        data = ProfileData.load(workspace.profiles)
        return cls.from_profile_data(data)

    @classmethod
    def from_profile_data(cls, data) -> History:
        times = []
        for frame, col in ((data.orders, "ordered_at"), (data.events, "occurred_at"),
                           (data.engagements, "sent_at")):
            if len(frame):
                times += [frame[col].min(), frame[col].max()]
        if not times or len(data.orders) == 0:
            raise WorkspaceError("the profiles hold no orders: nothing to learn from (run `decisioning profiles`)")
        end = data.history_end
        profiles = data.profiles.copy()
        first = profiles.get("first_seen_at")
        signup = profiles.get("signup_at")
        born = pd.concat([s for s in (first, signup) if s is not None], axis=1).min(axis=1) \
            if (first is not None or signup is not None) else pd.Series(pd.NaT, index=profiles.index)
        profiles["born_at"] = pd.to_datetime(born, utc=True)
        return cls(profiles=profiles, orders=data.orders, engagements=data.engagements,
                   start=pd.Timestamp(min(times)), end=pd.Timestamp(end))

    @property
    def has_campaigns(self) -> bool:
        return len(self.engagements) > 0

    def customers_at(self, cutoff: pd.Timestamp) -> np.ndarray:
        """Customers known at the cutoff (first seen or signed up before it)."""
        born = self.profiles["born_at"]
        first_order = self.orders.groupby("customer_id")["ordered_at"].min()
        fo = self.profiles["customer_id"].map(first_order)
        known = (born < cutoff) | (fo < cutoff)
        return self.profiles.loc[known.fillna(False).to_numpy(), "customer_id"].to_numpy()


def purchase_label(orders: pd.DataFrame, ids: np.ndarray, cutoff: pd.Timestamp, horizon: pd.Timedelta) -> np.ndarray:
    """(n,) 1 when the customer orders in (cutoff, cutoff + horizon]."""
    o = orders[(orders["ordered_at"] > cutoff) & (orders["ordered_at"] <= cutoff + horizon)]
    return pd.Index(ids).isin(o["customer_id"].unique()).astype(np.int64)


def order_summary(orders: pd.DataFrame, ids: np.ndarray, born: pd.Series, cutoff: pd.Timestamp,
                  lookback_days: int | None = None) -> pd.DataFrame:
    """Per customer at the cutoff (only orders strictly before it): BG/NBD summary (x, t_x, T in
    days from the first purchase, or from ``born`` without one) and RFM inputs (recency days,
    frequency, monetary over the lookback)."""
    o = orders[orders["ordered_at"] < cutoff]
    g = o.groupby("customer_id")
    first = g["ordered_at"].min()
    last = g["ordered_at"].max()
    # repeat purchases count distinct purchase days after the first one (BG/NBD's convention)
    days = o.assign(day=o["ordered_at"].dt.floor("D")).groupby("customer_id")["day"].nunique()
    idx = pd.Index(ids)
    f = first.reindex(idx)
    la = last.reindex(idx)
    b = born.reindex(idx)
    origin = f.fillna(b).fillna(cutoff - pd.Timedelta(days=1))
    T = ((cutoff - origin) / DAY).to_numpy(dtype=np.float64)
    T = np.maximum(T, 1e-3)
    x = (days.reindex(idx).fillna(1) - 1).to_numpy(dtype=np.float64)
    t_x = np.where(f.notna(), ((la - f) / DAY).to_numpy(dtype=np.float64), 0.0)
    t_x = np.clip(np.nan_to_num(t_x), 0.0, T)
    recent = o if lookback_days is None else o[o["ordered_at"] >= cutoff - pd.Timedelta(days=lookback_days)]
    rg = recent.groupby("customer_id")
    freq = rg.size().reindex(idx).fillna(0).to_numpy(dtype=np.float64)
    mon = rg["amount"].sum().reindex(idx).fillna(0).to_numpy(dtype=np.float64)
    rec = ((cutoff - la) / DAY).to_numpy(dtype=np.float64)  # NaN: never ordered
    return pd.DataFrame({"x": x, "t_x": t_x, "T": T, "recency": rec, "frequency": freq,
                         "monetary": mon}, index=idx)


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------

#: Stored feature columns that models never see: raw epoch timestamps (absolute time does not
#: generalise across cutoffs; the ``days_since_*`` features carry the same information), text,
#: and the request's own clock (meaningless at a midnight cutoff).
_EXCLUDE_SUFFIXES = ("_ts",)
_EXCLUDE = {"timezone", "local_hour", "local_weekday", "is_weekend", "known", "request_time"}


def model_columns(frame: pd.DataFrame, names: list[str]) -> list[str]:
    """The numeric feature columns a model uses, in the service's order."""
    out = []
    for n in names:
        if n in _EXCLUDE or n.endswith(_EXCLUDE_SUFFIXES) or n not in frame:
            continue
        if pd.api.types.is_numeric_dtype(frame[n]) or pd.api.types.is_bool_dtype(frame[n]):
            out.append(n)
    return out


class ComputedFeatures:
    """A FeatureSource without Feast: the same feature code (``features.compute``), computed as of
    each row's timestamp. Used when the Feast repo is not applied, and by fast unit tests.

    Computed rows are reused within one training job: the propensity and churn sets ask for the
    same customers at the same cutoffs (churn's rows are a subset), and next-best-offer and
    send-time for the same logged sends. Rows at a few shared timestamps (cutoffs) are kept per
    (timestamp, customer); a request of many distinct timestamps (sends) is kept whole, keyed by
    its content, for the next identical request.
    """

    #: at most this many distinct timestamps are cached row by row; more: the whole frame
    _PER_TIME_MAX = 64

    def __init__(self, workspace: Workspace | None = None, data=None):
        from features.compute import ProfileData

        self._data = data if data is not None else ProfileData.load(workspace.profiles)
        self._by_time: dict[int, pd.DataFrame] = {}
        self._whole: tuple[str, pd.DataFrame] | None = None

    def feature_names(self, service: str) -> list[str]:
        from features.compute import feature_defs

        try:
            from features.services import service_features
            return list(service_features(service))
        except ImportError:
            return list(feature_defs())

    def _compute(self, ids: np.ndarray, times) -> pd.DataFrame:
        from features.compute import features_as_of

        return features_as_of(self._data, times, customer_ids=ids)

    def _features(self, entity_df: pd.DataFrame) -> pd.DataFrame:
        """Every feature of the entity rows (same row order, fresh RangeIndex)."""
        ids = entity_df["customer_id"].to_numpy()
        times = pd.to_datetime(entity_df["event_timestamp"], utc=True).reset_index(drop=True)
        stamps = times.astype("int64").to_numpy()
        uniq = np.unique(stamps)
        if len(uniq) > self._PER_TIME_MAX:
            key = fingerprint_rows(ids, stamps)
            if self._whole is not None and self._whole[0] == key:
                return self._whole[1]
            f = self._compute(ids, times).reset_index(drop=True)
            self._whole = (key, f)
            return f
        parts = []
        for t in uniq:
            rows = np.flatnonzero(stamps == t)
            want = pd.Index(ids[rows]).unique()
            cached = self._by_time.get(int(t))
            missing = want if cached is None else want.difference(cached.index)
            if len(missing):
                new = self._compute(missing.to_numpy(dtype=object), pd.Timestamp(int(t), tz="UTC"))
                new.index = pd.Index(missing, name=None)
                cached = new if cached is None else pd.concat([cached, new])
                self._by_time[int(t)] = cached
            got = cached.loc[ids[rows]]
            got.index = rows
            parts.append(got)
        return pd.concat(parts).sort_index().reset_index(drop=True)

    def training_set(self, service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
        names = self.feature_names(service)
        f = self._features(entity_df)
        keep = [n for n in names if n in f and n not in entity_df]
        out = f[keep]
        out.index = entity_df.index
        return pd.concat([entity_df, out], axis=1)


def fingerprint_rows(ids: np.ndarray, stamps: np.ndarray) -> str:
    """A content key of (customer id, timestamp) rows."""
    import hashlib

    h = hashlib.sha256(pd.util.hash_pandas_object(pd.Series(ids), index=False).to_numpy().tobytes())
    h.update(np.ascontiguousarray(stamps).tobytes())
    return h.hexdigest()


def open_feature_source(workspace: Workspace) -> tuple[FeatureSource, str]:
    """The Feast adapter when the feature repo is applied, else the pure-pandas features.
    Returns (source, kind) with kind 'feast' or 'computed'."""
    try:
        from features.store import FeatureStoreAdapter
    except ImportError:
        return ComputedFeatures(workspace), "computed"
    repo = workspace.feature_repo / "feature_store.yaml"
    if not repo.is_file():
        return ComputedFeatures(workspace), "computed"
    return FeatureStoreAdapter.open(workspace), "feast"


# ---------------------------------------------------------------------------------------------
# Logged campaign sends (next-best-offer, send-time)
# ---------------------------------------------------------------------------------------------


def local_hour(times: pd.Series, timezones: pd.Series) -> np.ndarray:
    """(n,) local hour of each UTC time in each row's IANA time zone (UTC when unknown)."""
    out = np.zeros(len(times), dtype=np.int64)
    tz = timezones.fillna("UTC").to_numpy(dtype=object)
    t = pd.to_datetime(times, utc=True)
    for zone in pd.unique(tz):
        m = tz == zone
        try:
            out[m] = t[m].dt.tz_convert(zone).dt.hour.to_numpy()
        except Exception:  # unknown zone name: UTC
            out[m] = t[m].dt.hour.to_numpy()
    return out


def logged_sends(history: History, catalog: Catalog = DEFAULT_CATALOG) -> pd.DataFrame:
    """One row per logged send with action codes and outcomes.

    Columns: customer_id, sent_at, channel (code into CHANNELS), offer (catalog code; -1 none or
    unknown), send_hour (local), opened, clicked, converted (0/1), value (conversion value, 0 if
    none), unsubscribed (0/1), propensity (NaN if not logged).
    """
    e = history.engagements
    if not len(e):
        return pd.DataFrame()
    tz = history.profiles.set_index("customer_id")["timezone"] if "timezone" in history.profiles else None
    ch_code = {c.value: i for i, c in enumerate(CHANNELS)}
    offer_code = {o: i for i, o in enumerate(catalog.ids)}
    out = pd.DataFrame({
        "customer_id": e["customer_id"].to_numpy(),
        "sent_at": pd.to_datetime(e["sent_at"], utc=True).to_numpy(),
    })
    out["sent_at"] = pd.to_datetime(out["sent_at"], utc=True)
    out["channel"] = e["channel"].map(ch_code).fillna(-1).astype(np.int64).to_numpy()
    out["offer"] = e["offer"].map(offer_code).fillna(-1).astype(np.int64).to_numpy() if "offer" in e else -1
    zones = e["customer_id"].map(tz) if tz is not None else pd.Series(["UTC"] * len(e))
    out["send_hour"] = local_hour(e["sent_at"], zones.reset_index(drop=True))
    for col, src in (("opened", "opened_at"), ("clicked", "clicked_at"), ("converted", "converted_at"),
                     ("unsubscribed", "unsubscribed_at")):
        out[col] = e[src].notna().astype(np.int64).to_numpy() if src in e else 0
    out["value"] = pd.to_numeric(e.get("conversion_value"), errors="coerce").fillna(0.0).to_numpy() \
        if "conversion_value" in e else 0.0
    out["propensity"] = pd.to_numeric(e.get("propensity"), errors="coerce").to_numpy() \
        if "propensity" in e else np.nan
    return out[out["channel"] >= 0].reset_index(drop=True)

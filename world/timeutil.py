"""Time-zone arithmetic on int64 nanosecond arrays (vectorised per zone, DST-aware)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
NAT = np.iinfo(np.int64).min


def utc_offsets(t_ns: np.ndarray, tz_idx: np.ndarray, tz_names: Sequence[str]) -> np.ndarray:
    """UTC offset (local - UTC, ns) at each UTC instant ``t_ns`` (n,) in zone ``tz_idx`` (n,)."""
    out = np.zeros(len(t_ns), dtype=np.int64)
    for i, name in enumerate(tz_names):
        m = tz_idx == i
        if not m.any():
            continue
        utc = pd.DatetimeIndex(t_ns[m].view("datetime64[ns]"), tz="UTC")
        local = utc.tz_convert(name).tz_localize(None)
        out[m] = local.asi8 - utc.tz_localize(None).asi8
    return out


def local_hours(t_ns: np.ndarray, tz_idx: np.ndarray, tz_names: Sequence[str]) -> np.ndarray:
    """Local time of day in hours (float in [0, 24)) of UTC instants ``t_ns`` (n,)."""
    local = t_ns + utc_offsets(t_ns, tz_idx, tz_names)
    return np.mod(local, DAY_NS) / HOUR_NS


class DayGrid:
    """Local calendar days around a UTC interval, per zone.

    Day g is the local date ``first_date + g``. ``utc_at(tz, g, hours)`` gives the UTC instant of
    that local date at ``hours`` (float), using the zone's offset at local noon of that date (DST
    switches happen at night, so this is exact for day-time hours).
    """

    def __init__(self, start_ns: int, end_ns: int, tz_names: Sequence[str]):
        first = pd.Timestamp(start_ns, tz="UTC").tz_localize(None).normalize() - pd.Timedelta(days=1)
        last = pd.Timestamp(end_ns, tz="UTC").tz_localize(None).normalize() + pd.Timedelta(days=1)
        dates = pd.date_range(first, last, freq="D")
        self.n_days = len(dates)
        self.date_ns = dates.asi8.astype(np.int64)  # naive local midnight, as if UTC
        noon = dates + pd.Timedelta(hours=12)
        self.offset_ns = np.zeros((len(tz_names), self.n_days), dtype=np.int64)
        for i, name in enumerate(tz_names):
            utc = noon.tz_localize(name).tz_convert("UTC").tz_localize(None)
            self.offset_ns[i] = noon.asi8 - utc.asi8

    def utc_at(self, tz_idx: np.ndarray, day: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """UTC ns of local ``hours`` on grid day ``day`` in zone ``tz_idx`` (all (n,))."""
        return self.date_ns[day] + np.round(hours * HOUR_NS).astype(np.int64) - self.offset_ns[tz_idx, day]

"""The policy's customer context: a numeric matrix built from ``features.compute`` features.

One function, :func:`context_matrix`, turns a features frame (as ``features.compute.features_as_of``
returns it), or a mapping of feature arrays (the serving path), into the (n, d) float matrix a
policy takes, with the column names of :data:`CONTEXT_COLUMNS`. The warm start (history), the
journey (each day) and the decision service call the same function, so the policy sees the same
features in all of them.

During a journey the slowly moving features (RFM, rates, activity pattern) are computed once at
the start; the contact features that the journey itself changes every day (recent sends, days
since the last contact, unsubscribes) are refreshed from the sends so far by
:class:`ContactFeatures`, with the same definitions as ``features.compute``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from core.types import CHANNELS

CH = [c.value for c in CHANNELS]
NEVER_DAYS = 999.0

#: counts and money: log1p
LOG_FEATURES: tuple[str, ...] = (
    "orders_90d", "orders_180d", "orders_total", "revenue_180d", "avg_order_value", "events_30d",
    "sends_total", "conversions_total",
    *(f"redeemed_{o}" for o in ("pct10", "pct20", "free_shipping", "points_2x", "new_arrivals", "beauty_15")),
)
#: rates and shares: as they are
RAW_FEATURES: tuple[str, ...] = (
    *(f"{k}_rate_{c}" for c in CH for k in ("open", "click", "conversion")),
    "offer_order_share", "order_share_beauty", "view_share_beauty",
    *(f"act_share_h{b:02d}" for b in range(0, 24, 4)),
    "act_hour_concentration",
)
#: local hours: cos and sin
CYCLIC_FEATURES: tuple[str, ...] = ("act_hour_mean", "open_hour_mean")
#: days since: log1p of min(days, 365)
RECENCY_FEATURES: tuple[str, ...] = ("days_since_last_order", "days_since_last_event", "tenure_days")
#: local hours at which the activity pattern is evaluated (every send slot of the default arm space
#: and the hours quiet-hour moves lead to fall on or next to one of them)
FIT_HOURS: tuple[int, ...] = tuple(range(0, 24, 2))
#: the activity pattern the hour fit is computed from: the circular mean local hour of events and
#: orders together and its resultant length (``features.compute``: the best single estimate of
#: the customer's active hour)
HOUR_FIT_SOURCE: tuple[str, str] = ("act_order_hour_mean", "act_order_hour_concentration")
#: derived from the activity pattern (HOUR_FIT_SOURCE: mean active hour and concentration of
#: events and orders together; the events' own mean alone placed the peak less well, day-1 slot
#: regret on three simulated worlds 0.076-0.079 -> 0.061-0.067): how well a send at a
#: local hour fits the customer's active hours, a von Mises bump around the mean active hour whose
#: width follows the concentration, exp(kappa (cos(angle between h and the mean hour) - 1)) in
#: (0, 1] (1 everywhere for a customer without events). One column per hour, so the open model's
#: per-slot weights can pick their own hour's fit; plus the inverse of the mean order value, the
#: shape in which a fixed-cost offer (free shipping) appeals.
DERIVED_FEATURES: tuple[str, ...] = (*(f"hour_fit_h{h:02d}" for h in FIT_HOURS), "inv_avg_order_value")
#: what the journey itself changes (refreshed daily by ContactFeatures); unsubscribed channels are
#: the guardrails' business, not a context feature
CONTACT_FEATURES: tuple[str, ...] = (
    "sends_1d", "sends_7d", *(f"sends_7d_{c}" for c in CH), "days_since_last_contact",
    *(f"days_since_contact_{c}" for c in CH),
)

CONTEXT_COLUMNS: tuple[str, ...] = (
    *LOG_FEATURES, *RAW_FEATURES,
    *(f"{f}_{t}" for f in CYCLIC_FEATURES for t in ("cos", "sin")),
    *RECENCY_FEATURES, *CONTACT_FEATURES, *DERIVED_FEATURES,
)


def kappa_from_resultant(r: np.ndarray, cap: float = 50.0) -> np.ndarray:
    """Von Mises concentration from the mean resultant length (Best and Fisher's approximation of
    the inverse of A1), capped at ``cap``."""
    return _kappa(np.nan_to_num(r, nan=0.0), cap)


def _kappa(r: np.ndarray, cap: float = 50.0) -> np.ndarray:
    """kappa_from_resultant of a resultant length without NaN. One customer (a single decide)
    evaluates only its own branch, with the same IEEE operations as the vector path."""
    if np.size(r) == 1:
        out = np.full(np.shape(r), _kappa_one(float(np.asarray(r).flat[0]), cap))
        return out if out.ndim else out[()]  # a scalar in, a numpy scalar out (as np.minimum gives)
    r = np.clip(r, 0.0, 1.0 - 1e-9)
    return np.minimum(np.where(r < 0.53, _kappa_low(r), np.where(r < 0.85, _kappa_mid(r), _kappa_high(r))), cap)


def _kappa_one(x: float, cap: float = 50.0) -> float:
    """:func:`_kappa` of one value (a single decide) on Python floats: the same IEEE operations
    in the same order, numpy's clip and minimum/maximum rules (a tie keeps the clipped value;
    NaN propagates), only the powers on a 1-element array (numpy's pow may differ from the C
    library's in the last bit). r**2 is numpy's square, x * x."""
    hi = 1.0 - 1e-9
    x = 0.0 if x < 0.0 else hi if x > hi else x  # np.clip: a value on a bound stays itself
    if x < 0.53:
        r = np.array([x])
        k = 2 * x + (r**3).item() + 5 * (r**5).item() / 6
    elif x < 0.85:
        k = -0.4 + 1.39 * x + 0.43 / (1 - x)
    else:
        v = (np.array([x]) ** 3).item() - 4 * (x * x) + 3 * x
        k = 1.0 / (v if v > 1e-12 or v != v else 1e-12)  # np.maximum(v, 1e-12): on a tie, 1e-12
    return k if k < cap or k != k else cap  # np.minimum(k, cap): on a tie, cap


def _kappa_low(r: np.ndarray) -> np.ndarray:
    return 2 * r + r**3 + 5 * r**5 / 6


def _kappa_mid(r: np.ndarray) -> np.ndarray:
    return -0.4 + 1.39 * r + 0.43 / (1 - r)


def _kappa_high(r: np.ndarray) -> np.ndarray:
    return 1.0 / np.maximum(r**3 - 4 * r**2 + 3 * r, 1e-12)


def hour_fit(mean_hour: np.ndarray, concentration: np.ndarray, hours=FIT_HOURS) -> np.ndarray:
    """(n, len(hours)) fit of a send at each local hour to active hours around ``mean_hour`` with
    resultant length ``concentration``: exp(kappa (cos(2 pi (h - mean) / 24) - 1)) in (0, 1]."""
    kappa = kappa_from_resultant(concentration)[:, None]
    angle = 2 * np.pi * (np.asarray(hours, dtype=np.float64)[None, :] - np.nan_to_num(mean_hour, nan=12.0)[:, None]) / 24
    return np.exp(kappa * (np.cos(angle) - 1.0))


def context_matrix(features: pd.DataFrame | Mapping[str, ArrayLike]) -> np.ndarray:
    """(n, d) float64 context, columns CONTEXT_COLUMNS, from a features frame (n rows) or a
    mapping of feature name -> (n,) numeric array (the serving path: no DataFrame, no per-column
    pandas calls; the same values as the frame, which goes through ``pd.to_numeric``)."""
    if not isinstance(features, pd.DataFrame):
        try:
            return _context_arrays(features)
        except (TypeError, ValueError):  # text in a column: coerce it as a frame does
            return context_matrix(pd.DataFrame({k: np.asarray(v).ravel() for k, v in features.items()}))
    cols: list[np.ndarray] = []

    def num(name: str) -> np.ndarray:
        return pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=np.float64)

    for f in LOG_FEATURES:
        cols.append(np.log1p(np.maximum(np.nan_to_num(num(f)), 0.0)))
    for f in RAW_FEATURES:
        cols.append(np.nan_to_num(num(f)))
    for f in CYCLIC_FEATURES:
        angle = 2 * np.pi * np.nan_to_num(num(f), nan=12.0) / 24.0
        cols += [np.cos(angle), np.sin(angle)]
    for f in RECENCY_FEATURES:
        cols.append(np.log1p(np.clip(np.nan_to_num(num(f), nan=NEVER_DAYS), 0.0, 365.0)))
    for f in CONTACT_FEATURES:
        v = np.nan_to_num(num(f), nan=NEVER_DAYS if f.startswith("days_") else 0.0)
        cols.append(np.log1p(np.clip(v, 0.0, 30.0)) if f.startswith("days_") else v)
    fit = hour_fit(num(HOUR_FIT_SOURCE[0]), num(HOUR_FIT_SOURCE[1]))
    cols += list(fit.T)
    cols.append(100.0 / np.maximum(np.nan_to_num(num("avg_order_value"), nan=100.0), 15.0))
    return np.column_stack(cols)


_CONTACT_DAYS = np.array([f.startswith("days_") for f in CONTACT_FEATURES])
_BIG = np.finfo(np.float64).max


def _plan_arrays():
    """The serving path's layout, built once: the input features in the order they are read (one
    gather), each input's NaN replacement (one fill of the whole matrix), and the row slices of
    every block of inputs (``i_*``) and of the (d, n) output (``o_*``)."""
    n_sends = int(np.count_nonzero(~_CONTACT_DAYS))
    # the days-since columns follow the send counts: one slice each, no fancy indexing
    assert not _CONTACT_DAYS[:n_sends].any() and _CONTACT_DAYS[n_sends:].all()
    blocks = [(LOG_FEATURES, 0.0), (RAW_FEATURES, 0.0), (CYCLIC_FEATURES, 12.0), (RECENCY_FEATURES, NEVER_DAYS),
              (CONTACT_FEATURES[:n_sends], 0.0), (CONTACT_FEATURES[n_sends:], NEVER_DAYS),
              ((HOUR_FIT_SOURCE[0],), 12.0), ((HOUR_FIT_SOURCE[1],), 0.0), (("avg_order_value",), 100.0)]
    names, fill, starts = [], [], [0]
    for cols, nan in blocks:
        names += cols
        fill += [nan] * len(cols)
        starts.append(len(names))
    i = [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    o_sizes = [len(LOG_FEATURES), len(RAW_FEATURES), 2 * len(CYCLIC_FEATURES), len(RECENCY_FEATURES), n_sends,
               len(CONTACT_FEATURES) - n_sends, len(FIT_HOURS), 1]
    o_starts = np.cumsum([0, *o_sizes]).tolist()
    o = [slice(a, b) for a, b in zip(o_starts[:-1], o_starts[1:], strict=True)]
    assert o_starts[-1] == len(CONTEXT_COLUMNS)
    return tuple(names), np.array(fill)[:, None], i, o


_IN_NAMES, _IN_FILL, _I, _O = _plan_arrays()
_IN_GET = operator.itemgetter(*_IN_NAMES)  # mapping -> the inputs in _IN_NAMES order, in one C call
_FIT_HOURS_COL = np.asarray(FIT_HOURS, dtype=np.float64)[:, None]


def _context_arrays(features: Mapping[str, ArrayLike]) -> np.ndarray:
    """context_matrix of a mapping of arrays: one gather into an (inputs, n) matrix, then
    :func:`_context_block` on blocks of customers small enough to stay in cache (the same
    operations per element as the frame path; a few dozen numpy calls per block whatever n)."""
    n = np.asarray(features[LOG_FEATURES[0]]).shape[0]
    cols = _IN_GET(features)
    if n == 1:
        # a single decide: its one-value arrays (int64 and float64) as Python numbers (``item``
        # also checks that each holds exactly one value) for _context_one; anything else (text,
        # None, lists) takes the block path
        try:
            return _context_one(list(map(np.ndarray.item, cols)))
        except (TypeError, ValueError, OverflowError):
            A = np.array(cols, dtype=np.float64)
        return _context_block(A.reshape(len(_IN_NAMES), 1)).T  # (1, d): C-contiguous as it is
    A = np.array(cols, dtype=np.float64).reshape(len(_IN_NAMES), n)
    out = np.empty((n, len(CONTEXT_COLUMNS)))
    for lo in range(0, n, _BLOCK):
        out[lo:lo + _BLOCK] = _context_block(A[:, lo:lo + _BLOCK]).T
    return out


#: customers per block of :func:`_context_arrays` (a block's temporaries then fit in cache)
_BLOCK = 8192


_IN_FILL_LIST = _IN_FILL.ravel().tolist()
_TWO_PI = 2 * np.pi
_FIT_HOURS_LIST = [float(h) for h in FIT_HOURS]


def _context_one(values: list) -> np.ndarray:
    """:func:`_context_block` of ONE customer (a single decide) as a C-contiguous (1, d) array:
    the exact arithmetic (fill, clips, angles, the hour fit's argument, the inverse order value)
    on Python floats, with the same IEEE operations in the same order and numpy's clip and
    minimum/maximum rules on ties and NaN; each transcendental function one numpy call on a
    contiguous array of all its arguments (log1p: 22, cos: 14, sin: 2, exp: 12), which gives each
    element the bits it gets in the block path (numpy's loops are element-wise: tested on random
    customers against it). ~10 numpy calls instead of ~30. ``values``: the raw inputs in
    ``_IN_NAMES`` order (numbers; text raises ValueError)."""
    big = _BIG
    f = []
    for x, nan in zip(values, _IN_FILL_LIST, strict=True):
        x = float(x)
        # np.where(isnan, fill, x), then clip(-max, max): only the infinities move
        f.append(nan if x != x else big if x > big else -big if x < -big else x)
    i_log, i_raw, i_cyc, i_rec, i_send, i_days, i_mean, i_conc, i_aov = _I
    logs = np.log1p(np.array(
        [x if x > 0.0 else 0.0 for x in f[i_log]]  # np.maximum(x, 0.0): on a tie (-0.0), 0.0
        + [0.0 if x < 0.0 else 365.0 if x > 365.0 else x for x in f[i_rec]]  # clip: a tie keeps x
        + [0.0 if x < 0.0 else 30.0 if x > 30.0 else x for x in f[i_days]])).tolist()
    angles = [_TWO_PI * x / 24.0 for x in f[i_cyc]]
    mean = f[i_mean][0]
    cos = np.cos(np.array(angles + [_TWO_PI * (h - mean) / 24 for h in _FIT_HOURS_LIST])).tolist()
    sin = np.sin(np.array(angles)).tolist()
    kappa = _kappa_one(f[i_conc][0])
    fit = np.exp(np.array([kappa * (c - 1.0) for c in cos[len(angles):]])).tolist()
    aov = f[i_aov][0]
    n_log, n_rec = i_log.stop - i_log.start, i_rec.stop - i_rec.start
    out = [*logs[:n_log], *f[i_raw], *(v for a in zip(cos, sin, strict=False) for v in a),
           *logs[n_log:n_log + n_rec], *f[i_send], *logs[n_log + n_rec:], *fit,
           100.0 / (aov if aov > 15.0 else 15.0)]  # np.maximum(aov, 15.0): on a tie, 15.0
    return np.array(out, dtype=np.float64).reshape(1, len(CONTEXT_COLUMNS))


def _context_block(A: np.ndarray) -> np.ndarray:
    """(d, n) context of the (inputs, n) raw inputs ``A`` (rows in ``_IN_NAMES`` order): one NaN/inf
    fill, then each feature block's arithmetic on contiguous row slices of the output."""
    F = np.where(np.isnan(A), _IN_FILL, A)
    # ndarray.clip: the same clip ufunc as np.clip without its Python dispatch (~3 us a call)
    F.clip(-_BIG, _BIG, out=F)
    i_log, i_raw, i_cyc, i_rec, i_send, i_days, i_mean, i_conc, i_aov = _I
    o_log, o_raw, o_cyc, o_rec, o_send, o_days, o_fit, o_inv = _O
    out = np.empty((len(CONTEXT_COLUMNS), A.shape[1]))
    np.log1p(np.maximum(F[i_log], 0.0), out=out[o_log])
    out[o_raw] = F[i_raw]
    angle = 2 * np.pi * F[i_cyc] / 24.0
    np.cos(angle, out=out[o_cyc][0::2])
    np.sin(angle, out=out[o_cyc][1::2])
    np.log1p(F[i_rec].clip(0.0, 365.0), out=out[o_rec])
    out[o_send] = F[i_send]
    np.log1p(F[i_days].clip(0.0, 30.0), out=out[o_days])
    # hour_fit of the filled mean hour and concentration (its own NaN handling is then a no-op)
    kappa = _kappa(F[i_conc][0])
    hour_angle = 2 * np.pi * (_FIT_HOURS_COL - F[i_mean]) / 24
    np.exp(kappa * (np.cos(hour_angle) - 1.0), out=out[o_fit])
    np.divide(100.0, np.maximum(F[i_aov], 15.0), out=out[o_inv])
    return out


class ContactFeatures:
    """The contact features of n customers as of any time, from their sends and unsubscribes.

    Same definitions as features.compute: ``sends_{1,7}d`` count sends with ``send_at`` in
    [t - w days, t); ``days_since_*contact*`` use the last send before t. Unsubscribes are kept
    for the guardrails' consent (:meth:`unsubscribed`).
    """

    def __init__(self, customer_ids: np.ndarray):
        self._ids = customer_ids
        self._index: pd.Index | None = None
        self.n = len(customer_ids)
        self._cust = np.zeros(0, np.int64)
        self._ch = np.zeros(0, np.int64)
        self._t = np.zeros(0, np.int64)
        self._unsub_at = np.full((self.n, len(CHANNELS)), np.iinfo(np.int64).max, np.int64)

    @property
    def index(self) -> pd.Index:
        """The customers' index (built when first needed: the serving engine's sends come as codes)."""
        if self._index is None:
            self._index = pd.Index(self._ids)
        return self._index

    @classmethod
    def of_sends(cls, customer_ids: np.ndarray, pos: np.ndarray, channel: np.ndarray,
                 send_at_ns: np.ndarray) -> ContactFeatures:
        """From sends already coded as :meth:`add_sends` keeps them: the customer's position in
        ``customer_ids``, the channel's index in CHANNELS and the time in int64 ns UTC, all valid
        (the serving engine has them so; a single decide skips add_sends' pandas conversions)."""
        cf = cls(customer_ids)
        cf._cust = np.asarray(pos, dtype=np.int64)
        cf._ch = np.asarray(channel, dtype=np.int64)
        cf._t = np.asarray(send_at_ns, dtype=np.int64)
        return cf

    def add_sends(self, customer_id, channel, send_at) -> None:
        """Record sends (customer ids, channel names, UTC times); unknown customers are ignored."""
        pos = self.index.get_indexer(pd.Index(np.asarray(customer_id, dtype=object)))
        ch = pd.Series(np.asarray(channel, dtype=object)).map({c: i for i, c in enumerate(CH)})
        t = pd.to_datetime(pd.Series(send_at), utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")
        keep = (pos >= 0) & ch.notna().to_numpy() & ~np.isnat(t)
        self._cust = np.concatenate([self._cust, pos[keep]])
        self._ch = np.concatenate([self._ch, ch.to_numpy()[keep].astype(np.int64)])
        self._t = np.concatenate([self._t, t[keep].astype(np.int64)])

    def add_unsubscribes(self, customer_id, channel, at) -> None:
        pos = self.index.get_indexer(pd.Index(np.asarray(customer_id, dtype=object)))
        ch = pd.Series(np.asarray(channel, dtype=object)).map({c: i for i, c in enumerate(CH)})
        t = pd.to_datetime(pd.Series(at), utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")
        keep = (pos >= 0) & ch.notna().to_numpy() & ~np.isnat(t)
        np.minimum.at(self._unsub_at, (pos[keep], ch.to_numpy()[keep].astype(np.int64)), t[keep].astype(np.int64))

    def unsubscribed(self, at) -> np.ndarray:
        """(n, 4) bool: unsubscribed from the channel before ``at``."""
        return self._unsub_at < _ns(at)

    def frame(self, at) -> pd.DataFrame:
        """The CONTACT_FEATURES of every customer as of ``at`` (n rows)."""
        return pd.DataFrame(self.arrays(at))

    def arrays(self, at) -> dict[str, np.ndarray]:
        """:meth:`frame`'s columns as arrays (``at``: a time, or int64 ns UTC)."""
        t = _ns(at)
        if self.n == 1 and len(self._t) <= _ONE_MAX_SENDS:
            return self._arrays_one(t)
        day = 86_400 * 10**9
        before = self._t < t
        c, ch, ts = self._cust[before], self._ch[before], self._t[before]
        out: dict[str, np.ndarray] = {}
        for d in (1, 7):
            w = ts >= t - d * day
            out[f"sends_{d}d"] = np.bincount(c[w], minlength=self.n).astype(np.float64)
        w7 = ts >= t - 7 * day
        for i, name in enumerate(CH):
            m = w7 & (ch == i)
            out[f"sends_7d_{name}"] = np.bincount(c[m], minlength=self.n).astype(np.float64)
        last = np.full(self.n, np.iinfo(np.int64).min, np.int64)
        np.maximum.at(last, c, ts)
        out["days_since_last_contact"] = np.where(last > np.iinfo(np.int64).min, (t - last) / day, NEVER_DAYS)
        for i, name in enumerate(CH):
            lc = np.full(self.n, np.iinfo(np.int64).min, np.int64)
            m = ch == i
            np.maximum.at(lc, c[m], ts[m])
            out[f"days_since_contact_{name}"] = np.where(lc > np.iinfo(np.int64).min, (t - lc) / day, NEVER_DAYS)
        return out

    def _arrays_one(self, t: int) -> dict[str, np.ndarray]:
        """:meth:`arrays` of one customer (a single decide) with its few sends, from
        :meth:`values_one` (the same values, tested equal): ~30 numpy calls on 1-element arrays
        cost more than counting a handful of sends in Python."""
        values = self.values_one(self._ch.tolist(), self._t.tolist(), t)
        return {name: np.array([v]) for name, v in zip(CONTACT_FEATURES, values, strict=True)}

    @staticmethod
    def values_one(channels: list[int], send_at_ns: list[int], at_ns: int) -> list[float]:
        """One customer's CONTACT_FEATURES (in that order) as of ``at_ns`` from its sends (channel
        index in CHANNELS, int64 ns UTC): :meth:`arrays`' values as Python floats. Exact: counts
        are integers; a 'days since' is numpy's int64 / int64, i.e. float(t - last) / float(day),
        with the int64 difference wrapping as numpy's does."""
        t = at_ns
        day = 86_400 * 10**9
        d1, d7 = t - day, t - 7 * day
        never = np.iinfo(np.int64).min  # maximum.at's start: a send at that instant counts as none
        nch = len(CH)
        counts = [0.0] * (2 + nch)
        last = [never] * (1 + nch)  # the last send overall, then per channel
        for ch, ts in zip(channels, send_at_ns, strict=True):
            if ts >= t:
                continue
            known = 0 <= ch < nch
            if ts >= d7:
                counts[1] += 1
                if known:
                    counts[2 + ch] += 1
                if ts >= d1:
                    counts[0] += 1
            last[0] = max(last[0], ts)
            if known:
                last[1 + ch] = max(last[1 + ch], ts)
        return [*counts, *(float(_wrap64(t - v)) / day if v > never else NEVER_DAYS for v in last)]


#: up to this many sends, one customer's contact features come from Python ints (past it, the
#: vector path's fixed cost is the smaller one)
_ONE_MAX_SENDS = 64


def _wrap64(v: int) -> int:
    """``v`` as numpy's int64 arithmetic leaves it (two's complement wrap-around)."""
    return (v + 2**63) % 2**64 - 2**63


def _ns(at) -> int:
    if isinstance(at, int | np.integer):
        return int(at)
    ts = pd.Timestamp(at)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)

"""Guardrails: which arms each customer may receive, decided BEFORE sampling.

Because the eligibility mask is fixed before the policy samples, the logged probability of the
chosen arm is the true probability of what happened. The guardrails, in the order they apply:

  holdout          customers in the holdout group (stable hash of customer_id) only get no-send
  consent          no send on a channel the customer has not opted in to (or unsubscribed from)
  reachability     no send on a channel without a valid key (no app -> no push)
  quiet_hours      a slot outside the channel's allowed local hours is moved to the next allowed
                   hour (``quiet_hours_action: move``) or the arm is removed (``remove``)
  offer_eligibility category-specific offers only for customers interested in that category
  frequency_cap:*  at most N sends per channel / overall in any sliding window, the new send included
                   (sends already scheduled after the candidate count as well)
  coupon_inventory limited offers: units are reserved in a shared ledger before sampling
  sms_budget       SMS spend per day: reserved in the same ledger before sampling

After sampling, :meth:`Guardrails.settle` releases the reservations the chosen arms did not use.
No-send is always eligible.

Speed (one request of the decision service is a batch of one): what depends only on the arm space
and the config is planned once per Guardrails (``_ArmPlan``); holdout, consent, reachability, quiet
hours and offer eligibility are computed once per profile (their flags) and gathered
(``_profile_rows``); the send-time grid of a time zone is memoised per UTC quarter hour (exact, see
``_zone_times``); frequency caps count per (channel, slot) cell for all caps at once, only for
customers with sends; budgets rank customers only when they cannot all be served; a few customers
or time zones are matched without building pandas objects. tests/policies/test_guardrail_reference.py
holds the straightforward version as the reference. A single decision (one customer) takes
``_apply_one``: the same rows, memoised by the profile's flag bytes and by (zone, quarter hour), so
that only its own caps and budgets are computed (tests/policies/test_guardrail_one.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.errors import InputError
from core.types import CATEGORIES, CHANNEL_CONSENT, CHANNELS, Channel
from policies.arms import NO_SEND_INDEX, ArmSpace
from policies.budget import BudgetLedger
from policies.config import GuardrailConfig
from policies.reward import RewardConfig

try:  # CPython's own SHA-256 (the same digest): a decision's one hash is ~2x cheaper than through OpenSSL's
    from _sha256 import sha256 as _sha256  # EVP layer on a cold cache (measured in the decide loop)
except ImportError:  # pragma: no cover (other interpreters, Python >= 3.12)
    try:
        from _sha2 import sha256 as _sha256
    except ImportError:
        _sha256 = hashlib.sha256

#: Profile column suffix of each channel (consent_<x>, reachable_<x>).
CHANNEL_SUFFIX: dict[Channel, str] = {c: CHANNEL_CONSENT[c].removeprefix("consent_") for c in CHANNELS}


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Audience:
    """The customers of one decision batch, as the guardrails see them (n customers).

    customer_id: (n,) str; timezone: (n,) IANA names; consent, reachable: (n, 4) bool in the
    order of core.types.CHANNELS (an unsubscribe revokes consent); category_interest:
    (n, len(CATEGORIES)) bool, or None when unknown (then category-specific offers are not
    eligible while ``require_category_interest`` is on).
    """

    customer_id: np.ndarray
    timezone: np.ndarray
    consent: np.ndarray
    reachable: np.ndarray
    category_interest: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.customer_id)
        checks = (("timezone", self.timezone, (n,)), ("consent", self.consent, (n, len(CHANNELS))),
                  ("reachable", self.reachable, (n, len(CHANNELS))),
                  ("category_interest", self.category_interest, (n, len(CATEGORIES))))
        for name, arr, shape in checks:
            if arr is None and name == "category_interest":
                continue
            got = arr.shape if isinstance(arr, np.ndarray) else np.shape(arr)
            if got != shape:
                raise InputError(f"The '{name}' of an Audience must have shape {shape}; got {got}")

    def __len__(self) -> int:
        return len(self.customer_id)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Audience:
        """From a frame with customer_id, timezone, consent_<ch>, reachable_<ch> (ch in sms, email,
        wechat, push) and optionally interest_<category> columns (bool)."""
        need = ["customer_id", "timezone"] + [f"{p}_{s}" for p in ("consent", "reachable")
                                                for s in CHANNEL_SUFFIX.values()]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise InputError(f"the audience lacks columns {missing}")
        cats = [f"interest_{c}" for c in CATEGORIES]
        interest = None
        if all(c in df.columns for c in cats):
            interest = df[cats].fillna(False).to_numpy(dtype=bool)
        return cls(
            customer_id=df["customer_id"].astype(str).to_numpy(dtype=object),
            timezone=df["timezone"].fillna("UTC").astype(str).to_numpy(dtype=object),
            consent=np.column_stack([df[f"consent_{CHANNEL_SUFFIX[c]}"].fillna(False).to_numpy(bool)
                                     for c in CHANNELS]),
            reachable=np.column_stack([df[f"reachable_{CHANNEL_SUFFIX[c]}"].fillna(False).to_numpy(bool)
                                       for c in CHANNELS]),
            category_interest=interest,
        )

    def take(self, idx: np.ndarray) -> Audience:
        return Audience(
            customer_id=self.customer_id[idx],
            timezone=self.timezone[idx],
            consent=self.consent[idx],
            reachable=self.reachable[idx],
            category_interest=None if self.category_interest is None else self.category_interest[idx],
        )


def holdout_mask(customer_ids: Sequence[str], share: float, salt: str) -> np.ndarray:
    """(n,) bool: the customer is in the holdout group. Stable: sha256(salt | customer_id) read as
    a number in [0, 1), below ``share``. The same customer is in the same group on every run."""
    if share <= 0:
        return np.zeros(len(customer_ids), dtype=bool)
    out = np.empty(len(customer_ids), dtype=bool)
    prefix = f"{salt}|".encode()
    for i, cid in enumerate(customer_ids):
        out[i] = _in_holdout(prefix, cid, share)
    return out


def _in_holdout(prefix: bytes, cid, share: float) -> bool:
    h = _sha256(prefix + str(cid).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < share


def _priority(customer_ids: np.ndarray, day: str) -> np.ndarray:
    """A deterministic per-day order of customers, so that scarce budget rotates fairly."""
    if len(customer_ids) <= 1:
        return np.arange(len(customer_ids))
    keys = pd.Series(customer_ids, dtype=object).astype(str) + "|" + day
    return np.argsort(pd.util.hash_pandas_object(keys, index=False).to_numpy(), kind="stable")


def send_times(
    decided_at: datetime, timezones: np.ndarray, hours: np.ndarray, shift_hours: np.ndarray | int = 0
) -> np.ndarray:
    """UTC send times (datetime64[ns]) of the next occurrence of local ``hours`` at or after
    ``decided_at``, shifted by ``shift_hours`` of local wall clock (for quiet-hour moves).

    timezones: (n,) IANA names; hours, shift_hours: (n,) int. Vectorised per distinct
    (timezone, hour, shift).
    """
    n = len(timezones)
    hours = np.broadcast_to(np.asarray(hours, dtype=np.int64), (n,))
    shift = np.broadcast_to(np.asarray(shift_hours, dtype=np.int64), (n,))
    now = pd.Timestamp(decided_at)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    out = np.empty(n, dtype="datetime64[ns]")
    frame = pd.DataFrame({"tz": timezones, "h": hours, "s": shift})
    for (tz, h, s), idx in frame.groupby(["tz", "h", "s"], sort=False).indices.items():
        out[idx] = _next_local(now, tz, int(h), int(s))
    return out


def _next_local(now: pd.Timestamp, tz: str, hour: int, shift: int) -> np.datetime64:
    """UTC time of the next local ``hour`` at or after ``now`` (UTC) in ``tz``, plus ``shift``
    hours of wall clock."""
    try:
        local_now = now.tz_convert(tz)
    except Exception:
        raise InputError(f"unknown time zone {tz!r}") from None
    wall = local_now.tz_localize(None).normalize() + pd.Timedelta(hours=hour)
    if wall < local_now.tz_localize(None):
        wall += pd.Timedelta(days=1)
    wall += pd.Timedelta(hours=shift)
    at = wall.tz_localize(tz, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC")
    return np.datetime64(at.tz_localize(None).as_unit("ns").to_datetime64())


_QUARTER_NS = 15 * 60 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZONES: dict[str, ZoneInfo | None] = {}


def quarter_stable(zone: str, end_ns: int) -> bool:
    """The zone's UTC offset is a whole number of quarter hours and the same over the UTC quarter
    hour (end - 15 min, end] (``end_ns``: ns since the epoch, a multiple of 15 minutes)."""
    zi = _ZONES.get(zone, False)
    if zi is False:
        try:
            zi = ZoneInfo(str(zone))
        except Exception:
            zi = None
        _ZONES[str(zone)] = zi
    if zi is None:
        return False
    start_us = (end_ns - _QUARTER_NS) // 1000 + 1
    first = (_EPOCH + timedelta(microseconds=start_us)).astimezone(zi).utcoffset()
    last = (_EPOCH + timedelta(microseconds=end_ns // 1000)).astimezone(zi).utcoffset()
    return first == last and first is not None and first.total_seconds() % 900 == 0


def _factorize(values: np.ndarray) -> tuple[np.ndarray, Sequence]:
    """pd.factorize of a few strings without pandas (same codes, uniques in order of appearance)."""
    if len(values) == 1 and isinstance(values[0], str):  # one decision
        return np.zeros(1, dtype=np.int64), [values[0]]
    if len(values) <= 64 and all(isinstance(v, str) for v in values):
        seen: dict[str, int] = {}
        codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int64,
                            count=len(values))
        return codes, list(seen)
    return pd.factorize(pd.Series(values, dtype=object))


@dataclass(frozen=True, eq=False)
class SendHistory:
    """Previous sends, indexed once for frequency caps (so a day's batches share the work).

    customers: (u,) unique customer ids (a pd.Index or an object array); code: (r,) row -> index
    into ``customers``; channel: (r,) index into core.types.CHANNELS; send_at: (r,) int64 ns UTC.
    """

    customers: pd.Index | np.ndarray
    code: np.ndarray
    channel: np.ndarray
    send_at: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame | None) -> SendHistory:
        """From a frame with customer_id, channel (name) and send_at (UTC); rows with an unknown
        channel are ignored."""
        if frame is None or len(frame) == 0:
            return _EMPTY_HISTORY
        missing = {"customer_id", "channel", "send_at"} - set(frame.columns)
        if missing:
            raise InputError(f"recent sends lack columns {sorted(missing)}")
        lookup = {c.value: i for i, c in enumerate(CHANNELS)}
        ch = np.fromiter((lookup.get(str(c), -1) for c in frame["channel"].to_numpy(dtype=object)),
                         dtype=np.int64, count=len(frame))
        keep = ch >= 0
        code, uniques = pd.factorize(frame["customer_id"].astype(str).to_numpy(dtype=object)[keep])
        at = frame["send_at"]
        if isinstance(at.dtype, pd.DatetimeTZDtype):
            ns = at.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)[keep]
        else:
            ns = _to_ns(at.to_numpy()[keep])
        return cls(pd.Index(uniques, dtype=object), code.astype(np.int64), ch[keep], ns)

    def __len__(self) -> int:
        return len(self.code)


_EMPTY_HISTORY = SendHistory(pd.Index([], dtype=object), np.zeros(0, np.int64), np.zeros(0, np.int64),
                             np.zeros(0, np.int64))


_ONE_US = timedelta(microseconds=1)
_DAY_NS = 86_400 * 10**9
_DAYS: dict[int, str] = {}


def _instant_ns(t: datetime) -> int:
    """ns since the epoch of an aware datetime: ``pd.Timestamp(t).value`` without building one (a
    datetime has whole microseconds)."""
    if isinstance(t, pd.Timestamp):
        return int(t.value)
    return (t - _EPOCH) // _ONE_US * 1000


def _day_iso(ns: int) -> str:
    """ISO date of the UTC day of ``ns`` (what ``pd.Timestamp(ns, tz=UTC).date().isoformat()`` says)."""
    d = ns // _DAY_NS
    got = _DAYS.get(d)
    if got is None:
        got = _DAYS[d] = (_EPOCH + timedelta(days=d)).date().isoformat()
    return got


def _to_ns(values) -> np.ndarray:
    """datetime-like (tz-aware or naive UTC) -> int64 ns since epoch."""
    s = pd.to_datetime(pd.Series(values), utc=True)
    return s.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Eligibility:
    """What the guardrails allow for n customers over the K arms.

    mask: (n, K) bool, no-send always True; send_at: (n, K) datetime64[ns] UTC (no-send: the
    decision time); send_hour: (n, K) int8 local hour the send goes out at (-1 for no-send);
    holdout: (n,) bool; acted: (n, G) bool, which guardrail (``names``) removed or moved at least
    one arm for that customer.
    """

    decided_at: datetime
    mask: np.ndarray
    send_at: np.ndarray
    send_hour: np.ndarray
    holdout: np.ndarray
    acted: np.ndarray
    names: tuple[str, ...]
    reservations: list[_Reservation] = field(default_factory=list)
    settled: bool = False

    def reasons(self, i: int) -> list[str]:
        """Names of the guardrails that acted on customer ``i``."""
        return [n for n, a in zip(self.names, self.acted[i].tolist(), strict=True) if a]

    def reasons_all(self) -> list[list[str]]:
        if len(self.acted) == 1:  # one decision: no object array for one row
            return [self.reasons(0)]
        names = np.asarray(self.names, dtype=object)
        return [list(names[row]) for row in self.acted]

    def chosen_send_at(self, arms: np.ndarray) -> np.ndarray:
        """(n,) datetime64[ns] UTC send time of each customer's chosen arm."""
        return self.send_at[np.arange(len(arms)), arms]

    def chosen_send_hour(self, arms: np.ndarray) -> np.ndarray:
        return self.send_hour[np.arange(len(arms)), arms]


@dataclass(eq=False)
class _Reservation:
    key: str
    unit: float
    granted: np.ndarray  # (n,) bool: customers holding one reserved unit
    arms: np.ndarray  # (K,) bool: arms that consume it


# ----------------------------------------------------------------------------------------------
# the guardrails
# ----------------------------------------------------------------------------------------------
class Guardrails:
    """Applies a :class:`GuardrailConfig` to decision batches.

    ``ledger`` holds budgets (coupon inventory, SMS spend) and may be shared by threads and
    processes (a file-backed :class:`BudgetLedger`); by default a private in-memory one.
    """

    def __init__(
        self,
        arms: ArmSpace,
        config: GuardrailConfig | None = None,
        catalog: Catalog | None = None,
        reward_config: RewardConfig | None = None,
        ledger: BudgetLedger | None = None,
    ):
        self.arms = arms
        self.config = config or GuardrailConfig()
        self.catalog = catalog or arms.catalog
        self.reward_config = reward_config or RewardConfig()
        self.ledger = ledger if ledger is not None else BudgetLedger(":memory:")
        self.names = self._names()
        self._hour_plan = self._plan_hours()
        self._holdout_cache: dict[str, bool] = {}
        self._holdout_prefix = f"{self.config.holdout_salt}|".encode()
        self._times_cache: dict[tuple[str, int], np.ndarray] = {}  # (zone, UTC quarter end) -> (C, S)
        self._exact_cache: dict[tuple[int, str], np.ndarray] = {}  # (instant, zone) -> (C, S)
        self._profile_cache: dict[int, tuple[np.ndarray, ...]] = {}  # profile key -> mask, acted, cells rows
        # one decision (_apply_one): flag bytes -> (mask (1, K), acted (1, G), cells (U + 1,)) rows;
        # (zone, UTC quarter end) -> (send_at (1, K) of the send arms, the caps' windows lo, hi)
        self._one_profiles: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._one_rows: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._one_filled = False  # _one_profiles holds every profile (_fill_one_profiles)
        self._plan = _ArmPlan.build(self)

    # -- static plans ----------------------------------------------------------------------------
    def _names(self) -> tuple[str, ...]:
        caps = tuple(f"{c.name}:{c.window_hours:g}h" for c in self.config.frequency_caps)
        return ("holdout", "consent", "reachability", "quiet_hours", "offer_eligibility",
                *caps, "coupon_inventory", "sms_budget")

    def _plan_hours(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (arm channel level, slot level): the local hour the send goes out at, the shift in
        hours from the slot, and whether the arm is removed by quiet hours."""
        a = self.arms
        hour = np.zeros((len(a.channels), len(a.slots)), dtype=np.int64)
        shift = np.zeros_like(hour)
        removed = np.zeros(hour.shape, dtype=bool)
        for ci, ch in enumerate(a.channels):
            allowed = set(self.config.hours_for(Channel(ch)))
            for si, h in enumerate(a.slots):
                if h in allowed:
                    hour[ci, si] = h
                elif self.config.quiet_hours_action == "remove" or not allowed:
                    removed[ci, si] = True
                    hour[ci, si] = h
                else:
                    k = next(k for k in range(1, 25) if (h + k) % 24 in allowed)
                    hour[ci, si], shift[ci, si] = (h + k) % 24, k
        return hour, shift, removed

    def _zone_times(self, now_utc: pd.Timestamp, zone: str) -> np.ndarray:
        """(C, S) UTC send times of every (channel, slot) for customers in ``zone``, memoised per
        (zone, UTC quarter hour).

        Exact: the next local ``hour`` at or after ``now`` depends on ``now`` only through the
        local date and which whole local hours have passed. In a zone whose UTC offset is a
        multiple of 15 minutes and constant over the quarter hour (q - 15 min, q], whole local
        hours fall on UTC quarter marks, so every ``now`` in that interval has the same grid. In
        other cases (historic offsets, a transition inside the quarter) the grid is memoised per
        exact instant only.
        """
        end = -(-int(now_utc.value) // _QUARTER_NS) * _QUARTER_NS
        key = (zone, end)
        got = self._times_cache.get(key)
        if got is not None:
            return got
        if quarter_stable(zone, end):
            got = self._zone_times_exact(now_utc, zone)
            if len(self._times_cache) > 4096:
                self._times_cache.clear()
            self._times_cache[key] = got
            return got
        exact_key = (int(now_utc.value), zone)
        got = self._exact_cache.get(exact_key)
        if got is None:
            got = self._zone_times_exact(now_utc, zone)
            if len(self._exact_cache) > 4096:
                self._exact_cache.clear()
            self._exact_cache[exact_key] = got
        return got

    def _zone_times_exact(self, now_utc: pd.Timestamp, zone: str) -> np.ndarray:
        """(C, S) UTC send times of every (channel, slot) for customers in ``zone``, computed."""
        a, (_, shift_plan, _) = self.arms, self._hour_plan
        return np.array([[_next_local(now_utc, zone, int(a.slots[si]), int(shift_plan[ci, si]))
                          for si in range(len(a.slots))] for ci in range(len(a.channels))],
                        dtype="datetime64[ns]")

    def _holdout(self, customer_ids: np.ndarray) -> np.ndarray:
        """Holdout membership, memoised per customer (the hash never changes for a config)."""
        cache = self._holdout_cache
        got = list(map(cache.get, customer_ids))
        if None in got:
            missing = list(dict.fromkeys(c for c, v in zip(customer_ids, got, strict=True) if v is None))
            cache.update(zip(missing, holdout_mask(missing, self.config.holdout_share, self.config.holdout_salt),
                             strict=True))
            got = list(map(cache.__getitem__, customer_ids))
        return np.array(got, dtype=bool).reshape(len(customer_ids))

    @property
    def hour_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (channel level, slot level) of the arm space, all (C, S): the local hour a send
        actually goes out at, its shift from the slot in hours (quiet-hour moves), and whether
        quiet hours remove the arm."""
        return self._hour_plan

    def inventory_limit(self, offer_id: str) -> int | None:
        if offer_id in self.config.offer_inventory:
            return self.config.offer_inventory[offer_id]
        return self.catalog[offer_id].inventory

    @staticmethod
    def sms_budget_key(decided_at: datetime) -> str:
        """Ledger key of the SMS spend of the UTC day of ``decided_at`` (tz-aware)."""
        return f"sms_spend:{pd.Timestamp(decided_at).tz_convert('UTC').date().isoformat()}"

    @staticmethod
    def coupon_key(offer_id: str) -> str:
        return f"coupons:{offer_id}"

    # -- apply -----------------------------------------------------------------------------------
    def apply(
        self,
        audience: Audience,
        decided_at: datetime,
        recent_sends: pd.DataFrame | SendHistory | None = None,
        reserve: bool = True,
    ) -> Eligibility:
        """Eligibility of every arm for every customer of ``audience`` at ``decided_at`` (UTC).

        recent_sends: previous sends, columns customer_id, channel (name), send_at (UTC), or a
        :class:`SendHistory` built from them once for several batches; only those inside the
        longest cap window matter. With ``reserve`` (default) budget units are
        reserved for the customers keeping a budgeted arm; call :meth:`settle` after sampling.
        """
        if decided_at.tzinfo is None:
            raise InputError("decided_at must carry a time zone (UTC)")
        if len(audience.customer_id) == 1 and self._one_row:
            one = self._apply_one(audience, decided_at, recent_sends, reserve)
            if one is not None:
                return one
        a, plan = self.arms, self._plan
        n, K = len(audience), a.n_arms
        holdout = self._holdout(audience.customer_id)
        # holdout, consent, reachability, quiet hours, offer eligibility: planned per profile
        mask, acted, cells, profile = self._profile_rows(audience, holdout)
        # send times of every (customer, arm): one row per time zone, then one gather
        C, S = len(a.channels), len(a.slots)
        tz_code, zones = _factorize(audience.timezone)
        now_utc = pd.Timestamp(decided_at).tz_convert("UTC")
        grids = np.empty((len(zones), C, S), dtype="datetime64[ns]")
        for zi, zone in enumerate(zones):
            grids[zi] = self._zone_times(now_utc, zone)
        per_zone = np.empty((len(zones), K), dtype="datetime64[ns]")
        per_zone[:, plan.no_send_idx] = np.datetime64(now_utc.value, "ns")
        per_zone[:, plan.send_idx] = grids.reshape(len(zones), C * S)[:, plan.cell_send]
        send_at = per_zone if n == 1 else per_zone[tz_code]
        # frequency caps over sliding windows
        if plan.caps:
            self._caps(audience, recent_sends, grids.reshape(len(zones), C * S).view(np.int64), tz_code,
                       mask, acted, cells, profile)
        # budgets: coupon inventory, then SMS spend
        reservations = self._budgets(mask, acted, audience.customer_id, now_utc.date().isoformat(), reserve)
        mask[:, NO_SEND_INDEX] = True
        send_hour = plan.arm_hour8[None, :].repeat(n, axis=0)
        return Eligibility(
            decided_at=decided_at, mask=mask, send_at=send_at, send_hour=send_hour,
            holdout=holdout, acted=acted, names=self.names, reservations=reservations,
        )

    #: single decisions take ``_apply_one`` (tests switch it off to compare it with the vector path)
    _one_row = True

    def _apply_one(self, audience: Audience, decided_at: datetime, recent_sends, reserve: bool) -> Eligibility | None:
        """``apply`` for one customer (a single decision of the service), or None for inputs it
        leaves to the vector path (flags that are not bool arrays, a time zone that is not a str).

        The same result, with a few dict look-ups instead of ~100 numpy calls on 1-row arrays: the
        profile's rows (what the vector path computes for these flags) by the flag bytes, every
        profile computed at the first decision (``_fill_one_profiles``),
        the send times of the zone memoised per UTC quarter hour next to ``_zone_times``' grid (and
        only when that grid is, so a grid memoised per instant stays per instant), the caps counted
        for this customer's sends alone, the budgets as in the vector path.
        tests/policies/test_guardrail_one.py: equal to the vector path on random inputs."""
        consent, reachable, interest = audience.consent, audience.reachable, audience.category_interest
        zone = audience.timezone[0]
        if consent.dtype != np.bool_ or reachable.dtype != np.bool_ or type(zone) is not str \
                or (interest is not None and interest.dtype != np.bool_):
            return None
        plan, K = self._plan, self.arms.n_arms
        cid = audience.customer_id[0]
        h = self._holdout_cache.get(cid)
        if h is None:  # a customer's first decision: hashed once (as _holdout does)
            share = self.config.holdout_share
            h = self._holdout_cache[cid] = share > 0 and _in_holdout(self._holdout_prefix, cid, share)
        holdout = np.array([h], dtype=bool)
        # the profile: holdout, consent, reachability and the interest the offers need, as bytes
        key = (b"\x01" if h else b"\x00") + consent.tobytes() + reachable.tobytes()
        if plan.uses_interest and interest is not None and len(plan.interest_cols):
            if len(plan.interest_cols) == 1:  # the default catalog: one category
                key += b"\x01" if interest[0, plan.interest_col0] else b"\x00"
            else:
                key += interest[0, plan.interest_cols].tobytes()
        prof = self._one_profiles.get(key)
        if prof is None and not self._one_filled:
            self._fill_one_profiles()
            prof = self._one_profiles.get(key)
        if prof is None:  # a profile the table cannot hold (too many interest bits, odd bytes)
            m_mask, m_acted, m_cells, _ = self._profile_rows(audience, holdout)
            prof = (m_mask[:1].copy(), m_acted[:1].copy(), np.append(m_cells[0], False))
            if len(self._one_profiles) >= 1 << 16:
                self._one_profiles.clear()
            self._one_profiles[key] = prof
        mask, acted = prof[0].copy(), prof[1].copy()  # (1, K), (1, G)
        # send times: the zone's row of the quarter hour, then no-send at the decision time itself
        now_ns = _instant_ns(decided_at)
        end = -(-now_ns // _QUARTER_NS) * _QUARTER_NS
        rows = self._one_rows.get((zone, end))
        if rows is None:
            grid = self._zone_times(pd.Timestamp(decided_at).tz_convert("UTC"), zone)
            flat = grid.reshape(-1)
            send_row = np.zeros((1, K), dtype="datetime64[ns]")
            send_row[0, plan.send_idx] = flat[plan.cell_send]
            # the caps' windows around the cells' candidates, (C, P * (U + 1)) per send channel: a send
            # at t of channel c is inside where lo[c] < t < hi[c] (|g - t| < w; w = 0: never); the
            # last cell is no-send's (no cap applies to it)
            g = np.append(flat.view(np.int64)[plan.cells], 0)
            rows = (send_row, (g - plan.cap_window_ch).reshape(len(CHANNELS), -1),
                    (g + plan.cap_window_ch).reshape(len(CHANNELS), -1))
            if self._times_cache.get((zone, end)) is grid:  # memoised per quarter: so is the row
                if len(self._one_rows) > 4096:
                    self._one_rows.clear()
                self._one_rows[(zone, end)] = rows
        send_at = rows[0].copy()
        ns = send_at.view(np.int64)[0]
        for j in plan.no_send_list:
            ns[j] = now_ns
        if plan.caps:
            self._caps_one(cid, recent_sends, rows[1], rows[2], mask, acted, prof[2])
        reservations: list[_Reservation] = []
        if plan.inventory or plan.sms is not None:
            reservations = self._budgets(mask, acted, audience.customer_id, _day_iso(now_ns), reserve)
        mask[0, NO_SEND_INDEX] = True
        return Eligibility(
            decided_at=decided_at, mask=mask, send_at=send_at, send_hour=plan.arm_hour8.reshape(1, K).copy(),
            holdout=holdout, acted=acted, names=self.names, reservations=reservations,
        )

    def _fill_one_profiles(self) -> None:
        """Every profile's rows at once, keyed by its flag bytes as ``_apply_one`` spells them (a
        single decision service meets every profile soon; one vector pass over the 2^F keys costs
        about what a few misses did). Only when there are at most 4096 profiles; keys without
        interest bytes (interest unknown) are those with no interest bit."""
        self._one_filled = True
        plan = self._plan
        F = len(plan.flag_weights)
        if F > 12:
            return
        keys = np.arange(1 << F, dtype=np.int64)
        m_mask, m_acted5 = self._profile_table(keys)
        m_cells = np.zeros((len(keys), len(plan.cells) + 1), dtype=bool)  # (no-send's cell: False)
        m_cells[:, :-1] = (m_mask[:, plan.send_idx].astype(np.float32) @ plan.cell_onehot) > 0
        m_acted = np.zeros((len(keys), len(self.names)), dtype=bool)
        m_acted[:, :_STATIC] = m_acted5
        for arr in (m_mask, m_acted, m_cells):
            arr.flags.writeable = False  # the rows are shared: read only
        bits = ((keys[:, None] >> np.arange(F)) & 1).astype(np.uint8)
        base = 1 + 2 * len(CHANNELS)  # holdout, consent, reachability: the bytes of every key
        table = dict(self._one_profiles)
        for i, k in enumerate(keys.tolist()):
            row = (m_mask[i:i + 1], m_acted[i:i + 1], m_cells[i])
            b = bits[i].tobytes()
            table[b] = row
            if base < F and not k >> base:
                table[b[:base]] = row
        self._one_profiles = table

    def _caps_one(self, cid: str, recent_sends, lo: np.ndarray, hi: np.ndarray, mask: np.ndarray,
                  acted: np.ndarray, cells: np.ndarray) -> None:
        """``_caps`` for one customer: lo, hi (C, P * (U + 1)) the windows of the caps around the
        cells' candidates per send channel, cells (U + 1,) whether a cell has an allowed arm. Every
        count is this customer's sends inside the window (1-D comparisons with a scalar: numpy's
        cheapest loops, where broadcast (R, P, U) ones cost more than the few sends' arithmetic)."""
        plan = self._plan
        hist = recent_sends if isinstance(recent_sends, SendHistory) else SendHistory.from_frame(recent_sends)
        customers = hist.customers
        if not len(hist.code):
            rch, rt = hist.channel, hist.send_at
        elif len(customers) == 1:  # the decision service: the history holds this customer's sends or none
            mine = customers[0] == cid
            rch, rt = (hist.channel, hist.send_at) if mine else (hist.channel[:0], hist.send_at[:0])
        else:
            keep = _batch_rows(np.array([cid], dtype=object), hist) >= 0
            rch, rt = hist.channel[keep], hist.send_at[keep]
        # (P * (U + 1),) the cap is full at the cell (and applies to it; never at the last cell, no-send's)
        if not len(rt):
            if plan.caps_min_sends >= 1:
                return  # no send: no cap can be full
            full = plan.cap_need0
        elif len(rt) == 1:  # the usual one send: a count of 0 or 1
            c, t = int(rch[0]), int(rt[0])
            full = lo[c] < t
            full &= hi[c] > t
            full &= plan.cap_need_le1
            full |= plan.cap_need0
        elif len(rt) <= 8:  # a few sends: counted one by one
            counts = np.zeros(len(plan.cap_need_flat), dtype=np.int64)
            for c, t in zip(rch.tolist(), rt.tolist(), strict=True):
                inside = lo[c] < t
                inside &= hi[c] > t
                counts += inside
            full = counts >= plan.cap_need_flat
        else:
            t = rt[:, None]
            full = np.add.reduce((lo[rch] < t) & (hi[rch] > t), axis=0, dtype=np.int64) >= plan.cap_need_flat
        full = full.reshape(plan.cap_need1.shape)
        blocked = np.logical_or.reduce(full, axis=0)  # (U + 1,)
        if not np.count_nonzero(blocked):
            return
        # a cap acted where it is the first full cap of a cell that still had an allowed arm
        for p in set(full.argmax(axis=0)[cells & blocked].tolist()):
            acted[0, plan.cap_cols_list[p]] = True
        mask[0][blocked[plan.cell_of_arm]] = False

    def _profile_rows(self, audience: Audience, holdout: np.ndarray) -> tuple[np.ndarray, ...]:
        """(n, K) mask and (n, G) acted after holdout, consent, reachability, quiet hours and offer
        eligibility; and (u, U) whether a cell of the send arms still has an allowed arm per distinct
        profile, with (n,) each customer's profile.

        These guardrails depend on a customer only through a few flags (holdout, consent and
        reachability per channel, interest per category when an offer needs it), so the rows of each
        combination (profile) are computed once (``_profile_table``) and memoised per Guardrails
        (its config and arms are fixed); a batch is then one gather, whatever its size."""
        plan, n = self._plan, len(audience)
        parts = [holdout[:, None], audience.consent, audience.reachable]
        if plan.uses_interest and audience.category_interest is not None and len(plan.interest_cols):
            # unknown interest: the same as none (no bits)
            parts.append(audience.category_interest[:, plan.interest_cols])
        flags = np.concatenate(parts, axis=1)
        keys = flags @ plan.flag_weights[: flags.shape[1]]
        if n == 1:
            uniq, inv = keys.tolist(), None
        else:
            u, inv = np.unique(keys, return_inverse=True)
            uniq = u.tolist()
        cache = self._profile_cache
        got = {k: cache.get(k) for k in uniq}
        missing = [k for k, v in got.items() if v is None]
        if missing:
            m_mask, m_acted = self._profile_table(np.asarray(missing, dtype=np.int64))
            # and per cell of the send arms: whether one of its arms is still allowed (for the caps)
            m_cells = (m_mask[:, plan.send_idx].astype(np.float32) @ plan.cell_onehot) > 0
            new = {k: (m_mask[i], m_acted[i], m_cells[i]) for i, k in enumerate(missing)}
            got.update(new)
            if len(cache) + len(new) > 1 << 16:
                cache.clear()
            cache.update(new)
        table = np.array([got[k][0] for k in uniq], dtype=bool).reshape(len(uniq), self.arms.n_arms)
        cells = np.array([got[k][2] for k in uniq], dtype=bool).reshape(len(uniq), len(plan.cells))
        acted = np.zeros((n, len(self.names)), dtype=bool)
        if n == 1:
            acted[0, :_STATIC] = got[uniq[0]][1]
            return table, acted, cells, np.zeros(1, dtype=np.intp)
        acted[:, :_STATIC] = np.array([got[k][1] for k in uniq], dtype=bool).reshape(len(uniq), _STATIC)[inv]
        return table[inv], acted, cells, inv

    def _profile_table(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, K) mask and (m, 5) acted of holdout, consent, reachability, quiet hours and offer
        eligibility for m profile keys (bit 0 holdout, 1-4 consent, 5-8 reachability per channel,
        then interest per category), in the order the guardrails apply."""
        a, cfg, plan = self.arms, self.config, self._plan
        m, K = len(keys), a.n_arms
        bits = ((keys[:, None] >> np.arange(len(plan.flag_weights))) & 1).astype(bool)
        holdout, consent, reachable, interest = bits[:, 0], bits[:, 1:5], bits[:, 5:9], bits[:, 9:]
        send = plan.send
        mask = np.ones((m, K), dtype=bool)
        acted = np.zeros((m, _STATIC), dtype=bool)

        def remove(j: int, blocked: np.ndarray) -> None:
            """blocked: (m, K) bool, never on no-send."""
            acted[:, j] |= (mask & blocked).any(axis=1)
            mask[blocked] = False

        remove(0, holdout[:, None] & send[None, :])
        # consent and reachability: (m, 4) -> (m, K)
        if cfg.require_consent:
            remove(1, ~consent[:, plan.safe_ch] & send[None, :])
        if cfg.require_reachable:
            remove(2, ~reachable[:, plan.safe_ch] & send[None, :])
        # quiet hours: same plan for every customer (local time)
        remove(3, np.broadcast_to(plan.arm_removed, (m, K)))
        acted[:, 3] |= (mask & plan.moved[None, :]).any(axis=1)
        # offer eligibility (no interest bits: interest unknown, so no category-specific offer)
        if cfg.require_category_interest and plan.cat_offers:
            blocked = np.zeros((m, K), dtype=bool)
            for arms_o, cat in plan.cat_offers:
                if not plan.uses_interest or cat not in CATEGORIES:
                    ok = np.zeros(m, dtype=bool)
                else:
                    ok = interest[:, int(np.flatnonzero(plan.interest_cols == CATEGORIES.index(cat))[0])]
                blocked |= (~ok)[:, None] & arms_o[None, :]
            remove(4, blocked)
        return mask, acted

    def _caps(self, audience, recent_sends, grid_ns: np.ndarray, tz_code: np.ndarray, mask: np.ndarray,
              acted: np.ndarray, cells: np.ndarray, profile: np.ndarray) -> None:
        """Frequency caps, in their order. grid_ns: (Z, C*S) int64 candidate send times per time
        zone; tz_code: (n,) zone of each customer; cells, profile: which cells of the send arms each
        customer has an allowed arm in (as ``mask`` says: the caps are the first guardrail after the
        profile's), per profile and each customer's profile.

        A send at t shares a sliding window of length w with a candidate at s when |t - s| < w
        (sends already scheduled later than s count too: the window ending at them would contain
        the candidate); a cap is full at s when those sends reach its maximum. Every send arm of a
        (channel, slot) cell has the same candidate time, so the counts of all caps are computed
        at once per cell, only for customers with a send (the others count zero: only a cap of
        max_sends 0 can act on them). The caps apply in order, each to what the ones before left:
        a cap removes the cells it is the first full cap of, and acted where such a cell still had
        an allowed arm."""
        plan, n = self._plan, len(audience)
        hist = recent_sends if isinstance(recent_sends, SendHistory) else SendHistory.from_frame(recent_sends)
        if len(hist) == 0 and plan.caps_min_sends >= 1:
            return  # no send in the history: no cap can be full
        ci = _batch_rows(audience.customer_id, hist)
        keep = ci >= 0
        ci, rch, rt = ci[keep], hist.channel[keep], hist.send_at[keep]
        if (not len(ci) and plan.caps_min_sends >= 1) or not n:
            return  # none of the history's sends is by a customer of this batch
        grid_ns = grid_ns[:, plan.cells]  # (Z, U) the cells of the send arms
        if len(ci) > 64:  # a long history: first drop the sends no window of any candidate reaches
            reach = plan.caps_max_window
            near = (rt > int(grid_ns.min()) - reach) & (rt < int(grid_ns.max()) + reach)
            ci, rch, rt = ci[near], rch[near], rt[near]
        if plan.caps_min_sends >= 1:
            if not len(ci):
                return
            has = np.zeros(n, dtype=bool)
            has[ci] = True
        else:
            has = np.ones(n, dtype=bool)
        if n > 64:  # in an audience, only customers with an allowed send arm left can lose one
            has &= cells.any(axis=1)[profile]
            theirs = has[ci]
            if not theirs.all():
                ci, rch, rt = ci[theirs], rch[theirs], rt[theirs]
        rows = np.flatnonzero(has)
        P, r, U = len(plan.caps), len(rows), grid_ns.shape[1]
        if not r:
            return
        if not len(ci):
            counts = np.zeros((r, P, U), dtype=np.uint8)
        else:
            dist = np.abs(grid_ns[tz_code[ci]] - rt[:, None])  # (R, U)
            sel = (dist[:, None, :] < plan.cap_window3) & plan.cap_channel_ok[rch][:, :, None]  # (R, P, U)
            if r == 1:  # one customer: every send is theirs
                counts = np.zeros((r, P, U), dtype=np.uint8 if len(ci) < 256 else np.int64)
                counts[0] = sel.sum(axis=0)
            else:
                # a customer's k-th sends, for k = 0, 1, ...: one scatter per rank, no customer twice in it
                loc = (np.cumsum(has) - 1)[ci]
                order = np.argsort(loc, kind="stable")
                loc = loc[order]
                start = np.flatnonzero(np.concatenate(([True], loc[1:] != loc[:-1])))
                rank = np.arange(len(loc)) - np.repeat(start, np.diff(np.append(start, len(loc))))
                by_rank = np.argsort(rank, kind="stable")
                bounds = np.cumsum(np.bincount(rank))
                # a count never exceeds the customer's number of sends: bytes while that is below 256
                counts = np.zeros((r, P, U), dtype=np.uint8 if len(bounds) < 256 else np.int64)
                for lo, hi in zip(np.r_[0, bounds[:-1]].tolist(), bounds.tolist(), strict=True):
                    k = by_rank[lo:hi]
                    counts[loc[k]] += sel[order[k]]
        full = counts >= plan.cap_max3
        full &= plan.cap_cell3  # (r, P, U): the cap is full at that cell and applies to it
        blocked = np.zeros((r, U + 1), dtype=bool)  # (r, U + 1): some cap removes the cell
        np.any(full, axis=1, out=blocked[:, :U])
        live = blocked.any(axis=1)
        if not live.all():
            rows, full, blocked = rows[live], full[live], blocked[live]
            if not len(rows):
                return
        allowed = cells[profile[rows]]  # (r, U) cells with an allowed arm
        first = np.argmax(full, axis=1)  # (r, U) the first cap full at the cell
        hits = ((first == plan.cap_index3) & (allowed & blocked[:, :U])).any(axis=2)  # (P, r)
        if plan.cap_cols_unique:
            acted[rows[:, None], plan.cap_cols] |= hits.T
        else:
            for p, j in enumerate(plan.cap_cols):
                acted[rows, j] |= hits[p]
        mask[rows] &= ~blocked[:, plan.cell_of_arm]  # (no-send: the always False last column)

    def _budgets(self, mask, acted, customer_ids, day: str, reserve: bool) -> list[_Reservation]:
        """The budgets of ``day`` (UTC date, ISO): coupon inventory, then SMS spend, each through
        :meth:`_reserve`; the reservations made (none unless ``reserve``)."""
        plan = self._plan
        reservations: list[_Reservation] = []
        for o, limit, arms_o, idx_o in plan.inventory:
            res = self._reserve(self.coupon_key(o), float(limit), 1.0, arms_o, idx_o, mask, acted,
                                plan.col["coupon_inventory"], customer_ids, day, reserve)
            if reserve:
                reservations.append(res)
        if plan.sms is not None:
            arms_sms, idx_sms, unit = plan.sms
            res = self._reserve(f"sms_spend:{day}", float(self.config.sms_daily_budget), unit, arms_sms, idx_sms,
                                mask, acted, plan.col["sms_budget"], customer_ids, day, reserve)
            if reserve:
                reservations.append(res)
        return reservations

    def _reserve(self, key, limit, unit, arms_b, idx_b, mask, acted, col, customer_ids, day,
                 reserve) -> _Reservation:
        """Reserve one unit per customer still allowed an arm of the budget (``idx_b``), in the
        day's priority order when the budget cannot cover them all; the others lose those arms."""
        n = mask.shape[0]
        if n == 1:  # one decision: 1-D operations of one shape (numpy's cheapest)
            w = bool(np.logical_or.reduce(mask[0] & arms_b))
            wants, count = np.array([w]), int(w)
        else:
            wants = np.logical_or.reduce(mask[:, idx_b], axis=1)  # (the ufunc: no Python wrapper per call)
            count = int(np.count_nonzero(wants))
        if reserve:
            k = self.ledger.reserve(key, limit, unit, count)
        else:
            k = min(count, int((self.ledger.remaining(key, limit) + 1e-9) // unit)) if unit > 0 else count
        if k >= count:  # everyone who wants one gets one: the order does not matter
            granted = wants
        else:
            granted = np.zeros(n, dtype=bool)
            if k > 0:
                # the first k wanting customers of the day's priority order (the relative order of a
                # subset in a stable sort is the stable sort of the subset)
                who = np.flatnonzero(wants)
                granted[who[_priority(customer_ids[who], day)[:k]]] = True
            denied = np.flatnonzero(wants & ~granted)
            acted[denied, col] = True
            mask[np.ix_(denied, idx_b)] = False
        return _Reservation(key=key, unit=unit, granted=granted, arms=arms_b)

    def settle(self, eligibility: Eligibility, chosen: np.ndarray) -> dict[str, float]:
        """Release the budget units reserved for customers whose chosen arm does not use them.
        Returns what stays spent per budget key. Call once per :meth:`apply` with reservations."""
        if eligibility.settled:
            raise InputError("this eligibility was already settled")
        chosen = np.asarray(chosen, dtype=np.int64)
        spent: dict[str, float] = {}
        if len(chosen) == 1 and chosen.ndim == 1:  # one decision: the same sums, on Python bools
            arm = int(chosen[0])
            for res in eligibility.reservations:
                granted = bool(res.granted[0])
                used = granted and bool(res.arms[arm])
                if granted and not used:
                    self.ledger.release(res.key, 1 * res.unit)
                spent[res.key] = float((1 if used else 0) * res.unit)
            eligibility.settled = True
            return spent
        for res in eligibility.reservations:
            used = res.granted & res.arms[chosen]
            unused = int(res.granted.sum() - used.sum())
            if unused:
                self.ledger.release(res.key, unused * res.unit)
            spent[res.key] = float(used.sum() * res.unit)
        eligibility.settled = True
        return spent


def _batch_rows(customer_id: np.ndarray, hist: SendHistory) -> np.ndarray:
    """(r,) row of this batch of each send of ``hist`` (-1: not a customer of the batch)."""
    if not len(hist):
        return np.zeros(0, dtype=np.int64)
    n = len(customer_id)
    if n == len(hist.customers) and n > 64 \
            and np.array_equal(np.asarray(hist.customers, dtype=object), customer_id):
        return hist.code  # the history was indexed by this batch's customers (the decision service)
    if n <= 64 and len(hist.customers) <= 64:
        rows = {c: i for i, c in enumerate(customer_id)}
        if len(rows) == n:  # unique ids (pandas' get_indexer would refuse duplicates)
            pos = np.fromiter((rows.get(c, -1) for c in hist.customers), dtype=np.int64,
                              count=len(hist.customers))
            return pos[hist.code]
    pos = pd.Index(customer_id).get_indexer(hist.customers)  # unique sender -> row of this batch
    return pos[hist.code]


_STATIC = 5  # holdout, consent, reachability, quiet_hours, offer_eligibility: the first guardrail names


@dataclass(frozen=True, eq=False)
class _ArmPlan:
    """What apply needs of the arm space and the config, computed once per Guardrails."""

    col: dict[str, int]
    send: np.ndarray  # (K,) bool
    send_idx: np.ndarray  # (K_send,) the send arms; no_send_idx the others
    no_send_idx: np.ndarray
    no_send_list: list[int]
    cl_send: np.ndarray  # channel / slot level of the send arms
    sl_send: np.ndarray
    cell_send: np.ndarray  # (K_send,) their cell of a flattened (C, S) grid
    safe_ch: np.ndarray  # (K,) index into CHANNELS (0 for no-send)
    arm_hour8: np.ndarray  # (K,) int8 local hour a send goes out at, -1 for no-send
    arm_removed: np.ndarray  # (K,) bool removed by quiet hours
    moved: np.ndarray  # (K,) bool moved by quiet hours
    cat_offers: list[tuple[np.ndarray, str]]  # (arms of the offer, its category)
    uses_interest: bool  # offer eligibility reads the category interest
    interest_cols: np.ndarray  # the categories (index into CATEGORIES) some offer needs interest in
    interest_col0: int  # the first of them (0 when none)
    flag_weights: np.ndarray  # (F,) int64 powers of two: a customer's profile flags -> its key
    inventory: list[tuple[str, int, np.ndarray, np.ndarray]]  # (offer, limit, its arms, their indices)
    sms: tuple[np.ndarray, np.ndarray, float] | None  # (SMS arms, their indices, unit cost) if budgeted
    caps: list[tuple[str, int, int | None, np.ndarray, int]]  # (name, window ns, channel, arms, max)
    caps_min_sends: int
    caps_max_window: int  # ns
    cap_channel_ok: np.ndarray  # (len(CHANNELS), P) bool: the cap counts sends of that channel
    cells: np.ndarray  # (U,) the distinct (channel, slot) cells of the send arms, flattened (C, S)
    cell_of_send: np.ndarray  # (K_send,) each send arm's position in ``cells``
    cell_onehot: np.ndarray  # (K_send, U) float32: 1 where the send arm is of the cell
    cell_of_arm: np.ndarray  # (K,) each arm's position in ``cells``, U for no-send
    cap_window3: np.ndarray  # (1, P, 1) window (ns); cap_max3 (1, P, 1); cap_index3 (P, 1, 1)
    cap_max3: np.ndarray
    cap_index3: np.ndarray
    cap_cell3: np.ndarray  # (1, P, U) bool: the cap applies to the send arms of that cell
    cap_cols: np.ndarray  # (P,) column of acted
    cap_cols_unique: bool
    cap_cols_list: list[int]  # cap_cols as ints
    cap_window_ch: np.ndarray  # (len(CHANNELS), P, 1) window (ns) of the caps counting the channel, else 0
    cap_need1: np.ndarray  # (P, U + 1) max sends of the cap at the cell, 2^62 where it does not apply
    # (the last cell: no-send's, no cap applies to it)
    cap_need_flat: np.ndarray  # cap_need1 flattened; cap_need0, cap_need_le1: of it <= 0, <= 1
    cap_need0: np.ndarray
    cap_need_le1: np.ndarray

    @classmethod
    def build(cls, g: Guardrails) -> _ArmPlan:
        a, cfg = g.arms, g.config
        send = a.is_send
        cl, sl = a.channel_level.astype(np.int64), a.slot_level.astype(np.int64)
        hour_plan, shift_plan, removed_plan = g._hour_plan
        arm_hour = np.where(send, hour_plan[np.maximum(cl, 0), np.maximum(sl, 0)], -1)
        arm_shift = np.where(send, shift_plan[np.maximum(cl, 0), np.maximum(sl, 0)], 0)
        cat_offers = [(a.arms_where(offer=o), g.catalog[o].category) for o in a.offers if g.catalog[o].category]
        uses_interest = bool(cfg.require_category_interest and cat_offers)
        # only these categories' interest changes a decision: the profile key holds only their bits
        # (the default catalog: one category of six, so 2^10 profiles instead of 2^15)
        interest_cols = np.array(sorted({CATEGORIES.index(c) for _, c in cat_offers if c in CATEGORIES}),
                                 dtype=np.int64)
        inventory = [(o, lim, arms_o, np.flatnonzero(arms_o)) for o in a.offers
                     if (lim := g.inventory_limit(o)) is not None for arms_o in [a.arms_where(offer=o)]]
        sms = None
        if cfg.sms_daily_budget is not None and Channel.SMS in a.channels:
            unit = float(g.reward_config.channel_cost.get(Channel.SMS, 0.0))
            if unit > 0:
                arms_sms = a.arms_where(channel=Channel.SMS)
                sms = (arms_sms, np.flatnonzero(arms_sms), unit)
        caps = []
        for cap in cfg.frequency_caps:
            if cap.channel is not None and Channel(cap.channel) not in a.channels:
                continue
            caps.append((f"{cap.name}:{cap.window_hours:g}h", int(round(cap.window_hours * 3600e9)),
                         None if cap.channel is None else CHANNELS.index(Channel(cap.channel)),
                         send if cap.channel is None else a.arms_where(channel=cap.channel), int(cap.max_sends)))
        col = {name: i for i, name in enumerate(g.names)}
        send_idx = np.flatnonzero(send)
        channel_ok = np.zeros((len(caps), len(CHANNELS)), dtype=bool)
        for p, c in enumerate(caps):
            channel_ok[p, :] = c[2] is None
            if c[2] is not None:
                channel_ok[p, c[2]] = True
        cap_cols = np.array([col[c[0]] for c in caps], dtype=np.int64)
        cell_send = cl[send] * len(a.slots) + sl[send]
        cells, cell_of_send = np.unique(cell_send, return_inverse=True)
        cell_of_arm = np.full(a.n_arms, len(cells), dtype=np.int64)
        cell_of_arm[send_idx] = cell_of_send
        cap_cell = np.zeros((len(caps), len(cells)), dtype=bool)  # every arm of a cell has one channel
        for p, c in enumerate(caps):
            cap_cell[p, cell_of_send[c[3][send_idx]]] = True
            if not np.array_equal(cap_cell[p, cell_of_send], c[3][send_idx]):
                raise AssertionError(f"the arms of cap {c[0]} are not whole (channel, slot) cells")
        return cls(
            col=col,
            send=send, send_idx=send_idx, no_send_idx=np.flatnonzero(~send), no_send_list=np.flatnonzero(~send).tolist(),
            cl_send=cl[send], sl_send=sl[send], cell_send=cell_send,
            safe_ch=np.where(send, a.channel.astype(np.int64), 0),
            arm_hour8=arm_hour.astype(np.int8),
            arm_removed=send & removed_plan[np.maximum(cl, 0), np.maximum(sl, 0)],
            moved=send & (arm_shift > 0),
            cat_offers=cat_offers, uses_interest=uses_interest, interest_cols=interest_cols,
            interest_col0=int(interest_cols[0]) if len(interest_cols) else 0,
            flag_weights=np.left_shift(1, np.arange(1 + 2 * len(CHANNELS) + (len(interest_cols) if uses_interest
                                                                             else 0)), dtype=np.int64),
            inventory=inventory, sms=sms, caps=caps,
            caps_min_sends=min((c[4] for c in caps), default=1),
            caps_max_window=max((c[1] for c in caps), default=0),
            cap_channel_ok=np.ascontiguousarray(channel_ok.T),
            cells=cells, cell_of_send=cell_of_send,
            cell_of_arm=cell_of_arm,
            cell_onehot=(cell_of_send[:, None] == np.arange(len(cells))[None, :]).astype(np.float32),
            cap_window3=np.array([c[1] for c in caps], dtype=np.int64).reshape(1, -1, 1),
            cap_max3=np.array([c[4] for c in caps], dtype=np.int64).reshape(1, -1, 1),
            cap_index3=np.arange(len(caps)).reshape(-1, 1, 1),
            cap_cell3=cap_cell.reshape(1, len(caps), len(cells)),
            cap_cols=cap_cols, cap_cols_unique=len(set(cap_cols.tolist())) == len(cap_cols),
            cap_cols_list=cap_cols.tolist(),
            cap_window_ch=np.where(channel_ok.T, np.array([c[1] for c in caps], dtype=np.int64), 0)[:, :, None],
            cap_need1=(need := np.where(np.c_[cap_cell, np.zeros((len(caps), 1), dtype=bool)],
                                        np.array([c[4] for c in caps], dtype=np.int64)[:, None], 1 << 62)),
            cap_need_flat=need.reshape(-1), cap_need0=need.reshape(-1) <= 0, cap_need_le1=need.reshape(-1) <= 1,
        )


def now_utc() -> datetime:
    return datetime.now(UTC)

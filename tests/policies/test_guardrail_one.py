"""The single-decision path of the guardrails (``Guardrails._apply_one``) against the vector path
it shortcuts: identical masks, send times, hours, acted guardrails, reservations, settlements and
ledger, on random configurations, customers, times (DST changes, offsets that are not whole
quarter hours) and send histories (the decision service's one-customer history, other customers'
sends, frames, none), with the memoised rows reused across calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from core.types import CATEGORIES, CHANNELS
from policies.arms import ArmSpace
from policies.config import FrequencyCap, GuardrailConfig, PolicyLayerConfig
from policies.guardrails import Audience, Eligibility, Guardrails, SendHistory, _day_iso, _instant_ns
from tests.policies.test_guardrail_reference import _config

ARMS = ArmSpace.from_config(PolicyLayerConfig().arms)
ZONES = ["UTC", "Asia/Shanghai", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe", "Europe/London",
         "America/St_Johns", "Asia/Kolkata"]


class _Vector(Guardrails):
    """The vector path for every batch, one customer included."""

    _one_row = False


def _same(e1: Eligibility, e2: Eligibility) -> None:
    for name in ("mask", "send_at", "send_hour", "holdout", "acted"):
        a, b = getattr(e1, name), getattr(e2, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    assert e1.names == e2.names and e1.decided_at == e2.decided_at
    assert len(e1.reservations) == len(e2.reservations)
    for r1, r2 in zip(e1.reservations, e2.reservations, strict=True):
        assert (r1.key, r1.unit) == (r2.key, r2.unit)
        assert r1.granted.dtype == r2.granted.dtype and np.array_equal(r1.granted, r2.granted)
        assert np.array_equal(r1.arms, r2.arms)


def _customer(rng, cid: str) -> Audience:
    interest = None if rng.random() < 0.25 else rng.random((1, len(CATEGORIES))) < rng.random()
    return Audience(np.array([cid], dtype=object), np.array([str(rng.choice(ZONES))], dtype=object),
                    rng.random((1, len(CHANNELS))) < rng.random(), rng.random((1, len(CHANNELS))) < rng.random(),
                    interest)


def _sends(rng, cid: str, t: datetime):
    """A history as the decision service passes it (this customer's sends only, or none), or with
    other customers' sends, as a frame, or None."""
    m = int(rng.integers(0, 7))
    who = [cid if rng.random() < 0.7 else f"other{rng.integers(0, 3)}" for _ in range(m)]
    frame = pd.DataFrame({
        "customer_id": who,
        "channel": rng.choice([c.value for c in CHANNELS] + ["fax"], m),
        "send_at": pd.Timestamp(t) + pd.to_timedelta(rng.uniform(-9 * 24, 3 * 24, m), unit="h"),
    })
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return None
    if kind == 1:
        return frame
    if kind == 2:  # the engine's form: customers is this customer alone
        mine = frame[frame["customer_id"] == cid]
        h = SendHistory.from_frame(mine)
        return SendHistory(np.array([cid], dtype=object), h.code, h.channel, h.send_at) if len(h) else h
    if kind == 3:  # one other customer's sends only
        other = frame.assign(customer_id="someone-else")
        return SendHistory.from_frame(other)
    return SendHistory.from_frame(frame)


@pytest.mark.parametrize("seed", range(30))
def test_one_customer_equals_the_vector_path(seed):
    rng = np.random.default_rng(100 + seed)
    cfg = _config(rng)
    one, vec = Guardrails(ARMS, cfg), _Vector(ARMS, cfg)
    t0 = datetime(2026, 3, 28, 22, 7, tzinfo=UTC) + timedelta(minutes=int(rng.integers(0, 60 * 24 * 10)))
    ids = [f"k{seed}-{i}" for i in range(6)]  # few customers: the memoised rows are reused
    for _ in range(25):
        aud = _customer(rng, str(rng.choice(ids)))
        t = t0 + timedelta(minutes=int(rng.integers(0, 4)) * 11, microseconds=int(rng.integers(0, 10**6)))
        t0 = t if rng.random() < 0.3 else t0
        sends = _sends(rng, aud.customer_id[0], t)
        reserve = bool(rng.random() < 0.8)
        e1, e2 = one.apply(aud, t, sends, reserve=reserve), vec.apply(aud, t, sends, reserve=reserve)
        _same(e1, e2)
        if reserve:
            chosen = np.array([rng.choice(np.flatnonzero(e1.mask[0]))], dtype=np.int64)
            assert one.settle(e1, chosen) == vec.settle(e2, chosen)
    for key in {r.key for r in e1.reservations} | {f"sms_spend:{t.date().isoformat()}"}:
        assert one.ledger.used(key) == vec.ledger.used(key)
    assert one._one_profiles and one._one_rows  # the path was taken


def test_dst_changes_and_offsets_off_the_quarter_hour():
    """Times around Lord Howe's change of offset and an LMT offset (Kolkata in 1900): the zone's row
    is memoised only where its grid is (per quarter hour), never across the change."""
    cfg = GuardrailConfig(holdout_share=0.0)
    one, vec = Guardrails(ARMS, cfg), _Vector(ARMS, cfg)
    rng = np.random.default_rng(4)
    change = datetime(2026, 4, 4, 15, 0, tzinfo=UTC)
    lmt = datetime(1900, 6, 1, 6, 15, tzinfo=UTC)
    for base, zone in ((change, "Australia/Lord_Howe"), (lmt, "Asia/Kolkata"), (change, "America/St_Johns")):
        for delta in (-timedelta(minutes=10), -timedelta(microseconds=1), timedelta(0), timedelta(microseconds=1),
                      timedelta(minutes=10), -timedelta(minutes=10)):
            aud = Audience(np.array(["c"], dtype=object), np.array([zone], dtype=object),
                           np.ones((1, 4), bool), np.ones((1, 4), bool), rng.random((1, len(CATEGORIES))) < 0.5)
            _same(one.apply(aud, base + delta, None, reserve=False), vec.apply(aud, base + delta, None, reserve=False))
    assert not [k for k in one._one_rows if k[0] == "Asia/Kolkata"]  # 1900: per instant only


def test_a_zero_cap_without_history_and_non_bool_flags():
    """A cap of zero sends blocks every send with no history at all; flags that are not bool (and a
    zone that is not a str) are left to the vector path, with the same result."""
    cfg = GuardrailConfig(holdout_share=0.0, sms_daily_budget=None,
                          frequency_caps=(FrequencyCap(channel=None, max_sends=0, window_hours=24),
                                          FrequencyCap(channel=None, max_sends=1, window_hours=24)))
    one, vec = Guardrails(ARMS, cfg), _Vector(ARMS, cfg)
    t = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    aud = Audience(np.array(["c"], dtype=object), np.array(["UTC"], dtype=object), np.ones((1, 4), bool),
                   np.ones((1, 4), bool), None)
    e = one.apply(aud, t, None, reserve=False)
    _same(e, vec.apply(aud, t, None, reserve=False))
    assert not e.mask[0, ARMS.is_send].any() and "frequency_cap:all:24h" in e.reasons(0)
    ints = Audience(np.array(["c"], dtype=object), np.array(["UTC"], dtype=object), np.ones((1, 4), np.int64),
                    np.ones((1, 4), np.int64), None)
    assert one._apply_one(ints, t, None, False) is None
    _same(one.apply(ints, t, None, reserve=False), vec.apply(ints, t, None, reserve=False))


@pytest.mark.parametrize("tz", [UTC, ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe"),
                                timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=3))])
def test_instants_and_days_equal_pandas(tz):
    rng = np.random.default_rng(0)
    for _ in range(200):
        us = int(rng.integers(-2 * 10**15, 4 * 10**15))
        t = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).astimezone(tz)
        for fold in (0, 1):
            tt = t.replace(fold=fold)
            ts = pd.Timestamp(tt)
            assert _instant_ns(tt) == ts.value
            assert _day_iso(_instant_ns(tt)) == ts.tz_convert("UTC").date().isoformat()
    ns = pd.Timestamp("2026-07-01T09:00:00.123456789Z")
    assert _instant_ns(ns) == ns.value and _instant_ns(ns.to_pydatetime(warn=False)) == ns.value - 789


def test_the_holdout_hash_is_sha256():
    """The holdout group reads SHA-256 (whichever implementation computes it): the same groups as
    hashlib's digest, in the vector path and the single decision's."""
    import hashlib

    from policies.guardrails import _in_holdout, holdout_mask

    ids = [f"C{i:07d}" for i in range(500)] + ["", "ünïcode", "a|b"]
    want = [int.from_bytes(hashlib.sha256(f"salt-x|{c}".encode()).digest()[:8], "big") / 2.0**64 < 0.3 for c in ids]
    assert holdout_mask(ids, 0.3, "salt-x").tolist() == want
    assert [_in_holdout(b"salt-x|", c, 0.3) for c in ids] == want
    cfg = GuardrailConfig(holdout_share=0.3, holdout_salt="salt-x", sms_daily_budget=None)
    g = Guardrails(ARMS, cfg)
    t = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    got = [bool(g.apply(Audience(np.array([c], dtype=object), np.array(["UTC"], dtype=object), np.ones((1, 4), bool),
                                 np.ones((1, 4), bool), None), t, None, reserve=False).holdout[0]) for c in ids[:60]]
    assert got == want[:60] and any(got) and not all(got)


def test_many_interest_bits_take_the_profiles_one_by_one():
    """Offers of four more categories: 2^13 profiles are more than the table holds at once, so each
    is computed at its first decision; the same rows as the vector path."""
    from core.catalog import DEFAULT_CATALOG, Catalog, Offer, OfferKind

    extra = tuple(Offer(id=f"{c}_10", kind=OfferKind.PERCENT_OFF, discount=0.1, category=c)
                  for c in ("apparel", "electronics", "home", "grocery"))
    arms = ArmSpace.build(Catalog(offers=(*DEFAULT_CATALOG.offers, *extra)))
    cfg = GuardrailConfig(require_category_interest=True, holdout_share=0.2)
    one, vec = Guardrails(arms, cfg), _Vector(arms, cfg)
    rng = np.random.default_rng(8)
    t = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    for i in range(40):
        aud = _customer(rng, f"m{i % 7}")
        sends = _sends(rng, aud.customer_id[0], t)
        _same(one.apply(aud, t, sends, reserve=False), vec.apply(aud, t, sends, reserve=False))
    assert len(one._plan.flag_weights) > 12 and 0 < len(one._one_profiles) <= 40

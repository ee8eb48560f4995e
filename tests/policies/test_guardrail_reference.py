"""The guardrails' planned and vectorised apply (profile table, caps per cell, budgets that rank
customers only when they cannot all be served) against the straightforward one it replaced, kept
here verbatim as the reference: identical masks, send times, hours, acted guardrails,
reservations and ledger, on random configurations, audiences and send histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from core.types import CATEGORIES, CHANNELS, Channel
from policies.arms import NO_SEND_INDEX, ArmSpace
from policies.config import FrequencyCap, GuardrailConfig, PolicyLayerConfig
from policies.guardrails import (
    Audience,
    Eligibility,
    Guardrails,
    SendHistory,
    _batch_rows,
    _factorize,
    _priority,
    _Reservation,
)

ARMS = ArmSpace.from_config(PolicyLayerConfig().arms)
ZONES = ["UTC", "Asia/Shanghai", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe", "Europe/London",
         "America/St_Johns", "Asia/Kolkata"]


class _Reference(Guardrails):
    """The apply of before the profile table: one (n, K) pass per guardrail, caps per cap."""

    def apply(
        self,
        audience: Audience,
        decided_at: datetime,
        recent_sends: pd.DataFrame | SendHistory | None = None,
        reserve: bool = True,
    ) -> Eligibility:
        if decided_at.tzinfo is None:
            raise InputError("decided_at must carry a time zone (UTC)")
        a, cfg, plan = self.arms, self.config, self._plan
        n, K = len(audience), a.n_arms
        send = plan.send
        mask = np.ones((n, K), dtype=bool)
        acted = np.zeros((n, len(self.names)), dtype=bool)
        col = plan.col

        def remove(name: str, blocked: np.ndarray, rows: np.ndarray | None = None) -> None:
            """blocked: (n, K) bool, never on no-send; or (len(rows), K) for those rows only."""
            if rows is None:
                hit = (mask & blocked).any(axis=1)
                acted[:, col[name]] |= hit
                mask[blocked] = False
                return
            sub = mask[rows]
            acted[rows, col[name]] |= (sub & blocked).any(axis=1)
            sub[blocked] = False
            mask[rows] = sub

        # holdout
        holdout = self._holdout(audience.customer_id)
        remove("holdout", holdout[:, None] & send[None, :])
        # consent and reachability: (n, 4) -> (n, K)
        if cfg.require_consent:
            remove("consent", ~audience.consent[:, plan.safe_ch] & send[None, :])
        if cfg.require_reachable:
            remove("reachability", ~audience.reachable[:, plan.safe_ch] & send[None, :])
        # quiet hours: same plan for every customer (local time)
        remove("quiet_hours", np.broadcast_to(plan.arm_removed, (n, K)))
        acted[:, col["quiet_hours"]] |= (mask & plan.moved[None, :]).any(axis=1)
        # offer eligibility
        if cfg.require_category_interest and plan.cat_offers:
            blocked = np.zeros((n, K), dtype=bool)
            for arms_o, cat in plan.cat_offers:
                if audience.category_interest is None or cat not in CATEGORIES:
                    ok = np.zeros(n, dtype=bool)
                else:
                    ok = audience.category_interest[:, CATEGORIES.index(cat)]
                blocked |= (~ok)[:, None] & arms_o[None, :]
            remove("offer_eligibility", blocked)
        # send times of every (customer, channel level, slot level)
        C, S = len(a.channels), len(a.slots)
        tz_code, zones = _factorize(audience.timezone)
        now_utc = pd.Timestamp(decided_at).tz_convert("UTC")
        if len(zones) == 1:
            times = np.broadcast_to(self._zone_times(now_utc, zones[0]), (n, C, S))
        else:
            per_zone = np.empty((len(zones), C, S), dtype="datetime64[ns]")
            for zi, zone in enumerate(zones):
                per_zone[zi] = self._zone_times(now_utc, zone)
            times = per_zone[tz_code] if n else np.empty((0, C, S), dtype="datetime64[ns]")
        send_at = np.empty((n, K), dtype="datetime64[ns]")
        now64 = np.datetime64(now_utc.tz_localize(None).as_unit("ns"))
        send_at[:, ~send] = now64
        send_at[:, send] = times[:, plan.cl_send, plan.sl_send]
        # frequency caps over sliding windows
        if cfg.frequency_caps:
            self._ref_caps(audience, recent_sends, times, mask, remove)
        # budgets: coupon inventory, then SMS spend
        reservations: list[_Reservation] = []
        day = now_utc.date().isoformat()
        order = None
        for o, limit, arms_o, _ in plan.inventory:
            order = _priority(audience.customer_id, day) if order is None else order
            res = self._ref_reserve(self.coupon_key(o), float(limit), 1.0, arms_o, mask, order, reserve)
            remove("coupon_inventory", (~res.granted)[:, None] & arms_o[None, :])
            if reserve:
                reservations.append(res)
        if plan.sms is not None:
            arms_sms, _, unit = plan.sms
            order = _priority(audience.customer_id, day) if order is None else order
            res = self._ref_reserve(f"sms_spend:{day}", float(cfg.sms_daily_budget), unit,
                                arms_sms, mask, order, reserve)
            remove("sms_budget", (~res.granted)[:, None] & arms_sms[None, :])
            if reserve:
                reservations.append(res)
        mask[:, NO_SEND_INDEX] = True
        send_hour = np.broadcast_to(plan.arm_hour8, (n, K)).copy()
        return Eligibility(
            decided_at=decided_at, mask=mask, send_at=send_at, send_hour=send_hour,
            holdout=holdout, acted=acted, names=self.names, reservations=reservations,
        )

    def _ref_caps(self, audience, recent_sends, times, mask, remove) -> None:
        plan, n = self._plan, len(audience)
        hist = recent_sends if isinstance(recent_sends, SendHistory) else SendHistory.from_frame(recent_sends)
        if len(hist) == 0 and plan.caps_min_sends >= 1:
            return  # no send in the history: no cap can be full
        ci = _batch_rows(audience.customer_id, hist)
        keep = ci >= 0
        ci, rch, rt = ci[keep], hist.channel[keep], hist.send_at[keep]
        if not len(ci) and plan.caps_min_sends >= 1:
            return  # none of the history's sends is by a customer of this batch
        C, S = times.shape[1], times.shape[2]
        if not n:
            return
        t_ns = times.view(np.int64)
        lo, hi = int(t_ns.min()), int(t_ns.max())  # the candidates' send times
        send_arms = np.flatnonzero(plan.send)
        local = np.full(n, -1, dtype=np.int64)
        for name, window, channel, arms_cap, max_sends in plan.caps:
            # only customers with one of the cap's arms still allowed can be capped by it (most of
            # an audience has none left after consent, reachability and the caps before), and only
            # sends within a window of some candidate's time count: the counts are computed for
            # those alone, with the same result
            live = np.flatnonzero(mask[:, arms_cap].any(axis=1))
            if not len(live):
                continue
            m = len(live)
            local[:] = -1
            local[live] = np.arange(m)
            sel = (local[ci] >= 0) & (rt > lo - window) & (rt < hi + window)
            if channel is not None:
                sel &= rch == channel
            c_i, t_i = ci[sel], rt[sel]
            if not len(c_i) and max_sends >= 1:
                continue  # no send on the cap's channel(s) near the candidates: it cannot be full
            counts = np.zeros(m * C * S, dtype=np.int64)
            if len(c_i):
                # a send at t shares a sliding window with a candidate at s when |t - s| < window
                # (sends already scheduled later than s count too: the window ending at them would
                # contain the candidate)
                s_c = t_ns[c_i].reshape(len(c_i), C * S)  # (R, C*S)
                inside = (t_i[:, None] > s_c - window) & (t_i[:, None] < s_c + window)
                cell = local[c_i][:, None] * (C * S) + np.arange(C * S)
                counts = np.bincount(cell[inside], minlength=m * C * S)
            full = (counts >= max_sends).reshape(m, C, S)
            blocked = np.zeros((m, self.arms.n_arms), dtype=bool)
            blocked[:, send_arms] = full[:, plan.cl_send, plan.sl_send]
            remove(name, blocked & arms_cap[None, :], live)

    def _ref_reserve(self, key, limit, unit, arms_b, mask, order, reserve) -> _Reservation:
        n = mask.shape[0]
        wants = (mask & arms_b[None, :]).any(axis=1)
        granted = np.zeros(n, dtype=bool)
        ranked = order[wants[order]]
        if reserve:
            k = self.ledger.reserve(key, limit, unit, len(ranked))
        else:
            k = min(len(ranked), int((self.ledger.remaining(key, limit) + 1e-9) // unit)) if unit > 0 \
                else len(ranked)
        granted[ranked[:k]] = True
        return _Reservation(key=key, unit=unit, granted=granted, arms=arms_b)



def _config(rng) -> GuardrailConfig:
    pool = [FrequencyCap(channel=None, max_sends=1, window_hours=24.0),
            FrequencyCap(channel=None, max_sends=3, window_hours=168.0),
            FrequencyCap(channel=Channel.SMS, max_sends=1, window_hours=168.0),
            FrequencyCap(channel=Channel.EMAIL, max_sends=2, window_hours=168.0),
            FrequencyCap(channel=Channel.WECHAT, max_sends=2, window_hours=6.0),
            FrequencyCap(channel=Channel.APP_PUSH, max_sends=0, window_hours=48.0),
            FrequencyCap(channel=None, max_sends=2, window_hours=1.5),
            FrequencyCap(channel=Channel.EMAIL, max_sends=1, window_hours=168.0)]
    caps = tuple(pool[i] for i in rng.permutation(len(pool))[: rng.integers(0, len(pool) + 1)])
    if rng.random() < 0.15:  # two caps of one name (the same channel and window)
        caps = caps + (FrequencyCap(channel=None, max_sends=1, window_hours=24.0),)
    offers = list(ARMS.offers)
    return GuardrailConfig(
        require_consent=bool(rng.random() < 0.8), require_reachable=bool(rng.random() < 0.8),
        frequency_caps=caps,
        quiet_hours_action="move" if rng.random() < 0.7 else "remove",
        require_category_interest=bool(rng.random() < 0.8),
        offer_inventory={o: int(rng.integers(0, 40)) for o in offers if rng.random() < 0.3},
        sms_daily_budget=[None, 0.2, 2.0, 100.0][rng.integers(0, 4)],
        holdout_share=float([0.0, 0.05, 0.4][rng.integers(0, 3)]),
    )


def _audience(rng, n: int) -> Audience:
    interest = None if rng.random() < 0.3 else rng.random((n, len(CATEGORIES))) < rng.random()
    return Audience(np.array([f"k{i}-{rng.integers(0, 10**6)}" for i in range(n)], dtype=object),
                    np.array(rng.choice(ZONES, n), dtype=object),
                    rng.random((n, len(CHANNELS))) < rng.random(), rng.random((n, len(CHANNELS))) < rng.random(),
                    interest)


def _history(rng, aud: Audience, t: datetime):
    n = len(aud)
    m = int(rng.integers(0, 4 * n + 3))
    ids = list(aud.customer_id) + ["someone-else"]
    who = rng.integers(0, len(ids), m) if rng.random() < 0.5 else np.minimum(rng.geometric(0.3, m) - 1, len(ids) - 1)
    frame = pd.DataFrame({
        "customer_id": [ids[i] for i in who],
        "channel": rng.choice([c.value for c in CHANNELS] + ["fax"], m),
        "send_at": pd.Timestamp(t) + pd.to_timedelta(rng.uniform(-9 * 24, 3 * 24, m), unit="h"),
    })
    kind = rng.integers(0, 3)
    return None if kind == 0 else frame if kind == 1 else SendHistory.from_frame(frame)


def _same(e1: Eligibility, e2: Eligibility) -> None:
    for name in ("mask", "send_at", "send_hour", "holdout", "acted"):
        a, b = getattr(e1, name), getattr(e2, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    assert e1.names == e2.names
    assert len(e1.reservations) == len(e2.reservations)
    for r1, r2 in zip(e1.reservations, e2.reservations, strict=True):
        assert (r1.key, r1.unit) == (r2.key, r2.unit)
        assert np.array_equal(r1.granted, r2.granted) and np.array_equal(r1.arms, r2.arms)


@pytest.mark.parametrize("seed", range(40))
def test_apply_equals_the_reference(seed):
    rng = np.random.default_rng(seed)
    cfg = _config(rng)
    fast, ref = Guardrails(ARMS, cfg), _Reference(ARMS, cfg)
    t0 = datetime(2026, 3, 28, 22, 7, tzinfo=UTC) + timedelta(minutes=int(rng.integers(0, 60 * 24 * 10)))
    for step in range(6):
        n = int([1, 1, 2, 7, 70, 400][rng.integers(0, 6)])
        aud = _audience(rng, n)
        t = t0 + timedelta(hours=3 * step, microseconds=int(rng.integers(0, 10**6)))
        hist = _history(rng, aud, t)
        reserve = bool(rng.random() < 0.8)
        e1, e2 = fast.apply(aud, t, hist, reserve=reserve), ref.apply(aud, t, hist, reserve=reserve)
        _same(e1, e2)
        if reserve:
            chosen = np.array([rng.choice(np.flatnonzero(row)) for row in e1.mask], dtype=np.int64).reshape(n)
            assert fast.settle(e1, chosen) == ref.settle(e2, chosen)
    for key in {r.key for r in e1.reservations}:
        assert fast.ledger.used(key) == ref.ledger.used(key)


def test_apply_equals_the_reference_on_a_large_audience_with_a_long_history():
    """Thousands of customers with several sends each (the per-rank counting, the near-send
    filter), budgets that serve only some customers (the day's priority order)."""
    rng = np.random.default_rng(11)
    cfg = GuardrailConfig(offer_inventory={ARMS.offers[-1]: 150}, sms_daily_budget=3.0, holdout_share=0.05)
    fast, ref = Guardrails(ARMS, cfg), _Reference(ARMS, cfg)
    aud = _audience(rng, 3000)
    t = datetime(2026, 10, 25, 0, 40, tzinfo=UTC)
    m = 12000
    frame = pd.DataFrame({"customer_id": rng.choice(aud.customer_id, m),
                          "channel": rng.choice([c.value for c in CHANNELS], m),
                          "send_at": pd.Timestamp(t) + pd.to_timedelta(rng.uniform(-30 * 24, 2 * 24, m), unit="h")})
    hist = SendHistory.from_frame(frame)
    for _ in range(2):
        e1, e2 = fast.apply(aud, t, hist), ref.apply(aud, t, hist)
        _same(e1, e2)
        assert e1.acted.any(axis=0).all() or not e1.mask[:, ARMS.is_send].all()
        chosen = np.argmax(e1.mask * np.arange(ARMS.n_arms), axis=1)
        assert fast.settle(e1, chosen) == ref.settle(e2, chosen)


def test_an_empty_audience():
    cfg = GuardrailConfig(offer_inventory={ARMS.offers[0]: 3})
    fast, ref = Guardrails(ARMS, cfg), _Reference(ARMS, cfg)
    aud = Audience(np.array([], dtype=object), np.array([], dtype=object), np.zeros((0, 4), bool),
                   np.zeros((0, 4), bool), None)
    t = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    _same(fast.apply(aud, t, None), ref.apply(aud, t, None))


def test_interest_in_only_the_categories_offers_need_keys_the_profiles():
    """A catalog with offers of two categories (and a category no data knows): the profile key
    holds the interest bits of exactly those categories, and the masks equal the reference."""
    from core.catalog import DEFAULT_CATALOG, Catalog, Offer, OfferKind

    offers = (*DEFAULT_CATALOG.offers, Offer(id="home_10", kind=OfferKind.PERCENT_OFF, discount=0.1, category="home"),
              Offer(id="pets_5", kind=OfferKind.PERCENT_OFF, discount=0.05, category="pets"))
    arms = ArmSpace.build(Catalog(offers=offers))
    rng = np.random.default_rng(5)
    cfg = GuardrailConfig(require_category_interest=True)
    fast, ref = Guardrails(arms, cfg), _Reference(arms, cfg)
    assert fast._plan.interest_cols.tolist() == sorted(CATEGORIES.index(c) for c in ("beauty", "home"))
    t = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    for n in (1, 1, 5, 300):
        aud = _audience(rng, n)
        _same(fast.apply(aud, t, None), ref.apply(aud, t, None))
    keys = {k for k in fast._profile_cache}
    assert max(keys) < 1 << (1 + 2 * len(CHANNELS) + 2)  # no bits of the four categories no offer needs

"""Each guardrail's behaviour, one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.catalog import DEFAULT_CATALOG
from core.errors import InputError
from core.types import CHANNELS, Channel
from policies.arms import ArmSpace
from policies.config import FrequencyCap, GuardrailConfig
from policies.guardrails import Audience, Guardrails, holdout_mask, send_times
from tests.policies._helpers import audience

NOW = datetime(2026, 7, 1, tzinfo=UTC)
ARMS = ArmSpace.build(slots=(8, 10, 20))
OPEN = GuardrailConfig(frequency_caps=(), holdout_share=0.0, sms_daily_budget=None,
                       channel_allowed_hours={}, require_category_interest=False)


def _apply(cfg: GuardrailConfig, aud: Audience, sends=None, now=NOW, **kw):
    return Guardrails(ARMS, cfg, **kw).apply(aud, now, sends)


def test_everything_eligible_without_rules_and_no_send_always():
    e = _apply(OPEN, audience(20))
    assert e.mask.all()
    assert not e.acted.any()
    e = _apply(GuardrailConfig(), audience(50, consent=0.0))
    assert e.mask[:, 0].all() and not e.mask[:, 1:].any()


def test_consent_and_reachability_remove_only_their_channel():
    aud = audience(4)
    aud.consent[0, CHANNELS.index(Channel.EMAIL)] = False
    aud.reachable[1, CHANNELS.index(Channel.APP_PUSH)] = False
    e = _apply(OPEN.model_copy(update={"require_consent": True, "require_reachable": True}), aud)
    email, push = ARMS.arms_where(channel="email"), ARMS.arms_where(channel="app_push")
    assert not e.mask[0, email].any() and e.mask[0, ~email].all()
    assert not e.mask[1, push].any() and e.mask[1, ~push].all()
    assert e.reasons(0) == ["consent"] and e.reasons(1) == ["reachability"] and e.reasons(2) == []


def test_quiet_hours_move_or_remove_and_say_so():
    aud = audience(30)
    move = OPEN.model_copy(update={"channel_allowed_hours": {Channel.SMS: tuple(range(9, 20))}})
    e = _apply(move, aud)
    sms8, sms20 = ARMS.arm("sms", "pct10", 8), ARMS.arm("sms", "pct10", 20)
    assert e.mask[:, sms8].all() and (e.send_hour[:, sms8] == 9).all()
    assert (e.send_hour[:, sms20] == 9).all()  # 20:00 is quiet for SMS -> next morning 09:00
    nominal20 = send_times(NOW, aud.timezone, 20)
    assert (e.send_at[:, sms20] > nominal20).all()  # moved later, never earlier
    local = [pd.Timestamp(t).tz_localize("UTC").tz_convert(z).hour
             for t, z in zip(e.send_at[:, sms20], aud.timezone, strict=True)]
    assert set(local) == {9}
    assert all("quiet_hours" in e.reasons(i) for i in range(30))
    remove = move.model_copy(update={"quiet_hours_action": "remove"})
    e = _apply(remove, aud)
    assert not e.mask[:, sms8].any() and not e.mask[:, sms20].any()
    assert e.mask[:, ARMS.arm("sms", "pct10", 10)].all()
    assert e.mask[:, ARMS.arm("email", "pct10", 20)].all()


def test_send_times_are_the_next_local_slot_in_utc():
    tz = np.array(["Asia/Shanghai", "America/Los_Angeles", "Europe/London"], dtype=object)
    at = send_times(NOW, tz, 10)  # NOW is 08:00 in Shanghai, 17:00 (Jun 30) in LA, 01:00 in London
    got = pd.to_datetime(at).tz_localize("UTC")
    assert [t.tz_convert(z).hour for t, z in zip(got, tz, strict=True)] == [10, 10, 10]
    assert (got >= pd.Timestamp(NOW)).all() and (got < pd.Timestamp(NOW) + pd.Timedelta(hours=24)).all()
    assert got[0] == pd.Timestamp("2026-07-01T02:00Z")
    assert got[1] == pd.Timestamp("2026-07-01T17:00Z")


def test_frequency_caps_count_sliding_windows_per_channel_and_overall():
    aud = audience(3)
    cfg = OPEN.model_copy(update={"frequency_caps": (
        FrequencyCap(channel=None, max_sends=2, window_hours=72),
        FrequencyCap(channel=Channel.SMS, max_sends=1, window_hours=168),
    )})
    sends = pd.DataFrame({
        "customer_id": ["c00000", "c00000", "c00001", "zzz"],
        "channel": ["email", "wechat", "sms", "sms"],
        "send_at": [NOW - timedelta(hours=5), NOW - timedelta(hours=30), NOW - timedelta(days=6), NOW],
    })
    e = _apply(cfg, aud, sends)
    assert e.mask[0, 0] and not e.mask[0, 1:].any()  # two sends in 72 h: nothing more
    assert "frequency_cap:all:72h" in e.reasons(0)
    sms = ARMS.arms_where(channel="sms")
    assert not e.mask[1, sms].any() and e.mask[1, ~sms].all()
    assert e.reasons(1) == ["frequency_cap:sms:168h"]
    assert e.mask[2].all()


def test_frequency_cap_window_is_relative_to_each_slots_send_time():
    # one email 23 h before NOW: a 24 h cap blocks a send right now but not one 2 h later
    aud = Audience(customer_id=np.array(["a"], dtype=object), timezone=np.array(["UTC"], dtype=object),
                   consent=np.ones((1, 4), bool), reachable=np.ones((1, 4), bool),
                   category_interest=np.ones((1, 6), bool))
    now = datetime(2026, 7, 1, 8, tzinfo=UTC)
    cfg = OPEN.model_copy(update={"frequency_caps": (FrequencyCap(channel=None, max_sends=1, window_hours=24),)})
    sends = pd.DataFrame({"customer_id": ["a"], "channel": ["email"], "send_at": [now - timedelta(hours=23)]})
    e = _apply(cfg, aud, sends, now=now)
    assert not e.mask[0, ARMS.arm("email", "pct10", 8)]
    assert e.mask[0, ARMS.arm("email", "pct10", 10)]


def test_category_offers_need_interest():
    aud = audience(2)
    beauty = DEFAULT_CATALOG.ids.index("beauty_15")
    from core.types import CATEGORIES

    aud.category_interest[0, :] = False
    aud.category_interest[1, CATEGORIES.index("beauty")] = True
    e = _apply(OPEN.model_copy(update={"require_category_interest": True}), aud)
    arms_b = ARMS.offer == beauty
    assert not e.mask[0, arms_b].any() and e.mask[1, arms_b].all()
    assert e.reasons(0) == ["offer_eligibility"]
    no_interest = Audience(aud.customer_id, aud.timezone, aud.consent, aud.reachable, None)
    e = _apply(OPEN.model_copy(update={"require_category_interest": True}), no_interest)
    assert not e.mask[:, arms_b].any()


def test_coupon_inventory_and_sms_budget_reserve_then_settle():
    aud = audience(100)
    cfg = OPEN.model_copy(update={"offer_inventory": {"pct20": 10}, "sms_daily_budget": 0.5})
    g = Guardrails(ARMS, cfg)
    e = g.apply(aud, NOW)
    pct20 = ARMS.arms_where(offer="pct20")
    sms = ARMS.arms_where(channel="sms")
    assert e.mask[:, pct20].any(axis=1).sum() == 10
    assert e.mask[:, sms].any(axis=1).sum() == 10  # 0.5 / 0.05 per SMS
    assert g.ledger.used("coupons:pct20") == 10
    # 3 customers take pct20 by email, 2 take SMS, the rest nothing
    chosen = np.zeros(100, dtype=np.int64)
    holders = np.flatnonzero(e.mask[:, pct20].any(axis=1))
    chosen[holders[:3]] = ARMS.arm("email", "pct20", 10)
    sms_holders = [i for i in np.flatnonzero(e.mask[:, sms].any(axis=1)) if i not in holders[:3]]
    chosen[sms_holders[:2]] = ARMS.arm("sms", "pct10", 10)
    spent = g.settle(e, chosen)
    assert g.ledger.used("coupons:pct20") == 3
    assert abs(g.ledger.used(Guardrails.sms_budget_key(NOW)) - 0.1) < 1e-9
    assert spent["coupons:pct20"] == 3
    with pytest.raises(InputError, match="already settled"):
        g.settle(e, chosen)
    e2 = g.apply(aud, NOW)
    assert e2.mask[:, pct20].any(axis=1).sum() == 7
    assert "coupon_inventory" in sum(e2.reasons_all(), [])


def test_holdout_only_allows_no_send():
    aud = audience(400)
    e = _apply(OPEN.model_copy(update={"holdout_share": 0.2}), aud)
    assert 40 < e.holdout.sum() < 120
    assert not e.mask[e.holdout, 1:].any()
    assert e.mask[~e.holdout].all()
    assert all(e.reasons(i) == ["holdout"] for i in np.flatnonzero(e.holdout))


def test_holdout_is_stable_and_close_to_its_share():
    ids = [f"cust-{i}" for i in range(20_000)]
    a = holdout_mask(ids, 0.05, "holdout-v1")
    b = holdout_mask(list(reversed(ids)), 0.05, "holdout-v1")[::-1]
    assert (a == b).all()  # same customer, same group, whatever the batch order
    assert abs(a.mean() - 0.05) < 0.006
    c = holdout_mask(ids, 0.05, "other-salt")
    assert abs(c.mean() - 0.05) < 0.006 and (a != c).any()
    assert (holdout_mask(ids[:100], 0.05, "holdout-v1") == a[:100]).all()


def test_bad_inputs_are_input_errors():
    g = Guardrails(ARMS, OPEN)
    with pytest.raises(InputError, match="time zone"):
        g.apply(audience(2), datetime(2026, 7, 1))
    with pytest.raises(InputError, match="shape"):
        Audience(np.array(["a"], dtype=object), np.array(["UTC"], dtype=object), np.ones((1, 3), bool),
                 np.ones((1, 4), bool))
    with pytest.raises(InputError, match="lack columns"):
        Guardrails(ARMS, GuardrailConfig()).apply(audience(2), NOW, pd.DataFrame({"customer_id": ["c00000"]}))
    bad_tz = Audience(np.array(["a"], dtype=object), np.array(["Mars/Base"], dtype=object),
                      np.ones((1, 4), bool), np.ones((1, 4), bool))
    with pytest.raises(InputError, match="unknown time zone"):
        g.apply(bad_tz, NOW)

"""Property tests: whatever the customers, history, config and policy, no guardrail is violated,
the distribution is valid, the chosen arm is eligible, and the same seed gives the same decision.
Violations are judged by journey.audit, written independently of policies.guardrails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.catalog import DEFAULT_CATALOG
from core.types import CHANNELS
from journey.audit import audit_sends
from policies.arms import ArmSpace
from policies.bandits import make_policy
from policies.config import FrequencyCap, GuardrailConfig
from policies.guardrails import Guardrails
from tests.policies._helpers import audience, audience_frame

ARMS = ArmSpace.build(slots=(7, 10, 20, 22))
START = datetime(2026, 7, 1, tzinfo=UTC)

hours = st.sets(st.integers(0, 23), min_size=1, max_size=24).map(lambda s: tuple(sorted(s)))
caps = st.lists(
    st.builds(FrequencyCap, channel=st.one_of(st.none(), st.sampled_from(CHANNELS)),
              max_sends=st.integers(0, 3), window_hours=st.floats(1.0, 200.0)),
    max_size=4,
).map(tuple)
configs = st.builds(
    GuardrailConfig,
    frequency_caps=caps,
    allowed_hours=hours,
    channel_allowed_hours=st.dictionaries(st.sampled_from(CHANNELS), hours, max_size=2),
    quiet_hours_action=st.sampled_from(["move", "remove"]),
    require_category_interest=st.booleans(),
    offer_inventory=st.dictionaries(st.sampled_from(DEFAULT_CATALOG.ids), st.integers(0, 4), max_size=3),
    sms_daily_budget=st.one_of(st.none(), st.floats(0.0, 0.3)),
    holdout_share=st.floats(0.0, 0.6),
)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 25))
    aud = audience(n, seed=draw(st.integers(0, 10_000)), consent=draw(st.floats(0, 1)),
                   reachable=draw(st.floats(0, 1)), interest=draw(st.floats(0, 1)))
    cfg = draw(configs)
    at = START + timedelta(minutes=draw(st.integers(0, 14 * 24 * 60)))
    k = draw(st.integers(0, 30))
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    prior = pd.DataFrame({
        "customer_id": aud.customer_id[rng.integers(0, n, k)] if k else np.array([], dtype=object),
        "channel": rng.choice([c.value for c in CHANNELS], k),
        # mostly past sends, some already scheduled for later (e.g. moved out of quiet hours)
        "send_at": [at - timedelta(hours=float(h)) for h in rng.uniform(-30.0, 200.0, k)],
    })
    policy = draw(st.sampled_from(["thompson", "linucb", "epsilon_greedy", "softmax", "greedy", "random"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return aud, cfg, at, prior, policy, seed


def _round(guard, policy, aud, at, recent):
    elig = guard.apply(aud, at, recent)
    X = np.column_stack([np.arange(len(aud), dtype=float), np.ones(len(aud))])
    dec = policy.decide(X, elig.mask)
    guard.settle(elig, dec.arm)
    return elig, dec


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_guardrail_is_ever_violated(scenario):
    aud, cfg, at, prior, name, seed = scenario
    guard = Guardrails(ARMS, cfg)
    policy = make_policy(name, ARMS, seed=seed)
    sends, recent = [], prior
    for day in range(2):  # two rounds: the first round's sends count against the second's caps
        now = at + timedelta(days=day)
        elig, dec = _round(guard, policy, aud, now, recent)
        rows = np.arange(len(aud))
        # the distribution is valid and the chosen arm eligible
        assert np.allclose(dec.distribution.sum(axis=1), 1.0)
        assert (dec.distribution[~elig.mask] == 0).all() and (dec.distribution[elig.mask] > 0).all()
        assert elig.mask[rows, dec.arm].all() and (dec.propensity > 0).all() and (dec.propensity <= 1).all()
        assert elig.mask[:, 0].all()
        assert not elig.mask[elig.holdout, 1:].any()
        sent = ARMS.is_send[dec.arm]
        new = pd.DataFrame({
            "decision_id": [f"d{day}-{i}" for i in rows[sent]],
            "customer_id": aud.customer_id[sent],
            "channel": [CHANNELS[c].value for c in ARMS.channel[dec.arm[sent]]],
            "offer": [DEFAULT_CATALOG.offers[o].id for o in ARMS.offer[dec.arm[sent]]],
            "send_at": pd.to_datetime(elig.chosen_send_at(dec.arm)[sent]).tz_localize("UTC"),
            "decided_at": pd.Timestamp(now),
        })
        sends.append(new)
        recent = pd.concat([f for f in (recent, new[["customer_id", "channel", "send_at"]]) if len(f)],
                           ignore_index=True) if len(recent) or len(new) else recent
    allsends = pd.concat(sends, ignore_index=True)
    result = audit_sends(allsends, audience_frame(aud), cfg, DEFAULT_CATALOG, prior_sends=prior)
    assert result.total == 0, result.as_dict()


@settings(max_examples=25, deadline=None)
@given(scenarios())
def test_same_seed_same_decision(scenario):
    aud, cfg, at, prior, name, seed = scenario
    outs = []
    for _ in range(2):
        guard = Guardrails(ARMS, cfg)
        elig, dec = _round(guard, make_policy(name, ARMS, seed=seed), aud, at, prior)
        outs.append((elig.mask, dec.arm, dec.propensity))
    assert np.array_equal(outs[0][0], outs[1][0])
    assert np.array_equal(outs[0][1], outs[1][1])
    assert np.array_equal(outs[0][2], outs[1][2])


def test_the_audit_catches_violations():
    """The audit is the judge of the property test: it must flag each kind of violation."""
    aud = audience(3, consent=1.0, reachable=1.0, interest=0.0)
    frame = audience_frame(aud)
    frame.loc[0, "consent_email"] = False
    cfg = GuardrailConfig(frequency_caps=(FrequencyCap(channel=None, max_sends=1, window_hours=24),),
                          offer_inventory={"pct20": 0}, holdout_share=0.0)
    t = pd.Timestamp("2026-07-01T02:00Z")
    sends = pd.DataFrame({
        "decision_id": ["a", "b", "c", "d", "e"],
        "customer_id": [aud.customer_id[0], aud.customer_id[1], aud.customer_id[1], aud.customer_id[2],
                        aud.customer_id[2]],
        "channel": ["email", "wechat", "wechat", "sms", "app_push"],
        "offer": ["pct10", "pct10", "pct10", "beauty_15", "pct20"],
        "send_at": [t, t, t + pd.Timedelta(hours=3), t + pd.Timedelta(days=3), t + pd.Timedelta(days=5)],
        "decided_at": [t] * 5,
    })
    frame["timezone"] = "UTC"
    res = audit_sends(sends, frame, cfg, DEFAULT_CATALOG)
    assert set(res.violations) >= {"consent", "frequency_cap:all:24h", "offer_eligibility", "coupon_inventory"}
    frame["timezone"] = "Asia/Shanghai"  # 02:00 UTC is 10:00 there; 05:00 UTC 13:00; fine
    late = sends.assign(send_at=pd.Timestamp("2026-07-01T16:00Z"))  # 00:00 in Shanghai
    assert "quiet_hours" in audit_sends(late, frame, cfg, DEFAULT_CATALOG).violations
    hold = cfg.model_copy(update={"holdout_share": 0.999})
    assert "holdout" in audit_sends(sends, frame, hold, DEFAULT_CATALOG).violations
    unsub = pd.DataFrame({"customer_id": [aud.customer_id[1]], "channel": ["wechat"],
                          "unsubscribed_at": [t - pd.Timedelta(hours=1)]})
    assert "consent_after_unsubscribe" in audit_sends(sends, frame, cfg, DEFAULT_CATALOG,
                                                      unsubscribes=unsub).violations

"""Decision log: round trip, idempotent outcomes, attribution window, default reward, join rate."""

from __future__ import annotations

import pickle
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from core.types import Channel
from policies.log import JOINED_COLUMNS, DecisionLog, IngestResult, channel_codes, context_frame
from policies.records import DecisionRecord, OutcomeRecord
from policies.reward import RewardConfig

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
CFG = RewardConfig()  # 24 h attribution


def send(i: int, *, at: datetime = T0, delay_h: float = 2.0, channel: str = "email", customer: str | None = None,
         **kw) -> DecisionRecord:
    return DecisionRecord(
        decision_id=f"d{i}",
        customer_id=customer or f"c{i}",
        decided_at=at,
        action=f"{channel}|pct10|10",
        channel=channel,
        offer="pct10",
        send_slot=10,
        send_at=at + timedelta(hours=delay_h),
        timezone="Asia/Shanghai",
        propensity=kw.pop("propensity", 0.25),
        distribution={"no_send": 0.75, f"{channel}|pct10|10": 0.25},
        context={"recency": float(i), "segment": "vip", "app": True, "missing": None},
        scores={"offer": 0.3},
        reasons=["best offer"],
        guardrails=["quiet_hours"],
        policy="thompson",
        policy_version="2",
        model_versions={"offer": "5"},
        **kw,
    )


def no_send(i: int, *, at: datetime = T0, customer: str | None = None, **kw) -> DecisionRecord:
    return DecisionRecord(
        decision_id=f"d{i}", customer_id=customer or f"c{i}", decided_at=at, action="no_send",
        propensity=0.75, distribution={"no_send": 0.75, "email|pct10|10": 0.25}, policy="thompson", **kw,
    )


def outcome(eid: str, did: str, event: str, at: datetime, value: float | None = None) -> OutcomeRecord:
    return OutcomeRecord(event_id=eid, decision_id=did, event=event, occurred_at=at, value=value)


@pytest.fixture
def log(tmp_path) -> DecisionLog:
    with DecisionLog(tmp_path / "decisions" / "log.sqlite") as lg:
        yield lg


def test_round_trip_keeps_every_field_typed(log):
    recs = [send(1, holdout=False, journey_id="welcome", journey_step="s1", ab_arm="B"), no_send(2, holdout=True)]
    log.append(recs)
    assert len(log) == 2
    df = log.decisions()
    assert list(df["decision_id"]) == ["d1", "d2"]
    assert df["decided_at"].dtype == "datetime64[ns, UTC]"
    assert df.loc[0, "decided_at"] == pd.Timestamp(T0)
    assert df.loc[0, "send_at"] == pd.Timestamp(T0 + timedelta(hours=2))
    assert pd.isna(df.loc[1, "send_at"])
    assert df.loc[0, "channel"] == "email" and df.loc[1, "channel"] is None
    assert df.loc[0, "send_slot"] == 10 and pd.isna(df.loc[1, "send_slot"])
    assert df["propensity"].tolist() == [0.25, 0.75]
    assert df.loc[0, "distribution"] == {"no_send": 0.75, "email|pct10|10": 0.25}
    assert df.loc[0, "context"] == {"recency": 1.0, "segment": "vip", "app": True, "missing": None}
    assert df.loc[0, "reasons"] == ["best offer"] and df.loc[0, "guardrails"] == ["quiet_hours"]
    assert df.loc[0, "model_versions"] == {"offer": "5"}
    assert df["holdout"].tolist() == [False, True]
    assert (df.loc[0, "journey_id"], df.loc[0, "journey_step"], df.loc[0, "ab_arm"]) == ("welcome", "s1", "B")
    raw = log.decisions(parse_json=False)
    assert raw.loc[0, "distribution"] == '{"no_send":0.75,"email|pct10|10":0.25}'
    only_ctx = log.decisions(parse_json=["context"])
    assert isinstance(only_ctx.loc[0, "context"], dict) and isinstance(only_ctx.loc[0, "scores"], str)
    wide = context_frame(df)
    assert wide.loc[0, "recency"] == 1.0 and pd.isna(wide.loc[1, "recency"])


def test_microsecond_timestamps_and_other_zones_survive(log):
    at = datetime(2026, 7, 1, 16, 0, 0, 123457, tzinfo=UTC).astimezone(pd.Timestamp("2026-01-01", tz="Asia/Tokyo").tz)
    log.append([send(1, at=at)])
    assert log.decisions().loc[0, "decided_at"] == pd.Timestamp("2026-07-01 16:00:00.123457", tz="UTC")


def test_empty_log_gives_typed_empty_frames(log):
    assert len(log) == 0
    df = log.decisions()
    assert df.empty and df["decided_at"].dtype == "datetime64[ns, UTC]"
    j = log.joined(CFG, now=T0)
    assert j.empty and set(JOINED_COLUMNS) <= set(j.columns)
    assert np.isnan(log.join_rate(now=T0))
    assert log.sends_since(T0).empty


def test_since_until_filter_on_decision_time(log):
    log.append([send(i, at=T0 + timedelta(hours=i)) for i in range(5)])
    df = log.decisions(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert df["decision_id"].tolist() == ["d1", "d2"]
    assert log.joined(CFG, now=T0, since=T0 + timedelta(hours=4))["decision_id"].tolist() == ["d4"]
    with pytest.raises(InputError, match="time zone"):
        log.decisions(since=datetime(2026, 7, 1))


def test_duplicate_decision_id_rejects_the_whole_batch(log):
    log.append([send(1)])
    with pytest.raises(InputError, match="'d1' is already in the decision log"):
        log.append([send(2), send(1)])
    assert len(log) == 1  # d2 was not written either
    with pytest.raises(InputError, match="twice in the batch"):
        log.append([send(3), send(3)])
    assert len(log) == 1
    log.append([send(2), send(1)], if_exists="ignore")  # a retried append is harmless
    assert sorted(log.decisions()["decision_id"]) == ["d1", "d2"]


def test_append_rejects_what_is_not_a_decision_record(log):
    with pytest.raises(InputError, match="DecisionRecord"):
        log.append([{"decision_id": "x"}])
    log.append([])  # nothing to do
    assert len(log) == 0


def test_outcomes_are_idempotent_by_event_id(log):
    log.append([send(1)])
    conv = outcome("e1", "d1", "converted", T0 + timedelta(hours=3), 40.0)
    first = log.add_outcomes([conv, conv, outcome("e2", "d1", "opened", T0 + timedelta(hours=2.5))])
    assert first == IngestResult(2, 1, 0, ("e1",), ())
    again = log.add_outcomes([conv, outcome("e3", "nope", "opened", T0)])
    assert (again.accepted, again.duplicates, again.unknown_decision, again.unknown) == (0, 1, 1, 1)
    assert again.duplicate_event_ids == ("e1",) and again.unknown_event_ids == ("e3",)
    # a retry with a different payload under the same event_id is still the same event: first wins
    log.add_outcomes([outcome("e1", "d1", "converted", T0 + timedelta(hours=3), 999.0)])
    j = log.joined(CFG, now=T0 + timedelta(days=3))
    assert j.loc[0, "value"] == 40.0 and j.loc[0, "n_outcomes"] == 2
    assert len(log.outcomes()) == 2 and set(log.outcomes()["event_id"]) == {"e1", "e2"}


def test_attribution_window_is_anchored_at_send_time_for_sends(log):
    log.append([send(1, delay_h=5.0), no_send(2)])
    send_at = T0 + timedelta(hours=5)
    log.add_outcomes([
        outcome("a", "d1", "converted", send_at - timedelta(minutes=1), 100.0),  # before the send: not its effect
        outcome("b", "d1", "converted", send_at + timedelta(hours=24), 10.0),  # window edge: inside
        outcome("c", "d1", "converted", send_at + timedelta(hours=24, seconds=1), 1000.0),  # too late
        outcome("d", "d1", "opened", send_at + timedelta(hours=1)),
        outcome("e", "d2", "converted", T0 + timedelta(hours=23), 7.5),  # no-send: anchored at decided_at
        outcome("f", "d2", "converted", T0 + timedelta(hours=25), 3.0),
    ])
    j = log.joined(CFG, now=T0 + timedelta(days=5)).set_index("decision_id")
    assert j.loc["d1", "value"] == 10.0 and j.loc["d1", "converted"] and j.loc["d1", "opened"]
    assert not j.loc["d1", "clicked"] and not j.loc["d1", "unsubscribed"]
    assert j.loc["d1", "n_outcomes"] == 4
    assert j.loc["d1", "reward"] == pytest.approx(10.0 - CFG.channel_cost[Channel.EMAIL])
    assert j.loc["d2", "value"] == 7.5 and j.loc["d2", "reward"] == 7.5
    short = log.joined(RewardConfig(attribution_hours=2.0), now=T0 + timedelta(days=5)).set_index("decision_id")
    assert short.loc["d1", "value"] == 0.0 and short.loc["d1", "opened"]
    assert short.loc["d2", "value"] == 0.0 and not short.loc["d2", "converted"]


def test_late_only_outcomes_are_seen_but_not_attributed(log):
    log.append([send(1)])
    log.add_outcomes([outcome("x", "d1", "unsubscribed", T0 + timedelta(days=3))])
    j = log.joined(CFG, now=T0 + timedelta(days=5))
    assert j.loc[0, "outcome_seen"] and not j.loc[0, "unsubscribed"]
    assert j.loc[0, "reward"] == pytest.approx(-CFG.channel_cost[Channel.EMAIL])


def test_default_reward_without_outcomes_is_minus_channel_cost(log):
    log.append([send(1, channel="sms"), send(2, channel="app_push"), no_send(3), send(4, channel="wechat")])
    log.add_outcomes([outcome("u", "d4", "unsubscribed", T0 + timedelta(hours=3))])
    j = log.joined(CFG, now=T0 + timedelta(days=2)).set_index("decision_id")
    assert j.loc["d1", "reward"] == pytest.approx(-0.05)
    assert j.loc["d2", "reward"] == pytest.approx(-0.001)
    assert j.loc["d3", "reward"] == 0.0
    assert j.loc["d4", "reward"] == pytest.approx(-0.01 - CFG.unsubscribe_penalty)
    assert not j["outcome_seen"][["d1", "d2", "d3"]].any()


def test_matured_and_join_rate(log):
    log.append([send(1), send(2), no_send(3), send(4, at=T0 + timedelta(days=2))])
    log.add_outcomes([outcome("a", "d1", "delivered", T0 + timedelta(hours=2)),
                      outcome("b", "d4", "delivered", T0 + timedelta(days=2, hours=2))])
    now = T0 + timedelta(hours=27)  # d1, d2 (anchor +2h) and d3 (anchor T0) matured; d4 not
    j = log.joined(CFG, now=now).set_index("decision_id")
    assert j["matured"].to_dict() == {"d1": True, "d2": True, "d3": True, "d4": False}
    assert log.join_rate(now=now) == pytest.approx(1 / 3)
    assert log.join_rate(now=now, sends_only=True) == pytest.approx(1 / 2)
    assert np.isnan(log.join_rate(now=T0))
    assert log.join_rate(now=T0 + timedelta(days=9)) == pytest.approx(2 / 4)
    # the window used for maturity is the reward config's
    early = T0 + timedelta(hours=2.5)  # with a 1 h window only d3 (anchored at T0) has matured
    assert np.isnan(log.join_rate(now=early))
    assert log.join_rate(now=early, reward_config=RewardConfig(attribution_hours=1)) == 0.0


def test_sends_since_lists_sends_only_in_send_time_order(log):
    log.append([
        send(1, customer="a", at=T0, delay_h=1),
        send(2, customer="b", at=T0, delay_h=30, channel="sms"),  # scheduled a day later
        no_send(3, customer="a"),
        send(4, customer="a", at=T0 - timedelta(days=3)),
    ])
    s = log.sends_since(T0)
    assert s["decision_id"].tolist() == ["d1", "d2"]
    assert list(s.columns) == ["customer_id", "channel", "offer", "send_at", "decision_id"]
    assert s["send_at"].dtype == "datetime64[ns, UTC]"
    assert log.sends_since(T0, customer_ids=["a"])["decision_id"].tolist() == ["d1"]
    assert log.sends_since(T0 - timedelta(days=4), until=T0)["decision_id"].tolist() == ["d4"]


def test_reopen_and_pickle_see_the_same_log(tmp_path):
    path = tmp_path / "log.sqlite"
    with DecisionLog(path) as lg:
        lg.append([send(1)])
        clone = pickle.loads(pickle.dumps(lg))
        clone.append([send(2)])
        assert len(lg) == 2
        clone.close()
    assert len(DecisionLog(path, synchronous="NORMAL")) == 2
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unusable_paths_are_input_errors(tmp_path):
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a usable SQLite decision log"):
        DecisionLog(tmp_path / "junk.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(InputError, match="other tables"):
        DecisionLog(other)
    with pytest.raises(InputError, match="not a file"):
        DecisionLog(tmp_path)
    with pytest.raises(InputError, match="synchronous"):
        DecisionLog(tmp_path / "x.sqlite", synchronous="OFF")


def test_channel_codes_follow_core_channels():
    assert channel_codes(["sms", "email", None, "wechat", "app_push", float("nan")]).tolist() == [0, 1, -1, 2, 3, -1]


def test_reading_only_some_columns(log):
    log.append([send(1), no_send(2)])
    log.add_outcomes([outcome("a", "d1", "converted", T0 + timedelta(hours=3), 12.0)])
    d = log.decisions(columns=["action", "propensity"])
    assert list(d.columns) == ["decision_id", "action", "propensity"]
    j = log.joined(CFG, now=T0 + timedelta(days=2), columns=["context"])
    assert list(j.columns[:3]) == ["decision_id", "channel", "context"] and "distribution" not in j
    assert j["reward"].tolist() == pytest.approx([12.0 - 0.002, 0.0])
    with pytest.raises(InputError, match="unknown decision-log columns"):
        log.decisions(columns=["nope"])


def test_a_distribution_inconsistent_with_the_action_is_refused(log):
    base = send(1).model_dump()
    bad_prop = DecisionRecord(**{**base, "propensity": 0.5})
    with pytest.raises(InputError, match="d1: propensity 0.5 differs"):
        log.append([bad_prop])
    missing = DecisionRecord(**{**base, "distribution": {"no_send": 1.0}})
    with pytest.raises(InputError, match="not in its logged distribution"):
        log.append([missing])
    short = DecisionRecord(**{**base, "distribution": {"no_send": 0.5, "email|pct10|10": 0.25}})
    with pytest.raises(InputError, match="sum to 0.75"):
        log.append([short])
    assert len(log) == 0
    log.append([DecisionRecord(**{**base, "distribution": {}})])  # no distribution logged: allowed
    assert len(log) == 1

"""Report arithmetic on a tiny hand-made decision log."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from monitoring.config import MonitoringConfig
from monitoring.effect import ab_test, cluster_mean, holdout_lift, welch
from monitoring.logdata import read_window
from monitoring.report import run_report, summarise
from policies.log import DecisionLog
from policies.records import DecisionRecord, OutcomeRecord
from policies.reward import RewardConfig

T0 = datetime(2026, 7, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)


def _decision(i, customer, day, channel=None, holdout=False, arm=None, offer="pct10"):
    at = T0 + timedelta(days=day)
    return DecisionRecord(
        decision_id=f"d{i}", customer_id=customer, decided_at=at, action=f"{channel}|{offer}|10" if channel else "no_send",
        channel=channel, offer=offer if channel else None, send_slot=10 if channel else None,
        send_at=at + timedelta(hours=2) if channel else None, propensity=0.5, policy="p1" if arm != "B" else "p2",
        ab_arm=arm, holdout=holdout)


def _conv(i, decided_day, value, channel=True, event="converted"):
    at = T0 + timedelta(days=decided_day, hours=3 if channel else 1)
    return OutcomeRecord(event_id=f"e{i}-{event}", decision_id=f"d{i}", event=event, occurred_at=at,
                         value=value if event == "converted" else None)


@pytest.fixture
def tiny(workspace):
    """4 treated customers (2 per A/B arm, 2 days each) and 2 holdout customers."""
    log = DecisionLog(workspace.decisions / "decisions.sqlite")
    recs = [
        _decision(0, "a1", 0, "sms", arm="A"), _decision(1, "a1", 1, "email", arm="A"),
        _decision(2, "a2", 0, "email", arm="A"), _decision(3, "a2", 1, None, arm="A"),
        _decision(4, "b1", 0, "sms", arm="B"), _decision(5, "b1", 1, "sms", arm="B"),
        _decision(6, "b2", 0, None, arm="B"), _decision(7, "b2", 1, "email", arm="B"),
        _decision(8, "h1", 0, holdout=True), _decision(9, "h1", 1, holdout=True),
        _decision(10, "h2", 0, holdout=True), _decision(11, "h2", 1, holdout=True),
    ]
    log.append(recs)
    log.add_outcomes([
        _conv(0, 0, 100.0), _conv(1, 1, 40.0), _conv(5, 1, 60.0), _conv(7, 1, 20.0),
        _conv(9, 1, 30.0, channel=False), _conv(4, 0, 0, event="unsubscribed"),
    ])
    log.close()
    return workspace


def test_money_roi_and_lift_by_hand(tiny):
    rc = RewardConfig()
    log = DecisionLog(tiny.decisions / "decisions.sqlite")
    frame = read_window(log, None, None, NOW, rc)
    s = summarise(frame, MonitoringConfig())
    sms = next(r for r in s["by_channel"] if r["channel"] == "sms")
    # sms: 3 sends (d0, d4, d5), conversions 100 + 60, one unsubscribe
    assert sms["sends"] == 3 and sms["conversions"] == 2 and sms["unsubscribes"] == 1
    assert sms["revenue"] == pytest.approx(160.0)
    assert sms["channel_cost"] == pytest.approx(3 * 0.05)
    assert sms["roi"] == pytest.approx((160.0 - 0.15) / 0.15)
    assert sms["reward"] == pytest.approx(160.0 - 0.15 - 5.0)
    assert next(r for r in s["by_channel"] if r["channel"] == "no_send")["roi"] is None
    # lift of value per customer-day: treated 220 / 8 customer-days, holdout 30 / 4
    lift = s["holdout_lift"]["value"]
    assert lift["treated"]["mean"] == pytest.approx(220 / 8)
    assert lift["holdout"]["mean"] == pytest.approx(30 / 4)
    assert lift["lift"] == pytest.approx(220 / 8 - 30 / 4)
    # equal days per customer: the cluster SE is the SE of the per-customer means
    per_t = np.array([140, 0, 60, 20]) / 2
    per_h = np.array([30, 0]) / 2
    se = math.sqrt(per_t.var(ddof=1) / 4 + per_h.var(ddof=1) / 2)
    assert lift["se"] == pytest.approx(se)
    z = stats.norm.ppf(0.975)
    assert lift["ci"] == pytest.approx([lift["lift"] - z * se, lift["lift"] + z * se])
    assert s["totals"]["incremental_value"] == pytest.approx(lift["lift"] * 8)
    log.close()


def test_ab_test_matches_scipy_welch(tiny):
    log = DecisionLog(tiny.decisions / "decisions.sqlite")
    frame = read_window(log, None, None, NOW, RewardConfig())
    ab = ab_test(frame, 0.95)
    assert ab["control"] == "A" and set(ab["arms"]) == {"A", "B"}
    rc = RewardConfig()
    a = np.array([100 - 0.05 + 40 - 0.002, 0 - 0.002])  # a1, a2
    b = np.array([0 - 0.05 - 5.0 + 60 - 0.05, 20 - 0.002])  # b1, b2
    ref = stats.ttest_ind(b, a, equal_var=False)
    comp = ab["comparisons"][0]
    assert comp["difference"] == pytest.approx(b.mean() - a.mean())
    assert comp["p_value"] == pytest.approx(ref.pvalue)
    assert comp["t"] == pytest.approx(ref.statistic)
    assert comp["ci"] == pytest.approx(list(ref.confidence_interval(0.95)))
    assert rc.unsubscribe_penalty == 5.0
    log.close()


def test_welch_against_scipy_random():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 40), rng.exponential(1.5, 70)
    ours = welch(a, b, 0.9)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert ours["p_value"] == pytest.approx(ref.pvalue)
    assert ours["ci"] == pytest.approx(list(ref.confidence_interval(0.9)))


def test_cluster_mean_unequal_days():
    sums, counts = np.array([3.0, 0.0, 5.0]), np.array([1, 2, 3])
    mean, se = cluster_mean(sums, counts)
    assert mean == pytest.approx(8 / 6)
    resid = sums - mean * counts
    assert se == pytest.approx(math.sqrt((resid**2).sum() / 36 * 3 / 2))


def test_lift_without_holdout_is_nan_not_error(tiny):
    log = DecisionLog(tiny.decisions / "decisions.sqlite")
    frame = read_window(log, None, None, NOW, RewardConfig())
    lift = holdout_lift(frame[~frame["holdout"]], "reward")
    assert math.isnan(lift["lift"]) and lift["holdout"]["customers"] == 0
    log.close()


def test_report_writes_html_and_json(tiny):
    s = run_report(tiny, now=NOW, mlflow=False)
    assert (tiny.reports / "report.html").read_text().count("<img") >= 2
    assert (tiny.reports / "report.json").is_file()
    assert s["totals"]["matured"] == 12 and s["ab_test"]["comparisons"]

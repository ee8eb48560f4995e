"""What the engine reads back from its own decision log per decide (``_logged_sends``, and
``_logged_sends_bulk`` for an audience) answers as the queries before the log's sends index and
unsubscribes table did, on a log migrated from the older schema; an unsubscribe reported over
/outcome is seen by the next decide."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
from collections import Counter
from datetime import timedelta

import pytest
import yaml

from policies.log import DecisionLog
from tests.policies.test_log_sends import T0, baseline_schema_2, outcome

#: the queries of the code before the sends index (the reference): every decision of the customer
#: through (customer_id, decided_at), and the unsubscribes by joining every outcome to its decision
_OLD_ONE = (
    "SELECT customer_id, channel, send_at FROM decisions WHERE customer_id = ? AND channel IS NOT NULL "
    "AND +send_at >= ? "
    "UNION ALL "
    "SELECT d.customer_id, d.channel, NULL FROM outcomes o JOIN decisions d ON o.decision_id = d.decision_id "
    "WHERE o.event = 'unsubscribed' AND d.channel IS NOT NULL AND o.occurred_at <= ? AND d.customer_id = ?")


def _engine(path):
    """The engine's log-reading part alone (no workspace: these methods use only the log)."""
    from serving.engine import DecisionEngine

    eng = object.__new__(DecisionEngine)
    eng.log = DecisionLog(path)
    eng._local = threading.local()
    return eng


def _reference(path, ids, t) -> tuple[Counter, Counter]:
    """(sends as (customer, channel, send_at ns), unsubscribes as (customer, channel)) of the old query."""
    from serving.engine import _LOOKBACK, _us

    sends, unsub = Counter(), Counter()
    with sqlite3.connect(path) as conn:
        for c in dict.fromkeys(ids):
            for cid, ch, at in conn.execute(_OLD_ONE, (c, _us(t - _LOOKBACK), _us(t), c)):
                if at is None:
                    unsub[(cid, ch)] += 1
                else:
                    sends[(cid, ch, at * 1000)] += 1
    return sends, unsub


def _got(s) -> tuple[Counter, Counter]:
    return (Counter(zip(s.customer_id.tolist(), s.channel.tolist(), s.send_at.tolist(), strict=True)),
            Counter(s.unsubscribed))


def test_a_migrated_log_answers_as_before(tmp_path):
    old = tmp_path / "old.sqlite"
    baseline_schema_2(old)
    new = tmp_path / "new.sqlite"
    shutil.copy(old, new)
    eng = _engine(new)  # opening it migrates it
    customers = [f"c{i}" for i in range(10)] + ["nobody"]
    times = [T0 + timedelta(days=d, hours=h) for d in (0, 3, 12, 25, 39, 45, 80) for h in (0, 5)]
    seen_sends = seen_unsub = 0
    for t in times:
        for c in customers:
            want = _reference(old, [c], t)
            assert _got(eng._logged_sends([c], t)) == want, (c, t)
            assert _got(eng._logged_sends([c, c], t)) == want  # a batch of one customer
            seen_sends += sum(want[0].values())
            seen_unsub += sum(want[1].values())
        ids = customers[::2] + customers[1::3] + ["c0"]
        want = _reference(old, ids, t)
        assert _got(eng._logged_sends(ids, t)) == want, t
        assert _got(eng._logged_sends_bulk(ids, t)) == want, t  # the scan of the recent sends
        assert _got(eng._logged_sends_bulk(ids[:1], t)) == _reference(old, ids[:1], t)  # few recent sends
    assert seen_sends > 100 and seen_unsub > 10  # the cases were not empty
    # an unsubscribe reported after the migration is read at once (the reader sees the next commit)
    t = T0 + timedelta(days=45)
    before = _got(eng._logged_sends(["c3"], t))[1]
    eng.log.add_outcomes([outcome("late", "d13", "unsubscribed", t - timedelta(hours=1)),
                          outcome("future", "d23", "unsubscribed", t + timedelta(hours=1))])
    assert _got(eng._logged_sends(["c3"], t))[1] - before == Counter({("c3", "sms"): 1})
    eng.log.close()


@contextlib.contextmanager
def _client(ws, monkeypatch, tmp_path, **config):
    from starlette.testclient import TestClient

    monkeypatch.setenv("DECISIONING_HOME", str(ws.root))
    path = tmp_path / "serving.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DECISIONING_SERVING_CONFIG", str(path))
    from serving.service import asgi_app

    with TestClient(asgi_app()) as c:
        yield c


@pytest.mark.integration
def test_an_unsubscribe_reported_over_http_is_seen_by_the_next_decide(ws_copy, customer_ids, monkeypatch,
                                                                     tmp_path):
    config = {"refresh_seconds": 0, "policy_layer": {"guardrails": {"frequency_caps": [], "holdout_share": 0.0,
                                                                     "sms_daily_budget": None}}}
    with _client(ws_copy, monkeypatch, tmp_path, **config) as c:
        at = "2030-03-02T09:00:00Z"
        first = None
        for cid in customer_ids[60:160]:
            d = c.post("/decide", json={"customer_id": cid, "request_time": at, "allow_no_send": False}).json()
            if d["action"]["send"]:
                first = d
                break
        assert first is not None
        channel = first["action"]["channel"]
        ask = {"customer_id": first["customer_id"], "request_time": "2030-03-03T09:00:00Z",
               "allow_no_send": False, "channels": [channel]}
        # before the unsubscribe, that channel is allowed: the same request would send on it
        assert c.post("/decide", json=ask).json()["action"]["send"]
        r = c.post("/outcome", json={"event_id": "u1", "decision_id": first["decision_id"], "event": "unsubscribed",
                                     "occurred_at": "2030-03-02T12:00:00Z"})
        assert r.json()["accepted"] == 1
        later = c.post("/decide", json={**ask, "request_time": "2030-03-03T10:00:00Z"}).json()
        assert not later["action"]["send"] and "consent" in later["guardrails"]
        # a decide before the unsubscribe happened does not see it
        earlier = c.post("/decide", json={**ask, "request_time": "2030-03-02T11:00:00Z"}).json()
        assert earlier["action"]["send"]

"""The decision service's HTTP layer, in process (BentoML's ASGI app), on a small prepared workspace."""

from __future__ import annotations

import contextlib
import sqlite3

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def client(ws, monkeypatch, tmp_path, **config):
    from starlette.testclient import TestClient

    monkeypatch.setenv("DECISIONING_HOME", str(ws.root))
    if config:
        path = tmp_path / "serving.yaml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("DECISIONING_SERVING_CONFIG", str(path))
    else:
        monkeypatch.delenv("DECISIONING_SERVING_CONFIG", raising=False)
    from serving.service import asgi_app

    with TestClient(asgi_app()) as c:
        yield c


def log_rows(ws) -> pd.DataFrame:
    with sqlite3.connect(ws.decisions / "decisions.sqlite") as conn:
        return pd.read_sql("SELECT * FROM decisions", conn)


def test_decide_batch_outcome_and_validation(ws_copy, customer_ids, monkeypatch, tmp_path):
    with client(ws_copy, monkeypatch, tmp_path, refresh_seconds=0) as c:
        r = c.post("/decide", json={"customer_id": customer_ids[3], "journey": {"id": "j1", "step": "s1"},
                                    "context": {"email": "ann@example.com", "note": "call +86 138 0013 8000",
                                                "campaign": "spring"}})
        assert r.status_code == 200, r.text
        d = r.json()
        for key in ("decision_id", "action", "probability", "scores", "reasons", "guardrails", "policy",
                    "policy_version", "model_versions", "fallback"):
            assert key in d
        assert 0 < d["probability"] <= 1
        assert d["fallback"] is False and d["policy"] == "thompson"
        assert set(d["model_versions"]) == {"propensity", "churn", "offer", "send_time"}
        assert 0 <= d["scores"]["propensity"] <= 1
        if d["action"]["send"]:
            assert d["action"]["send_at"][-6] in "+-"  # local time with its offset
        # durable before the response: it is in the log
        logged = log_rows(ws_copy)
        row = logged.set_index("decision_id").loc[d["decision_id"]]
        assert row["action"] == d["action"]["arm"] and row["journey_id"] == "j1"
        assert abs(row["propensity"] - d["probability"]) < 1e-12
        free = row["context_extra"]  # the request's free-form context (the features are binary: context)
        assert "ann@example.com" not in free and "138 0013 8000" not in free
        assert "spring" in free

        # batch: one decision per customer, in order, all logged
        b = c.post("/decide/batch", json={"customer_ids": customer_ids[:300], "channels": ["email", "sms"],
                                          "send_window": {"start_hour": 9, "end_hour": 13}})
        assert b.status_code == 200, b.text
        decisions = b.json()["decisions"]
        assert [x["customer_id"] for x in decisions] == customer_ids[:300]
        sends = [x for x in decisions if x["action"]["send"]]
        assert sends, "some of 300 customers should get a message"
        assert all(x["action"]["channel"] in ("email", "sms") for x in sends)
        assert all(9 <= x["action"]["send_slot"] < 14 for x in sends)  # quiet-hour moves may shift an hour
        assert len(log_rows(ws_copy)) == 301

        # outcomes: idempotent by event_id, unknown decisions named
        o = {"event_id": "ev-1", "decision_id": d["decision_id"], "event": "opened",
             "occurred_at": "2030-01-01T10:00:00Z"}
        assert c.post("/outcome", json=o).json()["accepted"] == 1
        again = c.post("/outcome", json={"outcomes": [o, dict(o, event_id="ev-2", event="clicked"),
                                                      dict(o, event_id="ev-3", decision_id="nope")]}).json()
        assert again["accepted"] == 1 and again["duplicates"] == 1 and again["duplicate_event_ids"] == ["ev-1"]
        assert again["unknown_decision"] == 1 and again["unknown_event_ids"] == ["ev-3"]
        with sqlite3.connect(ws_copy.decisions / "decisions.sqlite") as conn:
            assert conn.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 2

        # invalid requests: 400 naming the field, never 5xx
        for body, field in (({"customer_id": customer_ids[0], "offers": ["gold_bar"]}, "offers"),
                            ({"customer_id": "ann@example.com"}, "customer_id"),
                            ({"customer_idx": "c_1"}, "customer_id"),
                            ({"customer_id": "c_1", "send_window": {"start_hour": 20, "end_hour": 3}}, "send_window"),
                            ({"customer_id": "c_1", "channels": ["fax"]}, "channels")):
            r = c.post("/decide", json=body)
            assert r.status_code == 400, (body, r.status_code)
            assert field in r.text, (field, r.text)
        r = c.post("/outcome", json={"event_id": "x", "decision_id": d["decision_id"], "event": "bought",
                                     "occurred_at": "2030-01-01T00:00:00Z"})
        assert r.status_code == 400 and "event" in r.text
        assert c.post("/decide/batch", json={"customer_ids": []}).status_code == 400

        # no raw contact identifiers anywhere in responses or the log
        raw = pd.read_parquet(ws_copy.raw / "customers.parquet")
        idents = set(raw["email"].dropna().astype(str)) | set(raw["phone"].dropna().astype(str))
        idents |= set(raw["wechat_unionid"].dropna().astype(str))
        text = b.text + r.text + (ws_copy.decisions / "decisions.sqlite").read_bytes().decode("latin-1")
        assert not [i for i in list(idents)[:3000] if len(i) > 5 and i in text]

        assert c.get("/healthz").status_code == 200
        paths = c.get("/docs.json").json()["paths"]
        assert {"/decide", "/decide/batch", "/outcome", "/noop"} <= set(paths)


def test_bearer_token(ws_copy, customer_ids, monkeypatch, tmp_path):
    with client(ws_copy, monkeypatch, tmp_path, auth_token="s3cret-token", refresh_seconds=0) as c:
        body = {"customer_id": customer_ids[0]}
        assert c.post("/decide", json=body).status_code == 401
        assert c.post("/decide", json=body, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert c.post("/outcome", json={}).status_code == 401
        assert c.post("/decide", json=body, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        for probe in ("/healthz", "/readyz", "/livez"):
            assert c.get(probe).status_code == 200


def test_ab_arm_logged_and_stable(ws_copy, customer_ids, monkeypatch, tmp_path):
    from serving.engine import ab_assignment

    ab = {"challenger": "greedy", "challenger_share": 0.3, "salt": "ab-test"}
    with client(ws_copy, monkeypatch, tmp_path, ab_test=ab, refresh_seconds=0) as c:
        ids = customer_ids[:400]
        first = c.post("/decide/batch", json={"customer_ids": ids}).json()["decisions"]
        second = c.post("/decide/batch", json={"customer_ids": ids}).json()["decisions"]
    arms = [d["ab_arm"] for d in first]
    assert arms == [d["ab_arm"] for d in second]
    expected = ab_assignment(ids, 0.3, "ab-test")
    assert arms == ["challenger" if e else "champion" for e in expected]
    assert 0.2 < arms.count("challenger") / len(arms) < 0.4
    policies = {d["ab_arm"]: d["policy"] for d in first if not d["fallback"]}
    assert policies == {"champion": "thompson", "challenger": "greedy"}
    logged = log_rows(ws_copy).set_index("decision_id")
    assert [logged.loc[d["decision_id"], "ab_arm"] for d in first] == arms

"""The closed loop over HTTP against a real `decisioning serve` subprocess on the small prepared
world: the journey's policy lane decided by the service (same report as in process, 0 guardrail
violations, outcomes counted once when re-sent), /learn changing the policy version, the drift
gauge in /metrics, and kill -9 of the server during an HTTP journey."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pandas as pd
import pytest
from _server import free_port, kill_tree, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUSTOMERS, DAYS = 600, 3




def _start(ws, port: int) -> subprocess.Popen:
    env = dict(os.environ, DECISIONING_HOME=str(ws.root), DECISIONING_LEARN_SECONDS="0")
    env.pop("DECISIONING_SERVING_CONFIG", None)
    cmd = [sys.executable, "-m", "decisioning.cli", "serve", "--port", str(port), "--workspace", str(ws.root)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)






def _log_ids(ws, table: str, column: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(ws.decisions / "decisions.sqlite")) as c:
        return {r[0] for r in c.execute(f"SELECT {column} FROM {table}")}


def _gauge(url: str, name: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def server(prepared_ws, tmp_path_factory):
    import shutil

    from core.workspace import Workspace

    dst = tmp_path_factory.mktemp("httpj") / "ws"
    shutil.copytree(prepared_ws.root, dst, ignore=shutil.ignore_patterns("decisions"))
    ws = Workspace(dst)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(ws, port)
    try:
        wait_ready(url, proc)
        yield ws, url
    finally:
        kill_tree(proc, wait=True)


def _journey(ws, url, days=DAYS, **lane_kw):
    from journey.remote import RemotePolicyLane
    from journey.run import JourneySettings, run_journey

    lane = RemotePolicyLane(url, chunk=250, **lane_kw)
    settings = JourneySettings(days=days, customers=CUSTOMERS, seed=3, batch_size=250)
    return lane, settings, run_journey


def test_http_journey_same_report_learns_and_counts_outcomes_once(server):
    from journey.run import run_journey
    from policies.config import PolicyLayerConfig, PolicySpec

    ws, url = server
    lane, settings, run = _journey(ws, url)
    served = lane.status["policies"]["champion"]["policy"]
    cfg = PolicyLayerConfig().model_copy(update={"policy": PolicySpec(name=served, warm_start=False)})
    remote = run(ws, settings, cfg, decider=lane)
    local = run_journey(ws, settings, cfg)
    assert set(local) <= set(remote)
    for lane_name in ("policy", "random", "rule", "oracle"):
        assert set(remote[lane_name]) == set(local[lane_name])
        assert len(remote[lane_name]["value_per_day"]) == DAYS
    # the counterfactual lanes are the same in both runs (same world, seed, random stream)
    assert remote["rule"]["value"] == pytest.approx(local["rule"]["value"])
    assert remote["guardrail_violations"] == 0
    assert remote["violations"]["policy"]["total"] == 0
    h = remote["http"]
    assert remote["decisions_logged"] == CUSTOMERS * DAYS == h["decisions"]
    assert h["requests"] >= DAYS * (CUSTOMERS // 250) and h["decisions_per_second"] > 0
    assert h["fallback_decisions"] < CUSTOMERS * DAYS  # the policy, not the safe rule, decided
    assert h["outcomes"]["accepted"] == h["outcomes"]["events"] > 0 and h["outcomes"]["duplicates"] == 0
    assert h["learned"] > 0 and h["policy_version_first"] != h["policy_version_last"]
    # every decision received over HTTP is in the service's log
    received = set(lane.decisions()["decision_id"])
    assert received <= _log_ids(ws, "decisions", "decision_id")

    # outcomes re-sent count once
    before = len(_log_ids(ws, "outcomes", "event_id"))
    again = lane.client.report_outcomes(lane.sent_outcomes)
    assert again["accepted"] == 0 and again["duplicates"] == len(lane.sent_outcomes)
    assert len(_log_ids(ws, "outcomes", "event_id")) == before

    # /learn later in (simulated) time: the decisions of the last day mature, the version changes
    start = pd.Timestamp(min(lane.decisions()["decided_at"]))
    as_of = (start + pd.Timedelta(days=DAYS + 3)).isoformat()
    v0 = httpx.post(f"{url}/status", json={}, timeout=60).json()["policies"]["champion"]["version"]
    res = httpx.post(f"{url}/learn", json={"as_of": as_of}, timeout=120)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["learned"] > 0
    assert body["versions"]["champion"]["before"] == v0 != body["versions"]["champion"]["after"]
    assert httpx.post(f"{url}/status", json={}, timeout=60).json()["policies"]["champion"]["version"] \
        == body["versions"]["champion"]["after"]
    assert any(p.endswith(".pkl") for p in body["saved"])
    # learning again at the same time finds nothing new (each decision is learned from once)
    assert httpx.post(f"{url}/learn", json={"as_of": as_of}, timeout=120).json()["learned"] == 0
    lane.close()


def test_learn_is_in_the_openapi_and_rejects_bad_time(server):
    ws, url = server
    spec = httpx.get(f"{url}/docs.json", timeout=30).json()
    assert "/learn" in spec["paths"]
    r = httpx.post(f"{url}/learn", json={"as_of": "not a time"}, timeout=30)
    assert 400 <= r.status_code < 500


def test_drift_gauge_follows_the_status_file(server):
    ws, url = server
    status = ws.reports / "drift_status.json"
    status.unlink(missing_ok=True)
    deadline = time.monotonic() + 15
    while _gauge(url, "decisioning_retraining_due") != -1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _gauge(url, "decisioning_retraining_due") == -1  # unknown: no status yet
    ws.reports.mkdir(parents=True, exist_ok=True)
    (ws.reports / "drift.json").write_text(json.dumps({"feature_drift": {"drifted": 3}}))
    status.write_text(json.dumps({"retrain_due": True, "drift_found": True, "alarms": ["feature_drift", "join_rate"],
                                  "n_alarms": 2}))
    deadline = time.monotonic() + 15
    while _gauge(url, "decisioning_retraining_due") != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _gauge(url, "decisioning_retraining_due") == 1
    assert _gauge(url, "decisioning_drift_alarms") == 2
    assert _gauge(url, "decisioning_drifted_features") == 3
    time.sleep(0.05)
    status.write_text(json.dumps({"retrain_due": False, "alarms": [], "n_alarms": 0}) + " ")
    deadline = time.monotonic() + 15
    while _gauge(url, "decisioning_retraining_due") != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _gauge(url, "decisioning_retraining_due") == 0
    assert _gauge(url, "decisioning_drift_alarms") == 0


def test_journey_cli_exits_clearly_when_the_url_does_not_answer(prepared_ws):
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "decisioning.cli", "journey", "--url", f"http://127.0.0.1:{port}",
                           "--days", "1", "--workspace", str(prepared_ws.root)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr and str(port) in proc.stderr


def test_kill_9_during_http_journey(ws_copy):
    ws = ws_copy
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(ws, port)
    try:
        wait_ready(url, proc)
        lane, settings, run = _journey(ws, url, retries=0)
        failure: list[BaseException] = []

        def go():
            try:
                run(ws, settings, None, decider=lane)
            except BaseException as exc:  # the journey must fail once its service is gone
                failure.append(exc)

        th = threading.Thread(target=go)
        th.start()
        deadline = time.monotonic() + 180
        while len(lane.received) < 5 and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.02)
        assert th.is_alive() and len(lane.received) >= 5 and lane.sent_outcomes, "journey ended before the kill"
        kill_tree(proc, wait=True)
        th.join(timeout=120)
        assert not th.is_alive() and failure
        from core.errors import DecisioningError

        assert isinstance(failure[0], DecisioningError)
    finally:
        kill_tree(proc, wait=True)
    received = set(lane.decisions()["decision_id"])
    assert received and received <= _log_ids(ws, "decisions", "decision_id")  # durable before the response
    # restart; re-sent outcomes count once
    proc = _start(ws, port)
    try:
        wait_ready(url, proc)
        sent = [o for o in lane.sent_outcomes if o["decision_id"] in received]
        first = lane.client.report_outcomes(sent)
        assert first["unknown_decision"] == 0 and first["accepted"] + first["duplicates"] == len(sent)
        second = lane.client.report_outcomes(sent)
        assert second["accepted"] == 0 and second["duplicates"] == len(sent)
        ids = {o["event_id"] for o in sent}
        assert ids <= _log_ids(ws, "outcomes", "event_id")
        with contextlib.closing(sqlite3.connect(ws.decisions / "decisions.sqlite")) as c:
            n = c.execute("SELECT COUNT(*) FROM outcomes WHERE event_id IN (SELECT value FROM json_each(?))",
                          (json.dumps(sorted(ids)),)).fetchone()[0]
        assert n == len(ids)
    finally:
        kill_tree(proc, wait=True)
        lane.close()

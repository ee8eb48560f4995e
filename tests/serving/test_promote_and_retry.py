"""Against a real `decisioning serve` with a bearer token: POST /policy/promote switches the
served policy while the service answers (4xx for bad candidates, 401 without the token); a
decide with a request_id is logged once however often it is retried, also when the journey's
HTTP lane loses a response on the way (a proxy drops it) and retries."""

from __future__ import annotations

import contextlib
import http.server
import pickle
import sqlite3
import threading

import httpx
import numpy as np
import pandas as pd
import pytest
from _server import serve_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "promote-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(prepared_ws, tmp_path_factory):
    with serve_copy(prepared_ws, tmp_path_factory.mktemp("promote"), f"auth_token: {TOKEN}\nrefresh_seconds: 0\n",
                    "0") as started:
        yield started


def _served(url: str) -> dict:
    return httpx.post(f"{url}/status", json={}, headers=AUTH, timeout=60).json()["policies"]["champion"]


def _log_count(ws, where: str = "1", params: tuple = ()) -> int:
    with contextlib.closing(sqlite3.connect(ws.decisions / "decisions.sqlite")) as c:
        return c.execute(f"SELECT count(*) FROM decisions WHERE {where}", params).fetchone()[0]


def test_promote_switches_the_running_service(server, customer_ids):
    from serving.config import ServingConfig
    from serving.engine import _policy_version
    from serving.policy_state import policy_dir, warm_start

    ws, url, _proc = server
    cfg = ServingConfig()
    cand = warm_start(ws, "thompson", {}, cfg.policy_layer, seed=5, max_sends=300)
    (policy_dir(ws) / "thompson.candidate.pkl").write_bytes(pickle.dumps(cand))
    (policy_dir(ws) / "junk.pkl").write_bytes(b"not a pickle")
    before = _served(url)
    assert before["version"] != _policy_version(cand)

    promote = f"{url}/policy/promote"
    assert httpx.post(promote, json={"candidate": "thompson.candidate"}, timeout=60).status_code == 401
    for bad, says in (("missing", "no policy file"), ("junk", "not a fitted policy"),
                      ("greedy.challenger", "greedy policy")):  # conftest warm-starts it
        r = httpx.post(promote, json={"candidate": bad}, headers=AUTH, timeout=60)
        assert r.status_code == 400 and says in r.text, (bad, r.status_code, r.text)
    for bad in ({"candidate": "../policies/thompson"}, {"candidate": "thompson", "arm": "challenger"}, {}):
        r = httpx.post(promote, json=bad, headers=AUTH, timeout=60)
        assert 400 <= r.status_code < 500, (bad, r.status_code, r.text)
    assert _served(url)["version"] == before["version"]  # nothing changed on a refused promotion

    codes: list[int] = []
    stop, answering = threading.Event(), threading.Event()

    def hammer():
        with httpx.Client(timeout=30, headers=AUTH) as c:
            i = 0
            while not stop.is_set():
                codes.append(c.post(f"{url}/decide", json={"customer_id": customer_ids[i % 50]}).status_code)
                answering.set()
                i += 1

    t = threading.Thread(target=hammer)
    t.start()
    assert answering.wait(60)  # decides are flowing before the promotion starts (a loaded machine is slow)
    try:
        r = httpx.post(promote, json={"candidate": "thompson.candidate"}, headers=AUTH, timeout=120)
    finally:
        stop.set()
        t.join(timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version_before"] == before["version"] and body["version_after"] == _policy_version(cand)
    assert codes and set(codes) == {200}  # answered throughout
    after = _served(url)
    assert after["version"] == _policy_version(cand) and after["source"] == "promoted:thompson.candidate.pkl"
    d = httpx.post(f"{url}/decide", json={"customer_id": customer_ids[0]}, headers=AUTH, timeout=60).json()
    assert d["policy_version"] == _policy_version(cand)
    with (policy_dir(ws) / "thompson.pkl").open("rb") as f:  # a restart serves it too
        assert _policy_version(pickle.load(f)) == _policy_version(cand)
    assert "/policy/promote" in httpx.get(f"{url}/docs.json", headers=AUTH, timeout=60).json()["paths"]


def test_request_id_decides_once(server, customer_ids):
    ws, url, _proc = server
    body = {"customer_ids": customer_ids[100:400], "request_id": "batch-k1",  # 300: the engine's bulk path
            "request_time": "2030-03-01T00:00:00Z"}
    first = httpx.post(f"{url}/decide/batch", json=body, headers=AUTH, timeout=60)
    assert first.status_code == 200, first.text
    n = _log_count(ws)
    again = httpx.post(f"{url}/decide/batch", json=body, headers=AUTH, timeout=60)
    assert again.json() == first.json()  # the same decisions, from the log
    assert _log_count(ws) == n
    ids = [d["decision_id"] for d in first.json()["decisions"]]
    assert _log_count(ws, "decision_id IN (SELECT value FROM json_each(?))", (pd.Series(ids).to_json(
        orient="values"),)) == 300
    reuse = httpx.post(f"{url}/decide/batch", json=body | {"customer_ids": customer_ids[105:415]}, headers=AUTH,
                       timeout=60)
    assert reuse.status_code == 400 and "request_id" in reuse.text
    one = {"customer_id": customer_ids[450], "request_id": "single-k1"}
    a = httpx.post(f"{url}/decide", json=one, headers=AUTH, timeout=60).json()
    b = httpx.post(f"{url}/decide", json=one, headers=AUTH, timeout=60).json()
    assert a == b and _log_count(ws) == n + 1


class _DroppingProxy(http.server.ThreadingHTTPServer):
    """Forwards to the service; the first ``drops`` POSTs to /decide/batch reach the service but
    their responses are lost (the connection closes without an answer)."""

    daemon_threads = True

    def __init__(self, upstream: str, drops: int):
        self.upstream, self.drops, self.dropped = upstream, drops, 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _forward(self):
                srv = self.server
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                r = httpx.request(self.command, srv.upstream + self.path, content=body or None, headers=headers,
                                  timeout=120)
                with srv.lock:
                    drop = self.command == "POST" and self.path == "/decide/batch" and srv.dropped < srv.drops
                    srv.dropped += drop
                if drop:
                    self.close_connection = True
                    return
                self.send_response(r.status_code)
                self.send_header("content-type", r.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = _forward

        super().__init__(("127.0.0.1", 0), Handler)


def test_journey_lane_retries_a_lost_response_without_logging_twice(server, customer_ids):
    from journey.remote import RemotePolicyLane
    from policies.arms import ArmSpace
    from policies.config import PolicyLayerConfig

    ws, url, _proc = server
    proxy = _DroppingProxy(url, drops=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        lane = RemotePolicyLane(f"http://127.0.0.1:{proxy.server_address[1]}", token=TOKEN, chunk=40,
                                journey_id="retry-test", learn=False)
        ids = np.array(customer_ids[500:600], dtype=object)
        now = pd.Timestamp("2030-04-01", tz="UTC")
        try:
            chosen, _send_at, _holdout, decision_ids = lane.decide_day(ids, now, ArmSpace.from_config(
                PolicyLayerConfig().arms))
            stats = lane.client.stats()
        finally:
            lane.close()
    finally:
        proxy.shutdown()
    assert proxy.dropped == 2 and stats["retries"] >= 2
    assert len(set(decision_ids)) == 100
    logged = _log_count(ws, "journey_id = ? AND journey_step = ?", ("retry-test", "2030-04-01"))
    assert logged == 100  # every chunk decided and logged once, the dropped ones included
    assert _log_count(ws, "decision_id IN (SELECT value FROM json_each(?))",
                      (pd.Series(list(decision_ids)).to_json(orient="values"),)) == 100


def test_demo_promotion_goes_through_the_running_service(server):
    from decisioning.commands.demo import Demo, _promotion
    from serving.config import ServingConfig
    from serving.engine import _policy_version
    from serving.policy_state import policy_dir, warm_start

    ws, url, proc = server
    cand = warm_start(ws, "thompson", {}, ServingConfig().policy_layer, seed=9, max_sends=200)
    (policy_dir(ws) / "thompson.demo.pkl").write_bytes(pickle.dumps(cand))
    demo = Demo(ws, seed=0)
    demo.service, demo.url, demo.token = proc, url, TOKEN

    def ope(lo, hi):
        return {"dr": {"value": 3.2, "ci_low": 3.0, "ci_high": 3.4}, "logged_value": 3.0, "n": 1000, "ess": 400.0,
                "lift_over_logged": {"value": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}}

    demo.done = {"ope": ope(-0.1, 0.3), "refit": {"candidate": "thompson.demo.pkl"}}
    kept = _promotion(demo)
    assert not kept["promoted"] and kept["served_before"] == kept["served_after"]
    demo.done["ope"] = ope(0.1, 0.3)
    won = _promotion(demo)
    assert won["promoted"] and won["served_after"] == _policy_version(cand) != won["served_before"]
    assert _served(url)["version"] == _policy_version(cand)

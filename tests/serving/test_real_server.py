"""`decisioning serve` as a real server in a subprocess: readiness, decide, outcome, /metrics, and
kill -9 during a series of decides (every decision whose response arrived is in the log; re-sent
outcomes count once after a restart-free re-read of the log)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
from _server import free_port, kill_tree, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]




def _start(ws, port: int) -> subprocess.Popen:
    env = dict(os.environ, DECISIONING_HOME=str(ws.root))
    env.pop("DECISIONING_SERVING_CONFIG", None)
    cmd = [sys.executable, "-c", "from decisioning.cli import main; main()", "serve", "--port", str(port),
           "--workspace", str(ws.root)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)






def test_real_server_decide_metrics_and_kill_9(ws_copy, customer_ids):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(ws_copy, port)
    try:
        wait_ready(url, proc)
        assert proc.stdout.readline().decode().strip() == url  # the CLI prints the URL
        r = httpx.post(f"{url}/decide", json={"customer_id": customer_ids[0]}, timeout=60)
        assert r.status_code == 200, r.text
        d = r.json()
        o = {"event_id": "k9-1", "decision_id": d["decision_id"], "event": "delivered",
             "occurred_at": "2030-01-01T00:00:00Z"}
        assert httpx.post(f"{url}/outcome", json=o, timeout=30).json()["accepted"] == 1
        assert httpx.post(f"{url}/outcome", json=o, timeout=30).json()["duplicates"] == 1
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        assert "decisioning_decisions_total" in metrics and 'fallback="none"' in metrics
        assert 'decisioning_outcomes_total{result="duplicate"} 1.0' in metrics
        assert "c_" not in metrics.replace("_c_", "")  # no customer ids in labels

        # kill -9 in the middle of a series of decides
        received: list[str] = []
        stop = threading.Event()

        def hammer():
            i = 0
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{url}/decide", json={"customer_id": customer_ids[i % len(customer_ids)]})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        received.append(r.json()["decision_id"])
                    i += 1

        t = threading.Thread(target=hammer)
        t.start()
        deadline = time.monotonic() + 60
        while len(received) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_tree(proc)
        stop.set()
        t.join(timeout=30)
        assert len(received) >= 20
    finally:
        kill_tree(proc)
        proc.wait(timeout=30)
    with sqlite3.connect(ws_copy.decisions / "decisions.sqlite") as conn:
        logged = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
        n_out = conn.execute("SELECT count(*) FROM outcomes WHERE event_id = 'k9-1'").fetchone()[0]
    missing = [x for x in received if x not in logged]
    assert not missing, f"{len(missing)} decisions answered but not in the log"
    assert d["decision_id"] in logged and n_out == 1

    # after the crash a new engine on the same log still counts a re-sent outcome once
    from policies.log import DecisionLog
    from policies.records import OutcomeRecord

    log = DecisionLog(ws_copy.decisions / "decisions.sqlite")
    res = log.add_outcomes([OutcomeRecord(event_id="k9-1", decision_id=d["decision_id"], event="delivered",
                                          occurred_at="2030-01-01T00:00:00Z")])
    assert res.duplicates == 1 and res.accepted == 0
    log.close()

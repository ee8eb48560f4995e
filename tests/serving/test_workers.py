"""Two BentoML worker processes over one workspace (ServingConfig.workers = 2), against a real
`decisioning serve`: two concurrent POST /learn (which land on either worker) learn each matured
decision once, and both workers then serve the learned policy (status and decisions); the
"caller drives the clock" state reaches both; /metrics sums the counters of both workers; a
promotion received by one worker is served by the other before its next decide."""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import subprocess
import sys
import threading

import httpx
import pytest
from _server import free_port, kill_tree, serve_copy, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = "2030-05-01T09:00:00+00:00"
AS_OF = "2030-05-04T12:00:00+00:00"  # the decisions of T0 have matured (24 h attribution window)


@pytest.fixture(scope="module")
def two_workers(prepared_ws, tmp_path_factory):
    with serve_copy(prepared_ws, tmp_path_factory.mktemp("workers"), "workers: 2\nrefresh_seconds: 0\n",
                    "3600") as (ws, url, _proc):
        yield ws, url


def _per_worker(url: str, path: str, body: dict, want: int = 2, tries: int = 200) -> dict[int, dict]:
    """The answer of ``path`` from each worker process (by pid), over fresh connections (the
    kernel hands each new connection to one of the workers)."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        with httpx.Client(timeout=60) as c:
            r = c.post(f"{url}/status", json={})
            assert r.status_code == 200, r.text
            pid = r.json()["worker"]["pid"]
            if pid not in seen:
                # the same connection, so the same worker, answers the request under test
                seen[pid] = {"status": r.json(), "answer": c.post(f"{url}{path}", json=body).json()}
        if len(seen) >= want:
            break
    assert len(seen) >= want, f"only {len(seen)} worker(s) answered in {tries} connections"
    return seen


def _count(metrics: str, name: str, **labels) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_learn_once_and_both_serve_the_new_version(two_workers, customer_ids):
    ws, url = two_workers
    decide = {"customer_id": customer_ids[0], "request_time": T0}
    before = _per_worker(url, "/decide", decide)
    assert len({s["status"]["worker"]["pid"] for s in before.values()}) == 2
    v0 = {s["status"]["policies"]["champion"]["version"] for s in before.values()}
    assert len(v0) == 1  # both serve the same policy to begin with
    assert {s["status"]["learning"]["timer"] for s in before.values()} == {True, False}  # one timer
    assert not any(s["status"]["learning"]["simulated_clock"] for s in before.values())

    # decisions at T0 over many connections (both workers decide and log)
    ids = customer_ids[1:121]

    def decide_some(part: list[str]) -> None:
        for c in part:
            with httpx.Client(timeout=60) as client:
                r = client.post(f"{url}/decide", json={"customer_id": c, "request_time": T0})
                assert r.status_code == 200, r.text

    threads = [threading.Thread(target=decide_some, args=(ids[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    # the counters of both workers, summed (2 decides of _per_worker + 120)
    assert _count(metrics, "decisioning_decisions_total", endpoint="decide") == len(ids) + 2
    with contextlib.closing(sqlite3.connect(ws.decisions / "decisions.sqlite")) as conn:
        learnable = conn.execute("SELECT count(*) FROM decisions WHERE policy != 'safe_rule'").fetchone()[0]
    assert learnable > 0

    # two learns at once, whichever worker each reaches: every matured decision is learned once
    results: list[dict] = []

    def learn() -> None:
        r = httpx.post(f"{url}/learn", json={"as_of": AS_OF}, timeout=300)
        assert r.status_code == 200, r.text
        results.append(r.json())

    threads = [threading.Thread(target=learn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    learned = sorted(r["learned"] for r in results)
    assert learned[0] == 0 and 0 < learned[1] <= learnable  # one learned them all, the other found none
    first = next(r for r in results if r["learned"])
    v1 = first["versions"]["champion"]["after"]
    assert first["versions"]["champion"]["before"] in v0 and v1 not in v0
    with contextlib.closing(sqlite3.connect(ws.root / "policies" / "learned.sqlite")) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT decision_id) FROM learned").fetchone() \
            == (learned[1], learned[1])

    # both workers now serve the learned version, and decide with it; both know the clock is driven
    after = _per_worker(url, "/decide", {"customer_id": customer_ids[200], "request_time": AS_OF})
    for s in after.values():
        assert s["status"]["policies"]["champion"]["version"] == v1
        assert s["status"]["policies"]["champion"]["source"] == "learned"
        assert s["answer"]["policy_version"] == v1
        assert s["status"]["learning"]["simulated_clock"] is True
    assert httpx.post(f"{url}/learn", json={"as_of": AS_OF}, timeout=300).json()["learned"] == 0


def test_a_promotion_reaches_the_other_worker_before_its_next_decide(two_workers, customer_ids):
    from serving.config import ServingConfig
    from serving.engine import _policy_version
    from serving.policy_state import policy_dir, warm_start

    ws, url = two_workers
    cand = warm_start(ws, "thompson", {}, ServingConfig().policy_layer, seed=11, max_sends=200)
    (policy_dir(ws) / "thompson.workers.pkl").write_bytes(pickle.dumps(cand))
    version = _policy_version(cand)
    # hold one keep-alive connection to each worker, then promote through one of them
    clients: dict[int, httpx.Client] = {}
    for _ in range(200):
        c = httpx.Client(timeout=60)
        pid = c.post(f"{url}/status", json={}).json()["worker"]["pid"]
        if pid in clients:
            c.close()
        else:
            clients[pid] = c
        if len(clients) == 2:
            break
    try:
        assert len(clients) == 2
        (promoter, other) = clients.values()
        r = promoter.post(f"{url}/policy/promote", json={"candidate": "thompson.workers"})
        assert r.status_code == 200, r.text
        assert r.json()["version_after"] == version
        # the very next decide of the other worker uses the promoted policy
        d = other.post(f"{url}/decide", json={"customer_id": customer_ids[300]}).json()
        assert d["policy_version"] == version
        s = other.post(f"{url}/status", json={}).json()
        assert s["policies"]["champion"]["source"] == "promoted:thompson.workers.pkl"
    finally:
        for c in clients.values():
            c.close()


def test_another_server_starting_does_not_wipe_the_counters(two_workers, ws_copy, customer_ids):
    """BentoML empties its Prometheus folder when a server starts; each `decisioning serve` has its own."""
    ws, url = two_workers
    for c in customer_ids[400:410]:
        with httpx.Client(timeout=60) as client:
            assert client.post(f"{url}/decide", json={"customer_id": c}).status_code == 200
    before = _count(httpx.get(f"{url}/metrics", timeout=30).text, "decisioning_decisions_total", endpoint="decide")
    assert before >= 10
    port = free_port()
    env = dict(os.environ, DECISIONING_HOME=str(ws_copy.root), DECISIONING_LEARN_SECONDS="0")
    env.pop("DECISIONING_SERVING_CONFIG", None)
    config = ws_copy.root / "serving.yaml"
    config.write_text("workers: 1\nrefresh_seconds: 0\n")
    other = subprocess.Popen([sys.executable, "-m", "decisioning.cli", "serve", "--port", str(port), "--config",
                              str(config), "--workspace", str(ws_copy.root)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", other)
        after = _count(httpx.get(f"{url}/metrics", timeout=30).text, "decisioning_decisions_total",
                       endpoint="decide")
        assert after == before
    finally:
        kill_tree(other, wait=True)

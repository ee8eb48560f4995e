"""Benchmark of the decision service, as ratios against bare floors measured in the same run.

    uv run python -m bench.serving --workspace W [--batch 100000] [--requests 300] [--skip-http]

W must be prepared (simulate, profiles, features apply + materialize, train, champions).
1. in process: DecisionEngine.decide of one customer vs the bare floor (raw SELECT of the online
   rows + bare Booster.predict of each champion on one row + the policy's bare reward arithmetic);
2. batch: decide_batch of --batch customers vs a bare vectorised Booster.predict of the same models;
3. HTTP: /decide p50, p99 and req/s at concurrency 1 and 8 against /noop on the same server.
No absolute thresholds: the figures are printed, with the goals of issue 6 beside them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def in_process(ws, ids, n_single: int, batch: int) -> dict:
    from features.online import entity_key_bytes
    from serving.config import ServingConfig
    from serving.engine import DecisionEngine
    from serving.schemas import BatchDecisionRequest, DecisionRequest

    eng = DecisionEngine.open(ws, ServingConfig(refresh_seconds=0, durable=True), start_refresh=False)
    snap = eng.champions.snapshot()
    policy = eng.policy_arms["champion"].policy
    rng = np.random.default_rng(0)
    pick = [ids[i] for i in rng.integers(0, len(ids), n_single)]
    eng.decide(DecisionRequest(customer_id=pick[0]))
    t_dec = []
    for c in pick:
        t0 = time.perf_counter()
        eng.decide(DecisionRequest(customer_id=c))
        t_dec.append(time.perf_counter() - t0)
    # the bare floor
    conn = sqlite3.connect(f"file:{eng.reader._path}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
              if r[0].startswith("cdp") or "_" in r[0]]
    boosters = [(est.booster_, len(est.model_feature_names_)) for est in snap.models.values()]
    Z = np.zeros((1, policy.n_features_))
    t_floor = []
    for c in pick:
        t0 = time.perf_counter()
        key = entity_key_bytes(c)
        for tb in tables:
            conn.execute(f'SELECT feature_name, value FROM "{tb}" WHERE entity_key = ?', (key,)).fetchall()
        for b, d in boosters:
            b.predict(np.zeros((1, d)), num_threads=1)
        policy.model_.mean(Z)
        t_floor.append(time.perf_counter() - t0)
    single = {"decide_p50_ms": pct(t_dec, 50), "decide_p99_ms": pct(t_dec, 99),
              "floor_p50_ms": pct(t_floor, 50), "ratio_p50": pct(t_dec, 50) / pct(t_floor, 50)}
    # batch
    many = ids[:batch]  # unique customers (a batch decides once per customer); capped by the workspace
    t0 = time.perf_counter()
    out = eng.decide_batch(BatchDecisionRequest(customer_ids=many))
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b, d in boosters:
        b.predict(np.zeros((batch, d)))
    t_bare = time.perf_counter() - t0
    eng.close()
    return {"single": single, "batch": {"n": len(out), "seconds": t_batch, "decisions_per_s": len(out) / t_batch,
                                        "bare_predict_seconds": t_bare, "ratio_vs_bare": t_bare / t_batch}}


def http(ws, ids, requests: int) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", "from decisioning.cli import main; main()", "serve", "--port",
                             str(port), "--workspace", str(ws.root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        out = {}
        for path in ("/noop", "/decide"):
            for conc in (1, 8):
                lat: list[float] = []
                lock = threading.Lock()

                def worker(k, path=path, lat=lat, lock=lock, conc=conc):
                    with httpx.Client(timeout=60) as c:
                        for i in range(requests // conc):
                            body = {"customer_id": ids[(k * 7919 + i) % len(ids)]} if path == "/decide" else None
                            t0 = time.perf_counter()
                            r = c.post(url + path, json=body)
                            dt = time.perf_counter() - t0
                            assert r.status_code == 200, r.text
                            with lock:
                                lat.append(dt)

                t0 = time.perf_counter()
                th = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
                for t in th:
                    t.start()
                for t in th:
                    t.join()
                wall = time.perf_counter() - t0
                out[f"{path}@{conc}"] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "req_per_s": len(lat) / wall}
        for conc in (1, 8):
            d, n = out[f"/decide@{conc}"], out[f"/noop@{conc}"]
            d["p50_vs_noop"] = d["p50_ms"] / n["p50_ms"]
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--skip-http", action="store_true")
    a = ap.parse_args()
    from core.workspace import Workspace

    ws = Workspace.resolve(a.workspace)
    ids = pd.read_parquet(ws.profiles / "profiles.parquet")["customer_id"].astype(str).tolist()
    res = in_process(ws, ids, a.single, a.batch)
    s, b = res["single"], res["batch"]
    print(f"in-process decide: p50 {s['decide_p50_ms']:.2f} ms, p99 {s['decide_p99_ms']:.2f} ms; bare floor p50 "
          f"{s['floor_p50_ms']:.3f} ms; ratio {s['ratio_p50']:.1f}x (goal <= 4x)")
    print(f"batch decide of {b['n']:,}: {b['seconds']:.1f} s, {b['decisions_per_s']:,.0f} decisions/s (goal >= 20k); "
          f"bare vectorised predict {b['bare_predict_seconds']:.2f} s, ratio {b['ratio_vs_bare']:.3f}x (goal >= 0.5x)")
    if not a.skip_http:
        for k, v in http(ws, ids, a.requests).items():
            extra = f", p50 {v['p50_vs_noop']:.1f}x the no-op's (goal <= 2x)" if "p50_vs_noop" in v else ""
            print(f"HTTP {k}: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms, {v['req_per_s']:.0f} req/s{extra}")


if __name__ == "__main__":
    main()

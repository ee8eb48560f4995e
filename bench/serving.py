"""Benchmark of the decision service, as ratios against bare floors measured in the same run.

    uv run python -m bench.serving --workspace W [--batch 100000] [--single 200] [--repeats 3] [--skip-single]
                                   [--requests 400] [--modes NORMAL,FULL] [--workers 1,2] [--skip-http]
                                   [--skip-batch] [--out FILE]

W must be prepared (simulate, profiles, features apply + materialize, train, champions).
1. in process: DecisionEngine.decide of one customer vs the bare floor (raw SELECT of the
   customer's online rows from the SQLite store + bare Booster.predict of each champion on one row +
   the policy's bare reward arithmetic; issue 6's definition: the floor stays the raw SQLite read
   even where the engine reads the columnar snapshot's row index, printed as 'features from'),
   interleaved customer by customer so both see the same load; per repeat the
   medians and their ratio, then the median over repeats; then the engine alone at concurrency 8
   (threads in process: requests/s and latency, to split an HTTP figure into engine and framework);
   each for every decision-log mode of --modes (ServingConfig.log_synchronous: NORMAL, the default,
   survives kill -9 of the service; FULL fsyncs every commit and survives a power cut too);
2. batch: decide_batch of --batch customers vs its bare floor: the same models' features read
   for those customers from the same store the cheapest way (the columnar snapshot beside the
   SQLite store, else its raw rows) + one native Booster.predict per model on the full array;
   alternating, --repeats times, the median ratio;
3. HTTP: /decide p50, p99 and req/s at concurrency 1 and 8 against /noop on the same server, one
   server per mode of --modes (the policy's learning timer off, so every figure sees one policy),
   with --workers BentoML worker processes (default: the serving config's default). The client
   is light, so that it leaves the 2 cores to the server: one keep-alive ``http.client``
   connection per client thread and endpoint, the same client for /noop and /decide, which
   alternate in blocks of ~100 requests (both see the same moment of a shared machine); its own
   CPU time per request is printed (``client_cpu_ms``). Beside them the service's own engine time
   (decisioning_latency_seconds, scraped before and after): its mean and its p50 (interpolated in
   quarter-millisecond buckets), and what a decide costs over HTTP beyond the no-op and the
   engine at p50 (measured ~0: the p50 ratio is about 1 + engine p50 / no-op p50). Compare the
   engine's p50 with the in-process p50 of section 1, not its mean (pulled up by the commits'
   tail); and an HTTP decide comes a round trip after the previous one, which costs the engine
   more than back-to-back decides do (a cold CPU: +0.1-0.2 ms at the bench's ~1.5 ms spacing,
   measured in process too).
The machine's load average is printed with each section: absolute times on a shared box are
noise, the ratios less so. No absolute thresholds: the goals of issue 6 are printed beside the
figures. Results also go to --out as JSON (default <workspace>/bench/serving.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def _engine(ws, sync: str = "NORMAL"):
    from serving.config import ServingConfig
    from serving.engine import DecisionEngine

    return DecisionEngine.open(ws, ServingConfig(refresh_seconds=0, log_synchronous=sync), start_refresh=False)


def in_process(ws, ids, n_single: int, repeats: int, sync: str = "NORMAL") -> dict:
    from features.online import entity_key_bytes
    from serving.schemas import DecisionRequest

    eng = _engine(ws, sync)
    try:
        snap = eng.champions.snapshot()
        policy = eng.policy_arms["champion"].policy
        conn = sqlite3.connect(f"file:{eng.reader._path}?mode=ro", uri=True)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        boosters = [(est.booster_, len(est.model_feature_names_)) for est in snap.models.values()]
        Z = np.zeros((1, policy.n_features_))

        def floor(c: str) -> None:
            key = entity_key_bytes(c)
            for tb in tables:
                conn.execute(f'SELECT feature_name, value FROM "{tb}" WHERE entity_key = ?', (key,)).fetchall()
            for b, d in boosters:
                b.predict(np.zeros((1, d)), num_threads=1)
            policy.model_.mean(Z)

        rng = np.random.default_rng(0)
        for c in [ids[i] for i in rng.integers(0, len(ids), 20)]:  # warm caches, connections, the WAL
            eng.decide(DecisionRequest(customer_id=c))
            floor(c)
        runs = []
        for r in range(repeats):
            pick = [ids[i] for i in np.random.default_rng(r + 1).integers(0, len(ids), n_single)]
            t_dec, t_floor, c_dec, c_floor = [], [], [], []
            for c in pick:
                t0, u0 = time.perf_counter(), time.thread_time()
                eng.decide(DecisionRequest(customer_id=c))
                t1, u1 = time.perf_counter(), time.thread_time()
                floor(c)
                t2, u2 = time.perf_counter(), time.thread_time()
                t_dec.append(t1 - t0)
                t_floor.append(t2 - t1)
                c_dec.append(u1 - u0)
                c_floor.append(u2 - u1)
            # wall time (what a caller waits, fsync included) and this thread's CPU time (what the
            # work costs, immune to the other processes' share of the 2 cores)
            runs.append({"decide_p50_ms": pct(t_dec, 50), "decide_p99_ms": pct(t_dec, 99),
                         "floor_p50_ms": pct(t_floor, 50), "ratio_p50": pct(t_dec, 50) / pct(t_floor, 50),
                         "decide_cpu_p50_ms": pct(c_dec, 50), "floor_cpu_p50_ms": pct(c_floor, 50),
                         "cpu_ratio_p50": pct(c_dec, 50) / pct(c_floor, 50), "load": os.getloadavg()[0]})
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        return {"runs": runs, "median": med, "models": len(boosters), "log_synchronous": sync,
                "features_from": getattr(eng.reader, "last_source", None),
                "concurrent": _concurrent(eng, ids, 8, max(n_single, 200))}
    finally:
        eng.close()


def _run_threads(worker, conc: int) -> tuple[float, float]:
    """Run ``worker(k)`` in ``conc`` threads, k = 0..conc-1, until all finish: (wall seconds, CPU
    seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, time.process_time() - c0


def _concurrent(eng, ids, conc: int, n: int) -> dict:
    """The engine alone, ``conc`` threads deciding at once (as BentoML's request threads do)."""
    from serving.schemas import DecisionRequest

    lat: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(n // conc):
            c = ids[(k * 7919 + i * 31 + 17) % len(ids)]
            t0 = time.perf_counter()
            eng.decide(DecisionRequest(customer_id=c))
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)

    wall, cpu = _run_threads(worker, conc)
    return {"concurrency": conc, "req_per_s": len(lat) / wall, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "cpu_ms_per_decide": 1e3 * cpu / len(lat), "load": os.getloadavg()[0]}


def _bare_batch(ws, many: list[str], boosters) -> tuple[float, str]:
    """The floor of a batch decide: read the models' features for ``many`` customers from the same
    store in the cheapest way there is, then one native ``Booster.predict`` per model on the full
    (n, d) array. Cheapest read: the columnar snapshot the materialiser writes beside the SQLite
    store (memory-mapped, one gather per column); without one, the raw SELECT of every stored value
    of those customers (the store's own layout). Features the store does not hold (request-time
    and action features) are zeros. Returns (seconds, how it read)."""
    from features.online import FastOnlineReader, OnlineSnapshot, entity_key_bytes, snapshot_path

    reader = FastOnlineReader.open(ws)
    t0 = time.perf_counter()
    path = snapshot_path(reader._path)
    if path.is_file():
        snap = OnlineSnapshot.load(path)
        pos = snap.index.get_indexer(pd.Index(many, dtype=object))
        known = pos >= 0
        take = np.where(known, pos, 0)
        for b, names in boosters:
            M = np.zeros((len(many), len(names)))
            for j, c in enumerate(names):
                col = snap.numeric.get(c)
                if col is not None:
                    M[:, j] = np.where(known, col[take], np.nan)
            b.predict(M)
        how = "snapshot"
    else:
        conn = sqlite3.connect(f"file:{reader._path}?mode=ro", uri=True)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        keys = [entity_key_bytes(c) for c in many]
        for tb in tables:
            for i in range(0, len(keys), 900):
                part = keys[i:i + 900]
                conn.execute(f'SELECT entity_key, feature_name, value FROM "{tb}" WHERE entity_key IN '
                             f'({",".join("?" * len(part))})', part).fetchall()
        for b, names in boosters:
            b.predict(np.zeros((len(many), len(names))))
        how = "sqlite rows (no snapshot)"
    return time.perf_counter() - t0, how


def _fresh_state(eng, folder: Path) -> None:
    """Point ``eng`` at a new, empty decision log and budget ledger in ``folder``: its next batch is
    a campaign's first contact with the audience (no logged sends to cap it, the day's budgets
    unspent), as the first repeat was. Without this a repeat finds the audience capped and the
    budgets spent by the previous repeat, and most customers have only one allowed arm (measured on
    100k: ~63k multi-arm customers in a first batch against ~2k after it; 8.5 s against 4.5 s)."""
    from policies.budget import BudgetLedger
    from policies.log import DecisionLog
    from serving.engine import GroupCommit

    folder.mkdir(parents=True, exist_ok=True)
    eng.log.close()
    eng.log = DecisionLog(folder / "decisions.sqlite", synchronous="NORMAL")
    eng._commits = GroupCommit(eng.log, arms=eng.arm_layout)
    eng._local = threading.local()  # the read connections of the logged sends: to the new log
    eng.guardrails.ledger = BudgetLedger(folder / "budget.sqlite")


def batch(ws, ids, n: int, repeats: int = 3, fresh_log: bool = True) -> dict:
    """decide_batch of ``n`` customers against its bare floor (_bare_batch), alternating, ``repeats``
    times; per repeat the ratio bare / batch, then the medians. ``fresh_log`` (the default): every
    repeat writes to a new decision log and budget ledger in a temporary folder (removed after), so
    every repeat decides a campaign's first contact with the audience. Otherwise the decisions go to
    the workspace's log (whose size after many runs is part of what a write costs) and its ledger,
    and a repeat after the first sees the audience already contacted and capped by it, the cheaper
    case: the sends per repeat are printed. Also reported: the log's bytes per decision (file + WAL)
    and the response objects built (none until read: a DecisionBatch)."""
    import shutil
    import tempfile

    from serving.schemas import BatchDecisionRequest

    eng = _engine(ws)
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-log-")) if fresh_log else None

    def log_bytes() -> int:  # the database file (after a checkpoint: the WAL is reused, not grown)
        return eng.log.path.stat().st_size

    def sends_since(seq: int) -> int:
        return eng.log._conn().execute("SELECT count(*) FROM decisions WHERE seq > ? AND channel IS NOT NULL",
                                       (seq,)).fetchone()[0]

    try:
        boosters = [(est.booster_, est.booster_.feature_name()) for est in eng.champions.snapshot().models.values()]
        many = ids[:n]  # unique customers (a batch decides once per customer); capped by the workspace
        eng.reader.snapshot() if eng.reader is not None and hasattr(eng.reader, "snapshot") else None  # mapped once
        runs = []
        for k in range(repeats):
            if tmp is not None:
                _fresh_state(eng, tmp / f"repeat-{k}")
            t_bare, how = _bare_batch(ws, many, boosters)
            rows_before, bytes_before = len(eng.log), log_bytes()
            seq_before = eng.log._conn().execute("SELECT coalesce(max(seq), 0) FROM decisions").fetchone()[0]
            t0 = time.perf_counter()
            out = eng.decide_batch(BatchDecisionRequest(customer_ids=many, request_time=datetime.now(UTC)))
            t_batch = time.perf_counter() - t0
            writer = getattr(eng, "_bulk_writer", None)
            if writer is not None:  # the engine's own checkpoint after the batch: let it finish
                writer.submit(lambda: None).result()
            if hasattr(eng.log, "checkpoint"):
                eng.log.checkpoint()  # so the bytes below are the file's, not a WAL's leftover
            added = len(eng.log) - rows_before
            runs.append({"n": len(out), "seconds": t_batch, "decisions_per_s": len(out) / t_batch,
                         "bare_seconds": t_bare, "bare_read": how, "ratio_vs_bare": t_bare / t_batch,
                         "features_from": getattr(eng.reader, "last_source", None), "load": os.getloadavg()[0],
                         "log_rows_added": added, "sends": sends_since(seq_before),
                         "log_bytes_per_decision": (log_bytes() - bytes_before) / max(added, 1),
                         "returned": type(out).__name__})
        med = {k: float(np.median([r[k] for r in runs])) for k in
               ("seconds", "decisions_per_s", "bare_seconds", "ratio_vs_bare", "load", "log_bytes_per_decision")}
        return {"runs": runs, "median": med, "n": runs[0]["n"], "models": len(boosters),
                "log": "fresh per repeat" if fresh_log else str(eng.log.path)}
    finally:
        eng.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _engine_histogram(url: str) -> dict[float, float]:
    """The service's own decisioning_latency_seconds{endpoint="decide"} from its /metrics (the time
    inside the engine, to split an HTTP figure into engine and framework): parse_histogram."""
    import httpx

    return parse_histogram(httpx.get(f"{url}/metrics", timeout=10).text)


def parse_histogram(text: str, name: str = "decisioning_latency_seconds", endpoint: str = "decide") -> dict[float, float]:
    """One labelled histogram of a Prometheus text exposition: cumulative count per bucket bound
    ``le`` (``inf`` holds the count), and its sum under the key -1.0."""
    import re

    out: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(name) or f'endpoint="{endpoint}"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{name}_sum"):
            out[-1.0] = value
        elif line.startswith(f"{name}_bucket"):
            le = re.search(r'le="([^"]+)"', line)
            if le:
                out[float(le.group(1))] = value
    return out


def hist_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the observations a cumulative histogram gained between two
    scrapes (``_engine_histogram``), interpolated linearly inside its bucket as Prometheus's
    histogram_quantile does; None when nothing was observed or it lies in the open last bucket."""
    bounds = sorted(b for b in after if b >= 0)
    gained = [after[b] - before.get(b, 0.0) for b in bounds]
    if not bounds or gained[-1] <= 0:
        return None
    rank = q * gained[-1]
    lo, below = 0.0, 0.0
    for b, c in zip(bounds, gained, strict=True):
        if c >= rank and c > below:
            if b == float("inf"):
                return None
            return lo + (b - lo) * (rank - below) / (c - below)
        lo, below = b, c
    return None


def _post(conn, path: str, body: bytes | None) -> tuple[int, bytes]:
    """POST over a keep-alive http.client connection: (status, body)."""
    conn.request("POST", path, body=body or b"", headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def _alternate(port: int, ids: list[str], conc: int, requests: int, block: int = 100) -> dict[str, dict]:
    """About ``requests`` POSTs to /noop and as many to /decide, ``conc`` client threads each, in
    alternating blocks of ~``block`` requests (the order of the pair flips every block) on kept-alive
    connections (one per thread and endpoint), so that both endpoints see the same machine: on this
    shared box its load moves within seconds. Per endpoint: p50, p99, req/s, client CPU per request."""
    import http.client

    conns = {p: [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(conc)]
             for p in ("/noop", "/decide")}
    lat: dict[str, list[float]] = {p: [] for p in conns}
    wall = dict.fromkeys(conns, 0.0)
    cpu = dict.fromkeys(conns, 0.0)
    lock = threading.Lock()
    per = max(block // conc, 1)

    def worker(k: int, path: str, b: int) -> None:
        conn, got = conns[path][k], []
        for i in range(per):
            j = b * per + i
            body = json.dumps({"customer_id": ids[(k * 7919 + j * 31) % len(ids)]}).encode() if path == "/decide" else None
            t0 = time.perf_counter()
            status, text = _post(conn, path, body)
            got.append(time.perf_counter() - t0)
            assert status == 200, text
        with lock:
            lat[path].extend(got)

    try:
        for b in range(max(round(requests / (per * conc)), 1)):
            for path in ("/noop", "/decide") if b % 2 == 0 else ("/decide", "/noop"):
                w, c = _run_threads(lambda k, path=path, b=b: worker(k, path, b), conc)
                wall[path] += w
                cpu[path] += c
    finally:
        for of_path in conns.values():
            for conn in of_path:
                conn.close()
    return {path: {"p50_ms": pct(lat[path], 50), "p99_ms": pct(lat[path], 99), "req_per_s": len(lat[path]) / wall[path],
                   "client_cpu_ms": 1e3 * cpu[path] / len(lat[path]), "load": os.getloadavg()[0]} for path in conns}


def http(ws, ids, requests: int, sync: str = "NORMAL", workers: int | None = None) -> dict:
    import tempfile

    import httpx

    from serving.client import DecisionClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = Path(tempfile.mkdtemp(prefix="bench-serving-")) / "serving.yaml"
    config.write_text(f"log_synchronous: {sync}\n" + (f"workers: {workers}\n" if workers else ""))
    env = {**os.environ, "DECISIONING_LEARN_SECONDS": "0"}  # one policy for every figure
    proc = subprocess.Popen([sys.executable, "-c", "from decisioning.cli import main; main()", "serve", "--port",
                             str(port), "--workspace", str(ws.root), "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        with DecisionClient(url) as client:
            client.wait_ready(timeout=300)
        # warm both endpoints in every worker process: fresh connections (the kernel hands each to one
        # worker) until each worker, told apart by the pid in /status, has answered 30 decides
        from serving.config import ServingConfig

        n_workers = workers or ServingConfig().workers
        warmed: dict[int, int] = {}
        for i in range(2000):
            with httpx.Client(timeout=60) as c:
                pid = c.post(url + "/status", json={}).json().get("worker", {}).get("pid", 0)
                if warmed.get(pid, 0) >= 30:
                    if len(warmed) >= n_workers and min(warmed.values()) >= 30:
                        break
                    continue
                for j in range(10):
                    c.post(url + "/noop")
                    c.post(url + "/decide", json={"customer_id": ids[(i * 104729 + j * 7919) % len(ids)]})
                warmed[pid] = warmed.get(pid, 0) + 10
        out = {}
        for conc in (1, 8):
            hist0 = _engine_histogram(url)
            figures = _alternate(port, ids, conc, requests)
            hist1 = _engine_histogram(url)
            out.update({f"{path}@{conc}": v for path, v in figures.items()})
            d = out[f"/decide@{conc}"]
            n_obs = hist1.get(float("inf"), 0.0) - hist0.get(float("inf"), 0.0)
            if n_obs > 0:
                d["engine_mean_ms"] = 1e3 * (hist1.get(-1.0, 0.0) - hist0.get(-1.0, 0.0)) / n_obs
                p50 = hist_quantile(hist0, hist1, 0.5)
                if p50 is not None:
                    d["engine_p50_ms"] = 1e3 * p50
                if p50 is not None and conc == 1:  # (at 8 the requests queue: no such sum)
                    # what a decide costs over HTTP beyond the no-op and the engine (its body's parsing,
                    # the response's serialisation, ...): ~0 means the ratio is 1 + engine / no-op
                    d["beyond_engine_p50_ms"] = d["p50_ms"] - out[f"/noop@{conc}"]["p50_ms"] - d["engine_p50_ms"]
        for conc in (1, 8):
            d, n = out[f"/decide@{conc}"], out[f"/noop@{conc}"]
            d["p50_vs_noop"] = d["p50_ms"] / n["p50_ms"]
            d["req_per_s_vs_noop"] = d["req_per_s"] / n["req_per_s"]
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--batch", type=int, default=100_000, help="customers of the batch decision")
    ap.add_argument("--single", type=int, default=200, help="single decisions per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the in-process measurement")
    ap.add_argument("--requests", type=int, default=400, help="HTTP requests per endpoint and concurrency")
    ap.add_argument("--modes", default="NORMAL,FULL",
                    help="decision-log modes to measure (ServingConfig.log_synchronous), comma-separated")
    ap.add_argument("--workers", default=None,
                    help="BentoML worker processes of the HTTP server, comma-separated to compare several "
                         "in one run (e.g. 1,2; default: ServingConfig's default)")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--batch-log", choices=("workspace", "fresh"), default="fresh",
                    help="where the batch's decisions go: a new decision log and budget ledger per repeat in a "
                         "temporary folder (default: each repeat is a campaign's first contact with the audience), "
                         "or the workspace's (the write into a log of millions of rows costs more, and repeats "
                         "after the first find the audience capped by it)")
    ap.add_argument("--skip-single", action="store_true", help="skip the in-process single decisions")
    ap.add_argument("--out", default=None, help="JSON results (default <workspace>/bench/serving.json)")
    a = ap.parse_args()
    from core.workspace import Workspace

    ws = Workspace.resolve(a.workspace)
    ids = pd.read_parquet(ws.profiles / "profiles.parquet", columns=["customer_id"])["customer_id"].astype(str).tolist()
    res: dict = {"workspace": str(ws.root), "customers": len(ids), "started": datetime.now(UTC).isoformat(),
                 "cpus": os.cpu_count()}
    modes = [m.strip().upper() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("NORMAL", "FULL")]
    if bad or not modes:
        ap.error(f"--modes: NORMAL and/or FULL, not {a.modes!r}")
    for mode in [] if a.skip_single else modes:
        print(f"[{load()}] in-process, log_synchronous {mode}: {a.repeats} x {a.single} single decisions, each "
              "beside its bare floor (whose online read is the raw SQLite store, issue 6's definition)")
        s = in_process(ws, ids, a.single, a.repeats, mode)
        res["single" if mode == "NORMAL" else f"single_{mode.lower()}"] = s
        for i, r in enumerate(s["runs"]):
            print(f"  run {i}: decide p50 {r['decide_p50_ms']:.2f} ms, p99 {r['decide_p99_ms']:.2f} ms; floor p50 "
                  f"{r['floor_p50_ms']:.3f} ms; ratio {r['ratio_p50']:.1f}x; CPU time p50 {r['decide_cpu_p50_ms']:.2f} "
                  f"vs {r['floor_cpu_p50_ms']:.3f} ms, ratio {r['cpu_ratio_p50']:.1f}x (load {r['load']:.1f})")
        m = s["median"]
        print(f"in-process decide [{mode}] (median of {a.repeats}; features from {s['features_from']}): p50 "
              f"{m['decide_p50_ms']:.2f} ms, p99 {m['decide_p99_ms']:.2f} ms; bare floor (raw SQLite online-store "
              f"read + bare predicts + policy arithmetic) p50 {m['floor_p50_ms']:.3f} ms ({s['models']} models); "
              f"ratio {m['ratio_p50']:.1f}x (goal <= 4x); CPU-time ratio {m['cpu_ratio_p50']:.1f}x")
        cc = s["concurrent"]
        print(f"  engine alone at concurrency {cc['concurrency']} [{mode}]: {cc['req_per_s']:.0f} decisions/s, p50 "
              f"{cc['p50_ms']:.2f} ms, p99 {cc['p99_ms']:.2f} ms, {cc['cpu_ms_per_decide']:.2f} ms CPU per decide "
              f"(load {cc['load']:.1f})")
    if not a.skip_batch:
        print(f"[{load()}] batch of {min(a.batch, len(ids)):,}")
        b = res["batch"] = batch(ws, ids, a.batch, a.repeats, fresh_log=a.batch_log == "fresh")
        for i, r in enumerate(b["runs"]):
            print(f"  run {i}: batch {r['seconds']:.2f} s ({r['decisions_per_s']:,.0f}/s, features from "
                  f"{r['features_from']}); bare read ({r['bare_read']}) + {b['models']} predicts {r['bare_seconds']:.2f} s; "
                  f"ratio {r['ratio_vs_bare']:.3f}x; {r['sends']:,} sends; log {r['log_bytes_per_decision']:,.0f} "
                  f"B/decision; returned a "
                  f"{r['returned']} (load {r['load']:.1f})")
        m = b["median"]
        print(f"batch decide of {b['n']:,} (median of {len(b['runs'])}; decision log: {b['log']}): {m['seconds']:.2f} s, "
              f"{m['decisions_per_s']:,.0f} decisions/s (goal >= 20k); bare read + vectorised predict "
              f"{m['bare_seconds']:.2f} s, ratio {m['ratio_vs_bare']:.3f}x (goal >= 0.5x); log "
              f"{m['log_bytes_per_decision']:,.0f} B/decision (load {m['load']:.1f})")
    if not a.skip_http:
        from serving.config import ServingConfig

        default_workers = ServingConfig().workers
        try:
            worker_counts = [int(w) for w in (a.workers or str(default_workers)).split(",") if w.strip()]
        except ValueError:
            ap.error(f"--workers: comma-separated counts, not {a.workers!r}")
        for mode, workers in [(m, w) for m in modes for w in worker_counts]:
            print(f"[{load()}] HTTP, log_synchronous {mode}, {workers} BentoML worker(s): {a.requests} requests "
                  "per endpoint and concurrency")
            key = "http" + ("" if mode == "NORMAL" else f"_{mode.lower()}") + \
                ("" if workers == default_workers else f"_w{workers}")
            h = res[key] = http(ws, ids, a.requests, mode, workers)
            for k, v in h.items():
                extra = ""
                if "p50_vs_noop" in v:
                    extra = (f", p50 {v['p50_vs_noop']:.1f}x the no-op's, req/s {v['req_per_s_vs_noop']:.2f}x "
                             "(goal p50 <= 2x, p99 <= 15 ms, >= 250 req/s)")
                if "engine_mean_ms" in v:
                    extra += f"; time in the engine: mean {v['engine_mean_ms']:.2f} ms"
                if "engine_p50_ms" in v:
                    extra += f", p50 {v['engine_p50_ms']:.2f} ms"
                if "beyond_engine_p50_ms" in v:
                    extra += f" (decide p50 - no-op p50 - engine p50: {v['beyond_engine_p50_ms']:+.2f} ms)"
                print(f"HTTP [{mode}, {workers}w] {k}: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms, {v['req_per_s']:.0f} "
                      f"req/s{extra}; client CPU {v['client_cpu_ms']:.2f} ms/request (load {v['load']:.1f})")
    out = Path(a.out) if a.out else ws.root / "bench" / "serving.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"[{load()}] results in {out}")


if __name__ == "__main__":
    main()

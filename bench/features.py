"""Feature-store benchmark: feature computation, historical training sets, materialisation and
online reads, each against a bare baseline measured in the same run.

    uv run python -m bench.features [--customers 100000] [--entity-rows 100000,1000000]
        [--parts compute,historical,online,materialize] [--feast-customers 10000] [--redis] [--json]

Data: ``--workspace W`` with profiles (``decisioning simulate`` + ``profiles``) or, by default, a
synthetic profiles folder with the contract's columns (volumes like the simulator's: a few orders,
tens of events and sends per customer over 180 days), so that 1M customers fit in minutes.
Figures are printed as ratios against the baseline plus absolute numbers; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from core.types import CATEGORIES, CHANNELS
from core.workspace import Workspace

END = pd.Timestamp("2026-06-30", tz="UTC")
ZONES = ("Asia/Shanghai", "Asia/Tokyo", "Asia/Singapore", "Europe/London", "America/Los_Angeles")


def synthetic_profiles(folder: Path, customers: int, days: int = 180, seed: int = 0) -> None:
    """Write a profiles folder (profiles, orders, events, engagements parquet) with the contract's
    columns. Volumes per customer: ~3 orders, ~25 events, ~12 sends over ``days`` days."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = customers
    ids = np.char.add("c", np.arange(n).astype(str)).astype(object)
    start = END - pd.Timedelta(days=days)
    span = days * 86_400

    def times(k: int, owner: np.ndarray, hour_pref: np.ndarray | None = None) -> pd.Series:
        sec = rng.integers(0, span, size=k)
        if hour_pref is not None:
            day = sec // 86_400
            hour = (hour_pref[owner] + rng.normal(0, 2.5, k)).round().astype(int) % 24
            sec = day * 86_400 + hour * 3600 + rng.integers(0, 3600, size=k)
        return pd.Series(start + pd.to_timedelta(np.minimum(sec, span - 1), unit="s"))

    tz = rng.choice(ZONES, size=n)
    peak = rng.integers(7, 23, size=n)
    # sign-ups at any second, some during the history (their profile appears mid-history)
    signup = start + pd.to_timedelta(rng.integers(-720 * 86_400, days * 86_400, size=n), unit="s")
    prof = {
        "customer_id": ids, "crm_id": ids, "n_crm_records": rng.integers(1, 3, size=n),
        "signup_at": signup, "updated_at": signup, "city": rng.choice(["sh", "bj", "gz"], size=n),
        "timezone": tz,
    }
    for k in ("sms", "email", "wechat", "push"):
        prof[f"consent_{k}"] = rng.random(n) < 0.6
        prof[f"reachable_{k}"] = rng.random(n) < 0.8
    rate = rng.gamma(1.5, 2.0, size=n)
    n_orders = rng.poisson(rate)
    owner = np.repeat(np.arange(n), n_orders)
    k = len(owner)
    orders = pd.DataFrame({
        "customer_id": ids[owner], "order_id": np.char.add("o", np.arange(k).astype(str)),
        "ordered_at": times(k, owner), "amount": rng.gamma(2.0, 40.0, size=k).round(2),
        "quantity": rng.integers(1, 4, size=k), "category": rng.choice(CATEGORIES, size=k),
        "offer": np.where(rng.random(k) < 0.3, rng.choice(["pct10", "pct20", "free_shipping"], size=k), None),
    })
    n_ev = rng.poisson(25, size=n)
    owner = np.repeat(np.arange(n), n_ev)
    k = len(owner)
    events = pd.DataFrame({
        "customer_id": ids[owner], "event_id": np.char.add("e", np.arange(k).astype(str)),
        "event_type": rng.choice(["app_open", "view_item", "search", "add_to_cart"], size=k),
        "occurred_at": times(k, owner, peak), "platform": rng.choice(["app", "web", "wechat"], size=k),
        "category": np.where(rng.random(k) < 0.5, rng.choice(CATEGORIES, size=k), None),
    })
    n_s = rng.poisson(12, size=n)
    owner = np.repeat(np.arange(n), n_s)
    k = len(owner)
    sent = times(k, owner)
    opened = rng.random(k) < 0.2
    clicked = opened & (rng.random(k) < 0.3)
    conv = clicked & (rng.random(k) < 0.2)
    unsub = rng.random(k) < 0.005
    delay = pd.to_timedelta(rng.integers(60, 6 * 3600, size=k), unit="s")
    nat = pd.Series(pd.NaT, index=range(k), dtype="datetime64[ns, UTC]")
    eng = pd.DataFrame({
        "customer_id": ids[owner], "send_id": np.char.add("s", np.arange(k).astype(str)),
        "channel": rng.choice([c.value for c in CHANNELS], size=k), "offer": rng.choice(["pct10", "new_arrivals"], size=k),
        "sent_at": sent, "delivered_at": sent, "opened_at": (sent + delay).where(opened, nat),
        "clicked_at": (sent + 2 * delay).where(clicked, nat), "converted_at": (sent + 3 * delay).where(conv, nat),
        "conversion_value": np.where(conv, 60.0, np.nan), "unsubscribed_at": (sent + delay).where(unsub, nat),
        "propensity": 0.1, "campaign_id": "cmp",
    })
    for frame, col in ((orders, "customer_id"), (events, "customer_id"), (eng, "customer_id")):
        frame.sort_values(col, inplace=True, kind="stable")
    first = pd.Series(signup)
    prof.update({"first_seen_at": first, "last_seen_at": END, "n_orders": n_orders, "n_events": n_ev, "n_sends": n_s})
    pd.DataFrame(prof).to_parquet(folder / "profiles.parquet", index=False)
    orders.to_parquet(folder / "orders.parquet", index=False)
    events.to_parquet(folder / "events.parquet", index=False)
    eng.to_parquet(folder / "engagements.parquet", index=False)


# --------------------------------------------------------------------------------------------
# measuring helpers
# --------------------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRSS:
        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))  # ms


def _timeit(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def start_redis(folder: Path) -> tuple[str, int] | None:
    """A redis-server on a free loopback port (None if the binary is absent): (host:port, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    pidfile = folder / "redis.pid"
    subprocess.run([binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--pidfile",
                    str(pidfile), "--dir", str(folder), "--save", "", "--appendonly", "no"], check=True,
                   capture_output=True)
    for _ in range(200):
        if pidfile.is_file() and pidfile.read_text().strip():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return f"127.0.0.1:{port}", int(pidfile.read_text().strip())
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _workspace(root: Path, customers: int, seed: int = 0) -> Workspace:
    ws = Workspace(root).ensure()
    if not (ws.profiles / "profiles.parquet").is_file():
        synthetic_profiles(ws.profiles, customers, seed=seed)
    return ws


# --------------------------------------------------------------------------------------------
# parts
# --------------------------------------------------------------------------------------------


def bench_compute(ws: Workspace) -> dict:
    """Feature tables vs the bare read of the same profiles folder."""
    from features.compute import ProfileData, write_feature_tables

    with PeakRSS() as read:
        data = ProfileData.load(ws.profiles)
    with PeakRSS() as comp:
        files = write_feature_tables(data, ws.root / "bench_tables")
    return {"customers": len(data.profiles), "history_rows": len(data.orders) + len(data.events) + len(data.engagements),
            "read_s": read.seconds, "compute_s": comp.seconds, "ratio_compute_vs_read": comp.seconds / read.seconds,
            "table_rows": sum(files.rows.values()), "peak_rss_gb": comp.peak / 1e9}


def _entity_df(store, rows: int, seed: int = 1) -> pd.DataFrame:
    ids = pd.read_parquet(store.data_dir / "customer_profile.parquet", columns=["customer_id"]).customer_id.to_numpy()
    start, end = store.table_range()
    rng = np.random.default_rng(seed)
    span = int((end - start).total_seconds())
    first = max(0, span - 200 * 86_400)
    return pd.DataFrame({
        "customer_id": ids[rng.integers(0, len(ids), rows)],
        "event_timestamp": start + pd.to_timedelta(rng.integers(first, span, rows), unit="s"),
    })


def _bare_asof(store, edf: pd.DataFrame, service: str) -> float:
    """The same point-in-time join as plain DuckDB ASOF JOINs over the same Parquet files: no
    Feast, no on-demand features, no defaults."""
    import duckdb

    from features.services import service_groups

    groups = {g: n for g, n in service_groups(service, store.config).items() if g != "request_features"}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("entity", edf.assign(row_id=np.arange(len(edf))))
    sql = "SELECT e.row_id"
    joins = ""
    for i, (g, names) in enumerate(groups.items()):
        path = store.data_dir / f"{g}.parquet"
        sql += "".join(f", t{i}.{n}" for n in names)
        joins += (f" ASOF LEFT JOIN read_parquet('{path}') t{i} ON e.customer_id = t{i}.customer_id "
                  f"AND e.event_timestamp >= t{i}.event_timestamp")
    t = time.perf_counter()
    out = con.execute(sql + " FROM entity e" + joins + " ORDER BY e.row_id").df()
    secs = time.perf_counter() - t
    assert len(out) == len(edf)
    con.close()
    return secs


def bench_historical(store, rows_list: list[int], service: str) -> list[dict]:
    out = []
    for rows in rows_list:
        edf = _entity_df(store, rows)
        bare = _bare_asof(store, edf, service)
        with PeakRSS() as m:
            got = store.training_set(service, edf)
        out.append({"entity_rows": rows, "service": service, "features": len(store.feature_names(service)),
                    "seconds": m.seconds, "peak_rss_gb": m.peak / 1e9, "bare_duckdb_asof_s": bare,
                    "ratio_vs_bare": m.seconds / bare, "rows_out": len(got)})
        del got
    return out


def bench_online(store, service: str, iterations: int) -> dict:
    """Feast's online read and the fast reader, 1 and 100 customers, vs the raw read of the same
    rows from the same store (SQL SELECT / Redis HMGET without decoding)."""
    from features.online import FastOnlineReader, entity_key_bytes

    reader = FastOnlineReader.open(store.workspace)
    ids = pd.read_parquet(store.data_dir / "customer_profile.parquet", columns=["customer_id"]).customer_id.to_numpy()
    rng = np.random.default_rng(5)
    need, _ = reader._plan(service)
    cfg = store.settings.online_store
    if cfg.type == "sqlite":
        con = sqlite3.connect(cfg.feast_yaml(store.repo)["path"])

        def raw(batch):
            keys = [entity_key_bytes(c) for c in batch]
            marks = ",".join("?" * len(keys))
            sql = " UNION ALL ".join(f'SELECT entity_key, feature_name, value FROM "cdp_decisioning_{v}" '
                                     f"WHERE entity_key IN ({marks})" for v in need)
            return con.execute(sql, keys * len(need)).fetchall()
    else:
        import mmh3

        from features.online import _redis_client

        client = _redis_client(cfg.connection_string)
        fields = [int(mmh3.hash(f"{v}:{n}", signed=False)).to_bytes(4, "little") for v, ns in need.items() for n in ns]

        def raw(batch):
            pipe = client.pipeline(transaction=False)
            for c in batch:
                pipe.hmget(entity_key_bytes(c) + b"cdp_decisioning", fields)
            return pipe.execute()

    result = {"store": cfg.type, "service": service, "features": len(store.feature_names(service))}
    for size in (1, 100):
        batches = [list(ids[rng.integers(0, len(ids), size)]) for _ in range(iterations)]
        for b in batches[:5]:  # warm up caches and connections
            store.online(service, b)
            reader.read(service, b)
            raw(b)
        it = iter(batches)
        feast = _timeit(lambda it=it: store.online(service, next(it)), iterations)
        it = iter(batches)
        fast = _timeit(lambda it=it: reader.read(service, next(it)), iterations)
        it = iter(batches)
        bare = _timeit(lambda it=it: raw(next(it)), iterations)
        result[f"n{size}"] = {
            "feast_p50_ms": _pct(feast, 50), "feast_p99_ms": _pct(feast, 99),
            "fast_p50_ms": _pct(fast, 50), "fast_p99_ms": _pct(fast, 99),
            "raw_p50_ms": _pct(bare, 50), "raw_p99_ms": _pct(bare, 99),
            "feast_vs_raw_p50": _pct(feast, 50) / _pct(bare, 50), "fast_vs_raw_p50": _pct(fast, 50) / _pct(bare, 50),
        }
    return result


def bench_materialize(store, method: str) -> dict:
    cfg = store.settings.online_store
    if cfg.type == "sqlite":
        Path(cfg.feast_yaml(store.repo)["path"]).unlink(missing_ok=True)
        store._store = None
        from features.repo.definitions import build_definitions

        store.feast().apply(build_definitions(store.data_dir, store.config))  # recreate the empty tables
    else:
        from features.online import _redis_client

        _redis_client(cfg.connection_string).flushall()
    with PeakRSS() as m:
        summary = store.materialize(method=method)
    size = summary.online_store_bytes
    if cfg.type == "redis":
        from features.online import _redis_client

        size = int(_redis_client(cfg.connection_string).info("memory")["used_memory"])
    customers = len(pd.read_parquet(store.data_dir / "customer_profile.parquet", columns=["customer_id"]))
    values = sum(len(v.features) for v in store.feast().list_feature_views())
    return {"store": cfg.type, "method": method, "customers": customers, "values_per_customer": values,
            "seconds": m.seconds, "store_bytes": size, "peak_rss_gb": m.peak / 1e9,
            "us_per_value": m.seconds / (customers * values) * 1e6}


def _clone_repo(store, root: Path, online):
    """The same feature tables applied in another workspace with another online store (so the
    measured workspace's own repo settings stay untouched)."""
    from features.repo.definitions import build_definitions
    from features.store import FeatureStoreAdapter, StoreSettings

    ws = Workspace(root).ensure()
    shutil.copytree(store.data_dir, ws.feature_repo / "data")
    clone = FeatureStoreAdapter(ws, StoreSettings(online_store=online, features=store.config))
    clone._write_repo_files()
    clone.feast().apply(build_definitions(clone.data_dir, clone.config))
    return clone


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None, help="workspace with profiles (default: synthetic)")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--entity-rows", default="100000,1000000")
    ap.add_argument("--service", default="decision_v1")
    ap.add_argument("--parts", default="compute,historical,online,materialize")
    ap.add_argument("--feast-customers", type=int, default=10_000,
                    help="customers for the Feast-vs-fast materialisation comparison (Feast's path is slow)")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--redis", action="store_true", help="also measure the Redis online store")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    parts = set(args.parts.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench_features_"))
    redis = None
    report: dict = {}
    try:
        from features.store import FeatureStoreAdapter, OnlineStoreConfig

        ws = Workspace(args.workspace.resolve()) if args.workspace else _workspace(tmp / "ws", args.customers)
        if "compute" in parts:
            report["compute"] = bench_compute(ws)
            _print("compute", report["compute"])
        store = FeatureStoreAdapter.open(ws, online=OnlineStoreConfig())
        if not (ws.feature_repo / "feature_store.yaml").is_file() or args.workspace is None:
            with PeakRSS() as m:
                store.apply()
            report["apply_s"] = m.seconds
        if "historical" in parts:
            rows = [int(x) for x in args.entity_rows.split(",") if x]
            report["historical"] = bench_historical(store, rows, args.service)
            for r in report["historical"]:
                _print("historical", r)
        if "materialize" in parts:
            report["materialize"] = [bench_materialize(store, "fast")]
            _print("materialize", report["materialize"][-1])
            if args.feast_customers:
                small = FeatureStoreAdapter.open(_workspace(tmp / "small", args.feast_customers, seed=3))
                small.apply()
                for method in ("feast", "fast"):
                    report["materialize"].append(bench_materialize(small, method))
                    _print("materialize", report["materialize"][-1])
                a, b = report["materialize"][-2:]
                report["materialize_fast_speedup"] = a["seconds"] / b["seconds"]
                print(f"materialize: fast is {report['materialize_fast_speedup']:.1f}x faster than "
                      f"FeatureStore.materialize on {args.feast_customers:,} customers (same bytes)")
        elif "online" in parts and not store.is_materialized():
            store.materialize()
        if "online" in parts:
            report["online"] = [bench_online(store, args.service, args.iterations)]
            _print_online(report["online"][-1])
        if args.redis:
            redis = start_redis(tmp)
            if redis is None:
                print("redis: redis-server not installed; skipped")
            else:
                rstore = _clone_repo(store, tmp / "redis_ws", OnlineStoreConfig(type="redis", connection_string=redis[0]))
                if "materialize" in parts:
                    report.setdefault("materialize", []).append(bench_materialize(rstore, "fast"))
                    _print("materialize", report["materialize"][-1])
                else:
                    rstore.materialize()
                if "online" in parts:
                    report.setdefault("online", []).append(bench_online(rstore, args.service, args.iterations))
                    _print_online(report["online"][-1])
    finally:
        if redis is not None:
            os.kill(redis[1], signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report))


def _print(part: str, r: dict) -> None:
    if part == "compute":
        print(f"compute: {r['customers']:,} customers, {r['history_rows']:,} history rows -> {r['table_rows']:,} "
              f"table rows in {r['compute_s']:.1f} s = {r['ratio_compute_vs_read']:.1f}x the bare read of the "
              f"profiles ({r['read_s']:.1f} s); peak RSS {r['peak_rss_gb']:.2f} GB")
    elif part == "historical":
        print(f"historical ({r['service']}, {r['features']} features): {r['entity_rows']:,} entity rows in "
              f"{r['seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB = {r['ratio_vs_bare']:.1f}x a bare DuckDB "
              f"ASOF join of the same tables ({r['bare_duckdb_asof_s']:.1f} s)")
    elif part == "materialize":
        print(f"materialize ({r['store']}, {r['method']}): {r['customers']:,} customers x {r['values_per_customer']} "
              f"values in {r['seconds']:.1f} s ({r['us_per_value']:.2f} us/value), store "
              f"{(r['store_bytes'] or 0) / 1e6:.0f} MB, peak RSS {r['peak_rss_gb']:.2f} GB")


def _print_online(r: dict) -> None:
    for size in (1, 100):
        x = r[f"n{size}"]
        print(f"online ({r['store']}, {r['service']}, {r['features']} features), {size} customer(s): "
              f"Feast p50 {x['feast_p50_ms']:.2f} ms p99 {x['feast_p99_ms']:.2f} ms ({x['feast_vs_raw_p50']:.1f}x raw); "
              f"fast p50 {x['fast_p50_ms']:.2f} ms p99 {x['fast_p99_ms']:.2f} ms ({x['fast_vs_raw_p50']:.1f}x raw); "
              f"raw p50 {x['raw_p50_ms']:.3f} ms p99 {x['raw_p99_ms']:.3f} ms")


if __name__ == "__main__":
    main()

"""Benchmark of ``decisioning report`` and ``decisioning drift`` on a window of a million decisions.

    uv run python -m bench.monitoring [--rows 1000000] [--features 30] [--sample 5000] [--keep DIR]

Writes ``2 x --rows`` synthetic decisions over 12 days (6 days = one window of ``--rows``
decisions, and the 6 days before it, which drift compares with; 30 context features, 3 scores, a
5-arm distribution, ~40 % sends with outcomes) into a DecisionLog (schema of policies.log, bulk
insert). ``--keep DIR`` keeps the log there and reuses it on the next run. Then runs, each as its
own process (wall time includes the imports, as a user sees it; peak RSS from wait4):

* ``baseline``: the bare read of the same window: sqlite3 + pandas reading the same decision
  columns (``monitoring.logdata.LIGHT_COLUMNS``) of both 6-day windows, nothing computed;
* ``report``: ``decisioning report`` over the last 6 days (one window of ``--rows`` decisions), with
  its MLflow run;
* ``drift``: ``decisioning drift`` over the same window against the 6 days before (Evidently on
  ``--sample`` rows per side, policy health on every row, HTML, status file, MLflow run).

Prints wall and CPU seconds (CPU time = user + system of the process: on a shared, loaded machine
it is close to what the wall time would be on an idle one), peak RSS, the stage times of each
command, and ratios against the baseline. Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

START = datetime(2026, 7, 1, tzinfo=UTC)
CH = ("sms", "email", "wechat", "app_push")
OFFERS = ("pct10", "pct20", "free_shipping")


def build(path: Path, rows: int, features: int, seed: int, start: datetime = START, first: int = 0) -> pd.DataFrame:
    """Append ``rows`` synthetic decisions over 6 days from ``start`` (ids from ``first``) to the
    log at ``path``; return a reference snapshot (contexts + scores)."""
    from policies.log import _INSERT_DECISION, DecisionLog

    DecisionLog(path, synchronous="NORMAL").close()
    rng = np.random.default_rng(seed)
    names = [f"f{j:02d}" for j in range(features)]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    us0 = int(start.timestamp() * 1e6)
    span = 6 * 86400 * 10**6
    batch = 50_000
    for lo in range(0, rows, batch):
        n = min(batch, rows - lo)
        x = rng.normal(size=(n, features)).round(4)
        sc = rng.random((n, 3)).round(4)
        t = us0 + (np.arange(lo, lo + n) * span) // rows
        send = rng.random(n) < 0.4
        ch = rng.integers(0, 4, n)
        off = rng.integers(0, 3, n)
        slot = rng.integers(8, 22, n)
        dec, out = [], []
        for i in range(n):
            did = f"d{first + lo + i:08d}"
            ctx = json.dumps(dict(zip(names, x[i].tolist(), strict=True)), separators=(",", ":"))
            scores = json.dumps({"purchase": sc[i, 0], "churn": sc[i, 1], "open": sc[i, 2]}, separators=(",", ":"))
            if send[i]:
                action = f"{CH[ch[i]]}|{OFFERS[off[i]]}|{slot[i]}"
                dist = {"no_send": 0.6, action: 0.1, "email|pct10|10": 0.1, "sms|pct10|10": 0.1, "wechat|pct20|12": 0.1}
                if action in ("email|pct10|10", "sms|pct10|10", "wechat|pct20|12"):
                    dist = {"no_send": 0.6, "email|pct10|10": 0.1, "sms|pct10|10": 0.1, "wechat|pct20|12": 0.1,
                            "app_push|pct10|9": 0.1}
                send_at = int(t[i]) + 3600 * 10**6
                dec.append((did, f"c{(lo + i) % 200000:06d}", int(t[i]), action, CH[ch[i]], OFFERS[off[i]],
                            int(slot[i]), send_at, "Asia/Shanghai", dist[action], json.dumps(dist), ctx, scores,
                            "[]", "[]", "bench", "1", "{}", "A", 0, 0, None, None, int(t[i])))
                out.append((f"{did}:delivered", did, "delivered", send_at + 60 * 10**6, None, send_at))
                if rng.random() < 0.1:
                    out.append((f"{did}:opened", did, "opened", send_at + 3600 * 10**6, None, send_at))
            else:
                dist = {"no_send": 0.6, "email|pct10|10": 0.1, "sms|pct10|10": 0.1, "wechat|pct20|12": 0.1,
                        "app_push|pct10|9": 0.1}
                dec.append((did, f"c{(lo + i) % 200000:06d}", int(t[i]), "no_send", None, None, None, None,
                            "Asia/Shanghai", 0.6, json.dumps(dist), ctx, scores, "[]", "[]", "bench", "1", "{}",
                            "A", 0, 0, None, None, int(t[i])))
        conn.execute("BEGIN")
        conn.executemany(_INSERT_DECISION, dec)
        conn.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", out)
        conn.execute("COMMIT")
        print(f"  wrote {lo + n:,}/{rows:,} rows", file=sys.stderr, flush=True)
    conn.close()
    ref = pd.DataFrame(rng.normal(size=(20000, features)).round(4), columns=names)
    for s in ("purchase", "churn", "open"):
        ref[f"score:{s}"] = rng.random(20000)
    return ref


def baseline(log: str, since: datetime, until: datetime) -> None:
    """The bare read: the same decision columns of [since, until) with sqlite3 + pandas."""
    import sqlite3

    from monitoring.logdata import LIGHT_COLUMNS

    us = [int(t.timestamp() * 1e6) for t in (since, until)]
    with sqlite3.connect(log) as conn:
        frame = pd.read_sql_query(f"SELECT {', '.join(LIGHT_COLUMNS)} FROM decisions WHERE decided_at >= ? "
                                  "AND decided_at < ?", conn, params=us)
    print(len(frame))


def timed(args: list[str]) -> dict:
    """Run a child process; its wall seconds, peak RSS (MB) and exit code."""
    import os

    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{args} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "code": proc.returncode, "stdout": out}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from decisioning.cli import main; main()", *args]


def load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="decisions per 6-day window")
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--sample", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="folder keeping the built log between runs")
    ap.add_argument("--baseline", nargs=3, metavar=("LOG", "SINCE", "UNTIL"), default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.baseline:
        log, since, until = a.baseline
        baseline(log, datetime.fromisoformat(since), datetime.fromisoformat(until))
        return
    with tempfile.TemporaryDirectory() as d:
        root = a.keep or Path(d)
        tag = f"{a.rows}-{a.features}-{a.seed}"
        log = root / f"log-{tag}.sqlite"
        ref_path = root / f"ref-{tag}.parquet"
        if not (log.is_file() and ref_path.is_file()):
            root.mkdir(parents=True, exist_ok=True)
            log.unlink(missing_ok=True)
            t0 = time.perf_counter()
            build(log, a.rows, a.features, a.seed, START, 0)
            ref = build(log, a.rows, a.features, a.seed + 1, START + timedelta(days=6), a.rows)
            ref.to_parquet(ref_path)
            print(f"built {2 * a.rows:,} decisions in {time.perf_counter() - t0:.1f} s ({log.stat().st_size / 1e6:,.0f} MB)")
        ws = Path(d) / "ws"
        (ws / "reports").mkdir(parents=True)
        cfg = Path(d) / "monitoring.yaml"
        cfg.write_text(f"drift:\n  window_days: 6\n  sample_rows: {a.sample}\n")
        since, until = START + timedelta(days=6), START + timedelta(days=12)
        common = ["--workspace", str(ws), "--log", str(log), "--since", since.isoformat(), "--until", until.isoformat(),
                  "--config", str(cfg), "--json"]
        print(f"load average before: {load()}")
        base1 = timed([sys.executable, "-m", "bench.monitoring", "--baseline", str(log), since.isoformat(),
                       until.isoformat()])
        base2 = timed([sys.executable, "-m", "bench.monitoring", "--baseline", str(log), START.isoformat(),
                       until.isoformat()])
        report = timed(cli("report", *common))
        drift = timed(cli("drift", *common, "--reference", str(ref_path)))
        print(f"load average after: {load()}")
    rs, ds = json.loads(report["stdout"]), json.loads(drift["stdout"])
    for name, b in (("window", base1), ("both windows", base2)):
        print(f"baseline, {name}: sqlite3 + pandas read of {int(b['stdout'].split()[-1]):,} rows x 13 columns: "
              f"{b['seconds']:.1f} s wall, {b['cpu']:.1f} s CPU, peak RSS {b['peak_rss_mb']:,.0f} MB")
    print(f"decisioning report, window of {rs['totals']['decisions']:,} decisions: {report['seconds']:.1f} s wall, "
          f"{report['cpu']:.1f} s CPU ({rs['seconds']:.1f} s after imports), peak RSS {report['peak_rss_mb']:,.0f} MB, "
          f"MLflow run {rs['mlflow_run_id']}")
    print(f"decisioning drift, window of {ds['decisions']['current']:,} decisions vs {ds['decisions']['previous']:,} "
          f"before: {drift['seconds']:.1f} s wall, {drift['cpu']:.1f} s CPU ({ds['seconds']:.1f} s after imports), "
          f"peak RSS {drift['peak_rss_mb']:,.0f} MB, exit {drift['code']}, MLflow run {ds['mlflow_run_id']}")
    for name, r in (("report", rs), ("drift", ds)):
        print(f"  {name} stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_seconds"].items()))
    for name, r, b in (("report / baseline window", report, base1), ("drift / baseline both windows", drift, base2)):
        print(f"ratio {name}: wall {r['seconds'] / b['seconds']:.1f}x, CPU {r['cpu'] / b['cpu']:.1f}x, "
              f"peak RSS {r['peak_rss_mb'] / b['peak_rss_mb']:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark of ``decisioning drift`` on a large synthetic decision log.

    uv run python -m bench.monitoring [--rows 1000000] [--features 30] [--sample 5000] [--no-mlflow]

Writes ``--rows`` synthetic decisions (spread over 6 days, 30 context features, 3 scores, a 5-arm
distribution, ~40 % sends with outcomes) into a DecisionLog (schema of policies.log, bulk insert),
then times, each in a fresh child process (so peak RSS is its own):

* ``drift``: the whole drift run over a current window holding every row (Evidently on
  ``--sample`` rows per side, policy health on every row, HTML, status file, MLflow run);
* ``baseline``: the bare alternative on the same sample: read the same sampled contexts from the
  log and run scipy's two-sample K-S test per column against the reference.

Prints absolute seconds and peak RSS, and drift/baseline ratios. Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import resource
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


def build(path: Path, rows: int, features: int, seed: int) -> pd.DataFrame:
    """Write the synthetic log; return the reference snapshot (contexts + scores)."""
    from policies.log import _INSERT_DECISION, DecisionLog

    DecisionLog(path, synchronous="NORMAL").close()
    rng = np.random.default_rng(seed)
    names = [f"f{j:02d}" for j in range(features)]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    us0 = int(START.timestamp() * 1e6)
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
            did = f"d{lo + i:08d}"
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


def child(kind: str, ws: str, log: str, ref: str, sample: int, mlflow: bool) -> None:
    t0 = time.perf_counter()
    if kind == "drift":
        from core.workspace import Workspace
        from monitoring.config import DriftConfig, MonitoringConfig
        from monitoring.drift import run_drift

        cfg = MonitoringConfig(drift=DriftConfig(sample_rows=sample))
        res = run_drift(Workspace(Path(ws)), log_path=log, since=START, until=START + timedelta(days=6),
                        reference=ref, config=cfg, mlflow=mlflow)
        extra = {"alarms": len(res.alarms), "decisions": res.summary["decisions"]["current"]}
    else:
        from scipy import stats

        from monitoring.features import sample_frame
        from monitoring.logdata import sample_json

        cur = sample_frame(sample_json(Path(log), START, START + timedelta(days=6), sample, 0))
        reference = pd.read_parquet(ref).sample(n=sample, random_state=0)
        pv = {c: stats.ks_2samp(reference[c], cur[c]).pvalue for c in cur.columns if c in reference}
        extra = {"columns": len(pv)}
    print(json.dumps({"seconds": time.perf_counter() - t0,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))


def run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.monitoring", "--child", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--sample", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--child", nargs=6, metavar=("KIND", "WS", "LOG", "REF", "SAMPLE", "MLFLOW"), default=None)
    a = ap.parse_args()
    if a.child:
        kind, ws, log, ref, sample, mlflow = a.child
        child(kind, ws, log, ref, int(sample), mlflow == "1")
        return
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        log = root / "ws" / "decisions" / "decisions.sqlite"
        t0 = time.perf_counter()
        ref = build(log, a.rows, a.features, a.seed)
        ref.to_parquet(root / "ref.parquet")
        print(f"built {a.rows:,} decisions in {time.perf_counter() - t0:.1f} s "
              f"({log.stat().st_size / 1e6:,.0f} MB)")
        common = [str(root / "ws"), str(log), str(root / "ref.parquet"), str(a.sample)]
        base = run_child(["baseline", *common, "0"])
        drift = run_child(["drift", *common, "0" if a.no_mlflow else "1"])
    print(f"baseline (sampled read + scipy K-S per column, {base['columns']} columns, {a.sample} rows/side): "
          f"{base['seconds']:.1f} s, peak RSS {base['peak_rss_mb']:,.0f} MB")
    print(f"decisioning drift over a window of {drift['decisions']:,} decisions: {drift['seconds']:.1f} s, "
          f"peak RSS {drift['peak_rss_mb']:,.0f} MB, alarms {drift['alarms']}")
    print(f"ratio drift / baseline: time {drift['seconds'] / base['seconds']:.1f}x, "
          f"peak RSS {drift['peak_rss_mb'] / base['peak_rss_mb']:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark of the decision log: append of 1 and of 10k records per transaction, outcome ingest,
and reading the joined log, each against a bare sqlite3 baseline measured in the same run.

    uv run python -m bench.log [--records 10000] [--singles 500] [--synchronous FULL|NORMAL|both]

The baseline of the writes is a plain ``executemany`` of the very same row tuples (already converted, JSON
already serialised) into a table of the same schema and pragmas (WAL, same ``synchronous``), one
transaction per batch: the ratio is the cost of DecisionLog's conversion, validation and
bookkeeping on top of what SQLite itself must do. The baseline of ``joined`` is a bare LEFT JOIN
of decisions and outcomes reading the context and decoding its float64 bytes (no attribution
window, no aggregation, no typing, no names). Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from core.types import CHANNELS
from policies.log import _INSERT_STORED, _SCHEMA, DecisionLog
from policies.records import DecisionRecord, OutcomeRecord
from policies.reward import RewardConfig

START = datetime(2026, 7, 1, tzinfo=UTC)
ARMS = ["no_send"] + [f"{c.value}|{o}|{h}" for c in CHANNELS for o in ("pct10", "pct20", "new_arrivals") for h in (9, 12, 19)]


def make_records(n: int, seed: int, prefix: str) -> list[DecisionRecord]:
    """n realistic decisions: a 37-arm distribution, 20 context features, 4 scores."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = rng.dirichlet(np.ones(len(ARMS)))
        k = int(rng.choice(len(ARMS), p=p))
        arm = ARMS[k]
        send = arm != "no_send"
        channel, offer, hour = arm.split("|") if send else (None, None, None)
        decided = START + timedelta(seconds=int(i * 4))
        out.append(
            DecisionRecord(
                decision_id=f"{prefix}{i}",
                customer_id=f"c{int(rng.integers(0, 20_000))}",
                decided_at=decided,
                action=arm,
                channel=channel,
                offer=offer,
                send_slot=int(hour) if send else None,
                send_at=decided + timedelta(hours=2) if send else None,
                timezone="Asia/Shanghai",
                propensity=float(max(p[k], 1e-6)),
                distribution={a: float(v) for a, v in zip(ARMS, p, strict=True)},
                context={f"f{j}": float(x) for j, x in enumerate(rng.normal(size=20))},
                scores={"propensity": 0.1, "churn": 0.2, "offer": 0.3, "send_time": 0.4},
                guardrails=["frequency_cap"],
                policy="thompson",
                policy_version="3",
                model_versions={"propensity": "7", "offer": "2"},
            )
        )
    return out


def bare_table(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    return conn


def bare_insert(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT_STORED, rows)
    conn.execute("COMMIT")


def run(records: int, singles: int, synchronous: str, folder: Path) -> dict:
    recs = make_records(records, seed=1, prefix="b")
    single = make_records(singles, seed=2, prefix="s")
    log = DecisionLog(folder / f"log_{synchronous}.sqlite", synchronous=synchronous)
    bare = bare_table(folder / f"bare_{synchronous}.sqlite", synchronous)
    now = int(time.time() * 1e6)
    rows = [DecisionLog._row(r, now) for r in recs]
    single_rows = [DecisionLog._row(r, now) for r in single]

    # one record per transaction (the service's path), interleaved so that noise hits both alike
    t_log, t_bare = [], []
    for r, row in zip(single, single_rows, strict=True):
        t0 = time.perf_counter()
        log.append([r])
        t1 = time.perf_counter()
        bare_insert(bare, [row])
        t2 = time.perf_counter()
        t_log.append(t1 - t0)
        t_bare.append(t2 - t1)

    # 10k records in one transaction (the journey's path)
    t0 = time.perf_counter()
    log.append(recs)
    batch_log = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_insert(bare, rows)
    batch_bare = time.perf_counter() - t0

    # outcomes for half the decisions, then the joined read
    rng = np.random.default_rng(3)
    outs = [
        OutcomeRecord(
            event_id=f"e{i}", decision_id=r.decision_id, event="converted",
            occurred_at=r.decided_at + timedelta(hours=3), value=float(rng.gamma(2.0, 20.0)),
        )
        for i, r in enumerate(recs) if i % 2 == 0
    ]
    out_rows = [(o.event_id, o.decision_id, o.event.value, 0, o.value, 0) for o in outs]
    t0 = time.perf_counter()
    log.add_outcomes(outs)
    ingest_log = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare.execute("BEGIN IMMEDIATE")
    bare.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", out_rows)
    bare.execute("COMMIT")
    ingest_bare = time.perf_counter() - t0

    t0 = time.perf_counter()
    joined = log.joined(RewardConfig(), now=START + timedelta(days=30))
    join_log = time.perf_counter() - t0
    t0 = time.perf_counter()
    joined_raw = log.joined(RewardConfig(), now=START + timedelta(days=30), parse_json=False)
    join_raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    log.joined(RewardConfig(), now=START + timedelta(days=30), columns=["context"], parse_json=["context"])
    join_ctx = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_rows = bare.execute(
        "SELECT d.decision_id, d.channel, d.context, o.event, o.value FROM decisions d "
        "LEFT JOIN outcomes o ON o.decision_id = d.decision_id"
    ).fetchall()
    [np.frombuffer(r[2], dtype="<f8") for r in bare_rows]  # decode the binary context, as the typed read does
    join_bare = time.perf_counter() - t0
    assert len(joined) == len(joined_raw) == len(recs) + singles

    t0 = time.perf_counter()
    for _ in range(100):
        log.sends_since(START + timedelta(hours=5), customer_ids=["c17"])
    sends_one = (time.perf_counter() - t0) / 100
    log.close()
    bare.close()
    med = statistics.median
    return {
        "synchronous": synchronous,
        "append_1_us_p50": med(t_log) * 1e6,
        "bare_1_us_p50": med(t_bare) * 1e6,
        "append_1_ratio": med(t_log) / med(t_bare),
        "append_1_us_p99": float(np.quantile(t_log, 0.99)) * 1e6,
        "append_10k_s": batch_log,
        "bare_10k_s": batch_bare,
        "append_10k_ratio": batch_log / batch_bare,
        "append_10k_records_per_s": records / batch_log,
        "outcomes_ingest_s": ingest_log,
        "outcomes_bare_s": ingest_bare,
        "outcomes_ratio": ingest_log / ingest_bare,
        "joined_s": join_log,
        "joined_no_json_s": join_raw,
        "joined_context_s": join_ctx,
        "joined_bare_s": join_bare,
        "joined_ratio": join_ctx / join_bare,
        "sends_since_one_customer_us": sends_one * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--singles", type=int, default=500)
    ap.add_argument("--synchronous", choices=["FULL", "NORMAL", "both"], default="both")
    args = ap.parse_args(argv)
    modes = ["FULL", "NORMAL"] if args.synchronous == "both" else [args.synchronous]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            r = run(args.records, args.singles, mode, Path(tmp))
            print(f"synchronous={mode}")
            print(f"  append 1 record/txn : p50 {r['append_1_us_p50']:8.1f} us  (bare {r['bare_1_us_p50']:.1f} us)"
                  f"  ratio {r['append_1_ratio']:.2f}x   p99 {r['append_1_us_p99']:.0f} us")
            print(f"  append {args.records} in 1 txn: {r['append_10k_s']:.3f} s (bare {r['bare_10k_s']:.3f} s)"
                  f"  ratio {r['append_10k_ratio']:.2f}x   {r['append_10k_records_per_s']:.0f} records/s")
            print(f"  outcomes {args.records // 2} in 1 txn: {r['outcomes_ingest_s']:.3f} s (bare "
                  f"{r['outcomes_bare_s']:.3f} s)  ratio {r['outcomes_ratio']:.2f}x")
            print(f"  joined() {args.records + args.singles} rows, context only: {r['joined_context_s']:.3f} s (bare "
                  f"join + context parse {r['joined_bare_s']:.3f} s)  ratio {r['joined_ratio']:.2f}x;  every column "
                  f"{r['joined_s']:.3f} s, every column without JSON parsing {r['joined_no_json_s']:.3f} s")
            print(f"  sends_since(one customer): {r['sends_since_one_customer_us']:.0f} us")


if __name__ == "__main__":
    main()

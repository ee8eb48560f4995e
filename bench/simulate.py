"""Simulator benchmark (``decisioning simulate``), against a bare baseline measured in the same run.

    uv run python -m bench.simulate [--customers 100000] [--days 180] [--seed 1] [--format parquet]
                                    [--workspace W] [--keep]

Each measured step runs in its own child process, so its peak RSS is its own:

* simulate: ``World.generate(config).write(workspace, fmt)`` (traits, identities, the whole history,
  dirt, raw files and truth);
* baseline: the bare cost of the same output volume: numpy draws one random value per cell of
  every raw row (same row counts and column count per source) and pyarrow writes them, with the
  sources' schemas (string cells as short random strings), plus the record_owner table.

Printed: seconds (wall and CPU), rows/s and peak RSS of each, the ratios simulate / baseline, and
a JSON line with everything. Nothing is asserted (absolute times depend on the machine; on a shared
machine compare CPU seconds).

    uv run python -m bench.simulate --uplift 20000 [--seed 1]

instead reports what is at stake in the world (no files written): on a world of N customers, the
day after the history, the true expected net value per customer-day (``World.true_probabilities``)
of no send, the marketer's rules ("<channel> at 10:00 local with <offer>" to everyone with consent
and a key on file), uniform random over those eligible arms, and the per-person oracle over every
(channel, offer, local hour) arm; plus how much choosing only the channel, only the offer or only
the hour per person gains.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _usage(cpu0: float) -> dict:
    """CPU seconds since ``cpu0`` (time.process_time) and the process's peak RSS so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": round(time.process_time() - cpu0, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


def child_simulate(args) -> dict:
    from core.config import load_config
    from core.workspace import Workspace
    from world import World, WorldConfig

    config = load_config(WorldConfig, args.config, customers=args.customers, days=args.days, seed=args.seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    summary = World.generate(config).write(Workspace.resolve(args.workspace).ensure(), fmt=args.format)
    return {"seconds": round(time.perf_counter() - t0, 2), "rows": summary.rows, **_usage(cpu0)}


def child_baseline(args) -> dict:
    """Draw and write as many cells as the simulation wrote, with the same schemas."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from features.schemas import SOURCES
    from world.export import OWNER_SCHEMA, arrow_schema

    rows = json.loads(args.rows)
    out = Path(args.workspace) / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    total = 0
    for name, n in rows.items():
        schema = arrow_schema(SOURCES[name], args.format)
        cols = []
        for f in schema:
            x = rng.random(n)
            if pa.types.is_string(f.type):
                cols.append(pc.cast(pa.array((x * 1e9).astype(np.int64)), pa.string()))
            elif pa.types.is_timestamp(f.type):
                cols.append(pa.array((1.7e15 + x * 1.5e13).astype(np.int64)).cast(f.type))
            elif pa.types.is_boolean(f.type):
                cols.append(pa.array(x < 0.5))
            elif pa.types.is_integer(f.type):
                cols.append(pa.array((x * 10).astype(np.int64)))
            else:
                cols.append(pa.array(x))
        table = pa.Table.from_arrays(cols, schema=schema)
        if args.format == "parquet":
            pq.write_table(table, out / f"{name}.parquet")
        else:
            pcsv.write_csv(table, out / f"{name}.csv")
        owner = pa.Table.from_arrays([pa.array([name] * n, pa.string()), table.column(0),
                                      pa.array(rng.integers(0, 10**6, n)), pa.nulls(n, pa.string())],
                                     schema=OWNER_SCHEMA)
        pq.write_table(owner, out / f"owner_{name}.parquet")
        total += n
    return {"seconds": round(time.perf_counter() - t0, 2), "rows": rows, **_usage(cpu0)}


def uplift(customers: int, seed: int) -> dict:
    """Expected net value per customer-day of no send, rules, random and the oracle (see above)."""
    import numpy as np

    from core.types import CHANNELS, SEND_HOURS
    from policies.reward import RewardConfig, expected_reward
    from world import ActionBatch, World, WorldConfig
    from world.timeutil import DayGrid

    world = World.generate(WorldConfig(customers=customers, seed=seed))
    state = world.initial_state()
    t, n, rc = world.traits, customers, RewardConfig()
    grid = DayGrid(world.start_ns, world.end_ns + 3 * 86_400 * 10**9, world.config.timezone_names)
    day = np.full(n, np.searchsorted(grid.date_ns, world.end_ns) + 1)
    persons = np.arange(n)
    eligible = t.key_on_file & t.consent & ~state.unsubscribed
    n_off = len(world.catalog.offers)
    arms = [(c, o, h) for c in range(4) for o in range(n_off) for h in SEND_HOURS]
    value = np.full((n, len(arms)), -np.inf)
    for k, (c, o, h) in enumerate(arms):
        at = grid.utc_at(t.tz_idx, day, np.full(n, float(h))).view("datetime64[ns]")
        a = ActionBatch(persons, np.full(n, c), np.full(n, o), at)
        p = world.true_probabilities(a, state)
        value[:, k] = np.where(eligible[:, c], expected_reward(p.expected_value, a.channel, p.unsubscribed, rc),
                               -np.inf)
    no_send = world.true_probabilities(ActionBatch.no_send(
        persons, grid.utc_at(t.tz_idx, day, np.zeros(n)).view("datetime64[ns]")), state).expected_value
    index = {a: k for k, a in enumerate(arms)}

    def best(select) -> float:
        ks = [index[a] for a in arms if select(a)]
        return float(np.maximum(value[:, ks].max(axis=1), no_send).mean())

    finite = np.isfinite(value)
    out = {"customers": n, "seed": seed, "no_send": float(no_send.mean()),
           "random": float(((np.where(finite, value, 0).sum(1) + no_send) / (finite.sum(1) + 1)).mean()),
           "oracle": best(lambda a: True)}
    for c in range(4):
        for o in (0, 1):
            k = index[(c, o, 10)]
            name = f"rule_{CHANNELS[c].value}_{world.catalog.ids[o]}_10h"
            out[name] = float(np.where(np.isfinite(value[:, k]), value[:, k], no_send).mean())
    out["best_channel_only (pct10, 10h)"] = best(lambda a: a[1] == 0 and a[2] == 10)
    out["best_offer_only (email, 10h)"] = best(lambda a: a[0] == 1 and a[2] == 10)
    out["best_hour_only (email, pct10)"] = best(lambda a: a[0] == 1 and a[1] == 0)
    return out


def _run_child(step: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.simulate", "--child", step, "--customers", str(args.customers),
           "--days", str(args.days), "--seed", str(args.seed), "--format", args.format,
           "--workspace", str(args.workspace), *extra]
    if args.config:
        cmd += ["--config", str(args.config)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"{step} failed (exit {res.returncode})")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(time.perf_counter() - t0, 2)  # including interpreter and imports
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--config", type=Path, default=None, help="WorldConfig YAML (options override it)")
    ap.add_argument("--workspace", type=Path, default=None, help="workspace to write (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    ap.add_argument("--uplift", type=int, metavar="N", help="report what is at stake in an N-customer world")
    ap.add_argument("--child", choices=["simulate", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.uplift:
        res = uplift(args.uplift, args.seed)
        base = res["no_send"]
        for k, v in res.items():
            if isinstance(v, float):
                print(f"{k:36s} {v:8.3f} per customer-day   uplift over no send {v - base:+.3f}")
        print(json.dumps(res))
        return
    if args.child:
        fn = child_simulate if args.child == "simulate" else child_baseline
        print(json.dumps(fn(args)))
        return

    tmp = None
    if args.workspace is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-simulate-"))
        args.workspace = tmp / "ws"
    try:
        print(f"simulate {args.customers:,} customers x {args.days} days ({args.format}) on "
              f"{os.cpu_count()} cores ...", file=sys.stderr)
        sim = _run_child("simulate", args, [])
        base = _run_child("baseline", args, ["--rows", json.dumps(sim["rows"])])
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    total = sum(sim["rows"].values())
    result = {
        "customers": args.customers, "days": args.days, "format": args.format, "rows": sim["rows"],
        "total_rows": total,
        "simulate": {**{k: sim[k] for k in ("seconds", "cpu_seconds", "peak_rss_mb", "process_seconds")},
                     "rows_per_second": round(total / max(sim["seconds"], 1e-9))},
        "baseline": {**{k: base[k] for k in ("seconds", "cpu_seconds", "peak_rss_mb", "process_seconds")},
                     "rows_per_second": round(total / max(base["seconds"], 1e-9))},
        "ratio_seconds": round(sim["seconds"] / max(base["seconds"], 1e-9), 2),
        "ratio_cpu_seconds": round(sim["cpu_seconds"] / max(base["cpu_seconds"], 1e-9), 2),
        "ratio_peak_rss": round(sim["peak_rss_mb"] / max(base["peak_rss_mb"], 1e-9), 2),
    }
    s, b = result["simulate"], result["baseline"]
    print(f"rows written        {total:>12,}  ({', '.join(f'{k} {v:,}' for k, v in sim['rows'].items())})")
    print(f"simulate            {s['seconds']:>9.1f} s wall  {s['cpu_seconds']:>8.1f} s CPU  "
          f"{s['rows_per_second']:>10,} rows/s  peak RSS {s['peak_rss_mb']:>8,.0f} MB")
    print(f"baseline (bare)     {b['seconds']:>9.1f} s wall  {b['cpu_seconds']:>8.1f} s CPU  "
          f"{b['rows_per_second']:>10,} rows/s  peak RSS {b['peak_rss_mb']:>8,.0f} MB")
    print(f"simulate / baseline {result['ratio_seconds']:>9.2f} x wall {result['ratio_cpu_seconds']:>7.2f} x CPU"
          f"   peak RSS {result['ratio_peak_rss']:.2f} x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

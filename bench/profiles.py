"""Import + identity-resolution benchmark (``decisioning profiles``), against a bare baseline.

    uv run python -m bench.profiles [--customers 100000] [--workspace W] [--synthetic] [--keep]

Sources: a world simulated with ``decisioning simulate --customers N --days 180 --seed 1`` in a
temporary workspace (or ``--workspace W``, reused when it already holds ``raw/``); with
``--synthetic`` (or when the simulator is not installed) a seeded synthetic generator of the same
raw-source schema with similar volumes and dirt (duplicates, mixed key formats, shared devices,
~0.5 % malformed rows).

Each measured step runs in its own child process, so peak RSS is that step's alone:

* baseline: pyarrow reads every raw file completely (the least any import must do);
* import: ``features.profiles.build_profiles`` (read, validate, resolve, write the profiles folder).

Printed: rows, seconds, rows/s and peak RSS of each, and the import's ratios to the baseline;
plus the import's own step times and, on simulated worlds, precision and recall. Nothing asserted.
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

import numpy as np

SOURCES = ("customers", "orders", "events", "engagements")


# --------------------------------------------------------------------------- synthetic sources


def synthetic_sources(raw: Path, customers: int, days: int = 180, seed: int = 1) -> None:
    """Write customers/orders/events/engagements Parquet files with the raw-source schema.

    Per person: a CRM record for 85 % (5 % of those duplicated, sharing the phone or e-mail), a phone
    (90 %, mixed formats), an e-mail (70 %, mixed case and spaces), a unionid (60 %), 0-2 app devices;
    ~3 orders, ~25 events (logins link devices), ~12 sends. 1 % of app users also log in on another
    person's device. 0.5 % of fact rows are malformed (bad timestamp, negative amount, 'fax')."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    n = customers
    end = np.datetime64("2026-06-30T00:00:00", "s")
    start = end - np.timedelta64(days, "D")

    def ts(k: int) -> pa.Array:
        sec = rng.integers(0, days * 86_400, k)
        return pa.array((start + sec.astype("timedelta64[s]")).astype("datetime64[ns]")).cast(
            pa.timestamp("ns", tz="UTC")
        )

    def strs(prefix: str, nums: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(nums, pa.int64()), pa.string()), "")

    def maybe(arr: pa.Array, keep: np.ndarray) -> pa.Array:
        return pc.if_else(pa.array(keep), arr, pa.nulls(len(arr), pa.string()))

    has_crm = rng.random(n) < 0.85
    has_phone = rng.random(n) < 0.9
    has_email = rng.random(n) < 0.7
    has_wx = rng.random(n) < 0.6
    n_app = np.where(rng.random(n) < 0.5, 1 + (rng.random(n) < 0.2), 0)
    phone_num = 13_000_000_000 + rng.permutation(n).astype(np.int64) * 7 + 11
    fmt = rng.integers(0, 3, n)
    p = pc.cast(pa.array(phone_num), pa.string())
    phone = pc.if_else(pa.array(fmt == 0), p, pc.if_else(
        pa.array(fmt == 1), pc.binary_join_element_wise("+86 ", p, ""), pc.binary_join_element_wise("86-", p, "")))
    email = strs("User", np.arange(n))
    email = pc.binary_join_element_wise(email, pa.array(np.where(rng.random(n) < 0.1, "@QQ.com ", "@qq.com")), "")
    wx = strs("o_wx", np.arange(n))

    # CRM: primaries + duplicates
    members = np.flatnonzero(has_crm)
    dups = members[rng.random(len(members)) < 0.05]
    owner = np.concatenate([members, dups])
    crm_ids = strs("M", rng.permutation(len(owner)) + 10**8)
    dup = np.r_[np.zeros(len(members), bool), np.ones(len(dups), bool)]
    take = pa.array(owner)
    share_phone = rng.random(len(owner)) < 0.6
    crm = pa.table({
        "crm_id": crm_ids,
        "phone": maybe(phone.take(take), has_phone[owner] & (~dup | share_phone)),
        "email": maybe(email.take(take), has_email[owner] & (~dup | ~share_phone)),
        "wechat_unionid": maybe(wx.take(take), has_wx[owner] & ~dup),
        "signup_at": ts(len(owner)),
        "updated_at": ts(len(owner)),
        "city": pa.array(rng.choice(["Shanghai", "Beijing", "Shenzhen", "Tokyo"], len(owner))),
        "timezone": pa.array(rng.choice(["Asia/Shanghai", "Asia/Tokyo", "Europe/London"], len(owner))),
        **{f"consent_{c}": pa.array(rng.random(len(owner)) < 0.6) for c in ("sms", "email", "wechat", "push")},
    })
    pq.write_table(crm, raw / "customers.parquet")
    crm_of = np.full(n, -1)
    crm_of[members] = np.arange(len(members))

    # devices and who logs in on them (the planted shared device: a borrower logs in on another's)
    dev_owner = np.repeat(np.arange(n), n_app)
    dev = strs("dev-", rng.permutation(len(dev_owner)) + 10**6)

    def key_row(person: np.ndarray, kind: np.ndarray) -> dict[str, pa.Array]:
        """One identity key per row: kind 0 crm, 1 phone, 2 email, 3 unionid (falls back to what exists)."""
        avail = np.stack([has_crm[person], has_phone[person], has_email[person], has_wx[person]], axis=1)
        kind = np.where(avail[np.arange(len(person)), kind], kind, np.argmax(avail, axis=1))
        none = ~avail.any(axis=1)
        t = pa.array(person)
        ci = pa.array(np.maximum(crm_of[person], 0))
        return {
            "crm_id": maybe(crm_ids.take(ci), (kind == 0) & ~none),
            "phone": maybe(phone.take(t), (kind == 1) & ~none),
            "email": maybe(email.take(t), (kind == 2) & ~none),
            "wechat_unionid": maybe(wx.take(t), (kind == 3) & ~none),
        }

    def dirty(k: int, share: float = 0.005) -> np.ndarray:
        return rng.random(k) < share

    # orders
    k = rng.poisson(3, n)
    person = np.repeat(np.arange(n), k)
    m = len(person)
    keys = key_row(person, rng.choice([0, 1, 3], m))
    amount = np.round(rng.gamma(2.0, 60.0, m), 2)
    amount[dirty(m)] *= -1
    pq.write_table(pa.table({
        "order_id": strs("o", np.arange(m)), **keys, "device_id": pa.nulls(m, pa.string()),
        "ordered_at": ts(m), "amount": amount, "quantity": rng.integers(1, 4, m),
        "category": pa.array(rng.choice(["apparel", "beauty", "home"], m)), "offer": pa.nulls(m, pa.string()),
    }), raw / "orders.parquet")

    # events: device events; logins carry a login identity; web events carry crm_id when logged in
    app_users = np.flatnonzero(n_app > 0)
    first_dev = np.searchsorted(dev_owner, np.arange(n))
    k = rng.poisson(25, n)
    person = np.repeat(np.arange(n), k)
    m = len(person)
    on_app = n_app[person] > 0
    dev_idx = np.where(on_app, first_dev[person] + (rng.random(m) < 0.3) * (n_app[person] - 1), 0)
    borrowers = app_users[rng.random(len(app_users)) < 0.01]
    lender = app_users[rng.integers(0, len(app_users), len(borrowers))]
    is_login = rng.random(m) < 0.1
    b_rows = np.flatnonzero(np.isin(person, borrowers) & is_login & on_app)
    b_rows = b_rows[rng.random(len(b_rows)) < 0.3]
    lender_of = dict(zip(borrowers.tolist(), lender.tolist(), strict=True))
    dev_idx[b_rows] = first_dev[[lender_of[int(x)] for x in person[b_rows]]]
    keys = key_row(person, rng.choice([0, 1, 3], m))
    device = maybe(dev.take(pa.array(np.minimum(dev_idx, max(len(dev_owner) - 1, 0)))), on_app)
    carries_login = is_login | ~on_app
    keys = {c: maybe(v, carries_login) for c, v in keys.items()}
    occurred = ts(m)
    bad = dirty(m)
    etype = np.where(is_login, "login", rng.choice(["app_open", "view_item", "add_to_cart", "search"], m))
    pq.write_table(pa.table({
        "event_id": strs("e", np.arange(m)), "device_id": device, **keys,
        "event_type": pa.array(etype),
        "occurred_at": pc.if_else(pa.array(bad), pa.scalar("not-a-time"), occurred.cast(pa.string())),
        "platform": pa.array(np.where(on_app, "app", "web")), "category": pa.nulls(m, pa.string()),
    }), raw / "events.parquet")

    # engagements: sent on a channel the person has a key for, carrying that key
    k = rng.poisson(12, n)
    person = np.repeat(np.arange(n), k)
    avail = np.stack([has_phone[person], has_email[person], has_wx[person], n_app[person] > 0], axis=1)
    person = person[avail.any(axis=1)]
    avail = avail[avail.any(axis=1)]
    m = len(person)
    pick = np.argmax(np.where(avail, rng.random((m, 4)), -1.0), axis=1)
    ch = np.array(["sms", "email", "wechat", "app_push"])[pick]
    t = pa.array(person)
    ch_arr = pa.array(ch)
    ch_arr = pc.if_else(pa.array(dirty(m)), pa.scalar("fax"), ch_arr)
    pq.write_table(pa.table({
        "send_id": strs("s", np.arange(m)),
        "crm_id": pa.nulls(m, pa.string()),
        "phone": maybe(phone.take(t), (ch == "sms") & has_phone[person]),
        "email": maybe(email.take(t), (ch == "email") & has_email[person]),
        "wechat_unionid": maybe(wx.take(t), (ch == "wechat") & has_wx[person]),
        "device_id": maybe(dev.take(pa.array(np.minimum(first_dev[person], max(len(dev_owner) - 1, 0)))),
                           (ch == "app_push") & (n_app[person] > 0)),
        "channel": ch_arr, "offer": pa.array(rng.choice(["pct10", "pct20", "free_shipping"], m)),
        "sent_at": ts(m), "delivered_at": ts(m), "opened_at": pa.nulls(m, pa.timestamp("ns", tz="UTC")),
        "clicked_at": pa.nulls(m, pa.timestamp("ns", tz="UTC")),
        "converted_at": pa.nulls(m, pa.timestamp("ns", tz="UTC")), "conversion_value": pa.nulls(m, pa.float64()),
        "unsubscribed_at": pa.nulls(m, pa.timestamp("ns", tz="UTC")),
        "propensity": rng.uniform(0.01, 0.5, m), "campaign_id": pa.array(rng.choice(["k1", "k2"], m)),
    }), raw / "engagements.parquet")


# --------------------------------------------------------------------------- workers (child processes)


def _files(raw: Path) -> list[Path]:
    out = []
    for name in SOURCES:
        for cand in (raw / f"{name}.parquet", raw / f"{name}.csv"):
            if cand.exists():
                out.append(cand)
        if (raw / name).is_dir():
            out.extend(sorted((raw / name).iterdir()))
    return out


def _worker(kind: str, raw: Path, out: Path, truth: Path | None) -> dict:
    import pyarrow  # noqa: F401  (both steps need it; its import is not the step's cost)

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    if kind == "baseline":
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        rows = 0
        for f in _files(raw):
            t = pq.read_table(f) if f.suffix == ".parquet" else pcsv.read_csv(f)
            rows += t.num_rows
            del t
        result = {"rows": rows}
    else:
        from features.profiles import build_profiles

        s = build_profiles(raw, out, truth_dir=truth)
        result = {
            "rows": s.rows_read, "customers": s.customers, "steps": s.seconds_by_step,
            "precision": s.precision, "recall": s.recall, "rejected": s.rows_rejected,
            "keys_refused": s.conflicts.keys_refused,
        }
    result["seconds"] = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime - cpu0
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def _child(kind: str, raw: Path, out: Path, truth: Path | None) -> dict:
    cmd = [sys.executable, "-m", "bench.profiles", "--worker", kind, "--raw", str(raw), "--out", str(out)]
    if truth is not None:
        cmd += ["--truth", str(truth)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _simulator_available() -> bool:
    from importlib.util import find_spec

    return find_spec("decisioning.commands.simulate") is not None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--workspace", type=Path, default=None, help="reuse/keep sources here")
    ap.add_argument("--synthetic", action="store_true", help="synthetic sources instead of the simulator")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    ap.add_argument("--worker", choices=["baseline", "import"], help=argparse.SUPPRESS)
    ap.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--truth", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.raw, args.out, args.truth)))
        return

    ws = args.workspace or Path(tempfile.mkdtemp(prefix="bench_profiles_"))
    raw, truth = ws / "raw", ws / "truth"
    t0 = time.perf_counter()
    if not _files(raw):
        if args.synthetic or not _simulator_available():
            how = "synthetic"
            synthetic_sources(raw, args.customers, args.days)
        else:
            how = "simulated"
            subprocess.run(
                [sys.executable, "-c", "from decisioning.cli import main; main()", "simulate", "--customers",
                 str(args.customers), "--days", str(args.days), "--seed", "1", "--workspace", str(ws)],
                check=True, stdout=subprocess.DEVNULL,
            )
        print(f"generated {how} sources for {args.customers:,} customers in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"reusing sources in {raw}")
    size_mb = sum(f.stat().st_size for f in _files(raw)) / 1e6

    base = _child("baseline", raw, ws / "bench_profiles_out", None)
    imp = _child("import", raw, ws / "bench_profiles_out", truth if truth.is_dir() else None)
    rows = imp["rows"]
    print(f"\nraw sources: {rows:,} rows, {size_mb:,.0f} MB on disk; customers found: {imp['customers']:,}")
    print(f"{'step':<34}{'wall s':>9}{'CPU s':>9}{'rows/s (wall)':>15}{'peak RSS MB':>13}")
    for name, r in (("baseline: pyarrow reads all files", base), ("import: build_profiles", imp)):
        print(f"{name:<34}{r['seconds']:>9.2f}{r['cpu_seconds']:>9.2f}{r['rows'] / r['seconds']:>15,.0f}"
              f"{r['peak_rss_mb']:>13,.0f}")
    print(f"ratio import / baseline: wall x{imp['seconds'] / base['seconds']:.1f}, "
          f"CPU x{imp['cpu_seconds'] / base['cpu_seconds']:.1f}, peak RSS x{imp['peak_rss_mb'] / base['peak_rss_mb']:.1f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("import steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in imp["steps"].items()))
    print(f"rows rejected: {imp['rejected']:,}; keys refused for linking: {imp['keys_refused']:,}")
    if imp["precision"] is not None:
        print(f"identity vs truth: precision {imp['precision']:.4f}, recall {imp['recall']:.4f}")
    if args.workspace is None and not args.keep:
        shutil.rmtree(ws, ignore_errors=True)
    elif args.workspace is None:
        print(f"workspace kept: {ws}")


if __name__ == "__main__":
    main()

"""Unified customer profiles: import raw sources, resolve identities, write the profiles folder.

``build_profiles(sources_dir, out_dir, truth_dir=None)`` is the library entry (the CLI
``decisioning profiles`` calls it). It writes, in ``out_dir`` (a CONTRACT other parts read):

* ``profiles.parquet``: one row per ``customer_id`` (sorted): ``crm_id`` (of the newest CRM record),
  ``n_crm_records``, ``signup_at`` (earliest), ``updated_at`` (newest ``updated_at``, else
  ``signup_at``), ``city`` and ``timezone`` (newest record that has one; time zone default
  ``Asia/Shanghai``), ``consent_sms|email|wechat|push`` (newest record; no CRM record -> False),
  ``reachable_sms|email|wechat|push`` (the customer has a linked valid key of the channel's type,
  core.types.CHANNEL_KEY: phone, email, wechat_unionid, device_id; push also needs an event on
  the app platform, since a device id may be a web cookie), ``first_seen_at`` /
  ``last_seen_at`` (earliest / latest timestamp on any of the customer's records), ``n_orders``,
  ``n_events``, ``n_sends``. No raw contact identifier appears here.
* ``identity_map.parquet``: ``key_type``, ``key_value`` (normalised), ``customer_id``, ``linked``
  (False for a key refused for linking: one row per customer it was seen with). The only place raw
  identifiers live after import.
* ``record_map.parquet``: ``source``, ``record_id``, ``customer_id`` for every accepted row.
* ``orders.parquet``, ``events.parquet``, ``engagements.parquet``: accepted rows, typed (timestamps
  UTC), ``customer_id`` first, identity-key columns removed, every other documented column kept.
  Written (empty) for a source that is absent, so readers always find them.
* ``rejects.csv`` and ``warnings.csv``: ``source, file, row, column, reason`` (see
  features/sources.py for the reasons).
* ``merge_report.json``: customers merged from several CRM records, keys refused for linking
  and why (by key type and reason, with hashed examples), attribute conflicts between a customer's
  CRM records, the largest customers.
* ``summary.json``: the ``ImportSummary`` (also the ``--json`` output).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from core.types import CHANNEL_CONSENT, CHANNEL_KEY, Channel
from features._columns import TIMESTAMP
from features.identity import Resolution, ResolverConfig, pairwise_precision_recall, resolve
from features.schemas import CUSTOMERS, SOURCES
from features.sources import ImportedSource, read_sources

DEFAULT_TIMEZONE = str(CUSTOMERS.column("timezone").default)
EVENT_SOURCES = ("orders", "events", "engagements")
COUNT_COLUMN = {"orders": "n_orders", "events": "n_events", "engagements": "n_sends"}
CHANNEL_SUFFIX = {Channel.SMS: "sms", Channel.EMAIL: "email", Channel.WECHAT: "wechat", Channel.APP_PUSH: "push"}
ATTRIBUTES = ("city", "timezone", *CHANNEL_CONSENT.values())

PROFILE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("crm_id", pa.string()),
        ("n_crm_records", pa.int64()),
        ("signup_at", TIMESTAMP),
        ("updated_at", TIMESTAMP),
        ("city", pa.string()),
        ("timezone", pa.string()),
        *[(CHANNEL_CONSENT[c], pa.bool_()) for c in Channel],
        *[(f"reachable_{CHANNEL_SUFFIX[c]}", pa.bool_()) for c in Channel],
        ("first_seen_at", TIMESTAMP),
        ("last_seen_at", TIMESTAMP),
        ("n_orders", pa.int64()),
        ("n_events", pa.int64()),
        ("n_sends", pa.int64()),
    ]
)


class SourceCounts(BaseModel):
    files: list[str]
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rejects_by_reason: dict[str, int] = Field(description="rows per reason (a row may have several)")
    warnings_by_reason: dict[str, int] = Field(description="accepted rows per warning")
    ignored_columns: list[str] = Field(default_factory=list, description="columns not in the schema")


class ConflictCounts(BaseModel):
    keys_refused: int = Field(description="keys not used for linking (shared by several persons)")
    keys_refused_by_reason: dict[str, int]
    attributes: dict[str, int] = Field(
        description="customers whose several CRM records disagree on the attribute (newest wins)"
    )


class ImportSummary(BaseModel):
    """What ``build_profiles`` did; written to summary.json and printed by ``--json``."""

    sources_dir: str
    out_dir: str
    sources: dict[str, SourceCounts]
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    warnings_by_reason: dict[str, int]
    invalid_keys: dict[str, int] = Field(description="keys dropped as invalid, in accepted rows")
    customers: int
    merges: int = Field(description="customers unified from several CRM records")
    conflicts: ConflictCounts
    seconds: float
    seconds_by_step: dict[str, float]
    precision: float | None = Field(None, description="pairwise precision against truth, if any")
    recall: float | None = Field(None, description="pairwise recall against truth, if any")
    truth_records: int | None = Field(None, description="accepted records found in the truth")


def build_profiles(
    sources_dir: str | Path,
    out_dir: str | Path,
    truth_dir: str | Path | None = None,
    config: ResolverConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> ImportSummary:
    """Import the raw sources in ``sources_dir``, resolve identities and write ``out_dir``.

    When ``truth_dir/record_owner.parquet`` exists (simulated worlds), the summary carries the
    pairwise precision and recall of record-to-customer assignment over the accepted records.
    Raises SourceError / InputError for input that cannot be imported at all.
    """
    say = progress or (lambda _msg: None)
    config = config or ResolverConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    steps: dict[str, float] = {}

    say(f"reading sources from {sources_dir}")
    sources = read_sources(sources_dir)
    steps["read_validate"] = time.perf_counter() - t0

    say("resolving identities")
    t = time.perf_counter()
    keys = {name: src.key_columns() for name, src in sources.items()}
    sources = {name: src.without_keys() for name, src in sources.items()}
    res = resolve(keys, config)
    steps["resolve"] = time.perf_counter() - t
    del keys
    pa.default_memory_pool().release_unused()

    say("building profiles")
    t = time.perf_counter()
    profiles, attribute_conflicts, merged = _profiles(sources, res)
    steps["profiles"] = time.perf_counter() - t

    say(f"writing {out}")
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _write_outputs(out, sources, res, profiles)
    steps["write"] = time.perf_counter() - t
    pa.default_memory_pool().release_unused()

    precision = recall = None
    truth_records = None
    owner = Path(truth_dir) / "record_owner.parquet" if truth_dir is not None else None
    if owner is not None and owner.is_file():
        say("scoring against the truth")
        t = time.perf_counter()
        precision, recall, truth_records = score_against_truth(sources, res, owner)
        steps["score"] = time.perf_counter() - t

    summary = _summary(
        sources_dir, out, sources, res, merged, attribute_conflicts, steps, time.perf_counter() - t0,
        precision, recall, truth_records,
    )
    _write_merge_report(out, res, profiles, merged, attribute_conflicts, summary, config)
    (out / "summary.json").write_text(json.dumps(summary.model_dump(mode="json"), indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------- profiles


def _ts_int(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ns values with nulls as 0, valid mask). Shapes (n,)."""
    ints = col.cast(pa.int64())
    valid = np.asarray(pc.is_valid(ints).to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(ints.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64), valid


def _profiles(
    sources: dict[str, ImportedSource], res: Resolution
) -> tuple[pa.Table, dict[str, int], dict[int, int]]:
    """(profiles table, attribute conflicts, {n CRM records: customers} for n >= 2)."""
    n = len(res.customer_ids)
    ids = pa.array(res.customer_ids.astype(str), pa.string())
    cols: dict[str, pa.Array | np.ndarray] = {"customer_id": ids}

    # CRM attributes: newest record wins (updated_at, else signup_at; ties: smallest crm_id)
    crm_id = pa.nulls(n, pa.string())
    n_crm = np.zeros(n, dtype=np.int64)
    signup = pa.nulls(n, TIMESTAMP)
    updated = pa.nulls(n, TIMESTAMP)
    city = pa.nulls(n, pa.string())
    tz = pa.nulls(n, pa.string())
    consent = {c: np.zeros(n, dtype=bool) for c in CHANNEL_CONSENT.values()}
    conflicts = dict.fromkeys(ATTRIBUTES, 0)
    merged: dict[int, int] = {}
    if "customers" in sources and sources["customers"].rows_accepted:

        crm = sources["customers"].table
        df = crm.select(["crm_id", "signup_at", "updated_at", "city", "timezone", *CHANNEL_CONSENT.values()]).to_pandas()
        df["cust"] = res.record_customer["customers"]
        df["recency"] = df["updated_at"].fillna(df["signup_at"])
        df = df.sort_values(["cust", "recency", "crm_id"], ascending=[True, False, True], kind="stable")
        g = df.groupby("cust", sort=True)
        newest = df.drop_duplicates("cust", keep="first").set_index("cust")
        firsts = g[["city", "timezone"]].first()  # first non-null in newest-first order
        size = g.size()
        idx = newest.index.to_numpy()
        n_crm[idx] = size.reindex(newest.index).to_numpy()
        crm_id = _scatter(n, idx, pa.array(newest["crm_id"], pa.string()))
        signup = _scatter(n, idx, pa.array(g["signup_at"].min().reindex(newest.index), TIMESTAMP))
        updated = _scatter(n, idx, pa.array(g["recency"].max().reindex(newest.index), TIMESTAMP))
        city = _scatter(n, idx, pa.array(firsts["city"].reindex(newest.index), pa.string()))
        tz = _scatter(n, idx, pa.array(firsts["timezone"].reindex(newest.index), pa.string()))
        for c in CHANNEL_CONSENT.values():
            consent[c][idx] = newest[c].to_numpy(dtype=bool)
        multi = df[df["cust"].map(size) > 1]
        if len(multi):
            nun = multi.groupby("cust")[list(ATTRIBUTES)].nunique()
            conflicts = {a: int((nun[a] > 1).sum()) for a in ATTRIBUTES}
            counts = size[size > 1].value_counts().sort_index()
            merged = {int(k): int(v) for k, v in counts.items()}
    cols["crm_id"] = crm_id
    cols["n_crm_records"] = n_crm
    cols["signup_at"] = signup
    cols["updated_at"] = updated
    cols["city"] = city
    cols["timezone"] = pc.fill_null(tz, DEFAULT_TIMEZONE)
    for c in Channel:
        cols[CHANNEL_CONSENT[c]] = consent[CHANNEL_CONSENT[c]]

    # reachability: a linked key of the channel's type
    imap = res.identity_map.filter(res.identity_map["linked"])
    cust_of_key = np.asarray(pc.index_in(imap["customer_id"], value_set=ids).to_numpy(zero_copy_only=False))
    key_type = imap["key_type"]
    for c in Channel:
        has = np.zeros(n, dtype=bool)
        m = np.asarray(pc.equal(key_type, CHANNEL_KEY[c]).to_numpy(zero_copy_only=False), dtype=bool)
        has[cust_of_key[m]] = True
        if c is Channel.APP_PUSH:
            has &= _app_users(sources, res, n)
        cols[f"reachable_{CHANNEL_SUFFIX[c]}"] = has

    # activity span and counts
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    for name, src in sources.items():
        cust = res.record_customer[name]
        for col in SOURCES[name].columns:
            if col.kind != "timestamp":
                continue
            vals, valid = _ts_int(src.table[col.name])
            if valid.any():
                np.minimum.at(first, cust[valid], vals[valid])
                np.maximum.at(last, cust[valid], vals[valid])
    seen = first != np.iinfo(np.int64).max
    cols["first_seen_at"] = pa.array(first, pa.int64(), mask=~seen).cast(TIMESTAMP)
    cols["last_seen_at"] = pa.array(last, pa.int64(), mask=~seen).cast(TIMESTAMP)
    for name, column in COUNT_COLUMN.items():
        cust = res.record_customer.get(name)
        cols[column] = np.bincount(cust, minlength=n) if cust is not None else np.zeros(n, dtype=np.int64)
    table = pa.table({f.name: pa.array(cols[f.name], f.type) for f in PROFILE_SCHEMA}, schema=PROFILE_SCHEMA)
    return table, conflicts, merged


def _scatter(n: int, idx: np.ndarray, values: pa.Array) -> pa.Array:
    """An (n,) array, null except values placed at positions idx."""
    pos = np.full(n, -1, dtype=np.int64)
    pos[idx] = np.arange(len(idx))
    return values.take(pa.array(pos, mask=pos < 0))


# --------------------------------------------------------------------------- outputs


def _write_outputs(out: Path, sources: dict[str, ImportedSource], res: Resolution, profiles: pa.Table) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    ids = pa.array(res.customer_ids.astype(str), pa.string())
    pq.write_table(profiles, out / "profiles.parquet")
    pq.write_table(res.identity_map, out / "identity_map.parquet")
    parts = []
    for name in SOURCES:
        src = sources.get(name)
        if src is None:
            continue
        k = src.rows_accepted
        parts.append(
            pa.table(
                {
                    "source": pa.repeat(pa.scalar(name, pa.string()), k),
                    "record_id": src.table[SOURCES[name].id_column],
                    "customer_id": ids.take(pa.array(res.record_customer[name])),
                }
            )
        )
    record_map = pa.concat_tables(parts)
    pq.write_table(record_map, out / "record_map.parquet")
    for name in EVENT_SOURCES:
        schema = SOURCES[name]
        keep = [c.name for c in schema.columns if c.name not in schema.identity_columns]
        if name in sources:
            src = sources[name]
            table = src.table.select(keep)
            table = table.add_column(0, "customer_id", ids.take(pa.array(res.record_customer[name])))
        else:
            from features._columns import ARROW_TYPES

            fields = [("customer_id", pa.string())] + [
                (c.name, ARROW_TYPES[c.kind]) for c in schema.columns if c.name in keep
            ]
            table = pa.schema(fields).empty_table()
        pq.write_table(table, out / f"{name}.parquet")
    rejects = [s.rejects for s in sources.values()]
    warnings = [s.warnings for s in sources.values()]
    pcsv.write_csv(pa.concat_tables(rejects), out / "rejects.csv")
    pcsv.write_csv(pa.concat_tables(warnings), out / "warnings.csv")


def _by_reason(problems: pa.Table) -> dict[str, int]:
    """Rows per reason (a row counted once per reason)."""
    if problems.num_rows == 0:
        return {}
    rows = problems.group_by(["reason", "file", "row"]).aggregate([])
    counts = rows.group_by("reason").aggregate([("row", "count")]).to_pydict()
    return dict(sorted(zip(counts["reason"], counts["row_count"], strict=True), key=lambda kv: -kv[1]))


def _summary(
    sources_dir, out, sources, res, merged, attribute_conflicts, steps, seconds, precision, recall,
    truth_records,
) -> ImportSummary:
    per: dict[str, SourceCounts] = {}
    all_rejects: dict[str, int] = {}
    all_warnings: dict[str, int] = {}
    invalid_keys: dict[str, int] = {}
    for name, src in sources.items():
        rj, wn = _by_reason(src.rejects), _by_reason(src.warnings)
        per[name] = SourceCounts(
            files=list(src.files), rows_read=src.rows_read, rows_accepted=src.rows_accepted,
            rows_rejected=src.rows_rejected, rejects_by_reason=rj, warnings_by_reason=wn,
            ignored_columns=list(src.ignored_columns),
        )
        for k, v in rj.items():
            all_rejects[k] = all_rejects.get(k, 0) + v
        for k, v in wn.items():
            all_warnings[k] = all_warnings.get(k, 0) + v
            if k.startswith("invalid ") and k != "invalid timezone":
                key = k.removeprefix("invalid ")
                invalid_keys[key] = invalid_keys.get(key, 0) + v
    refused_by = pc.value_counts(res.refused["reason"]).to_pylist() if res.refused.num_rows else []
    return ImportSummary(
        sources_dir=str(Path(sources_dir).resolve()),
        out_dir=str(out.resolve()),
        sources=per,
        rows_read=sum(s.rows_read for s in sources.values()),
        rows_accepted=sum(s.rows_accepted for s in sources.values()),
        rows_rejected=sum(s.rows_rejected for s in sources.values()),
        rejects_by_reason=dict(sorted(all_rejects.items(), key=lambda kv: -kv[1])),
        warnings_by_reason=dict(sorted(all_warnings.items(), key=lambda kv: -kv[1])),
        invalid_keys=invalid_keys,
        customers=len(res.customer_ids),
        merges=sum(merged.values()),
        conflicts=ConflictCounts(
            keys_refused=res.refused.num_rows,
            keys_refused_by_reason={d["values"]: d["counts"] for d in refused_by},
            attributes=attribute_conflicts,
        ),
        seconds=round(seconds, 3),
        seconds_by_step={k: round(v, 3) for k, v in steps.items()},
        precision=precision,
        recall=recall,
        truth_records=truth_records,
    )


def _key_ref(key_type: str, value: str) -> str:
    return hashlib.sha1(f"{key_type}:{value}".encode()).hexdigest()[:12]


def _write_merge_report(out, res, profiles, merged, attribute_conflicts, summary, config) -> None:
    refused = res.refused.to_pylist()
    by_type: dict[str, dict[str, int]] = {}
    for r in refused:
        by_type.setdefault(r["reason"], {}).setdefault(r["key_type"], 0)
        by_type[r["reason"]][r["key_type"]] += 1
    examples = sorted(refused, key=lambda r: (-r["n_linked"], r["key_type"], r["key_value"]))[:20]
    n_records = (
        profiles["n_crm_records"].to_numpy()
        + profiles["n_orders"].to_numpy()
        + profiles["n_events"].to_numpy()
        + profiles["n_sends"].to_numpy()
    )
    top = np.argsort(-n_records, kind="stable")[:10]
    report = {
        "customers": summary.customers,
        "merged_from_several_crm_records": {
            "customers": sum(merged.values()),
            "by_number_of_crm_records": {str(k): v for k, v in sorted(merged.items())},
        },
        "refused_keys": {
            "count": len(refused),
            "by_reason_and_key_type": by_type,
            "rules": {
                "key on too many CRM records": (
                    f"a phone, email or WeChat unionid seen with more than {config.max_crm_records_per_key} "
                    "CRM ids is not used to link them"
                ),
                "device shared by several persons": (
                    f"a device logged into by more than {config.max_persons_per_device} otherwise "
                    "unconnected person(s) links to none of them"
                ),
            },
            "examples": [
                {
                    "key_type": r["key_type"],
                    "key_ref": _key_ref(r["key_type"], r["key_value"]),
                    "reason": r["reason"],
                    "n_linked": r["n_linked"],
                }
                for r in examples
            ],
            "note": "key_ref is a hash; the values are in identity_map.parquet where linked is false",
        },
        "attribute_conflicts": {
            "note": "customers whose several CRM records disagree on the attribute; the newest record wins",
            **attribute_conflicts,
        },
        "invalid_keys": summary.invalid_keys,
        "largest_customers": [
            {"customer_id": profiles["customer_id"][int(i)].as_py(), "records": int(n_records[i])} for i in top
        ],
    }
    (out / "merge_report.json").write_text(json.dumps(report, indent=2) + "\n")


# --------------------------------------------------------------------------- evaluation


def score_against_truth(
    sources: dict[str, ImportedSource], res: Resolution, record_owner: Path
) -> tuple[float, float, int]:
    """(pairwise precision, recall, records scored) of the accepted records that the truth knows."""
    import pyarrow.parquet as pq

    pred_parts, true_parts = [], []
    for name, src in sources.items():
        t = pq.read_table(record_owner, columns=["record_id", "person_id"], filters=[("source", "=", name)])
        if t.num_rows == 0:
            continue
        ids = t["record_id"].cast(pa.string())
        pos = pc.index_in(src.table[SOURCES[name].id_column], value_set=ids)
        pos_np = np.asarray(pos.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        found = pos_np >= 0
        persons = np.asarray(t["person_id"].to_numpy(), dtype=np.int64)
        pred_parts.append(res.record_customer[name][found])
        true_parts.append(persons[pos_np[found]])
    if not pred_parts:
        return 1.0, 1.0, 0
    pred = np.concatenate(pred_parts)
    true = np.concatenate(true_parts)
    p, r = pairwise_precision_recall(pred, true)
    return p, r, len(pred)


def _app_users(sources: dict, res, n: int) -> np.ndarray:
    """Customers with at least one event on the app platform: a device id alone may be a web cookie,
    and push needs the app installed. Sources without a platform column cannot tell, so every
    customer passes (any linked device counts)."""
    ev = sources.get("events")
    if ev is None or not ev.rows_accepted or "platform" not in ev.table.column_names:
        return np.ones(n, dtype=bool)
    platform = ev.table["platform"]
    if platform.null_count == len(platform):
        return np.ones(n, dtype=bool)
    is_app = np.asarray(pc.fill_null(pc.equal(platform, "app"), False).to_numpy(zero_copy_only=False), dtype=bool)
    out = np.zeros(n, dtype=bool)
    out[np.asarray(res.record_customer["events"])[is_app]] = True
    return out

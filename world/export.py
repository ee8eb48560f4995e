"""Turn the simulated history into the raw sources of features/schemas.py, with the dirt a real
import meets, and the truth of which person owns each row.

Formats: Parquet keeps typed columns (timestamps ``timestamp[us, UTC]``; a bad timestamp is a null
in a required timestamp column); CSV writes ISO 8601 UTC text ('2026-01-15T10:00:00Z'), empty cells
for nulls, and unparseable text for bad timestamps. Outcomes that would happen after the history's
end (a send in its last day) are not yet known and left empty, as in a real export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from core.catalog import OfferKind
from core.types import CATEGORIES, CHANNELS
from features.schemas import SOURCES, SourceSchema
from world.history import (
    EVENT_TYPES,
    K_CRM,
    K_DEVICE,
    K_EMAIL,
    K_PHONE,
    K_UNION,
    PLATFORMS,
    ChunkHistory,
)
from world.identity import (
    PHONE_FORMATS,
    render_crm,
    render_device,
    render_email,
    render_phone,
    render_unionid,
)
from world.timeutil import NAT

SOURCE_NAMES = ("customers", "orders", "events", "engagements")
TS_TYPE = pa.timestamp("us", tz="UTC")
_KIND = {"str": pa.string(), "timestamp": TS_TYPE, "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
BAD_TIMESTAMPS = ("not a date", "2026-13-45T25:61:00Z", "31/02/2026 10:00", "yesterday", "0000-00-00 00:00:00",
                  "2026-02-30T10:00:00Z")
UNKNOWN_CHANNELS = ("fax", "telex", "pager")
REQUIRED_TS = {"customers": "signup_at", "orders": "ordered_at", "events": "occurred_at", "engagements": "sent_at"}
MISSING_COLUMN = {"customers": "signup_at", "orders": "amount", "events": "event_type", "engagements": "channel"}
DEFECTS = {
    "customers": ("bad_timestamp", "missing_required"),
    "orders": ("bad_timestamp", "negative_amount", "missing_required"),
    "events": ("bad_timestamp", "missing_required"),
    "engagements": ("bad_timestamp", "unknown_channel", "bad_propensity", "missing_required"),
}
OWNER_SCHEMA = pa.schema([("source", pa.string()), ("record_id", pa.string()), ("person_id", pa.int64()),
                          ("malformed", pa.string())])


def arrow_schema(schema: SourceSchema, fmt: str) -> pa.Schema:
    """The Arrow schema of a raw source: every documented column, in order (CSV: timestamps as text)."""
    fields = []
    for c in schema.columns:
        t = _KIND[c.kind]
        if fmt == "csv" and c.kind == "timestamp":
            t = pa.string()
        fields.append(pa.field(c.name, t))
    return pa.schema(fields)


def _ts(ns: np.ndarray, end_ns: int | None = None) -> pa.Array:
    """int64 ns (NAT = null; >= end_ns = not yet observed -> null) -> timestamp[us, UTC]."""
    ns = np.asarray(ns, dtype=np.int64)
    mask = ns == NAT
    if end_ns is not None:
        mask |= ns >= end_ns
    return pa.array(np.where(mask, 0, ns // 1000), type=pa.int64(), mask=mask).cast(TS_TYPE)


def _scatter(subset: pa.Array, mask: np.ndarray) -> pa.Array:
    """Place ``subset`` (one value per True of ``mask``) at those rows; null elsewhere."""
    idx = np.cumsum(mask) - 1
    return subset.take(pa.array(np.where(mask, idx, 0), type=pa.int64(), mask=~mask))


def _ids(prefix: str, start: int, n: int, width: int) -> pa.Array:
    nums = pa.array(np.arange(start, start + n, dtype=np.int64))
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(nums, pa.string()), width, "0"), "")


def _dict_strings(names, codes: np.ndarray) -> pa.Array:
    codes = np.asarray(codes)
    mask = codes < 0
    return pa.array(np.asarray(names, dtype=object)[np.where(mask, 0, codes)], pa.string(), mask=mask)


class KeyRenderer:
    """Renders identity-key columns for rows of persons, with format variants and typos."""

    def __init__(self, world, ids):
        self.w, self.ids, self.t, self.d = world, ids, world.traits, world.config.dirt
        fmts = self.d.phone_formats
        self.phone_p = np.array([fmts.get(f, 0.0) for f in PHONE_FORMATS], dtype=np.float64)
        self.phone_p = self.phone_p / self.phone_p.sum()

    def columns(self, rng, person: np.ndarray, keys: np.ndarray, dev: np.ndarray | None) -> dict[str, pa.Array]:
        """Key columns (crm_id, phone, email, wechat_unionid, device_id) of n rows."""
        ids, t, d = self.ids, self.t, self.d
        n = len(person)
        u = rng.random((n, 6))
        out = {}
        m = (keys & K_CRM) > 0
        crm_num = ids.crm_num[np.maximum(ids.primary_crm[person[m]], 0)]
        out["crm_id"] = _scatter(render_crm(crm_num, u[m, 0] < d.id_space_share), m)
        m = (keys & K_PHONE) > 0
        pm = person[m]
        typo = u[m, 1] < d.key_typo_share
        fmt = np.searchsorted(np.cumsum(self.phone_p), u[m, 2], side="right").clip(0, 3)
        out["phone"] = _scatter(render_phone(np.where(typo, ids.phone_typo[pm], ids.phone_num[pm]), fmt,
                                             t.phone_malformed[pm]), m)
        m = (keys & K_EMAIL) > 0
        pe = person[m]
        style = _email_style(u[m, 3], d)
        out["email"] = _scatter(render_email(ids, pe, style, u[m, 4] < d.key_typo_share, t.email_malformed[pe]), m)
        m = (keys & K_UNION) > 0
        out["wechat_unionid"] = _scatter(render_unionid(ids, person[m]), m)
        m = (keys & K_DEVICE) > 0
        if dev is None:
            dev = np.where(m, ids.own_app[person], -1)
        m &= dev >= 0
        out["device_id"] = _scatter(render_device(ids, dev[m]), m)
        return out


def _email_style(u: np.ndarray, d) -> np.ndarray:
    case, space = d.email_case_share, d.email_space_share
    style = np.zeros(len(u), np.int8)
    style = np.where(u < case * 0.7, 1, style)
    style = np.where((u >= case * 0.7) & (u < case), 2, style)
    style = np.where((u >= case) & (u < case + space * 0.5), 3, style)
    style = np.where((u >= case + space * 0.5) & (u < case + space), 4, style)
    return style.astype(np.int8)


def _no_key(rng, keys: np.ndarray, share: float) -> np.ndarray:
    return np.where(rng.random(len(keys)) < share, 0, keys).astype(np.uint8)


class RawWriter:
    """Streams the four raw sources and truth/record_owner.parquet, chunk by chunk."""

    def __init__(self, raw_dir: Path, truth_dir: Path, fmt: str, world, ids):
        self.raw_dir, self.truth_dir, self.fmt = Path(raw_dir), Path(truth_dir), fmt
        self.world, self.ids, self.config = world, ids, world.config
        self.keys = KeyRenderer(world, ids)
        self.end_ns = world.end_ns
        self.schemas = {name: arrow_schema(SOURCES[name], fmt) for name in SOURCE_NAMES}
        self.writers: dict[str, object] = {}
        self.owner = pq.ParquetWriter(self.truth_dir / "record_owner.parquet", OWNER_SCHEMA)
        self.rows = dict.fromkeys(SOURCE_NAMES, 0)
        self.malformed = dict.fromkeys(SOURCE_NAMES, 0)
        self.offers = world.config.catalog.offers
        self.offer_ids = np.asarray(world.config.catalog.ids, dtype=object)

    def path(self, source: str) -> Path:
        return self.raw_dir / f"{source}.{self.fmt}"

    def _writer(self, source: str):
        if source not in self.writers:
            if self.fmt == "parquet":
                self.writers[source] = pq.ParquetWriter(self.path(source), self.schemas[source])
            else:
                self.writers[source] = pcsv.CSVWriter(self.path(source), self.schemas[source])
        return self.writers[source]

    def close(self) -> None:
        for source in SOURCE_NAMES:  # every source exists, even when empty
            self._writer(source)
        for w in self.writers.values():
            w.close()
        self.owner.close()

    # -- one source table ------------------------------------------------------------------
    def emit(self, source: str, rng, cols: dict[str, pa.Array], person: np.ndarray) -> None:
        """Apply malformed-row dirt, write the rows and their owners."""
        n = len(person)
        reason = self._malformed(source, rng, cols, n)
        schema = self.schemas[source]
        arrays = []
        for f in schema:
            a = cols.get(f.name)
            if a is None:
                a = pa.nulls(n, f.type)
            elif self.fmt == "csv" and pa.types.is_timestamp(a.type):
                a = pc.strftime(a.cast(pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
            arrays.append(a.cast(f.type) if a.type != f.type else a)
        if reason is not None and self.fmt == "csv":
            # bad timestamps in CSV are unparseable text (typed Parquet keeps them null)
            col = REQUIRED_TS[source]
            i = schema.get_field_index(col)
            bad = reason == "bad_timestamp"
            if bad.any():
                garbage = np.asarray(BAD_TIMESTAMPS, dtype=object)[rng.integers(0, len(BAD_TIMESTAMPS), n)]
                arrays[i] = pc.if_else(pa.array(bad), pa.array(garbage, pa.string()), arrays[i])
        table = pa.Table.from_arrays(arrays, schema=schema)
        self._writer(source).write_table(table)
        id_col = SOURCES[source].id_column
        owner = pa.Table.from_arrays([
            pa.array(np.full(n, source, dtype=object), pa.string()), table.column(id_col).combine_chunks(),
            pa.array(person, pa.int64()),
            pa.array(reason if reason is not None else np.full(n, None, dtype=object), pa.string()),
        ], schema=OWNER_SCHEMA)
        self.owner.write_table(owner)
        self.rows[source] += n
        self.malformed[source] += 0 if reason is None else int(np.sum(reason != None))  # noqa: E711

    def _malformed(self, source, rng, cols, n) -> np.ndarray | None:
        d = self.config.dirt
        hit = rng.random(n) < d.malformed_share
        kinds = DEFECTS[source]
        w = np.array([d.malformed_mix.get(k, 0.0) for k in kinds], dtype=np.float64)
        if not hit.any() or w.sum() <= 0:
            return None
        which = np.searchsorted(np.cumsum(w / w.sum()), rng.random(n), side="right").clip(0, len(kinds) - 1)
        reason = np.where(hit, np.asarray(kinds, dtype=object)[which], None)
        ts_col = REQUIRED_TS[source]
        bad_ts = reason == "bad_timestamp"
        if bad_ts.any():
            cols[ts_col] = pc.if_else(pa.array(bad_ts), pa.scalar(None, cols[ts_col].type), cols[ts_col])
        miss = reason == "missing_required"
        if miss.any():
            c = MISSING_COLUMN[source]
            cols[c] = pc.if_else(pa.array(miss), pa.scalar(None, cols[c].type), cols[c])
        neg = reason == "negative_amount"
        if neg.any():
            cols["amount"] = pc.if_else(pa.array(neg), pc.negate(cols["amount"]), cols["amount"])
        unk = reason == "unknown_channel"
        if unk.any():
            junk = np.asarray(UNKNOWN_CHANNELS, dtype=object)[rng.integers(0, len(UNKNOWN_CHANNELS), n)]
            cols["channel"] = pc.if_else(pa.array(unk), pa.array(junk, pa.string()), cols["channel"])
        badp = reason == "bad_propensity"
        if badp.any():
            junk = np.where(rng.random(n) < 0.5, 0.0, 1.5)
            cols["propensity"] = pc.if_else(pa.array(badp), pa.array(junk), cols["propensity"])
        return reason

    # -- sources ---------------------------------------------------------------------------
    def write_chunk(self, h: ChunkHistory, rng) -> None:
        self.write_orders(h, rng)
        self.write_events(h, rng)
        self.write_engagements(h, rng)

    def write_orders(self, h: ChunkHistory, rng) -> None:
        n = len(h.o_person)
        keys = _no_key(rng, h.o_keys, self.config.dirt.no_key_share)
        cols = self.keys.columns(rng, h.o_person, keys, h.o_dev)
        pct = np.array([o.kind == OfferKind.PERCENT_OFF for o in self.offers])
        disc = np.array([o.discount for o in self.offers])
        has = h.o_offer >= 0
        paid = np.where(has & pct[np.maximum(h.o_offer, 0)], h.o_gross * (1 - disc[np.maximum(h.o_offer, 0)]),
                        h.o_gross)
        cols.update(
            order_id=_ids("O", self.rows["orders"], n, 11),
            ordered_at=_ts(h.o_time),
            amount=pa.array(np.round(paid, 2)),
            quantity=pa.array(h.o_qty.astype(np.int64)),
            category=_dict_strings(CATEGORIES, h.o_cat),
            offer=_dict_strings(self.offer_ids, h.o_offer),
        )
        self.emit("orders", rng, cols, h.o_person)

    def write_events(self, h: ChunkHistory, rng) -> None:
        n = len(h.e_person)
        keys = _no_key(rng, h.e_keys, self.config.dirt.no_key_share)
        cols = self.keys.columns(rng, h.e_person, keys, h.e_dev)
        cols.update(
            event_id=_ids("E", self.rows["events"], n, 12),
            event_type=_dict_strings(EVENT_TYPES, h.e_type),
            occurred_at=_ts(h.e_time),
            platform=_dict_strings(PLATFORMS, h.e_platform),
            category=_dict_strings(CATEGORIES, h.e_cat),
        )
        self.emit("events", rng, cols, h.e_person)

    def write_engagements(self, h: ChunkHistory, rng) -> None:
        n = len(h.s_person)
        keys = _no_key(rng, h.s_keys, self.config.dirt.no_key_share)
        cols = self.keys.columns(rng, h.s_person, keys, None)
        end = self.end_ns
        conv_known = (h.s_converted != NAT) & (h.s_converted < end)
        day = pc.strftime(_ts(h.s_date).cast(pa.timestamp("s", tz="UTC")), format="%Y%m%d")  # local date
        channel = _dict_strings([c.value for c in CHANNELS], h.s_channel)
        cols.update(
            send_id=_ids("S", self.rows["engagements"], n, 11),
            channel=channel,
            offer=_dict_strings(self.offer_ids, h.s_offer),
            sent_at=_ts(h.s_send),
            delivered_at=_ts(h.s_delivered, end),
            opened_at=_ts(h.s_opened, end),
            clicked_at=_ts(h.s_clicked, end),
            converted_at=_ts(h.s_converted, end),
            conversion_value=pa.array(np.round(h.s_value, 2), mask=~conv_known),
            unsubscribed_at=_ts(h.s_unsubscribed, end),
            propensity=pa.array(h.s_propensity),
            campaign_id=pc.binary_join_element_wise("cmp-", day, "-", channel, ""),
        )
        self.emit("engagements", rng, cols, h.s_person)

    def write_customers(self, rng, state) -> None:
        """CRM records, written once the history's unsubscribes are known (consent reflects them)."""
        ids, w, d = self.ids, self.world, self.config.dirt
        t = w.traits
        rec_p = ids.crm_person
        r = len(rec_p)
        n_primary = int(np.sum(ids.primary_crm >= 0))
        is_dup = np.arange(r) >= n_primary
        u = rng.random((r, 12))
        signup = t.signup_ns[rec_p].copy()
        signup[is_dup] = signup[is_dup] + (u[is_dup, 0] * (w.end_ns - signup[is_dup])).astype(np.int64)
        signup = (signup // 10**9) * 10**9
        # the person's other record, to order updates (newest holds the current attributes)
        other = np.full(r, -1, np.int64)
        dup_rows = np.flatnonzero(is_dup)
        other[dup_rows] = ids.primary_crm[rec_p[dup_rows]]
        other[ids.primary_crm[rec_p[dup_rows]]] = dup_rows
        newest = ids.crm_newest
        latest_signup = np.where(other >= 0, np.maximum(signup, signup[np.maximum(other, 0)]), signup)
        unsub_at = state.unsubscribed_at.view(np.int64)[rec_p]
        last_unsub = unsub_at.max(axis=1)  # NAT is the smallest int64
        upd_new = latest_signup + (u[:, 1] * (w.end_ns - latest_signup)).astype(np.int64)
        upd_new = np.minimum(np.maximum(upd_new, np.where(last_unsub < w.end_ns, last_unsub, NAT)), w.end_ns - 10**9)
        upd_newest = np.where(newest, upd_new, upd_new[np.maximum(other, 0)])
        updated = np.where(newest, upd_new, signup + (u[:, 2] * np.maximum(upd_newest - signup, 0)).astype(np.int64))
        updated = (np.maximum(updated, signup) // 10**9) * 10**9

        # keys: the primary carries what is on file; a duplicate shares the phone or the e-mail
        phone_written = ids.phone_num[rec_p] > 0
        email_written = ids.email_written[rec_p]
        shares_phone = ids.dup_shares_phone
        has_phone = np.where(is_dup, shares_phone & phone_written, phone_written)
        has_email = np.where(is_dup, ~shares_phone & email_written, email_written)
        has_union = ~is_dup & t.key_on_file[rec_p, 2] & ids.unionid_in_crm[rec_p]
        keys = (np.where(has_phone, K_PHONE, 0) | np.where(has_email, K_EMAIL, 0)
                | np.where(has_union, K_UNION, 0)).astype(np.uint8)
        cols = self.keys.columns(rng, rec_p, keys, np.full(r, -1))
        cols["crm_id"] = render_crm(ids.crm_num)

        # attributes: the newest record is true; the older one of a duplicate may be stale
        tz_names = np.asarray(self.config.timezone_names, dtype=object)
        all_cities = np.asarray(sorted({c for v in self.config.population.cities.values() for c in v}), dtype=object)
        stale = ~newest
        city = t.city[rec_p].copy()
        stale_city = stale & (u[:, 3] < d.conflict_city_share)
        city[stale_city] = all_cities[(u[stale_city, 4] * len(all_cities)).astype(int)]
        tz = tz_names[t.tz_idx[rec_p]].copy()
        stale_tz = stale & (u[:, 5] < d.conflict_timezone_share)
        tz[stale_tz] = tz_names[(u[stale_tz, 6] * len(tz_names)).astype(int)]
        consent_now = t.consent[rec_p] & ~state.unsubscribed[rec_p]
        consent = np.where(stale[:, None], t.consent[rec_p], consent_now)
        flip = stale & (u[:, 7] < d.conflict_consent_share)
        flip_ch = (u[:, 8] * 4).astype(int)
        consent[flip, flip_ch[flip]] = ~consent[flip, flip_ch[flip]]
        no_city = u[:, 9] < d.missing_city_share
        no_tz = u[:, 10] < d.missing_timezone_share
        cols.update(
            signup_at=_ts(signup), updated_at=_ts(updated),
            city=pa.array(city, pa.string(), mask=no_city), timezone=pa.array(tz, pa.string(), mask=no_tz),
            consent_sms=pa.array(consent[:, 0]), consent_email=pa.array(consent[:, 1]),
            consent_wechat=pa.array(consent[:, 2]), consent_push=pa.array(consent[:, 3]),
        )
        order = np.argsort(ids.crm_num, kind="stable")
        idx = pa.array(order)
        cols = {k: v.take(idx) for k, v in cols.items()}
        self.emit("customers", rng, cols, rec_p[order])

"""The decision log: every decision, durable before it is returned, and the outcomes joined to it.

One SQLite file in WAL mode holds these tables (and ``context_layouts``: the name lists of the
binary contexts and distributions, by id):

* ``decisions``: one row per :class:`~policies.records.DecisionRecord`. Scalars are columns;
  the scores, reasons, guardrails and model versions are JSON text. The distribution (schema 3)
  is binary when the writer gives its arm list (the serving engine does): a BLOB of the arm
  list's layout id, a bit mask of the arms present and their probabilities as float64
  (:func:`encode_distribution`, ~4x smaller than the JSON of a Thompson row and written without
  a float repr); otherwise, and in schema 1-2 rows, JSON text. Every reader decodes either through
  :func:`decode_distributions` (``parse_json=False`` gives the JSON text of both: the text a
  schema-2 writer stored). A schema-1 or -2 file is moved to 3 when opened (no row rewritten);
  code older than schema 3 refuses a schema-3 file, which may hold binary distributions. The context
  (schema 2) is binary: the leading run of finite float entries of the record's context (the
  context features) as little-endian float64 in ``context`` (a BLOB), their names stored once in
  ``context_layouts`` (``context_layout`` = its id, a hash of the names: :func:`layout_id`), the
  other entries (free-form request context, which may hold strings) as JSON text in
  ``context_extra`` (NULL when none). Schema-1 rows (JSON text in ``context``, no layout) are still
  read; a schema-1 file is migrated in place when opened (two columns and a table added, no row
  rewritten). Every reader decodes through :func:`decode_contexts` / :func:`context_matrix_of`.
  Timestamps are integers, microseconds since the Unix epoch, UTC (``decided_at``, ``send_at``,
  ``logged_at``). Indexed by ``decision_id`` (unique), ``(customer_id, decided_at)``,
  ``decided_at``, the send time of sends, and (covering) the sends by ``(customer_id, send_at,
  channel)``: a customer's recent sends are one range seek, whatever their history.
* ``outcomes``: one row per :class:`~policies.records.OutcomeRecord`, keyed by ``event_id`` so a
  retried report counts once. Outcomes of an unknown ``decision_id`` are not stored (they are
  counted and named in the :class:`IngestResult`).
* ``unsubscribes``: ``(customer_id, occurred_at, channel, event_id)`` of every stored
  ``unsubscribed`` outcome of a send, kept by a trigger on ``outcomes`` (in the outcome's own
  transaction, whichever process or code inserts it; the log is append-only, so it stays equal to
  joining the outcomes to their decisions). The index and this table were added after schema 2
  without a version change (code that predates them reads and writes such a file as before, and
  the trigger keeps the table right); an older file gets them, with the unsubscribes reported so
  far, when opened.

Durability: :meth:`DecisionLog.append` returns only after its transaction committed; with the
default ``synchronous="FULL"`` the WAL is fsynced at every commit, so an appended decision
survives a kill -9 of the process and a power cut. ``synchronous="NORMAL"`` still survives a
process crash (the WAL is in the OS cache) but may lose the last commits on power loss; it is
about 20x cheaper per single-record commit on a disk with slow fsync.

Concurrency: every thread of every process gets its own connection; writers take SQLite's write
lock up front (``BEGIN IMMEDIATE``) and wait for it up to ``timeout`` seconds, so concurrent
appends from threads and processes neither lose nor duplicate rows. Readers never block writers.

Attribution: an outcome is attributed to its decision when it happened within
``RewardConfig.attribution_hours`` after the decision's anchor, that is ``send_at`` for a send and
``decided_at`` for a no-send: ``anchor <= occurred_at <= anchor + window``. The reward comes from
:func:`policies.reward.reward` (the one definition), so a decision with no attributed outcome gets
the default reward: minus its channel cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from core.errors import InputError
from core.types import CHANNELS
from policies.records import DecisionRecord, OutcomeRecord
from policies.reward import RewardConfig, reward

SCHEMA_VERSION = 3
#: the schema versions this code reads (older ones are migrated in place when opened)
_READABLE_VERSIONS = (1, 2, 3)
#: keys of the free-form request context (serving.engine.scrub_context names them so): always JSON
FREE_FORM_PREFIX = "request."

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Columns of the ``decisions`` table, in insert order (``seq`` is the rowid).
DECISION_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "customer_id",
    "decided_at",
    "action",
    "channel",
    "offer",
    "send_slot",
    "send_at",
    "timezone",
    "propensity",
    "distribution",
    "context",
    "scores",
    "reasons",
    "guardrails",
    "policy",
    "policy_version",
    "model_versions",
    "ab_arm",
    "holdout",
    "fallback",
    "journey_id",
    "journey_step",
    "logged_at",
)
JSON_COLUMNS: tuple[str, ...] = ("distribution", "context", "scores", "reasons", "guardrails", "model_versions")
_TIME_COLUMNS = ("decided_at", "send_at", "logged_at")
_BOOL_COLUMNS = ("holdout", "fallback")

#: Outcome columns added by :meth:`DecisionLog.joined`.
JOINED_COLUMNS: tuple[str, ...] = (
    "n_outcomes",
    "outcome_seen",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "unsubscribed",
    "value",
    "matured",
    "reward",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq            INTEGER PRIMARY KEY,
    decision_id    TEXT NOT NULL UNIQUE,
    customer_id    TEXT NOT NULL,
    decided_at     INTEGER NOT NULL,
    action         TEXT NOT NULL,
    channel        TEXT,
    offer          TEXT,
    send_slot      INTEGER,
    send_at        INTEGER,
    timezone       TEXT,
    propensity     REAL NOT NULL,
    distribution   TEXT NOT NULL,
    context        TEXT NOT NULL,
    scores         TEXT NOT NULL,
    reasons        TEXT NOT NULL,
    guardrails     TEXT NOT NULL,
    policy         TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    model_versions TEXT NOT NULL,
    ab_arm         TEXT,
    holdout        INTEGER NOT NULL,
    fallback       INTEGER NOT NULL,
    journey_id     TEXT,
    journey_step   TEXT,
    logged_at      INTEGER NOT NULL,
    context_layout INTEGER,
    context_extra  TEXT
);
CREATE INDEX IF NOT EXISTS decisions_customer ON decisions (customer_id, decided_at);
CREATE INDEX IF NOT EXISTS decisions_decided_at ON decisions (decided_at);
CREATE INDEX IF NOT EXISTS decisions_sends ON decisions (send_at) WHERE channel IS NOT NULL;
CREATE TABLE IF NOT EXISTS outcomes (
    event_id     TEXT PRIMARY KEY,
    decision_id  TEXT NOT NULL REFERENCES decisions (decision_id),
    event        TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
    value        REAL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_decision ON outcomes (decision_id);
CREATE TABLE IF NOT EXISTS context_layouts (
    id      INTEGER PRIMARY KEY,
    columns TEXT NOT NULL
);
"""
#: The per-customer read support (module doc): the covering index of sends by customer, and the
#: unsubscribes table with the trigger that keeps it, created last (its presence says all is there).
_UNSUBSCRIBE_TRIGGER = "outcomes_unsubscribed"
_SENDS_SCHEMA = (
    "CREATE INDEX IF NOT EXISTS decisions_customer_sends ON decisions (customer_id, send_at, channel) "
    "WHERE channel IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS unsubscribes (
    customer_id  TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
    channel      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    PRIMARY KEY (customer_id, occurred_at, channel, event_id)
) WITHOUT ROWID""",
    # the outcomes reported before the trigger existed (an empty select on a new file)
    "INSERT OR IGNORE INTO unsubscribes (customer_id, occurred_at, channel, event_id) "
    "SELECT d.customer_id, o.occurred_at, d.channel, o.event_id FROM outcomes o "
    "JOIN decisions d ON d.decision_id = o.decision_id WHERE o.event = 'unsubscribed' AND d.channel IS NOT NULL",
    f"""CREATE TRIGGER IF NOT EXISTS {_UNSUBSCRIBE_TRIGGER}
AFTER INSERT ON outcomes WHEN NEW.event = 'unsubscribed'
BEGIN
    INSERT OR IGNORE INTO unsubscribes (customer_id, occurred_at, channel, event_id)
    SELECT customer_id, NEW.occurred_at, channel, NEW.event_id FROM decisions
    WHERE decision_id = NEW.decision_id AND channel IS NOT NULL;
END""",
)
#: schema 1 -> 2, in place: the binary context's layout and the free-form rest; old rows keep
#: their JSON context (context_layout NULL)
_MIGRATE_1_2 = (
    "ALTER TABLE decisions ADD COLUMN context_layout INTEGER",
    "ALTER TABLE decisions ADD COLUMN context_extra TEXT",
    "CREATE TABLE IF NOT EXISTS context_layouts (id INTEGER PRIMARY KEY, columns TEXT NOT NULL)",
)

#: the schema-1 row (context as JSON text): still accepted, read as such
_INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in DECISION_COLUMNS)})"
)
#: the columns written (DECISION_COLUMNS, then the binary context's layout and free-form rest)
STORED_COLUMNS: tuple[str, ...] = (*DECISION_COLUMNS, "context_layout", "context_extra")
_INSERT_STORED = (
    f"INSERT INTO decisions ({', '.join(STORED_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in STORED_COLUMNS)})"
)


@dataclass(frozen=True)
class IngestResult:
    """What :meth:`DecisionLog.add_outcomes` did with a batch of outcomes.

    ``accepted``: newly stored; ``duplicates``: event_id already stored (or repeated within the
    batch), ignored; ``unknown_decision``: decision_id not in the log, not stored.
    """

    accepted: int
    duplicates: int
    unknown_decision: int
    duplicate_event_ids: tuple[str, ...] = ()
    unknown_event_ids: tuple[str, ...] = ()

    @property
    def unknown(self) -> int:
        """Alias of ``unknown_decision``."""
        return self.unknown_decision


def _to_us(ts: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (exact, no float rounding)."""
    return (ts - _EPOCH) // _US


def _check_time(name: str, ts: datetime | None) -> int | None:
    if ts is None:
        return None
    if not isinstance(ts, datetime):
        raise InputError(f"{name} must be a datetime; got {type(ts).__name__}")
    if ts.tzinfo is None:
        raise InputError(f"{name} must carry a time zone (UTC); got the naive {ts.isoformat()}")
    return _to_us(ts)


_NAT = np.iinfo(np.int64).min


def _times(values: Sequence[int | None]) -> pd.DatetimeIndex:
    """Integer microseconds (None = missing) -> datetime64[ns, UTC] values, exactly."""
    us = np.fromiter((_NAT if v is None else v for v in values), dtype=np.int64, count=len(values))
    return pd.DatetimeIndex(us.view("datetime64[us]").astype("datetime64[ns]")).tz_localize("UTC")


def _objects(values: Sequence) -> np.ndarray:
    """(n,) object array (values may themselves be lists or dicts)."""
    return np.fromiter(values, dtype=object, count=len(values))


#: tolerance of the checks "distribution sums to 1" and "distribution[action] == propensity"
DISTRIBUTION_TOLERANCE = 1e-6


def _check_distribution(r: DecisionRecord) -> None:
    """A logged distribution must be the one the action was drawn from: off-policy evaluation
    and learning trust it."""
    p = r.distribution.get(r.action)
    if p is None:
        raise InputError(f"decision {r.decision_id}: the action {r.action!r} is not in its logged distribution")
    if abs(p - r.propensity) > DISTRIBUTION_TOLERANCE:
        raise InputError(f"decision {r.decision_id}: propensity {r.propensity!r} differs from the distribution's "
                         f"probability of the action ({p!r})")
    total = math.fsum(r.distribution.values())
    if abs(total - 1.0) > DISTRIBUTION_TOLERANCE or min(r.distribution.values()) < 0:
        raise InputError(f"decision {r.decision_id}: the logged distribution must hold probabilities summing to 1; "
                         f"they sum to {total!r}")


#: json.dumps(obj, separators=(",", ":"), allow_nan=False) without building an encoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(obj) -> str:
    return _ENCODER.encode(obj)


# -- the binary context (schema 2) -----------------------------------------------------------------

def layout_id(names: Sequence[str]) -> int:
    """The id of a context layout (an ordered list of names): the first 8 bytes of the SHA-256 of
    its compact JSON, as a signed 64-bit integer (the same in every process and file)."""
    return int.from_bytes(hashlib.sha256(_dumps(list(names)).encode()).digest()[:8], "big", signed=True)


_LAYOUT_IDS: dict[tuple[str, ...], int] = {}


def _layout(names: tuple[str, ...]) -> int:
    i = _LAYOUT_IDS.get(names)
    if i is None:
        if len(_LAYOUT_IDS) > 4096:
            _LAYOUT_IDS.clear()
        i = _LAYOUT_IDS[names] = layout_id(names)
    return i


_PACKS: dict[int, struct.Struct] = {}


def encode_context(context: dict) -> tuple[bytes, tuple[str, ...], str | None]:
    """A record's context as stored: (little-endian float64 bytes of its leading run of float
    entries whose key is not free-form, their names, the JSON text of the other entries or None).
    ValueError for a non-finite value (JSON refused them in schema 1; the log still does)."""
    items = list(context.items())
    k = 0
    for key, v in items:
        if not isinstance(v, float) or key.startswith(FREE_FORM_PREFIX):
            break
        k += 1
    values = [v for _, v in items[:k]]
    if not all(map(math.isfinite, values)):
        raise ValueError("Out of range float values are not JSON compliant")
    pack = _PACKS.get(k)
    if pack is None:
        pack = _PACKS[k] = struct.Struct(f"<{k}d")
    extra = _dumps(dict(items[k:])) if k < len(items) else None
    return pack.pack(*values), tuple(key for key, _ in items[:k]), extra


def encode_context_row(row: np.ndarray, names: tuple[str, ...]) -> tuple | None:
    """``encode_context(dict(zip(names, row.tolist())))`` of a float64 row without building the
    dict: its bytes are the row's own. None where that encoding would differ or fail (a
    non-finite value: encode_context raises; a free-form name ends the binary run)."""
    if not np.isfinite(row).all() or _free_form(names):
        return None
    return np.ascontiguousarray(row, dtype="<f8").tobytes(), names, None


_FREE_FORM_NAMES: dict[tuple[str, ...], bool] = {}


def _free_form(names: tuple[str, ...]) -> bool:
    got = _FREE_FORM_NAMES.get(names)
    if got is None:
        got = _FREE_FORM_NAMES[names] = any(c.startswith(FREE_FORM_PREFIX) for c in names)
    return got


def encode_context_matrix(X: np.ndarray, names: Sequence[str], extra: Sequence[dict] | None = None
                          ) -> tuple[list[bytes], list[int], list[str | None], dict[int, tuple[str, ...]]]:
    """The stored context of n records whose context is ``dict(zip(names, X[i])) | extra[i]``
    (column-wise, for large batches): (blobs, layout ids, free-form JSON or None, the layouts
    used: id -> names). Exactly what :func:`encode_context` gives row by row. ValueError for a
    non-finite value in X."""
    X = np.ascontiguousarray(X, dtype="<f8")
    n = X.shape[0]
    names = tuple(names)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"the context matrix must be (n, {len(names)}); got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("Out of range float values are not JSON compliant")
    if names and any(c.startswith(FREE_FORM_PREFIX) for c in names):
        raise ValueError(f"context feature names may not start with {FREE_FORM_PREFIX!r}")
    width = 8 * len(names)
    buf = X.tobytes()
    blobs = [buf[i * width:(i + 1) * width] for i in range(n)]
    lid = _layout(names)
    layouts = {lid: names}
    ids = [lid] * n
    extras: list[str | None] = [None] * n
    for i, e in enumerate(extra or ()):
        if e:  # the rare row with a request context: the record encoding of the merged dict
            d = dict(zip(names, X[i].tolist(), strict=True))
            d.update(e)
            blobs[i], got, extras[i] = encode_context(d)
            ids[i] = _layout(got)
            layouts[ids[i]] = got
    return blobs, ids, extras, layouts


# -- the binary distribution (schema 3) ------------------------------------------------------------
#
# A distribution {arm: p} over an ordered list of arms (a layout, stored once in context_layouts as
# the contexts' are) as one BLOB: the tag byte 0x01, the layout id (int64, little-endian), a bit
# mask of the arms present (ceil(len(arms) / 8) bytes, bit j of byte j // 8 for arm j), then the
# probability of each present arm, in arm order, as little-endian float64. A 60-arm Thompson row is
# ~520 bytes instead of ~2.4 KB of JSON, and it is written without a float repr. JSON text (schema
# 1-2, and writers that do not know the arm list) is still read: :func:`decode_distributions`.

_DIST_TAG = 1


def _arm_layout(arms: Sequence[str]) -> tuple[tuple[str, ...], int, dict[str, int]]:
    names = tuple(arms)
    got = _ARM_LAYOUTS.get(names)
    if got is None:
        if len(_ARM_LAYOUTS) > 64:
            _ARM_LAYOUTS.clear()
        got = _ARM_LAYOUTS[names] = (names, _layout(names), {a: j for j, a in enumerate(names)})
    return got


_ARM_LAYOUTS: dict[tuple[str, ...], tuple] = {}


def encode_distribution_matrix(dist: np.ndarray, arms: Sequence[str]
                               ) -> tuple[list[bytes], dict[int, tuple[str, ...]]]:
    """The stored distribution of each row of ``dist`` (n, len(arms)): ``{arms[j]: dist[i, j]}``
    over its non-zero entries, in arm order (as :func:`encode_distribution` of that dict gives),
    and the layout used (id -> arms)."""
    names, lid, _ = _arm_layout(arms)
    dist = np.ascontiguousarray(dist, dtype="<f8")
    n, a = dist.shape
    if a != len(names):
        raise ValueError(f"the distribution matrix must be (n, {len(names)}); got {dist.shape}")
    present = dist != 0.0
    width = (a + 7) // 8
    masks = np.packbits(present, axis=1, bitorder="little").tobytes()
    values = dist[present]
    if not np.isfinite(values).all():
        raise ValueError("Out of range float values are not JSON compliant")
    values = values.tobytes()  # row by row, arm order within a row
    ends = (8 * np.cumsum(np.count_nonzero(present, axis=1))).tolist()
    head = bytes([_DIST_TAG]) + lid.to_bytes(8, "little", signed=True)
    out = []
    start = 0
    for i, end in enumerate(ends):
        out.append(head + masks[i * width:(i + 1) * width] + values[start:end])
        start = end
    return out, {lid: names}


def encode_distribution(dist: dict, arms: Sequence[str]) -> tuple[bytes, int] | None:
    """``dist`` ({arm: p}) stored in the binary form over ``arms``: (blob, layout id), or None
    when it cannot be (an arm not in ``arms``, arms out of their order, a value not a float):
    the caller stores its JSON text."""
    names, lid, index = _arm_layout(arms)
    mask = 0
    last = -1
    for key, p in dist.items():
        j = index.get(key)
        if j is None or j <= last or type(p) is not float or not math.isfinite(p):
            return None
        mask |= 1 << j
        last = j
    pack = _PACKS.get(len(dist))
    if pack is None:
        pack = _PACKS[len(dist)] = struct.Struct(f"<{len(dist)}d")
    head = bytes([_DIST_TAG]) + lid.to_bytes(8, "little", signed=True)
    return head + mask.to_bytes((len(names) + 7) // 8, "little") + pack.pack(*dist.values()), lid


def decode_distributions(values: Sequence, names_of: dict[int, tuple[str, ...]]) -> list[dict]:
    """The logged distribution dicts of stored ``distribution`` values (JSON text or the binary
    form), in their stored order."""
    keys_of: dict[bytes, list[str]] = {}  # rows with the same layout and mask share their arm list
    out: list = [None] * len(values)
    for i, v in enumerate(values):
        if isinstance(v, str):
            out[i] = json.loads(v)
            continue
        if not isinstance(v, bytes) or len(v) < 9 or v[0] != _DIST_TAG:
            raise InputError("the decision log holds a distribution in no known encoding (a damaged log)")
        lid = int.from_bytes(v[1:9], "little", signed=True)
        names = names_of.get(lid)
        if names is None:
            raise InputError(f"the decision log lacks the arm layout {lid} (a damaged log)")
        width = (len(names) + 7) // 8
        head = v[:9 + width]
        keys = keys_of.get(head)
        if keys is None:
            mask = np.unpackbits(np.frombuffer(v, np.uint8, width, 9), bitorder="little", count=len(names))
            keys = keys_of[head] = [names[j] for j in np.flatnonzero(mask).tolist()]
        p = np.frombuffer(v, "<f8", offset=9 + width).tolist()
        if len(p) != len(keys):
            raise InputError(f"the decision log holds a distribution of {len(p)} values for {len(keys)} arms "
                             "(a damaged log)")
        out[i] = dict(zip(keys, p, strict=True))
    return out


def distribution_texts(values: Sequence, names_of: dict[int, tuple[str, ...]]) -> list[str]:
    """The JSON text of each stored distribution: as stored when it is text, else the text the JSON
    writer gives of the decoded dict (the same text a schema-2 log holds for it)."""
    if all(isinstance(v, str) for v in values):
        return list(values)
    binary = [i for i, v in enumerate(values) if not isinstance(v, str)]
    dicts = decode_distributions([values[i] for i in binary], names_of)
    out = list(values)
    for i, d in zip(binary, dicts, strict=True):
        out[i] = _dumps(d)
    return out


def has_binary_context(conn: sqlite3.Connection) -> bool:
    """The decision log behind ``conn`` is schema 2 (binary contexts possible)."""
    return any(r[1] == "context_layout" for r in conn.execute("PRAGMA table_info(decisions)"))


def context_sql(conn: sqlite3.Connection, prefix: str = "") -> str:
    """The SQL select list of a row's stored context (3 values: context, layout, free-form rest),
    whatever the schema of the log behind ``conn`` (a read-only reader cannot migrate it)."""
    if has_binary_context(conn):
        return f"{prefix}context, {prefix}context_layout, {prefix}context_extra"
    return f"{prefix}context, NULL, NULL"


def layout_names(conn: sqlite3.Connection) -> dict[int, tuple[str, ...]]:
    """Every context layout of the log behind ``conn``: id -> names. Read it AFTER the rows it
    decodes (a layout is committed with the first row that uses it, and never removed)."""
    try:
        return {i: tuple(json.loads(c)) for i, c in conn.execute("SELECT id, columns FROM context_layouts")}
    except sqlite3.OperationalError:  # schema 1: no binary context
        return {}


def decode_contexts(values: Sequence, layouts: Sequence, extras: Sequence,
                    names_of: dict[int, tuple[str, ...]]) -> list[dict]:
    """The logged context dicts of rows (stored ``context``, ``context_layout``,
    ``context_extra``), either schema: the same dicts as the JSON of schema 1 gave."""
    n = len(values)
    out: list = [None] * n
    groups: dict[int, list[int]] = {}
    for i, (v, lid) in enumerate(zip(values, layouts, strict=True)):
        if lid is None:
            out[i] = json.loads(v)
        else:
            groups.setdefault(lid, []).append(i)
    for lid, rows in groups.items():
        names = names_of.get(lid)
        if names is None:
            raise InputError(f"the decision log lacks the context layout {lid} (a damaged log)")
        M = np.frombuffer(b"".join([values[i] for i in rows]), dtype="<f8").reshape(len(rows), len(names))
        for i, row in zip(rows, M.tolist(), strict=True):
            out[i] = dict(zip(names, row, strict=True))
    for i, e in enumerate(extras):
        if e is not None:
            out[i].update(json.loads(e))
    return out


def context_matrix_of(values: Sequence, layouts: Sequence, extras: Sequence,
                      names_of: dict[int, tuple[str, ...]], columns: Sequence[str]) -> np.ndarray:
    """(n, len(columns)) float64 matrix of the named context entries of stored rows (NaN where
    missing or not a number), without building a dict per row where the layout is ``columns``."""
    columns = tuple(columns)
    n = len(values)
    M = np.full((n, len(columns)), np.nan)
    exact = [lid for lid, names in names_of.items() if names == columns]
    fast = np.zeros(n, dtype=bool)
    if exact:
        lid = exact[0]
        fast = np.fromiter((x == lid and e is None for x, e in zip(layouts, extras, strict=True)), dtype=bool,
                           count=n)
        idx = np.flatnonzero(fast)
        if len(idx):
            M[idx] = np.frombuffer(b"".join([values[i] for i in idx.tolist()]), dtype="<f8").reshape(
                len(idx), len(columns))
    rest = np.flatnonzero(~fast)
    if len(rest):
        dicts = decode_contexts([values[i] for i in rest], [layouts[i] for i in rest], [extras[i] for i in rest],
                                names_of)
        for j, d in zip(rest.tolist(), dicts, strict=True):
            M[j] = [v if isinstance(v, int | float) else np.nan for v in (d.get(c) for c in columns)]
    return M


def _has_sends_schema(conn: sqlite3.Connection) -> bool:
    """The log behind ``conn`` has the sends index and the unsubscribes table (their trigger is
    created last, in the same transaction)."""
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                        (_UNSUBSCRIBE_TRIGGER,)).fetchone()[0] > 0


class DecisionLog:
    """Durable, concurrent-safe SQLite log of decisions and their outcomes.

    ``path``: the SQLite file (created with its folder and schema if missing).
    ``synchronous``: ``"FULL"`` (default, fsync at every commit) or ``"NORMAL"`` (see module doc).
    ``timeout``: seconds a writer waits for the write lock before failing.
    ``autocheckpoint``: SQLite's ``wal_autocheckpoint`` of this object's connections: the commit
    that takes the WAL past this many pages also copies it into the file, fsync included (SQLite's
    default, 1000). 0: never in a commit; the owner runs :meth:`checkpoint` (the decision service
    does, in a background thread, so no decision waits for a checkpoint: measured, it made a
    single commit's mean 2x and its p99 ~100x the median).
    """

    def __init__(
        self, path: str | os.PathLike, *, synchronous: Literal["FULL", "NORMAL"] = "FULL", timeout: float = 60.0,
        autocheckpoint: int = 1000,
    ):
        if synchronous not in ("FULL", "NORMAL"):
            raise InputError(f"synchronous must be 'FULL' or 'NORMAL'; got {synchronous!r}")
        if not isinstance(autocheckpoint, int) or autocheckpoint < 0:
            raise InputError(f"autocheckpoint must be a page count >= 0; got {autocheckpoint!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.timeout = float(timeout)
        self.autocheckpoint = autocheckpoint
        self._layouts_written: set[int] = set()  # context layout ids this object has committed
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if self.path.exists() and not self.path.is_file():
            raise InputError(f"decision log {self.path} is not a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path} is not a usable SQLite decision log: {exc}") from None
        except OSError as exc:
            raise InputError(f"cannot create the decision log {self.path}: {exc}") from None

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # a forked child opens its own
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {self.autocheckpoint}")
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._lock:
                self._all.append(conn)
        return conn

    def _create_schema(self) -> None:
        conn = self._conn()
        # WAL is a property of the file; switching needs no other connection in a transaction.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise InputError(f"cannot put the decision log {self.path} in WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION and _has_sends_schema(conn):
            return
        if version not in (0, *_READABLE_VERSIONS):
            raise InputError(f"{self.path} has decision-log schema {version}; this code reads {_READABLE_VERSIONS}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            if version == 0:
                if conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT IN ('decisions', 'outcomes', 'context_layouts', 'unsubscribes')"
                ).fetchone()[0]:
                    raise InputError(f"{self.path} is an SQLite file with other tables, not a decision log")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version in (1, 2):  # in place: old rows keep their JSON context and distribution
                if version == 1:
                    for statement in _MIGRATE_1_2:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if not _has_sends_schema(conn):  # new, or older than the sends index: build it here
                for statement in _SENDS_SCHEMA:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()
        self._local = threading.local()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "synchronous": self.synchronous, "timeout": self.timeout,
                "autocheckpoint": self.autocheckpoint}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.synchronous = state["synchronous"]
        self.timeout = state["timeout"]
        self.autocheckpoint = state.get("autocheckpoint", 1000)
        self._layouts_written = set()
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DecisionLog({str(self.path)!r})"

    def __len__(self) -> int:
        return self._conn().execute("SELECT count(*) FROM decisions").fetchone()[0]

    # -- writing -------------------------------------------------------------------------------

    def _write(self, conn: sqlite3.Connection, sql: str, rows: list[tuple],
               layouts: dict[int, tuple[str, ...]] | None = None) -> None:
        # a layout is committed with the first rows that use it; one this object has committed
        # is in the file for good (layouts are never deleted): not written again
        new = {i: names for i, names in (layouts or {}).items() if i not in self._layouts_written}
        conn.execute("BEGIN IMMEDIATE")
        try:
            if new:
                conn.executemany("INSERT OR IGNORE INTO context_layouts (id, columns) VALUES (?, ?)",
                                 [(i, _dumps(list(names))) for i, names in new.items()])
            if len(rows) == 1:
                conn.execute(sql, rows[0])
            else:
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._layouts_written.update(new)

    @staticmethod
    def _row(r: DecisionRecord, logged_at: int, layouts: dict | None = None, encoded: tuple | None = None,
             arms: Sequence[str] | None = None) -> tuple:
        """The stored row (STORED_COLUMNS) of a record; the layouts it uses go into ``layouts``
        (id -> names). ``encoded``: ``encode_context(r.context)`` when the caller has it. ``arms``:
        the arm list to store the distribution over in the binary form (else JSON text)."""
        context, names, extra = encoded if encoded is not None else encode_context(r.context)
        lid = _layout(names)
        if layouts is not None:
            layouts[lid] = names
        dist = encode_distribution(r.distribution, arms) if arms is not None and r.distribution else None
        if dist is not None:
            if layouts is not None:
                layouts[dist[1]] = _arm_layout(arms)[0]
            dist = dist[0]
        else:
            dist = _dumps(r.distribution)
        return (
            r.decision_id,
            r.customer_id,
            _to_us(r.decided_at),
            r.action,
            None if r.channel is None else r.channel.value,
            r.offer,
            r.send_slot,
            None if r.send_at is None else _to_us(r.send_at),
            r.timezone,
            r.propensity,
            dist,
            context,
            _dumps(r.scores),
            _dumps(r.reasons),
            _dumps(r.guardrails),
            r.policy,
            r.policy_version,
            _dumps(r.model_versions),
            r.ab_arm,
            int(r.holdout),
            int(r.fallback),
            r.journey_id,
            r.journey_step,
            logged_at,
            lid,
            extra,
        )

    def append(self, records: Sequence[DecisionRecord], *, if_exists: Literal["error", "ignore"] = "error",
               contexts: Sequence[tuple | None] | None = None, arms: Sequence[str] | None = None) -> None:
        """Log decisions, all in one transaction; durable when this returns.

        ``contexts`` (optional, aligned with ``records``): each record's stored context, exactly
        :func:`encode_context` of its ``context`` (or None: encode it here), for a writer that holds
        the context as a float64 row already (the serving engine: :func:`encode_context_row`).
        ``arms`` (optional): the writer's arm list, in order; a distribution whose arms are among
        them, in that order, is stored in the binary form (:func:`encode_distribution`), any other as
        JSON text. Either reads back as the same dict.

        A non-empty ``distribution`` must contain the action with probability ``propensity`` and
        sum to 1 (within DISTRIBUTION_TOLERANCE), else InputError. A ``decision_id`` already in
        the log (or twice in ``records``) raises InputError and nothing of the batch is written, unless ``if_exists="ignore"``, which skips such records
        (a retried append is then harmless).
        """
        if if_exists not in ("error", "ignore"):
            raise InputError(f"if_exists must be 'error' or 'ignore'; got {if_exists!r}")
        if isinstance(records, DecisionRecord):
            records = [records]
        logged_at = _to_us(datetime.now(UTC))
        rows = []
        layouts: dict[int, tuple[str, ...]] = {}
        if contexts is not None and len(contexts) != len(records):
            raise InputError(f"append: {len(contexts)} encoded contexts for {len(records)} records")
        for i, r in enumerate(records):
            if not isinstance(r, DecisionRecord):
                raise InputError(f"the decision log takes DecisionRecord objects; got {type(r).__name__}")
            if r.distribution:
                _check_distribution(r)
            try:
                rows.append(self._row(r, logged_at, layouts, None if contexts is None else contexts[i], arms))
            except ValueError as exc:  # NaN or infinity in a JSON field
                raise InputError(f"decision {r.decision_id}: cannot be logged: {exc}") from None
        if not rows:
            return
        conn = self._conn()
        sql = _INSERT_STORED if if_exists == "error" else _INSERT_STORED.replace("INSERT", "INSERT OR IGNORE", 1)
        try:
            self._write(conn, sql, rows, layouts)
        except sqlite3.IntegrityError:
            raise InputError(self._duplicate_message([row[0] for row in rows])) from None

    def append_columns(self, columns: dict[str, Sequence],
                       layouts: dict[int, Sequence[str]] | None = None) -> None:
        """Log decisions given column-wise and already encoded, all in one transaction; durable
        when this returns. For callers that build a large batch with array operations (the
        serving engine's batch path) and guarantee what :meth:`append` checks. ``columns``: every
        name of DECISION_COLUMNS but ``logged_at``, each a sequence of n row values as stored
        (JSON columns as compact JSON text, times as integer microseconds UTC, booleans as 0/1),
        and ``context_layout`` / ``context_extra`` with the binary context
        (:func:`encode_context_matrix` gives the three context columns and ``layouts``, the
        names of every layout id used); without them ``context`` is schema-1 JSON text.
        A ``decision_id`` already in the log raises InputError and nothing is written."""
        self.append_column_chunks([(columns, layouts)])

    def append_column_chunks(self, chunks: Iterable[tuple[dict[str, Sequence], dict[int, Sequence[str]] | None]]
                             ) -> None:
        """:meth:`append_columns` of several ``(columns, layouts)`` chunks in ONE transaction:
        all of them are durable when this returns, or none is written. ``chunks`` may be produced
        while this writes (say a generator fed by the thread that builds them: the serving engine
        writes a batch's first rows while it builds the next); an exception it raises rolls the
        whole batch back and comes out of here. The write lock is taken at the first chunk."""
        conn = self._conn()
        before = conn.execute("PRAGMA cache_size").fetchone()[0]
        logged_at = _to_us(datetime.now(UTC))
        ids: list = []
        written: dict[int, tuple[str, ...]] = {}
        begun = large = False
        total = 0
        try:
            for columns, layouts in chunks:
                rows, binary = self._stored_rows(columns, layouts, logged_at)
                if not rows:
                    continue
                if not begun:
                    conn.execute("BEGIN IMMEDIATE")
                    begun = True
                ids.append(columns["decision_id"])
                total += len(rows)
                if total >= 10_000 and not large:
                    large = True
                    # a large batch: the indexes' pages stay in memory until the commit, and the
                    # commit does not copy the batch from the WAL into the file (a checkpoint of
                    # ~100 MB): the caller may run checkpoint() afterwards, off its critical path
                    conn.execute(f"PRAGMA cache_size = {-262_144}")
                    conn.execute("PRAGMA wal_autocheckpoint = 0")
                if binary:
                    new = {i: tuple(v) for i, v in (layouts or {}).items()
                           if i not in self._layouts_written and i not in written}
                    if new:
                        conn.executemany("INSERT OR IGNORE INTO context_layouts (id, columns) VALUES (?, ?)",
                                         [(i, _dumps(list(names))) for i, names in new.items()])
                        written.update(new)
                conn.executemany(_INSERT_STORED if binary else _INSERT_DECISION, rows)
            if begun:
                conn.execute("COMMIT")
        except BaseException as exc:
            if begun:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise InputError(self._duplicate_message([i for part in ids for i in part])) from None
            raise
        finally:
            conn.execute(f"PRAGMA cache_size = {before}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {self.autocheckpoint}")
        self._layouts_written.update(written)

    @staticmethod
    def _stored_rows(columns: dict[str, Sequence], layouts: dict | None, logged_at: int) -> tuple[list[tuple], bool]:
        """The stored rows of one append_columns chunk (checked), and whether its context is binary."""
        names = DECISION_COLUMNS[:-1]
        missing = [c for c in names if c not in columns]
        if missing:
            raise InputError(f"append_columns needs the columns {missing}")
        n = len(columns[names[0]])
        if any(len(columns[c]) != n for c in (*names, *(c for c in STORED_COLUMNS[-2:] if c in columns))):
            raise InputError("append_columns: the columns differ in length")
        binary = "context_layout" in columns
        if not n:
            return [], binary
        if binary:
            unknown = set(columns["context_layout"]) - set(layouts or {})
            if unknown:
                raise InputError(f"append_columns: the context layouts {sorted(unknown)} are not given")
        stored = [columns[c] for c in names] + [[logged_at] * n]
        if binary:
            stored += [columns["context_layout"], columns.get("context_extra", [None] * n)]
        return list(zip(*stored, strict=True)), binary

    def checkpoint(self) -> tuple[int, int, int] | None:
        """Copy the committed WAL into the database file now, as far as readers allow (SQLite's
        passive checkpoint): what a commit does when the WAL has grown past 1000 pages; a bulk
        :meth:`append_columns` leaves it to the caller. Returns SQLite's (busy, frames in the
        WAL, frames copied): all copied when the last two are equal, and then the next commit
        starts the WAL afresh."""
        row = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def _duplicate_message(self, ids: list[str]) -> str:
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                return f"decision_id {i!r} appears twice in the batch; nothing was logged"
            seen.add(i)
        existing = self._existing("decisions", "decision_id", ids)
        first = next((i for i in ids if i in existing), "?")
        return (
            f"decision_id {first!r} is already in the decision log ({len(existing)} of the batch are); "
            "nothing was logged"
        )

    def _existing(self, table: str, column: str, ids: Iterable[str]) -> set[str]:
        rows = self._conn().execute(
            f"SELECT {column} FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))",
            (_dumps(list(ids)),),
        )
        return {r[0] for r in rows}

    def add_outcomes(self, outcomes: Sequence[OutcomeRecord]) -> IngestResult:
        """Store outcomes, idempotently by ``event_id`` (a repeat counts once), in one transaction.

        Outcomes whose ``decision_id`` is not in the log are not stored; they are counted in
        ``unknown_decision`` and listed in ``unknown_event_ids``.
        """
        if isinstance(outcomes, OutcomeRecord):
            outcomes = [outcomes]
        batch: dict[str, OutcomeRecord] = {}
        repeated: list[str] = []
        for o in outcomes:
            if not isinstance(o, OutcomeRecord):
                raise InputError(f"add_outcomes takes OutcomeRecord objects; got {type(o).__name__}")
            if o.event_id in batch:
                repeated.append(o.event_id)
            else:
                batch[o.event_id] = o
        if not batch:
            return IngestResult(0, len(repeated), 0, tuple(repeated), ())
        conn = self._conn()
        received_at = _to_us(datetime.now(UTC))
        conn.execute("BEGIN IMMEDIATE")  # the checks and the insert see one state of the log
        try:
            stored = self._existing("outcomes", "event_id", batch)
            known = self._existing("decisions", "decision_id", {o.decision_id for o in batch.values()})
            rows, unknown = [], []
            for event_id, o in batch.items():
                if event_id in stored:
                    repeated.append(event_id)
                elif o.decision_id not in known:
                    unknown.append(event_id)
                else:
                    rows.append((event_id, o.decision_id, o.event.value, _to_us(o.occurred_at), o.value, received_at))
            conn.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return IngestResult(len(rows), len(repeated), len(unknown), tuple(repeated), tuple(unknown))

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _range(since: datetime | None, until: datetime | None, column: str = "decided_at") -> tuple[str, dict]:
        """SQL condition ``column in [since, until)`` (``"1"`` when open) and its named params."""
        clauses, params = ["1"], {}
        for name, ts, op in (("since", since, ">="), ("until", until, "<")):
            us = _check_time(name, ts)
            if us is not None:
                clauses.append(f"{column} {op} :{name}")
                params[name] = us
        return " AND ".join(clauses), params

    @staticmethod
    def _frame(rows: list[tuple], columns: Sequence[str], parse_json: bool | Iterable[str],
               names_of: dict[int, tuple[str, ...]] | None = None) -> pd.DataFrame:
        """The frame of rows of ``columns`` (with ``context``: each row ends with its
        context_layout and context_extra, see _select)."""
        if isinstance(parse_json, bool):
            parse = set(JSON_COLUMNS) if parse_json else set()
        else:
            parse = set(parse_json)
            if parse - set(JSON_COLUMNS):
                raise InputError(f"parse_json names {sorted(parse - set(JSON_COLUMNS))}; JSON columns are {JSON_COLUMNS}")
        width = len(columns) + 2 * ("context" in columns)
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
        data: dict[str, object] = {}
        for name, values in zip(columns, cols, strict=False):
            if name == "distribution":
                data[name] = _objects(decode_distributions(values, names_of or {}) if name in parse
                                      else distribution_texts(values, names_of or {}))
            elif name == "context":
                dicts = decode_contexts(values, cols[-2], cols[-1], names_of or {})
                data[name] = _objects(dicts if name in parse else
                                      [v if lid is None else _dumps(d)
                                       for v, lid, d in zip(values, cols[-2], dicts, strict=True)])
            elif name in _TIME_COLUMNS:
                data[name] = _times(values)
            elif name in _BOOL_COLUMNS:
                data[name] = np.array(values, dtype=bool)
            elif name == "send_slot":
                data[name] = pd.array(values, dtype="Int8")
            elif name == "propensity":
                data[name] = np.array(values, dtype=np.float64)
            elif name in parse:
                data[name] = _objects([json.loads(v) for v in values])
            else:
                data[name] = _objects(values)
        return pd.DataFrame(data, copy=False)

    @staticmethod
    def _select(cols: Sequence[str]) -> str:
        """The SQL select list of ``cols``; the stored context's layout and free-form rest last."""
        return ", ".join(cols) + (", context_layout, context_extra" if "context" in cols else "")

    @staticmethod
    def _columns(columns: Iterable[str] | None) -> tuple[str, ...]:
        if columns is None:
            return DECISION_COLUMNS
        wanted = set(columns)
        unknown = wanted - set(DECISION_COLUMNS)
        if unknown:
            raise InputError(f"unknown decision-log columns {sorted(unknown)}; columns are {DECISION_COLUMNS}")
        wanted |= {"decision_id"}
        return tuple(c for c in DECISION_COLUMNS if c in wanted)

    def decisions(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        parse_json: bool | Iterable[str] = True,
        columns: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """One row per decision with ``decided_at`` in ``[since, until)``, in logging order.

        Columns: DECISION_COLUMNS. ``decided_at``, ``send_at``, ``logged_at`` are
        datetime64[ns, UTC]; ``propensity`` float64; ``send_slot`` Int8; ``holdout``/``fallback``
        bool; JSON columns parsed into dicts/lists; ``parse_json=False`` keeps the JSON text and a
        collection of names parses only those (parsing is most of the read time: a 37-arm
        distribution costs ~40 us per row). ``columns`` reads only those (and decision_id).
        """
        cols = self._columns(columns)
        where, params = self._range(since, until)
        conn = self._conn()
        rows = conn.execute(f"SELECT {self._select(cols)} FROM decisions WHERE {where} ORDER BY seq", params).fetchall()
        return self._frame(rows, cols, parse_json,
                           layout_names(conn) if "context" in cols or "distribution" in cols else None)

    def outcomes(self) -> pd.DataFrame:
        """Every stored outcome: event_id, decision_id, event, occurred_at, value, received_at."""
        rows = self._conn().execute(
            "SELECT event_id, decision_id, event, occurred_at, value, received_at FROM outcomes ORDER BY rowid"
        ).fetchall()
        cols = list(zip(*rows, strict=True)) if rows else [()] * 6
        return pd.DataFrame(
            {
                "event_id": _objects(cols[0]),
                "decision_id": _objects(cols[1]),
                "event": _objects(cols[2]),
                "occurred_at": _times(cols[3]),
                "value": np.array([np.nan if v is None else v for v in cols[4]], dtype=np.float64),
                "received_at": _times(cols[5]),
            },
            copy=False,
        )

    def joined(
        self,
        reward_config: RewardConfig | None = None,
        now: datetime | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        parse_json: bool | Iterable[str] = True,
        columns: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Decisions (as :meth:`decisions`, ``columns`` restricting the decision columns read) with their attributed outcomes and reward.

        Added columns (JOINED_COLUMNS): ``n_outcomes`` (every outcome stored for the decision,
        attributed or not), ``outcome_seen`` (n_outcomes > 0); within the attribution window:
        ``delivered``, ``opened``, ``clicked``, ``converted``, ``unsubscribed`` (bool) and
        ``value`` (sum of converted values, float); ``matured`` (the window has closed by
        ``now``, default the current time) and ``reward`` (policies.reward.reward of value,
        channel and unsubscribed: minus the channel cost when nothing was attributed). The reward
        of a decision that has not matured may still change.
        """
        config = reward_config if reward_config is not None else RewardConfig()
        window = int(round(config.attribution_hours * 3600 * 1e6))
        now_us = _check_time("now", now if now is not None else datetime.now(UTC))
        cols = self._columns(None if columns is None else {*columns, "channel"})  # channel: for the reward
        where, params = self._range(since, until)
        anchor = "COALESCE(d.send_at, d.decided_at)"
        inside = f"o.occurred_at >= {anchor} AND o.occurred_at <= {anchor} + :w"

        def flag(event: str) -> str:
            return f"MAX(CASE WHEN o.event = '{event}' AND {inside} THEN 1 ELSE 0 END)"

        # two queries (the decisions; the outcomes aggregated per decision in range), merged here:
        # much faster in SQLite than one LEFT JOIN of the wide decision rows on an aggregate
        conn = self._conn()
        named = {**params, "w": window, "now": now_us}
        conn.execute("BEGIN")  # one snapshot for both reads, whatever concurrent writers do
        try:
            rows = conn.execute(
                f"SELECT seq, {anchor.replace('d.', '')} + :w <= :now, {self._select(cols)} FROM decisions "
                f"WHERE {where} ORDER BY seq",
                named,
            ).fetchall()
            agg = conn.execute(
                f"""SELECT d.seq, COUNT(*),
                        {flag("delivered")}, {flag("opened")}, {flag("clicked")}, {flag("converted")},
                        {flag("unsubscribed")},
                        SUM(CASE WHEN o.event = 'converted' AND {inside} THEN COALESCE(o.value, 0.0) ELSE 0.0 END)
                    FROM decisions d JOIN outcomes o ON o.decision_id = d.decision_id
                    WHERE {where.replace("decided_at", "d.decided_at")}
                    GROUP BY d.seq""",
                named,
            ).fetchall()
            names_of = layout_names(conn) if "context" in cols or "distribution" in cols else None
        finally:
            conn.execute("COMMIT")
        frame = self._frame([r[2:] for r in rows], cols, parse_json, names_of)
        seq = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        extra = np.zeros((len(rows), 7))
        if agg:
            a = np.array(agg, dtype=np.float64)
            extra[np.searchsorted(seq, a[:, 0].astype(np.int64))] = a[:, 1:]
        frame["n_outcomes"] = extra[:, 0].astype(np.int64)
        frame["outcome_seen"] = frame["n_outcomes"] > 0
        for i, name in enumerate(("delivered", "opened", "clicked", "converted", "unsubscribed"), start=1):
            frame[name] = extra[:, i] > 0
        frame["value"] = extra[:, 6]
        frame["matured"] = np.fromiter((bool(r[1]) for r in rows), dtype=bool, count=len(rows))
        frame["reward"] = reward(frame["value"].to_numpy(), channel_codes(frame["channel"]), frame["unsubscribed"], config)
        return frame

    def join_rate(self, now: datetime | None = None, *, reward_config: RewardConfig | None = None,
                  sends_only: bool = False) -> float:
        """Share of matured decisions (attribution window closed by ``now``) with at least one
        outcome stored. ``sends_only`` restricts to sends (a no-send rarely hears back).
        NaN when no decision has matured."""
        config = reward_config if reward_config is not None else RewardConfig()
        window = int(round(config.attribution_hours * 3600 * 1e6))
        now_us = _check_time("now", now if now is not None else datetime.now(UTC))
        send_clause = " AND d.channel IS NOT NULL" if sends_only else ""
        matured, seen = self._conn().execute(
            f"""SELECT COUNT(*), COALESCE(SUM(EXISTS (SELECT 1 FROM outcomes o WHERE o.decision_id = d.decision_id)), 0)
                FROM decisions d WHERE COALESCE(d.send_at, d.decided_at) + ? <= ?{send_clause}""",
            (window, now_us),
        ).fetchone()
        return float(seen) / matured if matured else float("nan")

    def sends_since(
        self, since: datetime, *, until: datetime | None = None, customer_ids: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Sends (decisions with a channel) whose ``send_at`` is in ``[since, until)``: columns
        customer_id, channel, offer, send_at (datetime64[ns, UTC]), decision_id, in send order.
        Scheduled sends later than now are included. ``customer_ids`` restricts to those
        customers (the one-request path)."""
        if since is None:
            raise InputError("sends_since needs a start time")
        where, params = self._range(since, until, column="send_at")
        sql = f"SELECT customer_id, channel, offer, send_at, decision_id FROM decisions WHERE {where} AND channel IS NOT NULL"
        if customer_ids is not None:
            sql += " AND customer_id IN (SELECT value FROM json_each(:customers))"
            params["customers"] = _dumps(list(customer_ids))
        rows = self._conn().execute(sql + " ORDER BY send_at, seq", params).fetchall()
        cols = list(zip(*rows, strict=True)) if rows else [()] * 5
        return pd.DataFrame(
            {
                "customer_id": _objects(cols[0]),
                "channel": _objects(cols[1]),
                "offer": _objects(cols[2]),
                "send_at": _times(cols[3]),
                "decision_id": _objects(cols[4]),
            },
            copy=False,
        )


def channel_codes(channel: pd.Series | Sequence[str | None]) -> np.ndarray:
    """(n,) int8 index into core.types.CHANNELS of channel names; -1 for no send (None/NaN)."""
    codes = {c.value: i for i, c in enumerate(CHANNELS)}
    return np.fromiter(
        (codes.get(c, -1) if isinstance(c, str) else -1 for c in channel), dtype=np.int8, count=len(channel)
    )


def context_frame(frame: pd.DataFrame, column: str = "context") -> pd.DataFrame:
    """The parsed ``column`` (dicts) of a :meth:`DecisionLog.decisions` frame as a wide
    DataFrame, one column per key (missing keys are NaN), on the same index."""
    return pd.DataFrame.from_records(list(frame[column]), index=frame.index)

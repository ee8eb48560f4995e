"""Reading the decision log for monitoring: where it is, which time window, which rows.

The log is ``policies.log.DecisionLog`` (SQLite). A window is read as *light* columns joined with
their outcomes (``DecisionLog.joined``); the heavy JSON columns (context, scores, distribution) are
read only for a seeded random sample of the window's rows, straight from the ``decisions`` table
of the schema ``policies.log`` defines, so that a window of a million decisions stays cheap.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError, WorkspaceError
from core.workspace import Workspace
from policies.log import (
    DECISION_COLUMNS,
    DecisionLog,
    _check_time,
    channel_codes,
    context_sql,
    decode_contexts,
    decode_distributions,
    layout_names,
)
from policies.reward import RewardConfig
from policies.reward import reward as reward_of

#: File names tried, in order, under ``<workspace>/decisions/``.
LOG_NAMES: tuple[str, ...] = ("decisions.sqlite", "decisions.db", "decision_log.sqlite", "log.sqlite")
LOG_SUFFIXES: tuple[str, ...] = (".sqlite", ".sqlite3", ".db")

#: Decision columns every monitoring read takes (no JSON).
LIGHT_COLUMNS: tuple[str, ...] = (
    "customer_id", "decided_at", "action", "channel", "offer", "send_slot", "send_at", "timezone",
    "propensity", "policy", "ab_arm", "holdout", "fallback",
)

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def find_log(workspace: Workspace, path: str | Path | None = None) -> Path:
    """The decision log to read: ``path`` if given, else the workspace's decision log
    (``decisions/decisions.sqlite``, where the service writes), else the newest simulated
    journey's log under ``decisions/journeys/``. Raises WorkspaceError (exit 2) when there is none."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"decision log {p} does not exist")
        return p
    folder = workspace.decisions
    for name in LOG_NAMES:
        if (folder / name).is_file():
            return folder / name
    runs = workspace.journeys
    found = [p for p in runs.glob("*") if p.suffix in LOG_SUFFIXES and p.is_file()
             and not p.stem.endswith("-budget")] if runs.is_dir() else []
    if found:
        return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))
    raise WorkspaceError(f"no decision log in {folder}: run `decisioning journey --days D` first "
                         "(or give --log FILE)")


def open_log(path: Path) -> DecisionLog:
    """Open an existing decision log; InputError when it is not one or holds no decision."""
    log = DecisionLog(path)
    if len(log) == 0:
        log.close()
        raise InputError(f"the decision log {path} holds no decisions yet")
    return log


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _US


@dataclass(frozen=True)
class LogBounds:
    """First and last decision time, and the last time anything was logged (decision or outcome)."""

    first: datetime
    last: datetime
    as_of: datetime
    decisions: int


def log_bounds(path: Path) -> LogBounds:
    with _ro(path) as conn:
        first, last, n = conn.execute("SELECT min(decided_at), max(decided_at), count(*) FROM decisions").fetchone()
        last_out = conn.execute("SELECT max(occurred_at) FROM outcomes").fetchone()[0]
    if not n:
        raise InputError(f"the decision log {path} holds no decisions yet")
    as_of = max(last, last_out or last)
    return LogBounds(_from_us(first), _from_us(last), _from_us(as_of), int(n))


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dh])\s*$")


def parse_time(text: str | None, name: str, *, end: datetime | None = None) -> datetime | None:
    """A time given on the command line: ISO 8601 (a date, or a date and time; naive means UTC),
    or a span before ``end`` such as ``7d`` or ``36h``. None stays None."""
    if text is None:
        return None
    m = _RELATIVE.match(text)
    if m:
        if end is None:
            raise InputError(f"--{name} {text!r}: a relative time needs an end")
        amount = float(m.group(1))
        return end - (timedelta(days=amount) if m.group(2) == "d" else timedelta(hours=amount))
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--{name} must be an ISO 8601 time (2026-07-01, 2026-07-01T12:00Z) or a span "
                         f"like 7d / 36h; got {text!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


#: text columns read (then factorised: few distinct values, except customer_id)
_TEXT = ("customer_id", "action", "channel", "offer", "timezone", "policy", "ab_arm")
_OUTCOME_FLAGS = ("delivered", "opened", "clicked", "converted", "unsubscribed")
_CHUNK = 100_000
_NAT = np.iinfo(np.int64).min


def _us_times(us: np.ndarray) -> pd.DatetimeIndex:
    """(n,) int64 microseconds (``_NAT`` = missing) -> datetime64[ns, UTC], as policies.log reads them."""
    return pd.DatetimeIndex(us.astype(np.int64).view("datetime64[us]").astype("datetime64[ns]")).tz_localize("UTC")


def _fetch(cursor: sqlite3.Cursor, k: int) -> np.ndarray:
    """All rows of ``cursor`` as an (n, k) object array, fetched in chunks (no per-cell Python loop)."""
    parts = []
    while rows := cursor.fetchmany(_CHUNK):
        parts.append(np.array(rows, dtype=object))
    return np.concatenate(parts) if parts else np.empty((0, k), dtype=object)


def _text(values: np.ndarray) -> np.ndarray:
    """(n,) object column with few distinct values: factorised, then rebuilt from its uniques (one
    shared str per distinct value; NULL stays None)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([*uniques, None], dtype=object)
    return table[codes]  # code -1 (None) picks the trailing None


def _channel_codes(channel: np.ndarray) -> np.ndarray:
    """policies.log.channel_codes of a factorised column (one lookup per distinct value)."""
    codes, uniques = pd.factorize(channel, use_na_sentinel=True)
    table = np.array([*channel_codes(list(uniques)), -1], dtype=np.int8)
    return table[codes]


#: the columns the policy-health analysis (``decisioning drift``) needs: no customer ids
HEALTH_COLUMNS: tuple[str, ...] = ("decided_at", "channel", "offer", "send_slot", "send_at", "timezone", "propensity",
                                   "holdout", "fallback")


def read_window(log: DecisionLog | Path, since: datetime | None, until: datetime | None, now: datetime,
                reward: RewardConfig, columns: tuple[str, ...] = LIGHT_COLUMNS) -> pd.DataFrame:
    """Decisions with ``decided_at`` in ``[since, until)`` (``LIGHT_COLUMNS``), joined with their
    outcomes and reward as of ``now``, in log order: the frame of ``DecisionLog.joined(reward, now,
    since=, until=, parse_json=False, columns=LIGHT_COLUMNS)`` (same columns, dtypes and values)
    without ``decision_id``, plus ``day`` (UTC date, datetime64), ``sent`` (bool) and
    ``customer_code`` (int64, equal customer ids have equal codes: for vectorised per-customer
    sums). ``log``: a DecisionLog or the path of one. ``columns``: a subset of LIGHT_COLUMNS to
    read (e.g. ``HEALTH_COLUMNS``; the numeric ones and ``channel`` are always read); without
    ``customer_id``, no ``customer_code`` either.

    Read for speed (a million decisions in seconds): only these columns, nulls replaced in SQL,
    rows fetched in chunks into object arrays and converted per column by numpy; the outcomes
    aggregated per decision in SQL (a bit mask of the attributed events and their value).
    """
    unknown = set(columns) - set(LIGHT_COLUMNS)
    if unknown:
        raise InputError(f"read_window reads {LIGHT_COLUMNS}; got {sorted(unknown)}")
    texts = tuple(c for c in _TEXT if c in columns or c == "channel")
    path = Path(log.path if isinstance(log, DecisionLog) else log)
    window = int(round(reward.attribution_hours * 3600 * 1e6))
    now_us = _check_time("now", now)
    where, params = DecisionLog._range(since, until)
    named = {**params, "w": window, "now": now_us}
    anchor = "COALESCE(d.send_at, d.decided_at)"
    inside = f"o.occurred_at >= {anchor} AND o.occurred_at <= {anchor} + :w"
    mask = " | ".join(f"MAX(CASE WHEN o.event = '{e}' AND {inside} THEN {1 << i} ELSE 0 END)"
                      for i, e in enumerate(_OUTCOME_FLAGS))
    value = f"SUM(CASE WHEN o.event = 'converted' AND {inside} THEN COALESCE(o.value, 0.0) ELSE 0.0 END)"
    numbers = ("seq", "decided_at", "COALESCE(send_at, -1)", "COALESCE(send_slot, -1)", "holdout", "fallback",
               "COALESCE(send_at, decided_at) + :w <= :now")
    with _ro(path) as conn:
        conn.execute("BEGIN")  # one snapshot for both reads
        rows = _fetch(conn.execute(
            f"SELECT {', '.join(numbers)}, propensity, {', '.join(texts)} FROM decisions WHERE {where} ORDER BY seq",
            named), len(numbers) + 1 + len(texts))
        agg = conn.execute(
            f"SELECT d.seq, COUNT(*), {mask}, {value} FROM decisions d JOIN outcomes o ON o.decision_id = d.decision_id "
            f"WHERE {where.replace('decided_at', 'd.decided_at')} GROUP BY d.seq", named).fetchall()
        conn.execute("COMMIT")
    n, k = len(rows), len(numbers)
    ints = rows[:, :k].astype(np.int64)
    seq, decided, send_at, slot = ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3]
    frame = {name: rows[:, k + 1 + j] if name == "customer_id" else _text(rows[:, k + 1 + j])
             for j, name in enumerate(texts)}
    frame["decided_at"] = _us_times(decided)
    frame["send_at"] = _us_times(np.where(send_at < 0, _NAT, send_at))
    frame["send_slot"] = pd.arrays.IntegerArray(np.where(slot < 0, 0, slot).astype(np.int8), slot < 0)
    frame["propensity"] = rows[:, k].astype(np.float64)
    frame["holdout"] = ints[:, 4] != 0
    frame["fallback"] = ints[:, 5] != 0
    out = pd.DataFrame({c: frame[c] for c in DECISION_COLUMNS if c in frame}, copy=False)
    extra = np.zeros((n, 3))
    if agg:
        a = np.array(agg, dtype=np.float64)
        extra[np.searchsorted(seq, a[:, 0].astype(np.int64))] = a[:, 1:]
    out["n_outcomes"] = extra[:, 0].astype(np.int64)
    out["outcome_seen"] = out["n_outcomes"].to_numpy() > 0
    bits = extra[:, 1].astype(np.int64)
    for i, name in enumerate(_OUTCOME_FLAGS):
        out[name] = (bits & (1 << i)) != 0
    out["value"] = extra[:, 2]
    out["matured"] = ints[:, 6] != 0
    out["reward"] = reward_of(out["value"].to_numpy(), _channel_codes(frame["channel"]), out["unsubscribed"].to_numpy(),
                              reward)
    out["day"] = out["decided_at"].dt.floor("D")
    out["sent"] = out["channel"].notna().to_numpy()
    if "customer_id" in frame:
        out["customer_code"] = pd.factorize(frame["customer_id"])[0].astype(np.int64)
    return out


def as_of(frame: pd.DataFrame, now: datetime, reward: RewardConfig) -> pd.DataFrame:
    """``frame`` (from :func:`read_window`) seen at an earlier ``now``: ``matured`` recomputed
    (attribution window closed by ``now``). The outcomes of a matured decision all happened
    before ``now``, so its outcome columns stay valid; those of the others are not used."""
    anchor = frame["send_at"].where(frame["send_at"].notna(), frame["decided_at"])
    out = frame.copy()
    out["matured"] = (anchor + pd.Timedelta(hours=reward.attribution_hours) <= pd.Timestamp(now)).to_numpy()
    return out


def sample_json(path: Path, since: datetime | None, until: datetime | None, n: int, seed: int,
                columns: tuple[str, ...] = ("context", "scores")) -> pd.DataFrame:
    """A seeded random sample of at most ``n`` decisions in ``[since, until)`` with the JSON
    ``columns`` parsed (dicts), plus ``decision_id``, ``action`` and ``propensity``; in log order."""
    bad = set(columns) - {"context", "scores", "distribution"}
    if bad:
        raise InputError(f"sample_json reads context, scores, distribution; got {sorted(bad)}")
    where, params = DecisionLog._range(since, until)
    with _ro(path) as conn:
        seqs = np.fromiter((r[0] for r in conn.execute(f"SELECT seq FROM decisions WHERE {where}", params)),
                           dtype=np.int64)
        if len(seqs) > n:
            seqs = np.sort(np.random.default_rng(seed).choice(seqs, size=n, replace=False))
        cols = ("decision_id", "action", "propensity", *columns)
        select = [context_sql(conn) if c == "context" else c for c in cols]  # the context: 3 stored values
        rows = conn.execute(
            f"SELECT {', '.join(select)} FROM decisions WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq",
            (json.dumps(seqs.tolist()),),
        ).fetchall()
        names_of = layout_names(conn) if "context" in columns or "distribution" in columns else {}
    width = len(cols) + 2 * ("context" in columns)
    data = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
    out = {"decision_id": list(data[0]), "action": list(data[1]),
           "propensity": np.asarray(data[2], dtype=np.float64)}
    j = 3
    for name in columns:
        if name == "context":  # policies.log's one decode, either schema
            out[name] = decode_contexts(data[j], data[j + 1], data[j + 2], names_of)
            j += 3
        elif name == "distribution":  # JSON text or the binary form
            out[name] = decode_distributions(data[j], names_of)
            j += 1
        else:
            out[name] = [json.loads(v) for v in data[j]]
            j += 1
    return pd.DataFrame(out)


def end_of_day(ts: datetime) -> datetime:
    """The end (next 00:00 UTC) of the UTC day holding ``ts``: the default end of a window."""
    return (pd.Timestamp(ts).floor("D") + pd.Timedelta(days=1)).to_pydatetime()


def check_window(since: datetime | None, until: datetime | None) -> None:
    _check_time("since", since)
    _check_time("until", until)
    if since is not None and until is not None and since >= until:
        raise InputError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")

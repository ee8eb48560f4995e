"""The decision log's binary context (schema 2): exact round trip, free-form entries kept as JSON,
schema-1 files migrated in place and still read the same, every reader through one decode."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from policies.context import CONTEXT_COLUMNS
from policies.log import (
    _INSERT_DECISION,
    SCHEMA_VERSION,
    DecisionLog,
    _dumps,
    context_frame,
    context_matrix_of,
    context_sql,
    decode_contexts,
    encode_context,
    encode_context_matrix,
    layout_id,
    layout_names,
)
from policies.records import DecisionRecord
from policies.reward import RewardConfig

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)

#: the decisions table as schema 1 wrote it (context: JSON text), for the migration test
_SCHEMA_1 = """
CREATE TABLE decisions (
    seq INTEGER PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,
    decided_at INTEGER NOT NULL, action TEXT NOT NULL, channel TEXT, offer TEXT, send_slot INTEGER,
    send_at INTEGER, timezone TEXT, propensity REAL NOT NULL, distribution TEXT NOT NULL,
    context TEXT NOT NULL, scores TEXT NOT NULL, reasons TEXT NOT NULL, guardrails TEXT NOT NULL,
    policy TEXT NOT NULL, policy_version TEXT NOT NULL, model_versions TEXT NOT NULL, ab_arm TEXT,
    holdout INTEGER NOT NULL, fallback INTEGER NOT NULL, journey_id TEXT, journey_step TEXT,
    logged_at INTEGER NOT NULL);
CREATE INDEX decisions_customer ON decisions (customer_id, decided_at);
CREATE INDEX decisions_decided_at ON decisions (decided_at);
CREATE INDEX decisions_sends ON decisions (send_at) WHERE channel IS NOT NULL;
CREATE TABLE outcomes (event_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    event TEXT NOT NULL, occurred_at INTEGER NOT NULL, value REAL, received_at INTEGER NOT NULL);
CREATE INDEX outcomes_decision ON outcomes (decision_id);
"""


def record(i: int, context: dict, at: datetime = T0) -> DecisionRecord:
    return DecisionRecord(decision_id=f"d{i}", customer_id=f"c{i}", decided_at=at, action="no_send", propensity=1.0,
                          distribution={"no_send": 1.0}, context=context, policy="thompson")


def features(i: int) -> dict:
    rng = np.random.default_rng(i)
    return dict(zip(CONTEXT_COLUMNS, np.round(rng.normal(size=len(CONTEXT_COLUMNS)) * 10 ** (i % 5), 6).tolist(),
                    strict=True))


def us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def schema_1_file(path, contexts: list[dict]) -> None:
    """A decision log exactly as schema-1 code left it."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA_1)
        rows = [(f"old{i}", f"c{i}", us(T0), "no_send", None, None, None, None, "UTC", 1.0, '{"no_send":1.0}',
                 _dumps(ctx), "{}", "[]", "[]", "thompson", "0", "{}", None, 0, 0, None, None, us(T0))
                for i, ctx in enumerate(contexts)]
        conn.executemany(_INSERT_DECISION, rows)
        conn.execute("PRAGMA user_version = 1")


def test_encode_is_exact_and_keeps_free_form_entries_as_json():
    ctx = {**features(3), "request.campaign": "spring", "request.weight": 0.5, "flag": True, "x": None}
    blob, names, extra = encode_context(ctx)
    assert names == CONTEXT_COLUMNS and len(blob) == 8 * len(CONTEXT_COLUMNS)
    assert json.loads(extra) == {"request.campaign": "spring", "request.weight": 0.5, "flag": True, "x": None}
    back = decode_contexts([blob], [layout_id(names)], [extra], {layout_id(names): names})[0]
    assert back == ctx and list(back) == list(ctx)  # same values (bit for bit) and key order
    assert encode_context({}) == (b"", (), None)
    blob, names, extra = encode_context({"n": 3, "r": 0.5})  # an int is not part of the float run
    assert names == () and json.loads(extra) == {"n": 3, "r": 0.5}
    with pytest.raises(ValueError):
        encode_context({"a": float("nan")})


def test_matrix_encoding_equals_the_record_encoding():
    X = np.array([list(features(i).values()) for i in range(5)])
    extra = [{}, {"request.note": "hi"}, {}, {"weight": 2.5}, {}]
    blobs, ids, extras, layouts = encode_context_matrix(X, CONTEXT_COLUMNS, extra)
    for i in range(5):
        want = encode_context({**dict(zip(CONTEXT_COLUMNS, X[i].tolist(), strict=True)), **extra[i]})
        assert (blobs[i], layouts[ids[i]], extras[i]) == want
    assert len(layouts) == 2  # the features, and the features + "weight"
    with pytest.raises(ValueError):
        encode_context_matrix(np.full((1, len(CONTEXT_COLUMNS)), np.inf), CONTEXT_COLUMNS)


def test_a_schema_1_log_is_migrated_in_place_and_reads_the_same(tmp_path):
    path = tmp_path / "decisions.sqlite"
    old = [features(0), {**features(1), "request.campaign": "spring"}, {}]
    schema_1_file(path, old)
    with sqlite3.connect(path) as conn:
        before = [r[0] for r in conn.execute("SELECT context FROM decisions ORDER BY seq")]
    log = DecisionLog(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
            # the old rows were not rewritten
            assert [r[0] for r in conn.execute("SELECT context FROM decisions ORDER BY seq")] == before
        new = [{**features(7), "request.note": "x"}, features(8)]
        log.append([record(10 + i, c, T0 + timedelta(hours=1)) for i, c in enumerate(new)])
        with sqlite3.connect(path) as conn:
            assert isinstance(conn.execute("SELECT context FROM decisions WHERE decision_id = 'd10'").fetchone()[0],
                              bytes)
        frame = log.decisions(parse_json=["context"])
        assert list(frame["context"]) == old + new
        # unparsed: the JSON text either way, what schema 1 stored
        raw = log.decisions(parse_json=False, columns=["context"])
        assert list(raw["context"]) == [_dumps(c) for c in old + new]
        joined = log.joined(RewardConfig(), now=T0 + timedelta(days=3), parse_json=["context"])
        assert list(joined["context"]) == old + new
        wide = context_frame(frame)
        assert wide.loc[3, CONTEXT_COLUMNS[0]] == new[0][CONTEXT_COLUMNS[0]] and pd.isna(wide.loc[2, CONTEXT_COLUMNS[0]])
        # the readers that go to SQLite themselves decode the same way
        from monitoring.logdata import sample_json
        from serving.learning import logged_contexts

        sample = sample_json(path, None, None, 10, seed=0, columns=("context",))
        assert list(sample["context"]) == old + new
        M, ok = logged_contexts(path)
        assert ok.tolist() == [True, True, False, True, True]
        np.testing.assert_array_equal(M[[0, 1, 3, 4]], [[c[k] for k in CONTEXT_COLUMNS] for c in (*old[:2], *new)])
        M2, ok2 = logged_contexts(path, ["d11", "missing", "old0"])
        assert ok2.tolist() == [True, False, True]
        np.testing.assert_array_equal(M2[0], [new[1][k] for k in CONTEXT_COLUMNS])
    finally:
        log.close()
    assert DecisionLog(path).decisions(parse_json=["context"])["context"].tolist() == old + new  # reopened: as is


def test_context_matrix_fast_path_equals_the_dicts(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite")
    ctxs = [features(i) for i in range(6)]
    ctxs[2] = {**ctxs[2], "request.x": "y"}
    ctxs[4] = {}
    log.append([record(i, c) for i, c in enumerate(ctxs)])
    conn = log._conn()
    rows = conn.execute(f"SELECT {context_sql(conn)} FROM decisions ORDER BY seq").fetchall()
    v, lid, e = (list(x) for x in zip(*rows, strict=True))
    M = context_matrix_of(v, lid, e, layout_names(conn), CONTEXT_COLUMNS)
    want = np.array([[c.get(k, np.nan) for k in CONTEXT_COLUMNS] for c in ctxs])
    np.testing.assert_array_equal(M, want)
    log.close()


def test_non_finite_context_is_refused_and_bulk_layouts_must_be_named(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite")
    with pytest.raises(InputError, match="cannot be logged"):
        log.append([record(1, {"a": float("inf")})])
    blobs, ids, extras, layouts = encode_context_matrix(np.zeros((1, 2)), ("a", "b"))
    cols = {c: [v] for c, v in zip(
        ("decision_id", "customer_id", "decided_at", "action", "channel", "offer", "send_slot", "send_at", "timezone",
         "propensity", "distribution", "context", "scores", "reasons", "guardrails", "policy", "policy_version",
         "model_versions", "ab_arm", "holdout", "fallback", "journey_id", "journey_step"),
        ("d1", "c1", us(T0), "no_send", None, None, None, None, "UTC", 1.0, '{"no_send":1.0}', blobs[0], "{}", "[]",
         "[]", "p", "0", "{}", None, 0, 0, None, None), strict=True)}
    cols["context_layout"], cols["context_extra"] = ids, extras
    with pytest.raises(InputError, match="layouts"):
        log.append_columns(cols)
    log.append_columns(cols, layouts)
    assert log.decisions()["context"].tolist() == [{"a": 0.0, "b": 0.0}]
    log.close()


def _columns(ids: list[str], X: np.ndarray, names: tuple[str, ...]) -> tuple[dict, dict]:
    """append_columns input for no-send decisions with contexts X (rows) named ``names``."""
    blobs, lids, extras, layouts = encode_context_matrix(X, names)
    n = len(ids)
    fixed = dict(decided_at=us(T0), action="no_send", channel=None, offer=None, send_slot=None, send_at=None,
                 timezone="UTC", propensity=1.0, distribution='{"no_send":1.0}', scores="{}", reasons="[]",
                 guardrails="[]", policy="p", policy_version="0", model_versions="{}", ab_arm=None, holdout=0,
                 fallback=0, journey_id=None, journey_step=None)
    cols = {"decision_id": list(ids), "customer_id": [f"c-{i}" for i in ids], "context": blobs,
            "context_layout": lids, "context_extra": extras, **{k: [v] * n for k, v in fixed.items()}}
    return cols, layouts


def test_chunks_are_one_transaction_written_while_they_are_produced(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite")
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(30, 3)), 6)
    names = ("a", "b", "c")
    chunks = [_columns([f"d{i}" for i in range(lo, lo + 10)], X[lo:lo + 10], names) for lo in (0, 10, 20)]

    def produced(fail_after: int | None = None):
        for k, chunk in enumerate(chunks):
            if k == fail_after:
                raise RuntimeError("the producer failed")
            yield chunk

    with pytest.raises(RuntimeError, match="producer failed"):
        log.append_column_chunks(produced(fail_after=2))  # two chunks written, then rolled back
    assert len(log) == 0
    dup = _columns(["d5", "x1"], X[:2], names)  # d5 is in the first chunk
    with pytest.raises(InputError, match="d5"):
        log.append_column_chunks([chunks[0], dup])
    assert len(log) == 0
    log.append_column_chunks(produced())
    got = log.decisions()
    assert got["decision_id"].tolist() == [f"d{i}" for i in range(30)]
    np.testing.assert_array_equal(np.array([[c[k] for k in names] for c in got["context"]]), X)
    # the same rows as one append_columns of them all
    other = DecisionLog(tmp_path / "e.sqlite")
    other.append_columns(*_columns([f"d{i}" for i in range(30)], X, names))
    keep = [c for c in got.columns if c != "logged_at"]
    pd.testing.assert_frame_equal(other.decisions()[keep], got[keep])
    log.close()
    other.close()


def test_a_layout_is_written_once_per_log_object(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite")
    log.append([record(0, features(0))])
    assert log._layouts_written == {layout_id(CONTEXT_COLUMNS)}
    log.append([record(1, features(1)), record(2, {"x": 1.5})])
    assert layout_names(log._conn()) == {layout_id(CONTEXT_COLUMNS): CONTEXT_COLUMNS, layout_id(("x",)): ("x",)}
    assert log._layouts_written == set(layout_names(log._conn()))
    # a new object over the same file writes (INSERT OR IGNORE) what it has not written itself
    again = DecisionLog(tmp_path / "d.sqlite")
    again.append([record(3, features(3))])
    assert len(again.decisions()) == 4 and again.decisions()["context"].tolist()[3] == features(3)
    log.close()
    again.close()


def test_contexts_given_encoded_are_stored_as_encode_context_would(tmp_path):
    from policies.log import encode_context_row

    rng = np.random.default_rng(3)
    for i in range(20):
        row = np.round(rng.normal(size=len(CONTEXT_COLUMNS)) * 10 ** (i % 6), 6)
        assert encode_context_row(row, CONTEXT_COLUMNS) == encode_context(
            dict(zip(CONTEXT_COLUMNS, row.tolist(), strict=True)))
    row[3] = np.nan
    assert encode_context_row(row, CONTEXT_COLUMNS) is None  # encode_context's own error
    assert encode_context_row(np.ones(2), ("a", "request.b")) is None  # the binary run ends at a free-form name
    a, b = DecisionLog(tmp_path / "a.sqlite"), DecisionLog(tmp_path / "b.sqlite")
    recs = [record(i, features(i)) for i in range(4)]
    X = np.array([[r.context[c] for c in CONTEXT_COLUMNS] for r in recs])
    a.append(recs)
    b.append(recs, contexts=[encode_context_row(X[0], CONTEXT_COLUMNS), None, *(
        encode_context_row(x, CONTEXT_COLUMNS) for x in X[2:])])
    stored = "SELECT context, context_layout, context_extra FROM decisions ORDER BY seq"
    assert a._conn().execute(stored).fetchall() == b._conn().execute(stored).fetchall()
    with pytest.raises(InputError, match="2 encoded contexts for 4 records"):
        b.append([record(9 + i, features(i)) for i in range(4)], contexts=[None, None])
    a.close()
    b.close()


def test_without_autocheckpoint_commits_leave_the_wal_to_checkpoint(tmp_path):
    import os

    log = DecisionLog(tmp_path / "d.sqlite", synchronous="NORMAL", autocheckpoint=0)
    assert log._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size = os.path.getsize(tmp_path / "d.sqlite")
    for i in range(300):  # ~5 pages a commit: past SQLite's default 1000-page checkpoint
        log.append([record(i, features(i))])
    wal = os.path.getsize(tmp_path / "d.sqlite-wal")
    assert wal > 1000 * 4096 and os.path.getsize(tmp_path / "d.sqlite") == size  # nothing copied by a commit
    log.checkpoint()
    assert os.path.getsize(tmp_path / "d.sqlite") > size and len(log) == 300
    with pytest.raises(InputError, match="autocheckpoint"):
        DecisionLog(tmp_path / "e.sqlite", autocheckpoint=-1)
    log.close()

"""The decision log's per-customer read support: the covering index of sends by customer and the
``unsubscribes`` table its trigger keeps. An older log (schema 1, or schema 2 as the code before
them left it) gets both when opened, in place, once, also when several processes open it at once;
the table then holds exactly the reported unsubscribes of sends, whoever stores the outcomes."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from policies.log import _SCHEMA, SCHEMA_VERSION, DecisionLog, _has_sends_schema
from policies.records import DecisionRecord, OutcomeRecord

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)

#: the unsubscribes as the code before the table read them (the reference)
_UNSUB_JOIN = ("SELECT d.customer_id, o.occurred_at, d.channel, o.event_id FROM outcomes o "
               "JOIN decisions d ON o.decision_id = d.decision_id "
               "WHERE o.event = 'unsubscribed' AND d.channel IS NOT NULL")
_UNSUB_TABLE = "SELECT customer_id, occurred_at, channel, event_id FROM unsubscribes"


def decision(i: int, customer: str, channel: str | None, at: datetime) -> DecisionRecord:
    if channel is None:
        return DecisionRecord(decision_id=f"d{i}", customer_id=customer, decided_at=at, action="no_send",
                              propensity=1.0, distribution={"no_send": 1.0}, context={}, policy="thompson")
    arm = f"{channel}|o1|10"
    return DecisionRecord(decision_id=f"d{i}", customer_id=customer, decided_at=at, action=arm, channel=channel,
                          offer="o1", send_slot=10, send_at=at + timedelta(hours=2), timezone="UTC",
                          propensity=1.0, distribution={arm: 1.0}, context={}, policy="thompson")


def outcome(event_id: str, decision_id: str, event: str, at: datetime) -> OutcomeRecord:
    return OutcomeRecord(event_id=event_id, decision_id=decision_id, event=event, occurred_at=at)


def history(log: DecisionLog) -> None:
    """Ten customers with sends on several channels and no-sends over ~40 days, outcomes of
    every kind, unsubscribes of sends (some customers twice) and one of a no-send."""
    records, outcomes = [], []
    channels = ["email", "sms", "app_push", None, "email", "wechat"]
    for i in range(120):
        at = T0 + timedelta(hours=8 * i)
        records.append(decision(i, f"c{i % 10}", channels[i % len(channels)], at))
    log.append(records)
    for i, r in enumerate(records):
        if i % 4 == 0:
            outcomes.append(outcome(f"o{i}", r.decision_id, "opened", r.decided_at + timedelta(hours=3)))
        if i % 7 == 0:
            outcomes.append(outcome(f"u{i}", r.decision_id, "unsubscribed", r.decided_at + timedelta(hours=5)))
    log.add_outcomes(outcomes)


def baseline_schema_2(path) -> None:
    """A decision log as the code before the sends index left it: schema 2 without them."""
    log = DecisionLog(path)
    history(log)
    log.close()
    with sqlite3.connect(path) as conn:
        for statement in ("DROP TRIGGER outcomes_unsubscribed", "DROP TABLE unsubscribes",
                          "DROP INDEX decisions_customer_sends", "PRAGMA user_version = 2"):
            conn.execute(statement)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    # exactly the objects the baseline schema creates
    fresh = sqlite3.connect(":memory:")
    fresh.executescript(_SCHEMA)
    assert names == {r[0] for r in fresh.execute("SELECT name FROM sqlite_master")}


def us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def rows(path, sql: str) -> list:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(sql).fetchall())


def test_a_new_log_keeps_the_unsubscribes_of_sends_by_trigger(tmp_path):
    path = tmp_path / "d.sqlite"
    log = DecisionLog(path)
    history(log)
    got = rows(path, _UNSUB_TABLE)
    assert got == rows(path, _UNSUB_JOIN)
    assert len(got) == 18 - 3  # 18 unsubscribes reported, 3 of them of no-sends (not kept)
    # a retried report (same event_id) is a duplicate outcome: nothing new in the table
    before = len(got)
    res = log.add_outcomes([outcome("u0", "d0", "unsubscribed", T0 + timedelta(days=90)),
                            outcome("u-new", "d1", "unsubscribed", T0 + timedelta(days=2))])
    assert (res.accepted, res.duplicates) == (1, 1)
    got = rows(path, _UNSUB_TABLE)
    assert len(got) == before + 1 and [r for r in got if r[3] == "u-new"] == [("c1", us(T0 + timedelta(days=2)), "sms", "u-new")]
    assert got == rows(path, _UNSUB_JOIN)
    # a writer that inserts outcomes itself (bench, monitoring.simulate) goes through the trigger too
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO outcomes VALUES ('raw1', 'd2', 'unsubscribed', 5, NULL, 6)")
        conn.execute("INSERT OR IGNORE INTO outcomes VALUES ('raw1', 'd2', 'unsubscribed', 5, NULL, 6)")
        conn.execute("INSERT INTO outcomes VALUES ('raw2', 'd2', 'clicked', 5, NULL, 6)")
    assert rows(path, _UNSUB_TABLE) == rows(path, _UNSUB_JOIN)
    assert len(rows(path, _UNSUB_TABLE)) == before + 2


def test_the_sends_index_covers_the_per_customer_read(tmp_path):
    path = tmp_path / "d.sqlite"
    DecisionLog(path)
    with sqlite3.connect(path) as conn:
        plan = " ".join(r[-1] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT customer_id, channel, send_at FROM decisions "
            "INDEXED BY decisions_customer_sends WHERE customer_id = ? AND channel IS NOT NULL AND send_at >= ?",
            ("c1", 0)))
        assert "COVERING INDEX decisions_customer_sends" in plan, plan
        plan = " ".join(r[-1] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT customer_id, channel FROM unsubscribes WHERE customer_id = ? "
            "AND occurred_at <= ?", ("c1", 0)))
        assert "PRIMARY KEY" in plan and "customer_id=?" in plan, plan


def test_a_schema_2_log_gets_them_in_place_once_with_its_past_unsubscribes(tmp_path):
    path = tmp_path / "d.sqlite"
    baseline_schema_2(path)
    with sqlite3.connect(path) as conn:
        assert not _has_sends_schema(conn)
        decisions_before = conn.execute("SELECT * FROM decisions ORDER BY seq").fetchall()
        outcomes_before = conn.execute("SELECT * FROM outcomes ORDER BY rowid").fetchall()
    expected = rows(path, _UNSUB_JOIN)
    assert len(expected) == 15
    log = DecisionLog(path)
    with sqlite3.connect(path) as conn:
        assert _has_sends_schema(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3  # older code refuses it
        assert conn.execute("SELECT * FROM decisions ORDER BY seq").fetchall() == decisions_before
        assert conn.execute("SELECT * FROM outcomes ORDER BY rowid").fetchall() == outcomes_before
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert rows(path, _UNSUB_TABLE) == expected  # the backfill
    log.add_outcomes([outcome("later", "d1", "unsubscribed", T0 + timedelta(days=50))])
    log.close()
    DecisionLog(path).close()  # opened again: nothing to do, nothing doubled
    assert rows(path, _UNSUB_TABLE) == rows(path, _UNSUB_JOIN) and len(rows(path, _UNSUB_TABLE)) == 16
    # the public reads answer as before
    assert len(DecisionLog(path).joined(now=T0 + timedelta(days=90))) == 120


def test_a_schema_1_log_gets_them_too(tmp_path):
    from tests.policies.test_log_context import schema_1_file

    path = tmp_path / "d.sqlite"
    schema_1_file(path, [{}, {"a": 1.0}])
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO outcomes VALUES ('u', 'old0', 'unsubscribed', 5, NULL, 6)")  # of a no-send
    log = DecisionLog(path)
    log.append([decision(1, "c0", "email", T0)])
    log.add_outcomes([outcome("u1", "d1", "unsubscribed", T0 + timedelta(hours=3))])
    with sqlite3.connect(path) as conn:
        assert _has_sends_schema(conn) and conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert rows(path, _UNSUB_TABLE) == rows(path, _UNSUB_JOIN) and len(rows(path, _UNSUB_TABLE)) == 1
    assert len(log.decisions()) == 3


def _open(path: str) -> int:
    log = DecisionLog(path, timeout=60)
    n = log._conn().execute("SELECT count(*) FROM unsubscribes").fetchone()[0]
    log.close()
    return n


def test_processes_opening_an_old_log_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "d.sqlite"
    baseline_schema_2(path)
    expected = rows(path, _UNSUB_JOIN)
    copies = []
    for k in range(3):  # a few rounds: the race is at the start
        p = tmp_path / f"d{k}.sqlite"
        shutil.copy(path, p)
        copies.append(str(p))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        for p in copies:
            assert pool.map(_open, [p] * 4) == [len(expected)] * 4
            assert rows(p, _UNSUB_TABLE) == expected


def test_an_unknown_table_is_still_refused(tmp_path):
    path = tmp_path / "x.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")
    from core.errors import InputError

    with pytest.raises(InputError, match="other tables"):
        DecisionLog(path)

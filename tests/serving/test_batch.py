"""The batch (bulk) decide path: the columnar snapshot and the online store give the same
decisions; the log rows and responses built column-wise are exactly those of the per-record path;
the decisions are in the log before a response exists."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import serving.engine as engine_module
from core.types import Channel
from core.workspace import Workspace
from features.online import snapshot_path
from policies.log import JSON_COLUMNS, STORED_COLUMNS, DecisionLog
from serving.engine import BULK_MIN_REQUESTS, Request, _float_reprs, _uuid4_hex
from serving.schemas import BatchDecisionResponse, DecisionBatch

T0 = datetime(2026, 7, 1, 9, 7, tzinfo=UTC)


def _copy(prepared_ws, dst) -> Workspace:
    shutil.copytree(prepared_ws.root, dst, ignore=shutil.ignore_patterns("decisions"))
    return Workspace(dst)


def _engine(ws):
    from serving.config import ServingConfig
    from serving.engine import DecisionEngine

    return DecisionEngine.open(ws, ServingConfig(refresh_seconds=0), start_refresh=False)


def _logged(eng) -> dict[str, dict]:
    import sqlite3

    with sqlite3.connect(eng.log.path) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM decisions")]
    return {r["customer_id"]: r for r in rows}


def test_float_texts_and_uuids_are_what_json_and_uuid4_write():
    x = np.array([[0.1, -0.0, 0.0, 1e-7, 123456.654321], [2.5, 0.1, -3.0, 1e22, 0.30000000000000004]])
    assert _float_reprs(x).tolist() == [[json.dumps(v) for v in row] for row in x.tolist()]
    ids = _uuid4_hex(500)
    assert len(set(ids)) == 500
    for h in ids[:50]:
        u = uuid.UUID(hex=h)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and u.hex == h


@pytest.mark.integration
def test_bulk_rows_and_responses_equal_the_record_path(prepared_ws, customer_ids, tmp_path):
    eng = _engine(_copy(prepared_ws, tmp_path / "w"))
    try:
        reqs = [Request(c, T0, decision_id=f"d{i}", journey_id="j1", journey_step="s1")
                for i, c in enumerate(customer_ids[:700])]
        # request contexts: merged as the record path does (a float not named as free-form extends the
        # binary run of floats: another layout)
        reqs[3].context = {"weight": 0.25, "campaign": "spring"}
        reqs[4].context = {"request.weight": 0.5}
        plan = eng._plan(reqs)
        records = eng._records(reqs, plan)
        bulk = eng._bulk_all(reqs, plan, chunk=256)  # in three chunks, as the writer thread gets them
        assert bulk is not None
        # rows with one allowed arm were not asked: the policy gives them the same, exactly
        policy = eng.policy_arms["champion"].policy
        assert (plan.eligibility.mask.sum(axis=1) == 1).any() and (plan.eligibility.mask.sum(axis=1) > 1).any()
        np.testing.assert_array_equal(plan.distribution, policy.distribution(plan.context, plan.eligibility.mask))
        sends = sum(r.channel is not None for r in records)
        assert 0 < sends < len(records)  # both kinds of rows are compared
        assert any(r.guardrails for r in records) and any(len(r.distribution) > 1 for r in records)
        stored = [c for c in STORED_COLUMNS if c != "logged_at"]
        layouts: dict = {}
        for i, rec in enumerate(records):
            want = dict(zip(STORED_COLUMNS, DecisionLog._row(rec, 0, layouts, arms=eng.arm_layout), strict=True))
            for name in stored:
                a, b = bulk.columns[name][i], want[name]
                assert a == b and type(a) is type(b), (i, name, a, b)
        # the context features; + the request's float; the arms of the (binary) distributions
        assert layouts == bulk.layouts and len(layouts) == 3
        assert isinstance(bulk.columns["distribution"][0], bytes)
        assert isinstance(bulk.columns["context"][0], bytes) and bulk.columns["context_extra"][0] is None
        assert json.loads(bulk.columns["context_extra"][3]) == {"campaign": "spring"}
        assert json.loads(bulk.columns["context_extra"][4]) == {"request.weight": 0.5}
        assert bulk.columns["context_layout"][4] == bulk.columns["context_layout"][0] != bulk.columns["context_layout"][3]
        responses = eng._bulk_responses(plan, bulk)
        assert isinstance(responses, DecisionBatch) and len(responses) == len(records)
        refs = [eng._response(rec) for rec in records]
        # the HTTP body, written from the columns before any response object exists
        assert json.loads(responses.json_bytes()) == \
            json.loads(BatchDecisionResponse.model_construct(decisions=refs).model_dump_json())
        tally: dict = {}
        for r in refs:
            key = (r.fallback_reason, r.ab_arm, r.action.send)
            tally[key] = tally.get(key, 0) + 1
        assert responses.tally() == tally
        for resp, ref in zip(responses, refs, strict=True):
            assert resp == ref
            assert resp.model_dump(mode="json") == ref.model_dump(mode="json")
        assert responses == refs and responses[-1] is responses[len(refs) - 1] and responses[1:3] == refs[1:3]
    finally:
        eng.close()


@pytest.mark.integration
def test_snapshot_and_store_paths_give_identical_decisions(prepared_ws, customer_ids, tmp_path):
    from serving.schemas import BatchDecisionRequest

    assert snapshot_path(prepared_ws.feature_repo / "online_store.db").is_file()
    with_snap, without = _copy(prepared_ws, tmp_path / "a"), _copy(prepared_ws, tmp_path / "b")
    snapshot_path(without.feature_repo / "online_store.db").unlink()
    ids = customer_ids[:900] + ["never-seen-1"]
    out, logged, sources = [], [], []
    for ws in (with_snap, without):
        eng = _engine(ws)
        try:
            res = eng.decide_batch(BatchDecisionRequest(customer_ids=ids, request_time=T0))
            sources.append(eng.reader.last_source)
            out.append([(d.customer_id, d.action.arm, d.probability, d.action.send_at, d.guardrails, d.scores,
                         d.reasons, d.fallback_reason) for d in res])
            rows = _logged(eng)
            logged.append({c: {k: rows[c][k] for k in ("action", "propensity", "send_at", *JSON_COLUMNS,
                                                       "context_layout", "context_extra")}
                           for c in ids})
        finally:
            eng.close()
    assert sources == ["snapshot", "sqlite"]
    assert out[0] == out[1] and logged[0] == logged[1]
    assert any(x[3] is not None for x in out[0]) and out[0][-1][-1] == "cold_start"


@pytest.mark.integration
def test_a_batch_is_logged_before_any_response(prepared_ws, customer_ids, tmp_path, monkeypatch):
    from core.errors import InputError
    from serving.schemas import BatchDecisionRequest

    eng = _engine(_copy(prepared_ws, tmp_path / "w"))
    try:
        ids = customer_ids[:BULK_MIN_REQUESTS + 10]
        res = eng.decide_batch(BatchDecisionRequest(customer_ids=ids, request_time=T0))
        rows = _logged(eng)
        assert len(res) == len(ids) == len(rows)
        for d in res:
            row = rows[d.customer_id]
            assert row["decision_id"] == d.decision_id and row["action"] == d.action.arm
            assert row["propensity"] == d.probability and json.loads(row["scores"]) == d.scores
        # the audience's logged sends and reported unsubscribes, read by a scan of the recent sends,
        # are those the per-customer query finds
        from serving.schemas import OutcomeIn

        sent = [d for d in res if d.action.send]
        assert sent
        eng.record_outcomes([OutcomeIn(event_id="u1", decision_id=sent[0].decision_id, event="unsubscribed",
                                       occurred_at=T0 + timedelta(hours=2))])
        later = T0 + timedelta(days=1)
        ask = ids[5:] + ["nobody"]
        a, b = eng._logged_sends_bulk(ask, later), eng._logged_sends(ask, later)
        assert len(a.customer_id) == sum(d.customer_id in set(ask) for d in sent) > 0
        assert sorted(zip(a.customer_id, a.channel, a.send_at, strict=True)) == \
            sorted(zip(b.customer_id, b.channel, b.send_at, strict=True))
        assert sorted(a.unsubscribed) == sorted(b.unsubscribed)
        assert len(b.unsubscribed) == int(sent[0].customer_id in ask)
        # a log that refuses the write: the call fails, no response leaves
        append = eng.log.append_column_chunks

        def refuse(chunks):
            raise InputError("disk full")

        eng.log.append_column_chunks = refuse
        with pytest.raises(InputError, match="disk full"):
            eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[400:700], request_time=T0))
        assert len(_logged(eng)) == len(ids)
        # the rows go to the writer chunk by chunk, in one transaction: a failure while the third
        # chunk is built rolls back the two already written, and the error is the caller's
        eng.log.append_column_chunks = append
        build, calls = eng._bulk_rows, []

        def third_fails(reqs, plan, lo, shared):
            calls.append(lo)
            if len(calls) == 3:
                raise RuntimeError("out of memory")
            return build(reqs, plan, lo, shared)

        eng._bulk_rows = third_fails
        monkeypatch.setattr(engine_module, "BULK_CHUNK", 100)
        with pytest.raises(RuntimeError, match="out of memory"):
            eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[400:700], request_time=T0))
        assert calls == [0, 100, 200] and len(_logged(eng)) == len(ids)
        eng._bulk_rows = build
        res = eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[400:700], request_time=T0))
        assert len(_logged(eng)) == len(ids) + 300 and {d.decision_id for d in res} <= \
            {r["decision_id"] for r in _logged(eng).values()}
        # a chunk whose rows only the record path can judge (None: say a context value it refuses):
        # the chunks written so far roll back and the record path logs the whole batch, once
        calls.clear()

        def second_declines(reqs, plan, lo, shared):
            calls.append(lo)
            return None if lo == 100 else build(reqs, plan, lo, shared)

        eng._bulk_rows = second_declines
        later = T0 + timedelta(days=2)
        res = eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[400:700], request_time=later))
        eng._bulk_rows = build
        assert calls == [0, 100] and len(res) == 300
        logged = _logged(eng)
        assert len(logged) == len(ids) + 300  # one row per customer (the dict is keyed by customer)
        with sqlite3.connect(eng.log.path) as conn:
            n_later = conn.execute("SELECT count(*) FROM decisions WHERE decided_at = ?",
                                   (int(later.timestamp() * 1e6),)).fetchone()[0]
        assert n_later == 300 and {d.decision_id for d in res} <= {r["decision_id"] for r in logged.values()}
    finally:
        eng.close()


@pytest.mark.integration
def test_an_audience_shares_one_request_but_its_customer_id(prepared_ws, customer_ids, tmp_path):
    """decide_batch's flyweight requests read as Request(customer, t, **the batch's options)."""
    from serving.engine import _REQUEST_FIELDS
    from serving.schemas import BatchDecisionRequest

    eng = _engine(_copy(prepared_ws, tmp_path / "w"))
    try:
        seen: list = []
        eng.decide_many = lambda reqs: seen.extend(reqs) or []
        eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[:3], request_time=T0, channels=["sms"],
                                              journey={"id": "j9", "step": "s2"}, allow_no_send=False))
        want = [Request(c, T0, journey_id="j9", journey_step="s2", channels=(Channel.SMS,), allow_no_send=False)
                for c in customer_ids[:3]]
        assert [{f: getattr(r, f) for f in _REQUEST_FIELDS} for r in seen] == \
            [{f: getattr(r, f) for f in _REQUEST_FIELDS} for r in want]
        assert all(isinstance(r, Request) for r in seen)
        seen[0].decision_id = "x"  # an idempotency key sets one request's id, not the audience's
        assert seen[1].decision_id is None
        with pytest.raises(TypeError):
            seen[0].context["k"] = 1  # the shared context is read-only
    finally:
        eng.close()


@pytest.mark.integration
@pytest.mark.parametrize("restart_pages", [1, 0])
def test_the_wal_starts_afresh_under_steady_traffic(ws_copy, customer_ids, restart_pages):
    """Under steady traffic a commit is in flight while every passive checkpoint runs, so the WAL
    is never fully copied when the next commit begins, SQLite never starts it afresh, and it
    grows with the traffic. Here each checkpoint pass overlaps such a commit (another
    connection's), except under the engine's write lock. With checkpoint_restart_pages the last
    pass runs under that lock and the next commit starts the WAL afresh: the WAL holds one
    round's pages. With 0 (never) it grows round after round."""
    import sqlite3

    from serving.config import ServingConfig
    from serving.engine import DecisionEngine, _Checkpointer
    from serving.schemas import DecisionRequest

    eng = DecisionEngine.open(ws_copy, ServingConfig(refresh_seconds=0, checkpoint_seconds=0), start_refresh=False)
    other = sqlite3.connect(eng.log.path, isolation_level=None)
    real = eng.log.checkpoint
    states = []

    def checkpoint():
        concurrent = not eng._commits._writing  # another worker's commit is in flight (not under the lock)
        if concurrent:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT OR IGNORE INTO context_layouts (id, columns) VALUES (?, '[]')",
                          (uuid.uuid4().int >> 80,))
        state = real()
        if concurrent:
            other.execute("COMMIT")
        states.append(state)
        return state

    eng.log.checkpoint = checkpoint
    cp = _Checkpointer(eng, 3600, restart_pages)  # its thread sleeps: the rounds are called here
    try:
        cp._once()
        wal = []
        for r in range(8):
            for c in customer_ids[r * 10:(r + 1) * 10]:
                eng.decide(DecisionRequest(customer_id=c, request_time=T0))
            cp._once()
            wal.append(states[-1][1])  # pages in the WAL at the round's last pass
    finally:
        cp._stop.set()
        other.close()
        eng.close()
    if restart_pages:
        assert max(wal) < 2 * min(wal) and cp.completed == cp.runs, wal
    else:
        assert all(b > a for a, b in zip(wal, wal[1:], strict=False)) and wal[-1] > 5 * wal[0], wal


@pytest.mark.integration
def test_the_service_checkpoints_its_log_in_the_background(ws_copy, customer_ids):
    """No decision's commit copies the WAL into the file (autocheckpoint off); a background
    thread does, every checkpoint_seconds, and once more at close. checkpoint_seconds 0: SQLite's
    own automatic checkpoint, as before."""
    import os
    import time

    from serving.config import ServingConfig
    from serving.engine import DecisionEngine
    from serving.schemas import DecisionRequest

    eng = DecisionEngine.open(ws_copy, ServingConfig(refresh_seconds=0, checkpoint_seconds=0.05), start_refresh=False)
    thread = eng._checkpoints._thread
    try:
        assert eng.log.autocheckpoint == 0 and thread.is_alive()
        assert eng.log._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size = os.path.getsize(eng.log.path)
        for c in customer_ids[:30]:
            eng.decide(DecisionRequest(customer_id=c, request_time=T0))
        runs = eng._checkpoints.runs
        deadline = time.monotonic() + 10
        while (os.path.getsize(eng.log.path) == size or eng._checkpoints.runs < runs + 2) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.getsize(eng.log.path) > size and eng._checkpoints.runs >= runs + 2
    finally:
        eng.close()
    assert not thread.is_alive()
    eng = DecisionEngine.open(ws_copy, ServingConfig(refresh_seconds=0, checkpoint_seconds=0), start_refresh=False)
    try:
        assert eng.log.autocheckpoint == 1000 and getattr(eng, "_checkpoints", None) is None
        assert len(eng.log) == 30
    finally:
        eng.close()

"""The decide path's speed-ups keep behaviour: the quarter-hour send-time cache equals the
guardrails' own computation, the array context equals policies.context.context_matrix, the send
index finds every send, and on a prepared workspace the engine's caches follow what changes (a
new send counts towards caps and contact features, a reported unsubscribe revokes consent, a new
champion is used at once)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.workspace import Workspace
from policies.arms import ArmSpace
from policies.config import GuardrailConfig, PolicyLayerConfig
from policies.guardrails import Audience, Guardrails, SendHistory
from serving.engine import _SendIndex

ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/St_Johns", "Pacific/Chatham", "UTC", "Europe/Berlin", "America/Santiago"]


def _audience(n: int, rng) -> Audience:
    return Audience(np.array([f"c{i}" for i in range(n)], dtype=object), rng.choice(ZONES, n).astype(object),
                    rng.random((n, 4)) < 0.8, rng.random((n, 4)) < 0.9, None)


class _ExactGuardrails(Guardrails):
    """The reference: send-time grids computed at every call, no cache."""

    def _zone_times(self, now_utc, zone):
        return self._zone_times_exact(now_utc, zone)


def test_quarter_hour_cache_gives_the_guardrails_send_times():
    """Random instants, many around DST changes and quarter marks, in zones with 30/45-minute
    offsets and 30-minute DST: identical masks, send times and hours."""
    arms = ArmSpace.from_config(PolicyLayerConfig().arms)
    cfg = GuardrailConfig(sms_daily_budget=None, holdout_share=0.0)
    base, fast = _ExactGuardrails(arms, cfg), Guardrails(arms, cfg)
    rng = np.random.default_rng(0)
    aud = _audience(40, rng)
    anchors = [datetime(2026, m, d, tzinfo=UTC) for m, d in ((3, 8), (3, 29), (4, 5), (9, 27), (10, 4), (10, 25),
                                                            (11, 1), (4, 4), (7, 1), (12, 31))]
    times = []
    for a in anchors:
        for _ in range(5):
            q = a + timedelta(minutes=15 * int(rng.integers(0, 4 * 48)))
            times += [q, q - timedelta(microseconds=1), q + timedelta(microseconds=1),
                      q + timedelta(seconds=float(rng.uniform(0, 900)))]
    for t in times:
        e1, e2 = base.apply(aud, t, None, reserve=False), fast.apply(aud, t, None, reserve=False)
        assert np.array_equal(e1.mask, e2.mask), t
        assert np.array_equal(e1.send_at, e2.send_at), t
        assert np.array_equal(e1.send_hour, e2.send_hour), t
    assert len(fast._times_cache) > 0  # the cache was used



def test_send_index_finds_every_send_of_the_asked_customers():
    frame = pd.DataFrame({"customer_id": ["b", "a", "b", "c", "a", "b"],
                          "channel": ["email", "sms", "fax", "push", "email", "wechat"],
                          "send_at": pd.to_datetime(["2026-06-01T10:00Z", "2026-06-02T10:00Z", "2026-06-03T10:00Z",
                                                     "2026-06-04T10:00Z", "2026-06-05T10:00Z", "2026-06-06T10:00Z"])})
    idx = _SendIndex.from_frame(frame)
    pos, ch, at = idx.rows(["x", "b", "a"])
    got = sorted(zip(pos.tolist(), ch.tolist(), at.tolist(), strict=True))
    want = SendHistory.from_frame(frame[frame["customer_id"].isin(["a", "b"])])
    names = list(want.customers)
    expect = sorted(({"b": 1, "a": 2}[names[c]], int(h), int(t))
                    for c, h, t in zip(want.code, want.channel, want.send_at, strict=True))
    assert got == expect and len(got) == 4  # the 'fax' send is dropped, as the guardrails drop it
    for one in ("a", "b", "c", "x"):  # a single decision's shortcut: the same sends
        single = idx.rows([one])
        many = idx.rows([one, "zz"])
        assert all(np.array_equal(p, q) for p, q in zip(single, many, strict=True))
    assert [len(a) for a in _SendIndex.from_frame(None).rows(["a"])] == [0, 0, 0]


# ----------------------------------------------------------------------------------------------
# group commit
# ----------------------------------------------------------------------------------------------
class _SlowLog:
    """A stand-in decision log that takes a while to commit and refuses record sets holding 'bad'."""

    def __init__(self):
        import threading

        self.batches: list[list] = []
        self._lock = threading.Lock()

    def append(self, records):
        import time

        from core.errors import InputError

        time.sleep(0.01)
        if "bad" in records:
            raise InputError("bad record")
        with self._lock:
            self.batches.append(list(records))


def test_group_commit_shares_commits_and_keeps_errors_to_their_caller():
    import threading

    from core.errors import InputError
    from serving.engine import GroupCommit

    def run(bad: int | None) -> tuple[_SlowLog, dict[int, Exception]]:
        log = _SlowLog()
        gc = GroupCommit(log)
        errors: dict[int, Exception] = {}

        def call(i: int) -> None:
            try:
                gc.append(["bad"] if i == bad else [f"r{i}a", f"r{i}b"])
            except InputError as exc:
                errors[i] = exc

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        committed = [r for b in log.batches for r in b]
        assert sorted(committed) == sorted(f"r{i}{s}" for i in range(16) if i != bad for s in "ab")  # each once
        return log, errors

    log, errors = run(None)
    assert not errors and len(log.batches) < 16  # concurrent requests shared commits
    log, errors = run(5)
    assert list(errors) == [5]  # the bad request's error, and only to it


# ----------------------------------------------------------------------------------------------
# the engine on a prepared workspace
# ----------------------------------------------------------------------------------------------
T0 = datetime(2026, 7, 1, 9, 7, tzinfo=UTC)


def _copy(prepared_ws, dst) -> Workspace:
    shutil.copytree(prepared_ws.root, dst, ignore=shutil.ignore_patterns("decisions"))
    return Workspace(dst)


def _engine(ws, **guardrails):
    from policies.config import GuardrailConfig, PolicyLayerConfig
    from serving.config import ServingConfig
    from serving.engine import DecisionEngine

    layer = PolicyLayerConfig(guardrails=GuardrailConfig(**guardrails)) if guardrails else PolicyLayerConfig()
    return DecisionEngine.open(ws, ServingConfig(refresh_seconds=0, policy_layer=layer), start_refresh=False)


def _logged(eng, decision_id: str) -> dict:
    import json
    import sqlite3

    from policies.log import decode_contexts, decode_distributions, layout_names

    with sqlite3.connect(eng.log.path) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone())
        names = layout_names(conn)
    row["context"] = decode_contexts([row["context"]], [row["context_layout"]], [row["context_extra"]], names)[0]
    row["distribution"] = decode_distributions([row["distribution"]], names)[0]
    row["guardrails"] = json.loads(row["guardrails"])
    return row


@pytest.mark.integration
def test_same_seed_same_decisions(prepared_ws, customer_ids, tmp_path):
    from serving.schemas import BatchDecisionRequest, DecisionRequest

    engines = [_engine(_copy(prepared_ws, tmp_path / f"w{k}")) for k in range(2)]
    try:
        def run(eng):
            out = [eng.decide(DecisionRequest(customer_id=c, request_time=T0 + timedelta(hours=h)))
                   for h in (0, 30) for c in customer_ids[:25]]
            out += eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[:300],
                                                         request_time=T0 + timedelta(days=3)))
            return [(d.customer_id, d.action.arm, d.probability, d.action.send_at, d.guardrails, d.scores)
                    for d in out]

        a, b = run(engines[0]), run(engines[1])
        assert a == b
        assert any(x[3] is not None for x in a)  # some sends: caps and contacts were exercised
    finally:
        for e in engines:
            e.close()


@pytest.mark.integration
def test_a_new_send_counts_towards_caps_and_contact_features(ws_copy, customer_ids):
    from core.types import NO_SEND
    from policies.config import FrequencyCap
    from serving.schemas import DecisionRequest

    eng = _engine(ws_copy, frequency_caps=(FrequencyCap(max_sends=1, window_hours=24 * 7),), holdout_share=0.0,
                  sms_daily_budget=None)
    try:
        first = next(d for d in (eng.decide(DecisionRequest(customer_id=c, request_time=T0, allow_no_send=False))
                                 for c in customer_ids[:60]) if d.action.send)
        c = first.customer_id
        before = _logged(eng, first.decision_id)["context"]
        later = eng.decide(DecisionRequest(customer_id=c, request_time=T0 + timedelta(days=2)))
        row = _logged(eng, later.decision_id)
        assert before["sends_7d"] >= 0 and row["context"]["sends_7d"] >= 1  # the service's own send, from its log
        assert row["context"]["days_since_last_contact"] < np.log1p(2.0) + 1e-9
        assert not later.action.send and "frequency_cap:all:168h" in later.guardrails
        assert row["distribution"] == {NO_SEND: 1.0}
    finally:
        eng.close()


@pytest.mark.integration
def test_a_reported_unsubscribe_revokes_the_channel(ws_copy, customer_ids):
    from core.types import CHANNELS
    from serving.schemas import DecisionRequest, OutcomeIn

    eng = _engine(ws_copy, frequency_caps=(), holdout_share=0.0, sms_daily_budget=None)
    try:
        first = next(d for d in (eng.decide(DecisionRequest(customer_id=c, request_time=T0, allow_no_send=False))
                                 for c in customer_ids[60:160]) if d.action.send)
        channel = first.action.channel
        res = eng.record_outcomes([OutcomeIn(event_id="u1", decision_id=first.decision_id, event="unsubscribed",
                                             occurred_at=T0 + timedelta(hours=1))])
        assert res.accepted == 1
        # only that channel may be used and a send is asked for: before the unsubscribe it would send
        later = eng.decide(DecisionRequest(customer_id=first.customer_id, request_time=T0 + timedelta(days=1),
                                           allow_no_send=False, channels=[channel]))
        dist = _logged(eng, later.decision_id)["distribution"]
        a = eng.arm_space
        on_channel = {eng._arm_ids[k] for k in np.flatnonzero(a.is_send & (a.channel == CHANNELS.index(channel)))}
        assert not on_channel & set(dist) and not later.action.send
        assert "consent" in later.guardrails
    finally:
        eng.close()


@pytest.mark.integration
def test_a_new_champion_is_used_at_once(ws_copy, customer_ids):
    from types import MappingProxyType

    from serving.champions import ChampionSnapshot
    from serving.schemas import DecisionRequest

    eng = _engine(ws_copy)
    try:
        c = customer_ids[7]
        d1 = eng.decide(DecisionRequest(customer_id=c, request_time=T0))
        snap = eng.champions.snapshot()
        models = dict(snap.models)
        models["propensity"] = models["churn"]  # a 'new version' of the propensity model
        eng.champions._snapshot = ChampionSnapshot(MappingProxyType(models),
                                                   MappingProxyType({**snap.versions, "propensity": "99"}),
                                                   MappingProxyType({}))
        d2 = eng.decide(DecisionRequest(customer_id=c, request_time=T0 + timedelta(minutes=1)))
        assert d2.model_versions["propensity"] == "99"
        assert d2.scores["propensity"] == pytest.approx(d2.scores["churn"], abs=1e-12)
        assert d1.scores["propensity"] != pytest.approx(d1.scores["churn"], abs=1e-6)
    finally:
        eng.close()


# ----------------------------------------------------------------------------------------------
# decision-log mode, budget ledger under threads, the order-value columns
# ----------------------------------------------------------------------------------------------
def test_budget_threads_queue_in_process_not_on_sqlites_busy_handler(tmp_path):
    """Threads of one process take the ledger's lock before SQLite's: even with no busy timeout
    at all (a second writer would fail at once with 'database is locked'), concurrent single and
    multi-unit reservations and releases all succeed and never overspend."""
    import threading

    from policies.budget import BudgetLedger

    ledger = BudgetLedger(tmp_path / "budget.sqlite", timeout=0.0)
    errors: list[Exception] = []
    kept: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        mine = 0
        try:
            for i in range(300):
                got = ledger.reserve("sms_spend:2026-07-01", limit=500.0, amount=0.5, count=1 + (i + k) % 2)
                if got:
                    ledger.release("sms_spend:2026-07-01", 0.5)  # settle: one unit unused
                    got -= 1
                mine += got
        except Exception as exc:  # 'database is locked' without the in-process lock
            errors.append(exc)
        with lock:
            kept.append(mine)

    import sys

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as much as possible
    try:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors
    assert ledger.used("sms_spend:2026-07-01") == 0.5 * sum(kept) <= 500.0


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
def test_the_log_mode_is_a_config_option_and_the_decision_is_logged_first(ws_copy, customer_ids, mode):
    from serving.config import ServingConfig
    from serving.engine import DecisionEngine
    from serving.schemas import DecisionRequest

    assert ServingConfig().log_synchronous == "NORMAL"  # the measured default (survives kill -9)
    eng = DecisionEngine.open(ws_copy, ServingConfig(refresh_seconds=0, log_synchronous=mode), start_refresh=False)
    try:
        d = eng.decide(DecisionRequest(customer_id=customer_ids[3], request_time=T0))
        assert eng.log._conn().execute("PRAGMA synchronous").fetchone()[0] == {"NORMAL": 1, "FULL": 2}[mode]
        assert _logged(eng, d.decision_id)["customer_id"] == customer_ids[3]
    finally:
        eng.close()


@pytest.mark.integration
def test_order_values_from_arrays_equal_the_frame_path(prepared_ws, customer_ids):
    """The engine hands expected_order_value its one column as arrays (no DataFrame per request):
    the same values as the DataFrame it replaced."""
    from serving.engine import _Columns, _order_value_frame

    eng = _engine(prepared_ws)
    try:
        est = eng.champions.snapshot().models["offer"]
        feats = eng.reader.read(eng.config.feature_service, customer_ids[:50], T0)
        cols = dict(feats.columns)
        via_arrays = est.expected_order_value(_Columns(cols.__getitem__, 50))
        via_frame = est.expected_order_value(_order_value_frame(est, cols.__getitem__, 50))
        assert via_arrays.shape == (50,) and np.array_equal(via_arrays, via_frame)
    finally:
        eng.close()


@pytest.mark.integration
def test_single_row_lightgbm_path_equals_booster_predict(prepared_ws, customer_ids):
    """The engine's one-row LightGBM entry gives exactly Booster.predict's probabilities, for
    every champion, on real design rows."""
    from serving.engine import _SingleRow

    eng = _engine(prepared_ws)
    try:
        feats = eng.reader.read(eng.config.feature_service, customer_ids[:40], T0)
        cols = dict(feats.columns)
        rng = np.random.default_rng(0)
        extra = {"channel": rng.integers(0, 4, 40), "offer": rng.integers(0, 4, 40), "send_hour": rng.integers(0, 24, 40)}
        models = eng.champions.snapshot().models
        assert set(models) == {"propensity", "churn", "offer", "send_time"}
        for est in models.values():
            names = list(est.feature_names_in_)
            M = np.array([extra[c] if c in extra else cols[c] for c in names], dtype=np.float64).T
            design = est._design(M, names)
            fast = _SingleRow.of(est)
            assert fast is not None
            got = np.concatenate([fast(design[i:i + 1]) for i in range(len(design))])
            assert np.array_equal(got, est._raw_proba(design))
    finally:
        eng.close()

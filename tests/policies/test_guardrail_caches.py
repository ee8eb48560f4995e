"""The caches and shortcuts of the decide path keep behaviour: the per-quarter-hour send-time grid,
the cached is_send, the small-batch paths of the frequency caps and time zones, the array context
and the log's JSON encoder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from policies.arms import ArmSpace
from policies.config import FrequencyCap, GuardrailConfig, PolicyLayerConfig
from policies.context import CONTEXT_COLUMNS, context_matrix
from policies.guardrails import Audience, Guardrails, SendHistory, _batch_rows, _factorize, quarter_stable
from policies.log import _dumps

ARMS = ArmSpace.from_config(PolicyLayerConfig().arms)


class _Exact(Guardrails):
    """Reference: the send-time grid computed at every call."""

    def _zone_times(self, now_utc, zone):
        return self._zone_times_exact(now_utc, zone)


def _audience(ids, zones, rng) -> Audience:
    n = len(ids)
    return Audience(np.asarray(ids, dtype=object), np.asarray(zones, dtype=object),
                    rng.random((n, 4)) < 0.8, rng.random((n, 4)) < 0.9, None)


def _same(e1, e2) -> None:
    for name in ("mask", "send_at", "send_hour", "holdout", "acted"):
        assert np.array_equal(getattr(e1, name), getattr(e2, name)), name


def test_is_send_is_computed_once_and_read_only():
    assert ARMS.is_send is ARMS.is_send
    assert np.array_equal(ARMS.is_send, ARMS.channel >= 0)
    with pytest.raises(ValueError):
        ARMS.is_send[0] = True
    assert ARMS.arms_where().sum() == ARMS.n_arms - 1  # arms_where copies before narrowing


def test_one_grid_per_zone_and_quarter_hour_equal_to_the_exact_one():
    cfg = GuardrailConfig(sms_daily_budget=None, holdout_share=0.0)
    fast, exact = Guardrails(ARMS, cfg), _Exact(ARMS, cfg)
    rng = np.random.default_rng(3)
    aud = _audience(["a"], ["Asia/Kathmandu"], rng)
    q = datetime(2026, 7, 1, 9, 15, tzinfo=UTC)
    # (q - 15 min, q] is one quarter: its instants share one grid; q + 1 us starts the next one
    for t in (q - timedelta(minutes=15) + timedelta(microseconds=1), q - timedelta(minutes=7), q):
        _same(fast.apply(aud, t, None, reserve=False), exact.apply(aud, t, None, reserve=False))
    assert list(fast._times_cache) == [("Asia/Kathmandu", int(pd.Timestamp(q).value))]
    t = q + timedelta(microseconds=1)
    _same(fast.apply(aud, t, None, reserve=False), exact.apply(aud, t, None, reserve=False))
    assert len(fast._times_cache) == 2


def test_zones_without_a_stable_quarter_are_computed_per_instant():
    # Lord Howe goes from +11:00 to +10:30 at 2026-04-04T15:00Z: the quarter ending then spans the
    # transition, the next one does not; an LMT offset (Kolkata in 1900, +05:53:20) is not a
    # multiple of 15 minutes
    assert not quarter_stable("Australia/Lord_Howe", int(pd.Timestamp("2026-04-04T15:00Z").value))
    assert quarter_stable("Australia/Lord_Howe", int(pd.Timestamp("2026-04-04T15:15Z").value))
    assert quarter_stable("Australia/Lord_Howe", int(pd.Timestamp("2026-04-04T14:45Z").value))
    old = pd.Timestamp("1900-06-01T06:15Z")
    assert not quarter_stable("Asia/Kolkata", int(old.value))
    assert not quarter_stable("Not/AZone", int(old.value))
    cfg = GuardrailConfig(sms_daily_budget=None, holdout_share=0.0)
    fast, exact = Guardrails(ARMS, cfg), _Exact(ARMS, cfg)
    aud = _audience(["a", "b"], ["Asia/Kolkata", "UTC"], np.random.default_rng(0))
    t = old.to_pydatetime() - timedelta(minutes=4)
    _same(fast.apply(aud, t, None, reserve=False), exact.apply(aud, t, None, reserve=False))
    assert ("Asia/Kolkata", int(old.value)) not in fast._times_cache
    assert (int(pd.Timestamp(t).value), "Asia/Kolkata") in fast._exact_cache


def test_dst_days_give_the_exact_grids_in_small_and_large_batches():
    cfg = GuardrailConfig(sms_daily_budget=None, holdout_share=0.0)
    fast, exact = Guardrails(ARMS, cfg), _Exact(ARMS, cfg)
    rng = np.random.default_rng(1)
    zones = ["America/New_York", "Australia/Lord_Howe", "Europe/London", "Asia/Shanghai", "America/St_Johns"]
    big = _audience([f"c{i}" for i in range(80)], rng.choice(zones, 80), rng)
    for day in ("2026-03-08", "2026-04-05", "2026-10-04", "2026-11-01", "2026-03-29"):
        for minutes in rng.integers(0, 24 * 60, 6):
            t = pd.Timestamp(day, tz="UTC").to_pydatetime() + timedelta(minutes=int(minutes), seconds=7)
            _same(fast.apply(big, t, None, reserve=False), exact.apply(big, t, None, reserve=False))
            one = big.take(np.array([int(minutes) % 80]))
            _same(fast.apply(one, t, None, reserve=False), exact.apply(one, t, None, reserve=False))
    # the quarter hours around Lord Howe's change of offset (2026-04-04T15:00Z)
    change = datetime(2026, 4, 4, 15, 0, tzinfo=UTC)
    for delta in (-timedelta(minutes=10), timedelta(0), timedelta(microseconds=1), timedelta(minutes=10)):
        _same(fast.apply(big, change + delta, None, reserve=False), exact.apply(big, change + delta, None, reserve=False))


def test_factorize_of_few_zones_equals_pandas():
    values = np.array(["UTC", "Asia/Shanghai", "UTC", "Europe/Berlin", "Asia/Shanghai"], dtype=object)
    codes, uniques = _factorize(values)
    ref_codes, ref_uniques = pd.factorize(pd.Series(values, dtype=object))
    assert codes.tolist() == ref_codes.tolist() and list(uniques) == list(ref_uniques)
    codes, uniques = _factorize(np.array([], dtype=object))
    assert len(codes) == 0 and len(uniques) == 0


def _history(rows) -> SendHistory:
    return SendHistory.from_frame(pd.DataFrame(rows, columns=["customer_id", "channel", "send_at"]))


def test_batch_rows_small_path_equals_pandas():
    hist = _history([("b", "email", pd.Timestamp("2026-06-30T10:00Z")), ("x", "sms", pd.Timestamp("2026-06-30T11:00Z")),
                     ("a", "push", pd.Timestamp("2026-06-29T10:00Z")), ("b", "sms", pd.Timestamp("2026-06-28T10:00Z"))])
    ids = np.array(["a", "b", "c"], dtype=object)
    ref = pd.Index(ids).get_indexer(hist.customers)[hist.code]
    assert _batch_rows(ids, hist).tolist() == ref.tolist()
    many = np.array([f"c{i}" for i in range(100)] + ["b"], dtype=object)  # the pandas path
    assert _batch_rows(many, hist).tolist() == pd.Index(many).get_indexer(hist.customers)[hist.code].tolist()
    assert len(_batch_rows(ids, SendHistory.from_frame(None))) == 0


def test_caps_shortcuts_keep_the_caps():
    t = datetime(2026, 7, 1, 9, 17, tzinfo=UTC)
    rng = np.random.default_rng(2)
    aud = _audience(["a", "b"], ["UTC", "Asia/Shanghai"], rng)
    g = Guardrails(ARMS, GuardrailConfig(sms_daily_budget=None, holdout_share=0.0))
    caps = [i for i, n in enumerate(g.names) if n.startswith("frequency_cap") or ":" in n]
    # no history, or only other customers' sends: no cap acts, same as the full computation
    for hist in (None, _history([("z", "email", pd.Timestamp(t) - pd.Timedelta(hours=2))])):
        e = g.apply(aud, t, hist, reserve=False)
        assert not e.acted[:, caps].any()
    # a send of "a" two hours ago: the 24-hour cap removes a's sends near it, not b's
    hist = _history([("a", "email", pd.Timestamp(t) - pd.Timedelta(hours=2))])
    e = g.apply(aud, t, hist, reserve=False)
    assert e.acted[0, caps].any() and not e.acted[1, caps].any()
    # a cap of zero sends blocks every send even without history
    zero = Guardrails(ARMS, GuardrailConfig(sms_daily_budget=None, holdout_share=0.0, require_consent=False,
                                            require_reachable=False,
                                            frequency_caps=(FrequencyCap(channel=None, max_sends=0, window_hours=24),)))
    e = zero.apply(aud, t, None, reserve=False)
    assert not e.mask[:, ARMS.is_send].any()


def test_context_matrix_of_arrays_equals_the_frame():
    rng = np.random.default_rng(4)
    n = 30
    from policies import context as pc

    names = {*pc.LOG_FEATURES, *pc.RAW_FEATURES, *pc.CYCLIC_FEATURES, *pc.RECENCY_FEATURES, *pc.CONTACT_FEATURES,
             *pc.HOUR_FIT_SOURCE, "avg_order_value"}
    cols = {}
    for name in sorted(names):
        v = rng.exponential(5.0, n) * rng.choice([-0.1, 1, 50], n)
        v[rng.random(n) < 0.2] = np.nan
        cols[name] = v if rng.random() < 0.7 else np.nan_to_num(v).astype(np.int64)
    cols[pc.HOUR_FIT_SOURCE[1]] = rng.random(n)
    cols["orders_total"] = np.array([np.inf, -np.inf, -0.0] + [1.0] * (n - 3))
    cols["avg_order_value"] = np.array([np.inf, -np.inf, np.nan] + [80.0] * (n - 3))
    cols["days_since_last_contact"] = np.array([np.inf, -np.inf, np.nan] + [3.0] * (n - 3))
    cols["timezone"] = np.array(["Asia/Shanghai"] * n, dtype=object)  # extra text columns are ignored
    ref = context_matrix(pd.DataFrame(cols))
    assert ref.shape == (n, len(CONTEXT_COLUMNS))
    assert np.array_equal(context_matrix(cols), ref, equal_nan=True)
    one = {k: v[:1] for k, v in cols.items()}
    assert np.array_equal(context_matrix(one), ref[:1], equal_nan=True)
    # text in a column is coerced as the frame does (NaN), not an error
    text = dict(cols, orders_90d=np.array(["x"] + ["3"] * (n - 1), dtype=object))
    assert np.array_equal(context_matrix(text), context_matrix(pd.DataFrame(text)), equal_nan=True)


def test_log_json_is_what_json_dumps_wrote():
    for obj in ({"no_send": 0.25, "email|pct10|10": 0.75}, ["a", "b"], {}, {"x": 1e-17, "y": 3}):
        assert _dumps(obj) == json.dumps(obj, separators=(",", ":"), allow_nan=False)
    with pytest.raises(ValueError):
        _dumps({"x": float("nan")})

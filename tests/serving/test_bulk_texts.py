"""The bulk path's shortcuts equal the plain computation: chunks scored apart joined as one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.engine import _BulkRows, _joined_scores


def test_chunks_scored_apart_join_as_one():
    n = 6
    customer = {"propensity": np.arange(n) / 10}
    edges = [0, 2, 4, 6]
    chunks = [{"p_convert": np.array([0.5, np.nan]), "p_open": np.array([0.1, np.nan])}, {},
              {"p_convert": np.array([np.nan, 0.25]), "p_open": np.array([np.nan, 0.2])}]
    got = _joined_scores(customer, edges, chunks, n)
    assert list(got) == ["propensity", "p_convert", "p_open"]
    np.testing.assert_array_equal(got["p_convert"], [0.5, np.nan, np.nan, np.nan, np.nan, 0.25])
    np.testing.assert_array_equal(got["p_open"], [0.1, np.nan, np.nan, np.nan, np.nan, 0.2])
    assert _joined_scores(customer, [0, n], [chunks[0]], n) == {**customer, **chunks[0]}


def _part(names, values, pattern):
    k = len(pattern)
    return _BulkRows(columns={"x": list(range(k))}, scores=(names, values, pattern), reasons=[()] * k,
                     acted=[()] * k, versions={})


def test_parts_with_other_score_names_concatenate_by_name():
    a = _part(["propensity"], [[0.1, 0.2]], [1, 1])  # a chunk without a send: no action scores
    b = _part(["propensity", "p_open"], [[0.3], [0.9]], [3])
    c = _part(["propensity", "p_open"], [[0.4], [math.nan]], [1])
    names, values, pattern = _BulkRows.concat([a, b, c]).scores
    assert names == ["propensity", "p_open"]
    assert values[0] == [0.1, 0.2, 0.3, 0.4]
    assert values[1][2] == 0.9 and all(math.isnan(v) for v in values[1][:2] + values[1][3:])
    assert pattern == [1, 1, 3, 1]
    same = _BulkRows.concat([b, c])
    assert same.scores[0] == ["propensity", "p_open"] and same.scores[2] == [3, 1]


def test_chunks_scored_apart_never_hold_a_single_send(monkeypatch):
    import serving.engine as engine_module

    monkeypatch.setattr(engine_module, "BULK_CHUNK", 10)
    assert engine_module._chunk_edges(30) == [0, 10, 20, 30]  # as the writer always got them
    assert engine_module._chunk_edges(45) == [0, 2, 12, 22, 32, 42, 45]  # a large one: a small first chunk
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 120))
        send = rng.random(n) < rng.choice([0.0, 0.01, 0.05, 0.5])
        edges = engine_module._chunk_edges(n, np.cumsum(send))
        assert edges[0] == 0 and edges[-1] == n and set(edges) <= set(engine_module._chunk_edges(n))
        sends = [int(send[lo:hi].sum()) for lo, hi in zip(edges, edges[1:], strict=False)]
        assert len(sends) == 1 or 1 not in sends, (edges, sends)


@pytest.mark.integration
def test_an_audience_scored_and_logged_in_chunks_equals_one_call(prepared_ws, customer_ids, tmp_path, monkeypatch):
    """Chunks scored apart and handed to the writer as they come: the log rows and responses of
    one chunk for everybody, bit for bit (two engines on copies of one workspace, one time)."""
    import serving.engine as engine_module
    from serving.schemas import BatchDecisionRequest
    from tests.serving.test_batch import T0, _copy, _engine, _logged

    ids = customer_ids[:1500]
    out = []
    for k, chunk in enumerate((engine_module.BULK_CHUNK, 128)):
        monkeypatch.setattr(engine_module, "BULK_CHUNK", chunk)
        eng = _engine(_copy(prepared_ws, tmp_path / f"w{k}"))
        try:
            res = eng.decide_batch(BatchDecisionRequest(customer_ids=ids, request_time=T0))
            rows = _logged(eng)
            out.append(([{**d.model_dump(mode="json"), "decision_id": None} for d in res],
                        {c: {**r, "decision_id": None, "logged_at": None} for c, r in rows.items()}))
        finally:
            eng.close()
    assert len(out[0][1]) == len(ids)
    assert any(r["channel"] is not None for r in out[0][1].values())
    assert out[0] == out[1]


def test_finite_score_texts_are_float_reprs():
    from serving.engine import _finite_reprs

    v = np.array([0.1, np.nan, -0.0, 1e-300, np.inf, 2 / 3])
    assert _finite_reprs(v).tolist() == ["0.1", None, "-0.0", "1e-300", None, repr(2 / 3)]
    assert _finite_reprs(np.full(3, np.nan)).tolist() == [None] * 3

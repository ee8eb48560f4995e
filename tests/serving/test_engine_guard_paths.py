"""The engine's guardrail inputs keep their values on the fast paths: the audience built by one
concatenation equals the general per-column stack (int, bool, float, missing and odd columns,
NaN, one customer and many), and the request limits memoised per kind remove the same arms."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from core.types import CATEGORIES, CHANNELS, Channel
from policies.arms import ArmSpace
from policies.config import PolicyLayerConfig
from serving.engine import CH, DecisionEngine, Request

ARMS = ArmSpace.from_config(PolicyLayerConfig().arms)
NAMES = DecisionEngine._AUDIENCE_COLUMNS


def _stacked(ids, cols):
    """The audience's flags as the general stack computes them (np.asarray per column)."""
    n = len(ids)
    m = np.array([np.asarray(cols[c], dtype=np.float64) if c in cols else np.zeros(n) for c in NAMES],
                 dtype=np.float64).reshape(len(NAMES), n)
    k = len(CATEGORIES)
    orders, views = m[8:8 + k], m[8 + k:]
    interest = ((orders > orders.min(axis=0) + 1e-9) | (views > views.min(axis=0) + 1e-9)).T
    return (m[:4] > 0).T, (m[4:8] > 0).T, interest


def _cols(rng, n: int) -> dict:
    cols: dict = {"timezone": np.array(rng.choice(["UTC", "Asia/Shanghai", "Not/AZone"], n), dtype=object)}
    for c in CH:
        cols[f"consent_{c}"] = rng.integers(0, 2, n)  # int64, as the contact refresh leaves them
        cols[f"reachable_{c}"] = rng.random(n) < 0.7
    for c in CATEGORIES:
        for kind in ("order_share", "view_share"):
            v = np.round(rng.random(n), 1)
            v[rng.random(n) < 0.1] = np.nan
            cols[f"{kind}_{c}"] = v
    return cols


@pytest.mark.parametrize("n", [1, 2, 40])
def test_the_audience_equals_the_per_column_stack(n):
    engine = DecisionEngine.__new__(DecisionEngine)
    rng = np.random.default_rng(n)
    for case in range(8):
        ids = [f"c{i}" for i in range(n)]
        cols = _cols(rng, n)
        if case == 1:
            del cols[f"reachable_{CH[2]}"]  # a missing column: zeros
        if case == 2:
            cols[f"consent_{CH[1]}"] = np.array([None] * n, dtype=object)  # object: NaN, not an error
        if case == 3:
            cols[f"order_share_{CATEGORIES[0]}"] = list(rng.random(n))  # a list
        if case == 4:
            cols[f"view_share_{CATEGORIES[1]}"] = np.array([str(v) for v in rng.random(n)])  # text numbers
        if case == 5:
            cols[f"consent_{CH[0]}"] = rng.random(n).astype(np.float32)
        aud = engine._audience(ids, cols)
        consent, reachable, interest = _stacked(ids, cols)
        assert np.array_equal(aud.consent, consent) and np.array_equal(aud.reachable, reachable)
        assert np.array_equal(aud.category_interest, interest)
        assert aud.timezone.tolist() == [z if z != "Not/AZone" else "UTC" for z in cols["timezone"]]
        assert aud.customer_id.tolist() == ids


def test_ragged_columns_are_refused_as_before():
    engine = DecisionEngine.__new__(DecisionEngine)
    cols = _cols(np.random.default_rng(0), 3)
    cols[f"consent_{CH[0]}"] = np.ones(4)
    cols[f"consent_{CH[1]}"] = np.ones(2)
    with pytest.raises(ValueError):
        engine._audience(["a", "b", "c"], cols)


def test_memoised_request_limits_remove_the_same_arms():
    engine = DecisionEngine.__new__(DecisionEngine)
    engine.arm_space = ARMS
    t = datetime(2026, 7, 1, tzinfo=UTC)
    rng = np.random.default_rng(1)
    kinds = [dict(channels=(Channel.EMAIL, Channel.SMS)), dict(offers=(ARMS.offers[0],)), dict(window=(9, 14)),
             dict(allow_no_send=False), dict(channels=(CHANNELS[3],), window=(8, 22), allow_no_send=False), {}]
    for _ in range(3):  # the second and third rounds read the memo
        reqs = [Request(f"c{i}", t, **kinds[int(rng.integers(0, len(kinds)))]) for i in range(12)]
        start = rng.random((12, ARMS.n_arms)) < 0.5
        start[:, 0] = True
        for batch in (reqs, reqs[:1]):
            mask = start[: len(batch)].copy()
            engine._restrict(mask, batch)
            for i, r in enumerate(batch):
                want = start[i].copy()
                keep = np.ones(ARMS.n_arms, bool)
                send = ARMS.is_send
                if r.channels:
                    keep &= ~send | np.isin(ARMS.channel, [CHANNELS.index(c) for c in r.channels])
                if r.offers:
                    keep &= ~send | np.isin(ARMS.offer, [ARMS.catalog.code(o) for o in r.offers])
                if r.window:
                    keep &= ~send | ((ARMS.slot >= r.window[0]) & (ARMS.slot < r.window[1]))
                want &= keep
                if not r.allow_no_send and want[send].any():
                    want[0] = False
                if not want.any():
                    want[0] = True
                assert np.array_equal(mask[i], want)

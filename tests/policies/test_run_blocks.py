"""policies.base.run_blocks: every block once, the same numbers as serially, errors raised, the
BLAS thread limit restored."""

from __future__ import annotations

import numpy as np
import pytest

from core.types import Channel
from policies import bandits, base
from policies.arms import ArmSpace
from policies.bandits import ThompsonSampling


def test_every_block_runs_once_and_errors_reach_the_caller():
    out = np.zeros(1000)
    base.run_blocks(lambda k: out.__setitem__(slice(k, k + 10), k), range(0, 1000, 10))
    np.testing.assert_array_equal(out, np.repeat(np.arange(0, 1000, 10), 10))
    seen: list = []
    base.run_blocks(seen.append, [5])
    assert seen == [5]

    def boom(k):
        if k == 7:
            raise ValueError("block 7")

    with pytest.raises(ValueError, match="block 7"):
        base.run_blocks(boom, list(range(20)))
    assert base._blas["users"] == 0 and base._blas["limiter"] is None


def test_blas_threads_are_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    inside: list = []
    base.run_blocks(lambda k: inside.append(
        [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]), range(3))
    assert all(t == 1 for seen in inside for t in seen)
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == before


def test_thompson_distribution_on_two_threads_equals_serial(monkeypatch):
    arms = ArmSpace((Channel("email"), Channel("sms")), ("pct10", "free_shipping"), (9, 18))
    rng = np.random.default_rng(3)
    n = 70_000  # three chunks of the policy's 8M (row, draw, arm) values
    X = rng.standard_normal((n, 3))
    policy = ThompsonSampling(arms, seed=1).initialise(X)
    E = rng.random((n, arms.n_arms)) < 0.6
    E[:, 0] = True
    calls: list = []

    def counted(work, items):
        calls.append(len(items))
        base.run_blocks(work, items)

    monkeypatch.setattr(bandits, "run_blocks", counted)
    both = policy.distribution(X, E)
    assert calls == [3]
    monkeypatch.setattr(bandits, "run_blocks", lambda work, items: [work(k) for k in items])
    np.testing.assert_array_equal(both, policy.distribution(X, E))

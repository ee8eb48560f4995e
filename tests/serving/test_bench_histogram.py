"""bench/serving.py reads the engine's p50 from the service's latency histogram: the parser and the
interpolated quantile, on a real Prometheus exposition with the service's buckets."""

from __future__ import annotations

import numpy as np
import pytest


def _exposition(values, buckets, name: str) -> str:
    """The text /metrics would show for ``values`` observed in a histogram ``name`` (a name of its
    own per call: in BentoML's multiprocess mode, which an earlier test may have switched on in
    this process, histograms of one name share their values)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    reg = CollectorRegistry()
    h = Histogram(name, "engine time", labelnames=["endpoint"], buckets=buckets, registry=reg)
    for v in values:
        h.labels(endpoint="decide").observe(v)
    h.labels(endpoint="outcome").observe(5.0)  # another endpoint: not counted
    return generate_latest(reg).decode()


def test_p50_of_the_gained_observations_within_a_bucket():
    from bench.serving import hist_quantile, parse_histogram
    from serving.service import LATENCY_BUCKETS as buckets

    rng = np.random.default_rng(0)
    warm = rng.uniform(0.005, 0.009, 1500)  # before the measurement (most of all): must not count
    measured = np.concatenate([rng.normal(0.00115, 0.00008, 900), rng.uniform(0.003, 0.012, 100)])
    before = parse_histogram(_exposition(warm, buckets, "t_before_seconds"), name="t_before_seconds")
    after = parse_histogram(_exposition(np.concatenate([warm, measured]), buckets, "t_after_seconds"),
                            name="t_after_seconds")
    assert after[float("inf")] == 2500 and after[-1.0] == pytest.approx(warm.sum() + measured.sum())
    p50 = hist_quantile(before, after, 0.5)
    # within the quarter-millisecond bucket of the true median, near it
    assert abs(p50 - np.median(measured)) < 0.0001
    assert 0.0005 < hist_quantile(before, after, 0.1) < p50 < hist_quantile(before, after, 0.9)
    assert hist_quantile(after, after, 0.5) is None  # nothing observed in between
    # the mean alone would say more than the median: the tail pulls it up
    assert (after[-1.0] - before[-1.0]) / 1000 > np.median(measured) + 0.0002


def test_quantile_in_the_open_last_bucket_is_unknown():
    from bench.serving import hist_quantile

    assert hist_quantile({}, {0.001: 1.0, 0.002: 2.0, float("inf"): 10.0}, 0.5) is None
    assert hist_quantile({}, {0.001: 6.0, 0.002: 8.0, float("inf"): 10.0}, 0.5) == pytest.approx(0.001 * 5 / 6)

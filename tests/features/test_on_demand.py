"""features.compute.on_demand_arrays: the whole-block computation gives, bit for bit, the
per-feature formulas, and one row at a time (a single decide) gives what the same row gets inside
a large batch, NaN, missing inputs, bad time zones and DST included."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.compute import (
    DAY,
    ON_DEMAND_FEATURES,
    ON_DEMAND_INPUTS,
    SINCE_INPUTS,
    FeatureConfig,
    on_demand_arrays,
)

ZONES = np.array(["Asia/Shanghai", "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe",
                  "Asia/Kathmandu", None, "", "Not/AZone", "UTC"], dtype=object)


def _case(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    # request times over two years (both DST switches), some at fractional seconds
    req = 1_767_225_600 + rng.integers(0, 2 * 365 * DAY, n) + rng.choice([0.0, 0.25, 0.999999], n)
    tz = rng.choice(ZONES, n)
    inputs = {}
    for col in SINCE_INPUTS:
        v = req - rng.uniform(-3 * DAY, 900 * DAY, n)  # some in the future (clipped at 0)
        v[rng.random(n) < 0.2] = np.nan  # never happened
        same = rng.random(n) < 0.05
        v[same] = req[same]  # at the request time exactly: 0 days
        inputs[col] = v
    inputs.pop(SINCE_INPUTS[-1])  # an input the caller does not have: 'never' for everyone
    return req, tz, inputs


def _reference(req: np.ndarray, tz: np.ndarray, inputs: dict[str, np.ndarray], c: FeatureConfig) -> dict:
    """The features as documented, one column and one row at a time (pandas' tz database)."""
    out = {n: [] for n in ON_DEMAND_FEATURES}
    for i in range(len(req)):
        zone = tz[i] if isinstance(tz[i], str) and tz[i] and tz[i] != "Not/AZone" else c.default_timezone
        whole = int(np.floor(req[i]))
        local = pd.Timestamp(whole, unit="s", tz="UTC").tz_convert(ZoneInfo(zone))
        off = int(local.utcoffset().total_seconds())
        out["local_hour"].append(local.hour)
        out["local_weekday"].append(local.weekday())
        out["is_weekend"].append(int(local.weekday() >= 5))
        out["utc_offset_hours"].append(off / 3600.0)
    for name, col in zip(ON_DEMAND_FEATURES[4:], SINCE_INPUTS, strict=True):
        never = 0.0 if name == "tenure_days" else c.never_days
        v = inputs.get(col, np.full(len(req), np.nan))
        d = np.round((req - v) / DAY, 6)
        out[name] = np.where(np.isnan(d), never, np.maximum(d, 0.0))
    return out


def _bits(a) -> list:
    a = np.asarray(a)
    return (a.view(np.int64) if a.dtype == np.float64 else a).tolist()


def test_block_equals_the_per_feature_formulas_bit_for_bit():
    c = FeatureConfig()
    req, tz, inputs = _case(3000, seed=7)
    got = on_demand_arrays(req, tz, inputs, c)
    want = _reference(req, tz, inputs, c)
    assert list(got) == list(ON_DEMAND_FEATURES)
    for name in ON_DEMAND_FEATURES:
        assert got[name].shape == (len(req),), name
        assert got[name].dtype == (np.float64 if name == "utc_offset_hours" or name in ON_DEMAND_FEATURES[4:]
                                   else np.int64), name
        assert _bits(got[name]) == _bits(np.asarray(want[name], dtype=got[name].dtype)), name


def test_one_row_at_a_time_equals_the_batch_bit_for_bit():
    c = FeatureConfig(never_days=500.0, default_timezone="America/Los_Angeles")
    req, tz, inputs = _case(400, seed=11)
    batch = on_demand_arrays(req, tz, inputs, c)
    for i in range(len(req)):
        one = on_demand_arrays(req[i:i + 1], tz[i:i + 1], {k: v[i:i + 1] for k, v in inputs.items()}, c)
        for name in ON_DEMAND_FEATURES:
            assert one[name].dtype == batch[name].dtype and _bits(one[name]) == _bits(batch[name][i:i + 1]), \
                (i, name)
    # the empty read, and a request time that is not a number (NaN counts as the epoch, as before)
    assert all(len(v) == 0 for v in on_demand_arrays(np.zeros(0), np.zeros(0, object), {}, c).values())
    nan = on_demand_arrays(np.array([np.nan]), np.array(["UTC"], object), {"signup_ts": np.array([0.0])}, c)
    assert nan["local_hour"].tolist() == [0] and nan["local_weekday"].tolist() == [3]
    assert nan["tenure_days"].tolist() == [0.0] and nan["days_since_last_order"].tolist() == [500.0]


def test_inputs_are_the_documented_ones():
    assert set(SINCE_INPUTS) | {"timezone"} == set(ON_DEMAND_INPUTS)


def test_one_row_in_python_numbers_is_the_block_bit_for_bit_at_the_edges():
    """on_demand_one (a single decide's request features, without numpy) against the vector block
    on rows a random draw rarely hits: a stored time a hair after the request (rounds to -0.0,
    which the block's maximum turns into +0.0), half-way roundings, infinities, huge values."""
    from features.compute import on_demand_block, on_demand_one

    c = FeatureConfig(never_days=321.0)
    rng = np.random.default_rng(5)
    n = 3000
    req = 1_767_225_600 + rng.integers(0, 2 * 365 * DAY, n) + rng.choice([0.0, 0.5, 0.999999], n)
    tz = rng.choice(ZONES, n)
    delta = rng.choice([1e-7, -1e-7, -0.01, 0.0432, -0.0432, -0.043201, 0.5 * DAY / 1e6, -0.5 * DAY / 1e6,
                        np.inf, -np.inf, np.nan, 1e300, -1e300, 3.0 * DAY, 1e-300], (len(SINCE_INPUTS), n))
    # and whole seconds (stored times are): (req - v) / DAY then often lands where rounding half
    # of the sixth decimal differs between rint(x * 1e6) / 1e6 and a decimal round(x, 6)
    whole = rng.random((len(SINCE_INPUTS), n)) < 0.5
    delta[whole] = rng.integers(-DAY, 900 * DAY, int(whole.sum())).astype(np.float64)
    since_inputs = req - delta
    since_inputs[:, ::7] = rng.choice([np.inf, -np.inf, np.nan], (len(SINCE_INPUTS), len(range(0, n, 7))))
    local, offset, since = on_demand_block(req, tz, since_inputs, c)
    block = np.vstack([local.astype(np.float64), offset[None], since])
    for i in range(n):
        one = on_demand_one(float(req[i]), tz[i], since_inputs[:, i].tolist(), c)
        assert [type(v) for v in one[:3]] == [int, int, int]
        assert _bits(np.array(one, dtype=np.float64)) == _bits(block[:, i]), i
    # what it leaves to the block: a request time that is not a finite number of seconds
    for bad in (np.nan, np.inf, -np.inf, 2.0 ** 63):
        assert on_demand_one(bad, "UTC", [0.0] * len(SINCE_INPUTS), c) is None
    # and the one-row block (a single decide through on_demand_block) is the same as a row of the batch
    for i in range(0, n, 97):
        got = on_demand_block(req[i:i + 1], tz[i:i + 1], since_inputs[:, i:i + 1], c)
        assert [g.dtype for g in got] == [np.int64, np.float64, np.float64]
        assert _bits(np.vstack([got[0].astype(np.float64), got[1][None], got[2]])) == _bits(block[:, i:i + 1])

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

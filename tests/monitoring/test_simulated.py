"""Verification on the simulator (slow: ~30 s of CPU; 67 s wall on a 2-core machine at load 9-10).

Ten seeds of a 4000-customer world, a randomised policy with a 10 % holdout, 10 logged days after
a 14-day unlogged warm-up. The planted shift: from the 8th logged day, the e-mail open log-odds of
the Asia/Shanghai segment (~70 % of customers) drop by 1.5. The policy-health analysis runs as a
live monitor would, at 00:00 UTC of each of the 3 days after the shift starts (current window =
the last 3 days, previous = the 6 days before; outcomes as of that time, matured decisions only).

Claims: the shift raises an alarm within 3 days in >= 9 of 10 seeds; the same worlds without the
shift raise no alarm at those times in >= 9 of 10 seeds; the holdout lift interval (95 %) of the
reward per customer-day covers the true incremental reward in >= 9 of 10 seeds.

Cost: the logs are written with ``simulate_decision_log(validate=False)`` (the same rows, inserted
without a pydantic record each; test_logdata.py checks the two paths write the same log), and each
log is read once (``read_window``'s fast path) for the three monitoring times and the lift.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from monitoring.config import DriftConfig
from monitoring.drift import analyse, policy_alarms
from monitoring.effect import holdout_lift
from monitoring.logdata import as_of, read_window
from monitoring.simulate import simulate_decision_log
from policies.reward import RewardConfig
from world import Shift, World, WorldConfig

pytestmark = pytest.mark.slow

SEEDS = range(10)
HISTORY, WARMUP, DAYS, SHIFT_DAY, DETECT_DAYS = 30, 14, 10, 7, 3
CFG = DriftConfig(window_days=3, previous_days=6, evidently=False)


def _monitor(full: pd.DataFrame, sim) -> list[bool]:
    """Alarm or not at 00:00 UTC of each of the DETECT_DAYS days after the shift start; ``full``:
    the whole log, read once."""
    out = []
    for k in range(1, DETECT_DAYS + 1):
        until = pd.Timestamp(sim.start) + pd.Timedelta(days=SHIFT_DAY + k)
        since = until - pd.Timedelta(days=CFG.window_days)
        frame = as_of(full, until, RewardConfig())
        frame = frame[(frame["decided_at"] >= since - pd.Timedelta(days=CFG.previous_days))
                      & (frame["decided_at"] < until)]
        out.append(bool(policy_alarms(analyse(frame, since, until, CFG), CFG)))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    results = []
    for seed in SEEDS:
        base = World.generate(WorldConfig(customers=4000, days=HISTORY, seed=seed))
        state = base.initial_state()
        shift = Shift(start_day=HISTORY + WARMUP + SHIFT_DAY, timezone="Asia/Shanghai",
                      affinity_delta={"email": -1.5})
        row = {"seed": seed}
        for name, shifts in (("quiet", []), ("shifted", [shift])):
            world = World(base.config.model_copy(update={"shifts": shifts}), base.persons, state)
            sim = simulate_decision_log(world, root / f"{name}{seed}.sqlite", days=DAYS, seed=seed,
                                        warmup_days=WARMUP, validate=False)
            frame = read_window(sim.path, None, None, sim.end + timedelta(days=2), RewardConfig())
            row[name] = _monitor(frame, sim)
            if name == "quiet":
                lift = holdout_lift(frame[frame["matured"]], "reward")
                row["lift_ci"] = lift["ci"]
                row["true_incremental"] = sim.true_incremental["reward"]
        results.append(row)
        print(row)
    return results


def test_planted_shift_detected_within_3_days(runs):
    detected = sum(any(r["shifted"]) for r in runs)
    assert detected >= 9, [r["shifted"] for r in runs]


def test_no_alarm_without_drift(runs):
    quiet = sum(not any(r["quiet"]) for r in runs)
    assert quiet >= 9, [r["quiet"] for r in runs]


def test_holdout_interval_covers_true_incremental_value(runs):
    covered = sum(r["lift_ci"][0] <= r["true_incremental"] <= r["lift_ci"][1] for r in runs)
    assert covered >= 9, [(r["lift_ci"], r["true_incremental"]) for r in runs]

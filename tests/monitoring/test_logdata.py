"""The fast window reader returns exactly what DecisionLog.joined returns."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from monitoring.logdata import LIGHT_COLUMNS, read_window
from policies.log import DecisionLog
from policies.reward import RewardConfig


def _joined(path, since, until, now, reward):
    log = DecisionLog(path)
    try:
        frame = log.joined(reward, now, since=since, until=until, parse_json=False, columns=LIGHT_COLUMNS)
    finally:
        log.close()
    return frame.drop(columns=["decision_id"])


@pytest.mark.parametrize("window", ["all", "middle", "empty"])
@pytest.mark.parametrize("attribution_hours", [72.0, 6.0])
def test_read_window_equals_joined(shifted_log, window, attribution_hours):
    ws, sim = shifted_log
    path = ws.decisions / "decisions.sqlite"
    reward = RewardConfig(attribution_hours=attribution_hours)
    since, until = {"all": (None, None), "middle": (sim.start + timedelta(days=2), sim.start + timedelta(days=4)),
                    "empty": (sim.end + timedelta(days=5), None)}[window]
    now = sim.start + timedelta(days=5, hours=7)  # with 72 h, some decisions matured, some not
    want = _joined(path, since, until, now, reward)
    got = read_window(path, since, until, now, reward)
    assert list(got.columns) == [*want.columns, "day", "sent", "customer_code"]
    assert got.groupby("customer_id")["customer_code"].nunique().eq(1).all()
    assert got["customer_code"].nunique() == got["customer_id"].nunique()
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=True)
    if window != "empty":
        assert len(got) > 1000 and got["opened"].any() and got["converted"].any() and got["send_slot"].isna().any()
        assert got["matured"].any() and (window == "middle" or attribution_hours < 24 or not got["matured"].all())
    assert (got["sent"] == got["channel"].notna()).all()


def test_fast_simulated_log_holds_what_the_validated_one_holds(tmp_path):
    import sqlite3

    from monitoring.simulate import simulate_decision_log
    from policies.log import STORED_COLUMNS
    from world import World, WorldConfig

    world = World.generate(WorldConfig(customers=200, days=10, seed=2))
    tables = []
    for validate in (True, False):
        path = tmp_path / f"{validate}.sqlite"
        sim = simulate_decision_log(world, path, days=3, seed=2, warmup_days=2, log_distribution=True,
                                    validate=validate)
        with sqlite3.connect(path) as conn:
            stored = [c for c in STORED_COLUMNS if c != "logged_at"]  # the time of writing differs
            decisions = conn.execute(f"SELECT {', '.join(stored)} FROM decisions ORDER BY seq").fetchall()
            outcomes = conn.execute("SELECT * FROM outcomes ORDER BY rowid").fetchall()
            layouts = conn.execute("SELECT * FROM context_layouts ORDER BY id").fetchall()
        tables.append((decisions, [r[:-1] for r in outcomes], layouts, sim.true_incremental))
    assert len(tables[0][0]) == 600 and len(tables[0][1]) > 50
    assert tables[0] == tables[1]


def test_read_window_health_columns_only(shifted_log):
    from monitoring.logdata import HEALTH_COLUMNS

    ws, sim = shifted_log
    path = ws.decisions / "decisions.sqlite"
    full = read_window(path, None, None, sim.end, RewardConfig())
    part = read_window(path, None, None, sim.end, RewardConfig(), HEALTH_COLUMNS)
    assert "customer_id" not in part and "customer_code" not in part and "policy" not in part
    pd.testing.assert_frame_equal(part, full[part.columns])

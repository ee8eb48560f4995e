"""Small simulated decision logs shared by the monitoring tests."""

from __future__ import annotations

import pytest

from core.workspace import Workspace
from monitoring.simulate import simulate_decision_log
from world import Shift, World, WorldConfig

HISTORY_DAYS, WARMUP, DAYS = 30, 7, 6


def _make(root, shifts, seed=5):
    ws = Workspace(root).ensure()
    base = World.generate(WorldConfig(customers=1500, days=HISTORY_DAYS, seed=seed))
    world = World(base.config.model_copy(update={"shifts": shifts}), base.persons, base.initial_state())
    sim = simulate_decision_log(world, ws.decisions / "decisions.sqlite", days=DAYS, seed=seed,
                                warmup_days=WARMUP, log_distribution=True)
    ws.reports.mkdir(parents=True, exist_ok=True)
    sim.reference.to_parquet(ws.reports / "reference_features.parquet")
    return ws, sim


@pytest.fixture(scope="session")
def quiet_log(tmp_path_factory):
    """A world without drift: 1500 customers, 6 logged days."""
    return _make(tmp_path_factory.mktemp("quiet") / "ws", [])


@pytest.fixture(scope="session")
def shifted_log(tmp_path_factory):
    """The same world, where every channel's open log-odds drop by 3 from the 4th logged day."""
    shift = Shift(start_day=HISTORY_DAYS + WARMUP + 3, affinity_delta={c: -3.0 for c in
                                                                      ("sms", "email", "wechat", "app_push")})
    return _make(tmp_path_factory.mktemp("shifted") / "ws", [shift])

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_profiles  # noqa: E402

from core.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="module")
def synthetic_ws(tmp_path_factory) -> Workspace:
    """A small profiles folder with orders and logged campaign sends (no simulator truth)."""
    ws = Workspace(tmp_path_factory.mktemp("train") / "ws").ensure()
    make_profiles(ws.profiles, n=1200, seed=0, campaigns=True)
    return ws


@pytest.fixture(scope="module")
def orders_only_ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("orders_only") / "ws").ensure()
    make_profiles(ws.profiles, n=1200, seed=1, campaigns=False)
    return ws


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Workspace:
    """A small simulated world with its truth and profiles (shared by the notebooks and the
    truth-based diagnostics; both only read the sources and the truth)."""
    from features.profiles import build_profiles
    from world.config import WorldConfig
    from world.world import World

    ws = Workspace(tmp_path_factory.mktemp("small_world") / "ws").ensure()
    World.generate(WorldConfig(customers=1500, days=180, seed=3)).write(ws)
    build_profiles(ws.raw, ws.profiles, truth_dir=ws.truth)
    return ws

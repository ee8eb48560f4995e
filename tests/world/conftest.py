"""Small simulated worlds shared by the world tests (generated once per session)."""

from __future__ import annotations

import pytest

from core.workspace import Workspace
from world import World, WorldConfig

SMALL = {"customers": 2000, "days": 90, "seed": 11}


@pytest.fixture(scope="session")
def small_config() -> WorldConfig:
    return WorldConfig(**SMALL)


@pytest.fixture(scope="session")
def written_world(tmp_path_factory, small_config):
    """(world, workspace, summary) of a small world written as Parquet."""
    ws = Workspace(tmp_path_factory.mktemp("world") / "ws").ensure()
    world = World.generate(small_config)
    summary = world.write(ws)
    return world, ws, summary

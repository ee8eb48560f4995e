"""The notebooks run top to bottom on a small simulated world (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from core.workspace import Workspace
    from features.profiles import build_profiles
    from world.config import WorldConfig
    from world.world import World

    ws = Workspace(tmp_path_factory.mktemp("nb") / "ws").ensure()
    World.generate(WorldConfig(customers=1500, days=180, seed=3)).write(ws)
    build_profiles(ws.raw, ws.profiles, truth_dir=ws.truth)
    return ws


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_explore_profiles_and_features.ipynb", "02_train_and_compare.ipynb"])
def test_notebook_runs_top_to_bottom(name, small_world, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DECISIONING_HOME", str(small_world.root))
    monkeypatch.setenv("NOTEBOOK_TRIALS", "0")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors

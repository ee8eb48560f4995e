"""The notebooks run top to bottom on a small simulated world (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


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

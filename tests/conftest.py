"""Shared fixtures: every test that writes state gets its own workspace."""

from __future__ import annotations

import pytest

from core.workspace import Workspace


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws").ensure()

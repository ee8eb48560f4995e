"""Fixtures of the profiles tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def raw(workspace) -> Path:
    """The workspace's raw folder (created empty)."""
    workspace.raw.mkdir(parents=True, exist_ok=True)
    return workspace.raw

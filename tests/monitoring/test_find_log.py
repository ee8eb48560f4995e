from __future__ import annotations

import os

import pytest

from core.errors import WorkspaceError
from monitoring.logdata import find_log


def test_workspace_log_first_then_newest_journey_log_never_a_budget_ledger(workspace):
    with pytest.raises(WorkspaceError, match="no decision log"):
        find_log(workspace)
    workspace.journeys.mkdir(parents=True)
    old, new = workspace.journeys / "journey-a-s1.sqlite", workspace.journeys / "journey-b-s1.sqlite"
    ledger = workspace.journeys / "journey-b-s1-policy-budget.sqlite"
    for i, p in enumerate((old, new, ledger)):
        p.write_bytes(b"")
        os.utime(p, ns=(10**18 + i, 10**18 + i))
    assert find_log(workspace) == new
    workspace.decision_log.write_bytes(b"")
    assert find_log(workspace) == workspace.decision_log

"""The demo's own decisions (no server): the challenger is promoted only when the paired DR lift
over the champion's logged value is clearly above 0, and a new demo sets the previous run's
service state aside instead of letting it cap the new journey."""

from __future__ import annotations

from decisioning.commands.demo import _set_aside_service_state, gate


def _ope(value, lo, hi, dr=3.5, logged=3.0, ess=500.0):
    return {"dr": {"value": dr, "ci_low": dr - 1, "ci_high": dr + 1}, "logged_value": logged, "n": 1000,
            "ess": ess, "lift_over_logged": {"value": value, "ci_low": lo, "ci_high": hi}}


def test_promoted_only_on_a_clear_win():
    ok, why = gate(_ope(0.2, 0.05, 0.35))
    assert ok and "above 0" in why
    ok, why = gate(_ope(0.2, 0.05, 0.35, ess=5.0))  # a clear lift on too little overlap is not trusted
    assert not ok and "too little overlap" in why


def test_not_promoted_when_the_lift_interval_includes_or_is_below_zero():
    ok, why = gate(_ope(0.2, -0.01, 0.4))
    assert not ok and "includes 0" in why and "champion stays" in why
    ok, why = gate(_ope(-0.3, -0.5, -0.1))
    assert not ok and "below 0" in why
    ok, why = gate({"dr": None, "dr_reason": "no context", "logged_value": 3.0})
    assert not ok and "no context" in why


def test_previous_service_state_is_set_aside(workspace):
    assert _set_aside_service_state(workspace) is None
    workspace.decisions.mkdir(parents=True, exist_ok=True)
    (workspace.decisions / "decisions.sqlite").write_bytes(b"old")
    (workspace.decisions / "budget.sqlite").write_bytes(b"old")
    (workspace.root / "policies").mkdir()
    (workspace.root / "policies" / "thompson.pkl").write_bytes(b"old")
    moved = _set_aside_service_state(workspace)
    assert moved is not None
    assert not (workspace.decisions / "decisions.sqlite").exists()
    assert not (workspace.root / "policies").exists()
    from pathlib import Path

    assert (Path(moved) / "decisions.sqlite").read_bytes() == b"old"
    assert (Path(moved) / "policies" / "thompson.pkl").is_file()

"""The demo's own decisions (no server): the challenger policy is promoted only when its
doubly-robust interval lies above the champion's logged value, and a new demo sets the previous
run's service state aside instead of letting it cap the new journey."""

from __future__ import annotations

import pickle

from decisioning.commands.demo import CHALLENGER, Demo, _promotion, _set_aside_service_state


def _demo(workspace, ope: dict) -> Demo:
    cand = workspace.root / "policies" / f"{CHALLENGER}.candidate.pkl"
    cand.parent.mkdir(parents=True, exist_ok=True)
    cand.write_bytes(pickle.dumps({"a": "policy"}))
    d = Demo(workspace, seed=0)
    d.done = {"ope": ope, "refit": {"path": str(cand)}}
    return d


def test_promoted_only_when_the_interval_is_above_the_logged_value(workspace):
    win = _promotion(_demo(workspace, {"dr": {"value": 3.5, "ci_low": 3.2, "ci_high": 3.9}, "logged_value": 3.0}))
    assert win["promoted"] and "above" in win["reason"]
    assert (workspace.root / "policies" / f"{CHALLENGER}.pkl").is_file()
    assert CHALLENGER in (workspace.root / "serving-promoted.yaml").read_text()


def test_not_promoted_when_the_interval_overlaps_or_is_below(workspace):
    overlap = _promotion(_demo(workspace, {"dr": {"value": 3.5, "ci_low": 2.7, "ci_high": 9.4},
                                           "logged_value": 3.0}))
    assert not overlap["promoted"] and "overlaps" in overlap["reason"]
    below = _promotion(_demo(workspace, {"dr": {"value": 0.5, "ci_low": -5.9, "ci_high": 2.6}, "logged_value": 3.3}))
    assert not below["promoted"] and "below" in below["reason"]
    missing = _promotion(_demo(workspace, {"dr": None, "dr_reason": "no context", "logged_value": 3.0}))
    assert not missing["promoted"] and "no context" in missing["reason"]
    assert not (workspace.root / "policies" / f"{CHALLENGER}.pkl").exists()


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

"""The journey on a tiny simulated world, end to end through the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.workspace import Workspace
from decisioning.cli import main

pytest.importorskip("world", reason="the simulator (world/) is not installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Workspace:
    from features.profiles import build_profiles
    from world import World, WorldConfig

    ws = Workspace(tmp_path_factory.mktemp("journey") / "ws").ensure()
    World.generate(WorldConfig(customers=400, days=90, seed=5)).write(ws)
    build_profiles(ws.raw, ws.profiles, truth_dir=ws.truth)
    return ws


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["journey", *args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_journey_json_end_to_end(tiny, capsys):
    code, out, err = _run(capsys, "--days", "3", "--seed", "2", "--workspace", str(tiny.root), "--json")
    assert code == 0, err
    result = json.loads(out)
    for lane in ("policy", "random", "rule", "oracle", "no_send"):
        assert {"value", "expected_value", "sends_per_day", "unsubscribes"} <= set(result[lane])
    assert result["guardrail_violations"] == 0, result["violations"]
    n = result["customers"]
    assert 300 < n <= 500 and result["days"] == 3
    assert result["decisions_logged"] == 3 * n  # every decision of the policy is logged
    assert result["no_send"]["sends_per_day"] == 0
    # the oracle is the best possible per customer-day in expectation (myopically, day one exactly)
    assert result["oracle"]["expected_value_per_day"][0] >= max(
        result[k]["expected_value_per_day"][0] for k in ("policy", "random", "rule", "no_send")) - 1e-9
    assert "day 1/3" in err and "day 3/3" in err  # progress per day on stderr
    # the log holds what the JSON says, with real propensities and the holdout never contacted
    from policies.log import DecisionLog

    log = DecisionLog(result["log"])
    d = log.decisions()
    assert len(d) == 3 * n
    assert ((d["propensity"] > 0) & (d["propensity"] <= 1)).all()
    assert d.loc[d["holdout"], "channel"].isna().all()
    dist_ok = d["distribution"].map(lambda m: abs(sum(m.values()) - 1) < 1e-9)
    assert dist_ok.all()
    assert (d.apply(lambda r: r["distribution"][r["action"]] == pytest.approx(r["propensity"]), axis=1)).all()
    assert len(log.outcomes()) > 0


def test_journey_same_seed_same_result(tiny, capsys):
    runs = []
    for _ in range(2):
        code, out, err = _run(capsys, "--days", "2", "--seed", "4", "--customers", "200", "--policy", "greedy",
                              "--workspace", str(tiny.root), "--json")
        assert code == 0, err
        r = json.loads(out)
        runs.append({k: r[k]["value"] for k in ("policy", "random", "rule", "oracle")})
    assert runs[0] == runs[1]


def test_journey_errors_are_one_line(tmp_path, capsys):
    code, out, err = _run(capsys, "--days", "2", "--workspace", str(tmp_path / "nothing"))
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    code, _, err = _run(capsys, "--days", "0", "--workspace", str(tmp_path))
    assert code == 2 and "Traceback" not in err
    ws = Workspace(tmp_path / "ws").ensure()
    code, _, err = _run(capsys, "--days", "1", "--workspace", str(ws.root))
    assert code == 2 and "error:" in err and "Traceback" not in err


def test_journey_unknown_policy_is_rejected(tiny, capsys):
    code, _, err = _run(capsys, "--days", "1", "--policy", "nope", "--workspace", str(tiny.root))
    assert code == 2 and "unknown policy" in err


def test_audit_counts_the_policy_logs_sends(tiny, capsys):
    """The journey's violation count comes from re-checking the logged sends."""
    code, out, err = _run(capsys, "--days", "2", "--seed", "1", "--customers", "300", "--workspace",
                          str(tiny.root), "--json")
    assert code == 0, err
    r = json.loads(out)
    from policies.log import DecisionLog

    sends = DecisionLog(r["log"]).decisions(parse_json=False)
    assert r["violations"]["policy"]["checked_sends"] == int(pd.Series(sends["channel"]).notna().sum())


def test_a_second_journey_of_the_same_policy_and_seed_is_refused(tiny):
    import fcntl

    from core.errors import WorkspaceError
    from journey.run import JourneySettings, run_journey

    tiny.journeys.mkdir(parents=True, exist_ok=True)
    with (tiny.journeys / "journey-thompson-s9.lock").open("a") as held:  # a journey in progress
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(WorkspaceError, match="another journey of policy 'thompson' with seed 9"):
            run_journey(tiny, JourneySettings(days=1, seed=9))

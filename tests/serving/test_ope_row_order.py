"""Off-policy evaluation does not depend on the order of the logged rows: the same log, rows
shuffled (a table, and a decision log written in another order), gives identical JSON; a fitted
policy file is evaluated on the decisions from --since on, with the paired DR lift."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from click.testing import CliRunner

from decisioning.cli import cli

ARMS = ["no_send", "email|pct10|10", "sms|pct20|10", "email|free_shipping|18"]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _ope(*args: str) -> dict:
    res = CliRunner().invoke(cli, ["ope", *args, "--folds", "3", "--bootstrap", "50", "--seed", "7", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rows(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.random(n)
    p = np.full((n, len(ARMS)), 1 / len(ARMS))
    a = rng.integers(0, len(ARMS), n)
    value = np.where(rng.random(n) < 0.1 + 0.1 * (a == 1) * (x1 > 0), rng.gamma(2.0, 20.0, n), 0.0)
    return pd.DataFrame({"decision_id": [f"d{i:05d}" for i in range(n)], "action": np.array(ARMS)[a],
                         "propensity": p[np.arange(n), a], "reward": value, "x1": x1, "x2": x2,
                         "decided_at": [T0 + timedelta(minutes=int(i // 10)) for i in range(n)]})


def test_shuffled_table_gives_identical_json(tmp_path):
    df = _rows().drop(columns=["decision_id", "decided_at"])
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    df.to_csv(a, index=False)
    df.sample(frac=1.0, random_state=3).to_csv(b, index=False)
    for target in ("uniform", "epsilon_greedy"):
        ja, jb = _ope("--log", str(a), "--target", target), _ope("--log", str(b), "--target", target)
        assert ja == jb
    assert ja["dr"] is not None and ja["lift_over_logged"]["ci_low"] <= ja["lift_over_logged"]["ci_high"]


def _write_log(path, frame: pd.DataFrame, context_columns=("x1", "x2")) -> None:
    from policies.log import DecisionLog
    from policies.records import DecisionRecord, OutcomeRecord

    recs, outs = [], []
    for r in frame.itertuples():
        parts = r.action.split("|")
        send = r.action != "no_send"
        recs.append(DecisionRecord(
            decision_id=r.decision_id, customer_id=f"c{r.Index}", decided_at=r.decided_at, action=r.action,
            channel=parts[0] if send else None, offer=parts[1] if send else None,
            send_slot=int(parts[2]) if send else None, send_at=r.decided_at if send else None, timezone="UTC",
            propensity=r.propensity, distribution={k: 1 / len(ARMS) for k in ARMS},
            context={c: float(getattr(r, c)) for c in context_columns}, policy="uniform"))
        if r.reward > 0:
            outs.append(OutcomeRecord(event_id=f"e{r.decision_id}", decision_id=r.decision_id, event="converted",
                                      occurred_at=r.decided_at + timedelta(hours=1), value=float(r.reward)))
    with DecisionLog(path) as log:
        for lo in range(0, len(recs), 97):  # many small appends, like concurrent requests
            log.append(recs[lo:lo + 97])
        log.add_outcomes(outs)


def test_shuffled_decision_log_gives_identical_json(tmp_path):
    df = _rows(400, seed=1)
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    _write_log(a, df)
    _write_log(b, df.sample(frac=1.0, random_state=5))
    as_of = (T0 + timedelta(days=30)).isoformat()
    ja = _ope("--log", str(a), "--as-of", as_of, "--target", "epsilon_greedy")
    jb = _ope("--log", str(b), "--as-of", as_of, "--target", "epsilon_greedy")
    assert ja == jb and ja["n"] == 400
    since = (T0 + timedelta(minutes=20)).isoformat()
    part = _ope("--log", str(a), "--as-of", as_of, "--since", since, "--target", "uniform")
    assert part["n"] == 200 and part["decided_from"] >= since[:19]


def test_fitted_policy_file_is_judged_on_the_decisions_from_since(tmp_path):
    import pickle

    from policies.arms import ArmSpace
    from policies.bandits import make_policy
    from policies.config import PolicyLayerConfig
    from policies.context import CONTEXT_COLUMNS

    df = _rows(400, seed=2)
    rng = np.random.default_rng(4)
    for c in CONTEXT_COLUMNS:
        df[c] = rng.normal(size=len(df))
    log = tmp_path / "log.sqlite"
    _write_log(log, df, CONTEXT_COLUMNS)
    space = ArmSpace.from_config(PolicyLayerConfig().arms)
    first = df.iloc[:200]  # the challenger learns from the first half only
    policy = make_policy("thompson", space, model="linear", seed=0)
    policy.fit(first[list(CONTEXT_COLUMNS)].to_numpy(), space.index(list(first["action"])),
               first["reward"].to_numpy(), first["propensity"].to_numpy())
    path = tmp_path / "thompson.candidate.pkl"
    path.write_bytes(pickle.dumps(policy))
    as_of, since = (T0 + timedelta(days=30)).isoformat(), (T0 + timedelta(minutes=20)).isoformat()
    out = _ope("--log", str(log), "--as-of", as_of, "--since", since, "--target-file", str(path))
    assert out["n"] == 200 and out["target_policy"]["policy"] == "thompson"
    assert out["dr"] is not None and out["lift_over_logged"]["ci_low"] < out["lift_over_logged"]["ci_high"]
    lift = out["lift_over_logged"]["value"]
    assert abs(lift - (out["dr"]["value"] - out["logged_value"])) < 1e-9  # the paired lift is DR - logged
    res = CliRunner().invoke(cli, ["ope", "--log", str(log), "--as-of", as_of, "--target-file", str(log), "--json"])
    assert res.exit_code != 0 and "not a pickled policy" in str(res.exception)

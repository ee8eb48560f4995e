"""`decisioning ope`: JSON contract, targets, our decision log as input, bad input -> exit 2."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from decisioning.cli import main
from policies.log import DecisionLog
from policies.ope import SyntheticBandit, evaluate_frame, uniform_target
from policies.records import DecisionRecord, OutcomeRecord

KEYS = {"ips", "snips", "dr", "ess", "max_weight", "n"}


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["ope", *args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A synthetic logged-feedback table (other system's names) as CSV and Parquet."""
    world = SyntheticBandit(n_actions=4, dim_context=3, seed=5)
    fb, q = world.sample(1500, seed=0)
    df = pd.DataFrame(fb.context, columns=["age", "recency", "spend"])
    df["arm"] = [fb.actions[a] for a in fb.action]
    df["converted"] = fb.reward
    df["p_log"] = fb.propensity
    df["pi_uniform"] = 0.25
    for k, a in enumerate(fb.actions):
        df[f"score_{a}"] = q[:, k]
    folder = tmp_path_factory.mktemp("ope")
    df.to_csv(folder / "log.csv", index=False)
    df.to_parquet(folder / "log.parquet")
    return folder, df


def test_json_has_the_contract_keys_and_matches_the_library(capsys, logged):
    folder, df = logged
    code, out, err = run(capsys, "--log", str(folder / "log.csv"), "--target", "uniform", "--action-col", "arm",
                         "--reward-col", "converted", "--propensity-col", "p_log", "--bootstrap", "200", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) >= KEYS
    for key in ("ips", "snips", "dr"):
        assert set(res[key]) == {"value", "ci_low", "ci_high"}
        assert res[key]["ci_low"] <= res[key]["value"] <= res[key]["ci_high"]
    assert res["n"] == 1500 and res["target"] == "uniform"
    lib = evaluate_frame(df.drop(columns="pi_uniform"), target_distribution=uniform_target(1500, 4),
                         action_col="arm", reward_col="converted", propensity_col="p_log", n_bootstrap=200)
    assert res["ips"]["value"] == pytest.approx(lib.ips.value, abs=1e-12)
    assert res["max_weight"] == pytest.approx(lib.max_weight)
    assert res["ess"] == pytest.approx(lib.ess)


def test_target_column_gives_ips_and_snips_and_a_reasoned_null_dr(capsys, logged):
    folder, _ = logged
    code, out, err = run(capsys, "--log", str(folder / "log.parquet"), "--target-column", "pi_uniform",
                         "--action-col", "arm", "--reward-col", "converted", "--propensity-col", "p_log", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["dr"] is None and "full distribution" in res["dr_reason"]
    assert res["ips"]["value"] is not None and res["snips"]["value"] is not None
    assert "pi_uniform" not in res["context_columns"]


def test_greedy_on_score_columns_beats_uniform(capsys, logged):
    folder, _ = logged
    common = ["--log", str(folder / "log.csv"), "--action-col", "arm", "--reward-col", "converted",
              "--propensity-col", "p_log", "--bootstrap", "200", "--json"]
    _, out_u, _ = run(capsys, *common, "--target", "uniform")
    code, out_g, err = run(capsys, *common, "--target", "greedy", "--score-prefix", "score_")
    assert code == 0, err
    greedy = json.loads(out_g)
    assert greedy["dr"]["ci_low"] > json.loads(out_u)["dr"]["ci_high"]
    assert not any(c.startswith("score_") for c in greedy["context_columns"])


def test_human_output(capsys, logged):
    folder, _ = logged
    code, out, _ = run(capsys, "--log", str(folder / "log.csv"), "--target", "uniform", "--action-col", "arm",
                       "--reward-col", "converted", "--propensity-col", "p_log", "--bootstrap", "50")
    assert code == 0
    assert "IPS" in out and "SNIPS" in out and "DR" in out and "effective sample size" in out


@pytest.mark.parametrize(
    ("mutate", "extra", "message"),
    [
        (lambda df: df.assign(p_log=df["p_log"].where(df.index != 7, 0.0)), [], r"'p_log'.*\(0, 1\].*row 7: 0.0"),
        (lambda df: df.assign(p_log=df["p_log"].where(df.index != 3, 1.5)), [], r"'p_log'.*row 3: 1.5"),
        (lambda df: df.assign(p_log=df["p_log"].where(df.index != 2, np.nan)), [], "'p_log' column has 1 missing"),
        (lambda df: df.drop(columns="converted"), [], "has no column 'converted'"),
        (lambda df: df.assign(pi_uniform=2.0), ["--target-column", "pi_uniform"], r"'pi_uniform'.*\[0, 1\]"),
        (lambda df: df.iloc[:0], [], "no rows"),
    ],
)
def test_bad_input_exits_2_with_one_message(capsys, logged, tmp_path, mutate, extra, message):
    _, df = logged
    path = tmp_path / "bad.csv"
    mutate(df).to_csv(path, index=False)
    args = ["--log", str(path), "--action-col", "arm", "--reward-col", "converted", "--propensity-col", "p_log"]
    args += extra or ["--target", "uniform"]
    code, out, err = run(capsys, *args, "--json")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["--target", "uniform"], "no such file"),
        (b"\x00\x01garbage", ["--target", "uniform"], "cannot read it as parquet"),
        ("a,b\n1,2\n", ["--target", "uniform"], "has no column 'action'"),
        ("action,reward,propensity\na,1,0.5\n", [], "exactly one of --target"),
        ("action,reward,propensity\na,1,0.5\n", ["--target", "uniform", "--target-column", "x"], "exactly one"),
        ("action,reward,propensity\na,1,0.5\nb,0,0.5\n", ["--target", "nope"], "unknown target policy 'nope'"),
        ("action,reward,propensity\na,1,0.5\nb,0,0.5\n", ["--target", "thompson"], "actions are arm ids.*got the action 'a'"),
    ],
)
def test_bad_files_and_arguments_exit_2(capsys, tmp_path, setup, args, message):
    suffix = ".parquet" if isinstance(setup, bytes) else ".csv"
    path = tmp_path / f"log{suffix}"
    if isinstance(setup, bytes):
        path.write_bytes(setup)
    elif isinstance(setup, str):
        path.write_text(setup)
    code, _, err = run(capsys, "--log", str(path), *args)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()  # progress lines may come first; the error is one line, last
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1
    assert re.search(message, lines[-1]), err


def test_unknown_file_type(capsys, tmp_path):
    (tmp_path / "log.xlsx").write_text("x")
    code, _, err = run(capsys, "--log", str(tmp_path / "log.xlsx"), "--target", "uniform")
    assert code == 2 and "unknown file type" in err


# -- our own SQLite decision log -----------------------------------------------------------------------

ARMS = ["no_send", "email|pct10|10", "email|pct20|10", "sms|pct10|19", "app_push|new_arrivals|19"]
T0 = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def decision_log(tmp_path_factory):
    """400 logged decisions of a known randomised policy, with eligibility varying per customer
    (no SMS consent for a third of them) and conversions that depend on the context."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("dlog") / "decisions.sqlite"
    log = DecisionLog(path, synchronous="NORMAL")
    recs, outs = [], []
    for i in range(400):
        x = float(rng.normal())
        eligible = [a for a in ARMS if not (i % 3 == 0 and a.startswith("sms"))]
        p = np.array([2.0 if a == "email|pct10|10" else 1.0 for a in eligible])
        p /= p.sum()
        k = int(rng.choice(len(eligible), p=p))
        arm = eligible[k]
        at = T0 + timedelta(minutes=i)
        send = arm != "no_send"
        ch, offer, hour = arm.split("|") if send else (None, None, None)
        recs.append(DecisionRecord(
            decision_id=f"d{i}", customer_id=f"c{i}", decided_at=at, action=arm, channel=ch, offer=offer,
            send_slot=int(hour) if send else None, send_at=at + timedelta(hours=1) if send else None,
            propensity=float(p[k]), distribution=dict(zip(eligible, p.tolist(), strict=True)),
            context={"x": x, "segment": "a"}, policy="logging"))
        conv = 1 / (1 + np.exp(-(x if "pct20" in arm else -x) - (0.5 if send else -1.0)))
        if rng.random() < conv:
            outs.append(OutcomeRecord(event_id=f"e{i}", decision_id=f"d{i}", event="converted",
                                      occurred_at=at + timedelta(hours=2), value=20.0))
    log.append(recs)
    log.add_outcomes(outs)
    # one late decision whose window has not closed by the log's clock: left out
    log.append([DecisionRecord(decision_id="late", customer_id="c", decided_at=T0 + timedelta(days=3),
                               action="no_send", propensity=1.0, distribution={"no_send": 1.0}, policy="x")])
    log.close()
    return path


def test_our_decision_log_as_input(capsys, decision_log):
    as_of = (T0 + timedelta(days=2)).isoformat()
    code, out, err = run(capsys, "--log", str(decision_log), "--as-of", as_of, "--target", "uniform",
                         "--bootstrap", "100", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) >= KEYS and res["n"] == 400 and res["n_actions"] == len(ARMS)
    assert res["context_columns"] == ["x"]
    assert "1 decisions left out" in err  # the late one: its window is still open at as_of
    if datetime.now(UTC) > T0 + timedelta(days=5):  # the default as-of is now: every window has closed
        code, out, _ = run(capsys, "--log", str(decision_log), "--target", "uniform", "--bootstrap", "100", "--json")
        assert code == 0 and json.loads(out)["n"] == 401
    code, _, err = run(capsys, "--log", str(decision_log), "--as-of", "2026-06-01", "--target", "uniform")
    assert code == 2 and "no decision's attribution window has closed by 2026-06-01" in err
    code, _, err = run(capsys, "--log", str(decision_log), "--as-of", "yesterday-ish", "--target", "uniform")
    assert code == 2 and "--as-of: not a time" in err


@pytest.mark.parametrize("policy", ["greedy", "random", "epsilon_greedy"])
def test_our_policies_as_targets_on_our_log(capsys, decision_log, policy):
    code, out, err = run(capsys, "--log", str(decision_log), "--as-of", "2026-07-03", "--target", policy,
                         "--bootstrap", "100", "--folds", "3", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["target"] == policy and res["dr"] is not None
    # the policy only takes arms the guardrails allowed at logging time
    assert res["target_mass_off_support"] == pytest.approx(0.0, abs=1e-12)
    if policy == "random":  # uniform over the eligible arms: weights (1/4) / (1/5) at most
        assert res["max_weight"] == pytest.approx(1.25)


def test_our_policies_on_another_systems_table_use_their_linear_reward_model(capsys, decision_log, tmp_path):
    # the same rounds as a plain CSV: no funnel events, no eligibility
    from policies.ope import read_logged_table

    table = read_logged_table(decision_log, as_of=T0 + timedelta(days=2))
    assert table.source == "decision_log" and table.events is not None and len(table.eligible) == 400
    assert table.not_matured == 1
    path = tmp_path / "arms.csv"
    table.frame.to_csv(path, index=False)
    code, out, err = run(capsys, "--log", str(path), "--target", "thompson", "--bootstrap", "100", "--folds", "3",
                         "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["target"] == "thompson" and res["dr"] is not None and "target_mass_off_support" not in res

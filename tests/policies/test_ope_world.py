"""OPE against the simulator's truth: a known randomised logging policy sends to a simulated
customer base, the world answers, and the estimated value of a different target policy must be
covered by the intervals in >= 18 of 20 seeds. The target's true value comes from
``World.true_probabilities`` (exact expectations, no sampling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.types import CHANNELS, Channel
from policies.ope import LoggedFeedback, evaluate
from policies.reward import RewardConfig, expected_reward, reward

# (channel, offer, hours after the decision); None = no send
ARMS = [
    None,
    (Channel.EMAIL, "pct10", 2),
    (Channel.EMAIL, "pct20", 11),
    (Channel.EMAIL, "new_arrivals", 11),
    (Channel.SMS, "pct20", 2),
    (Channel.WECHAT, "new_arrivals", 11),
    (Channel.APP_PUSH, "free_shipping", 2),
    (Channel.APP_PUSH, "pct10", 11),
]
CONTEXT = ["purchase_rate", "order_value", "price_sensitivity", "affinity_email", "affinity_sms",
           "affinity_wechat", "affinity_app_push", "reachable_email", "reachable_sms", "reachable_wechat",
           "reachable_app_push"]
CFG = RewardConfig()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def sim():
    from world import ActionBatch, World, WorldConfig

    world = World.generate(WorldConfig(customers=5000, seed=11))
    state = world.initial_state()
    persons = world.persons
    n = len(persons)
    pid = persons["person_id"].to_numpy(np.int64)
    decided = (world.history_end + pd.Timedelta(days=1)).tz_convert(None).to_datetime64().astype("datetime64[ns]")
    batches, channel_code = [], []
    for arm in ARMS:
        if arm is None:
            batches.append(ActionBatch.no_send(pid, decided))
            channel_code.append(-1)
            continue
        ch, offer, hours = arm
        code = CHANNELS.index(ch)
        batches.append(ActionBatch(pid, np.full(n, code), np.full(n, world.catalog.code(offer)),
                                   np.full(n, decided + np.timedelta64(hours, "h"))))
        channel_code.append(code)
    channel_code = np.array(channel_code)
    q = np.column_stack([
        expected_reward(p.expected_value, np.full(n, c), p.unsubscribed, CFG)
        for p, c in ((world.true_probabilities(b, state), c) for b, c in zip(batches, channel_code, strict=True))
    ])  # (n, K) true expected reward of every arm for every customer
    reach = {c: persons[f"reachable_{c.value}"].to_numpy(float) for c in CHANNELS}
    affinity = {c: persons[f"affinity_{c.value}"].to_numpy(float) for c in CHANNELS}

    # logging: the marketer's habit, randomised and known: email first, reachable channels, some floor
    z_log = np.zeros((n, len(ARMS)))
    for k, arm in enumerate(ARMS):
        if arm is not None:
            z_log[:, k] = 1.0 * (arm[0] == Channel.EMAIL) + 0.8 * reach[arm[0]]
    logging = 0.85 * _softmax(z_log) + 0.15 / len(ARMS)
    # target: a personalised rule on observable traits (channel affinity x reachability, deep
    # discounts for price-sensitive customers), different from the logging habit
    z_tgt = np.zeros((n, len(ARMS)))
    price = persons["price_sensitivity"].to_numpy(float)
    for k, arm in enumerate(ARMS):
        if arm is not None:
            z_tgt[:, k] = 3.0 * affinity[arm[0]] * reach[arm[0]] + 1.5 * price * (arm[1] == "pct20")
    target = 0.9 * _softmax(2.0 * z_tgt) + 0.1 / len(ARMS)
    context = persons[CONTEXT].to_numpy(float)
    return world, state, batches, channel_code, q, logging, target, context


def test_simulator_truth_is_covered_in_at_least_18_of_20_seeds(sim):
    from world import ActionBatch

    world, state, batches, channel_code, q, logging, target, context = sim
    n, k = q.shape
    truth = float(np.mean(np.sum(target * q, axis=1)))
    logging_value = float(np.mean(np.sum(logging * q, axis=1)))
    assert abs(truth - logging_value) > 0.05 * abs(logging_value)  # the target is really another policy
    covered = {"ips": 0, "snips": 0, "dr": 0}
    rows = np.arange(n)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        arm = (rng.random(n)[:, None] > logging.cumsum(axis=1)).sum(axis=1).clip(max=k - 1)
        chosen = ActionBatch(
            person_id=batches[0].person_id,
            channel=np.array([b.channel for b in batches])[arm, rows],
            offer=np.array([b.offer for b in batches])[arm, rows],
            send_at=np.array([b.send_at for b in batches])[arm, rows],
        )
        out = world.respond(chosen, state.copy(), rng)
        r = reward(out.value, channel_code[arm], out.unsubscribed, CFG)
        fb = LoggedFeedback(arm.astype(np.int64), r, logging[rows, arm], tuple(map(str, range(k))), context)
        rep = evaluate(fb, target_distribution=target, n_bootstrap=500, seed=seed)
        for key in covered:
            covered[key] += getattr(rep, key).covers(truth)
    assert min(covered.values()) >= 18, (covered, truth)


def test_world_to_decision_log_to_cli_end_to_end(sim, tmp_path, capsys):
    """Decisions logged through DecisionLog, the world's outcomes reported as OutcomeRecords, the
    joined reward equal to the reward of the sampled outcomes, and `decisioning ope` on the SQLite
    log covering the uniform policy's true value."""
    import json

    from decisioning.cli import main
    from policies.log import DecisionLog
    from policies.records import DecisionRecord, OutcomeRecord
    from world import ActionBatch

    world, state, batches, channel_code, q, logging, target, context = sim
    n, k = q.shape
    rows = np.arange(n)
    rng = np.random.default_rng(2024)
    arm = (rng.random(n)[:, None] > logging.cumsum(axis=1)).sum(axis=1).clip(max=k - 1)
    send_at = np.array([b.send_at for b in batches])[arm, rows]
    out = world.respond(ActionBatch(batches[0].person_id, np.array([b.channel for b in batches])[arm, rows],
                                    np.array([b.offer for b in batches])[arm, rows], send_at), state.copy(), rng)
    ids = ["no_send" if a is None else f"{a[0].value}|{a[1]}|{a[2]}" for a in ARMS]
    decided = pd.Timestamp(batches[0].send_at[0], tz="UTC").to_pydatetime()
    records = [
        DecisionRecord(
            decision_id=f"d{i}", customer_id=f"c{i}", decided_at=decided, action=ids[arm[i]],
            channel=None if ARMS[arm[i]] is None else ARMS[arm[i]][0],
            offer=None if ARMS[arm[i]] is None else ARMS[arm[i]][1],
            send_at=None if ARMS[arm[i]] is None else pd.Timestamp(send_at[i], tz="UTC").to_pydatetime(),
            propensity=float(logging[i, arm[i]]), distribution=dict(zip(ids, logging[i].tolist(), strict=True)),
            context=dict(zip(CONTEXT, context[i].tolist(), strict=True)), policy="logging",
        )
        for i in range(n)
    ]
    outcomes = []
    for event in ("delivered", "opened", "clicked", "converted", "unsubscribed"):
        flags, times = getattr(out, event), getattr(out, f"{event}_at")
        for i in np.flatnonzero(flags):
            outcomes.append(OutcomeRecord(
                event_id=f"{i}:{event}", decision_id=f"d{i}", event=event,
                occurred_at=pd.Timestamp(times[i], tz="UTC").to_pydatetime(),
                value=float(out.value[i]) if event == "converted" else None))
    path = tmp_path / "decisions.sqlite"
    log = DecisionLog(path, synchronous="NORMAL")
    log.append(records)
    assert log.add_outcomes(outcomes).accepted == len(outcomes)
    as_of = decided + pd.Timedelta(days=3)
    joined = log.joined(CFG, now=as_of, columns=["action"])
    assert joined["matured"].all()
    np.testing.assert_allclose(joined["reward"], reward(out.value, channel_code[arm], out.unsubscribed, CFG),
                               rtol=0, atol=1e-9)
    log.close()

    truth = float(q.mean())  # uniform over the 8 arms, averaged over customers
    res = {}
    for policy in ("uniform", "random"):  # ours, and part A's uniform-over-eligible policy
        with pytest.raises(SystemExit) as exc:
            main(["ope", "--log", str(path), "--as-of", as_of.isoformat(), "--target", policy, "--json",
                  "--bootstrap", "500", "--folds", "3"])
        stdout, err = capsys.readouterr()
        assert exc.value.code == 0, err
        res[policy] = json.loads(stdout)
    assert res["uniform"]["n"] == n
    for key in ("ips", "snips", "dr"):
        assert res["uniform"][key]["ci_low"] <= truth <= res["uniform"][key]["ci_high"], (key, res["uniform"], truth)
    # every arm is eligible everywhere, so the policy 'random' is the same target as 'uniform'
    assert res["random"]["ips"]["value"] == pytest.approx(res["uniform"]["ips"]["value"], rel=1e-12)
    assert res["random"]["target_mass_off_support"] == 0.0

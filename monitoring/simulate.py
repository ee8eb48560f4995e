"""Cheap decision logs from the simulated world, with the truth beside them (tests and benches).

A simple randomised policy decides once a day (at 00:00 UTC) for every person of a small world:
customers in the holdout (stable hash of ``customer_id``) get ``no_send``; the others are sent a
message with probability ``send_probability[ab_arm]`` (two A/B arms by a second stable hash),
on a channel drawn uniformly among the eligible ones (key on file, consent, not unsubscribed),
with a uniform offer and a uniform local hour of ``core.types.SEND_HOURS``. The world's
``respond`` gives the outcomes, reported as OutcomeRecords; everything is written through
``policies.log.DecisionLog``. A warm-up of unlogged days first brings the customers' fatigue to
the policy's steady state, so that outcome rates do not trend in the logged days.

The truth kept beside the log is the true incremental value of the treated customer-days:
E[reward | chosen action] - E[reward | no send at the same time] from ``world.true_probabilities``
(the same for ``value`` and ``converted``), averaged over treated customer-days.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.types import CHANNELS, NO_SEND, SEND_HOURS, OutcomeEvent
from policies.log import _INSERT_STORED, FREE_FORM_PREFIX, DecisionLog, _dumps, encode_context_matrix
from policies.records import DecisionRecord, OutcomeRecord
from policies.reward import RewardConfig, expected_reward
from world import ActionBatch, World
from world.timeutil import DAY_NS, DayGrid

CH = [c.value for c in CHANNELS]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EVENTS = (("delivered", OutcomeEvent.DELIVERED), ("opened", OutcomeEvent.OPENED),
           ("clicked", OutcomeEvent.CLICKED), ("converted", OutcomeEvent.CONVERTED),
           ("unsubscribed", OutcomeEvent.UNSUBSCRIBED))


def stable_share(ids: list[str], salt: str) -> np.ndarray:
    """(n,) float in [0, 1) from a stable hash of ``salt:id`` (same id, same number, every run)."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest(), "big") / 2**64
                     for i in ids])


def _decision_row(f: dict, decided_ns: int) -> tuple:
    """The row ``DecisionLog.append`` stores for ``DecisionRecord(**f)`` (``logged_at`` = decided_at;
    ``f["context"]`` already encoded: (blob, layout id, free-form JSON or None))."""
    decided_us = decided_ns // 1000
    send_us = None if f["send_at"] is None else (f["send_at"] - _EPOCH) // _US
    scores = f'{{"purchase":{f["scores"]["purchase"]!r}}}'
    return (f["decision_id"], f["customer_id"], decided_us, f["action"], f["channel"], f["offer"], f["send_slot"],
            send_us, f["timezone"], f["propensity"], _dumps(f["distribution"]) if f["distribution"] else "{}",
            f["context"][0], scores, "[]", "[]", f["policy"], "0", "{}", f["ab_arm"], int(f["holdout"]), 0, None, None,
            decided_us, f["context"][1], f["context"][2])


@dataclass
class SimulatedLog:
    """What :func:`simulate_decision_log` wrote and the truth beside it."""

    path: Path
    start: datetime  # first logged decision time (00:00 UTC of the first logged day)
    end: datetime  # end of the last logged day
    decisions: int
    outcomes: int
    #: mean true incremental reward / value / converted per treated customer-day
    true_incremental: dict[str, float] = field(default_factory=dict)
    reference: pd.DataFrame | None = None  # contexts and scores of the first logged day


def simulate_decision_log(
    world: World, path: str | Path, *, days: int, seed: int, warmup_days: int = 14,
    holdout_share: float = 0.1, send_probability: dict[str, float] | None = None,
    reward: RewardConfig | None = None, log_distribution: bool = False, policy: str = "random",
    validate: bool = True,
) -> SimulatedLog:
    """Simulate ``warmup_days`` unlogged then ``days`` logged days from ``world.history_end``;
    write decisions and outcomes to the DecisionLog at ``path``. Same arguments, same log.

    ``validate``: write through ``DecisionRecord`` / ``OutcomeRecord`` and ``DecisionLog.append`` /
    ``add_outcomes`` (every record validated); off, the same rows are inserted straight into the
    log's tables (about 3x faster; the same content but ``logged_at`` / ``received_at``, as
    tests/monitoring/test_logdata.py checks)."""
    reward = reward or RewardConfig()
    send_probability = send_probability or {"A": 0.6, "B": 0.5}
    arms = sorted(send_probability)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    n = world.n_persons
    ids = [f"c{p:07d}" for p in range(n)]
    holdout = stable_share(ids, "holdout") < holdout_share
    arm_idx = np.minimum((stable_share(ids, "ab") * len(arms)).astype(int), len(arms) - 1)
    q = np.array([send_probability[a] for a in arms])[arm_idx]
    t = world.traits
    eligible_static = t.key_on_file & t.consent  # (N, 4)
    tz_names = world.config.timezone_names
    tz_idx = pd.Categorical(world.persons["timezone"], categories=list(tz_names)).codes.astype(np.int64)
    tz = world.persons["timezone"].to_numpy(object)
    offers = world.catalog.ids
    n_off, hours = len(offers), np.array(SEND_HOURS)
    start_ns = int(world.history_end.value)
    grid = DayGrid(start_ns, start_ns + (warmup_days + days + 2) * DAY_NS, tz_names)
    state = world.initial_state()
    log = DecisionLog(path, synchronous="NORMAL")
    raw = None if validate else sqlite3.connect(path, isolation_level=None)
    if raw is not None:
        raw.execute("PRAGMA synchronous = OFF")  # a simulated log for tests and benches: no fsync per day
    # features the "policy" saw: static estimates plus engagement refreshed daily
    noise = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(8,)))
    static = {
        "purchase_rate_est": t.purchase_rate * np.exp(noise.normal(0, 0.3, n)),
        "order_value_est": t.order_value * np.exp(noise.normal(0, 0.2, n)),
        "digital_est": world.persons["digital"].to_numpy() + noise.normal(0, 0.5, n),
        "tenure_days": (start_ns - world.persons["signup_at"].astype("int64").to_numpy()) / DAY_NS,
    }
    score = 1 / (1 + np.exp(-(np.log(static["purchase_rate_est"] / 0.025) - 3.5)))
    sends_7d = np.zeros((7, n))
    opens_7d = np.zeros((7, n))
    treated_eff = {"reward": 0.0, "value": 0.0, "converted": 0.0}
    treated_days = 0
    n_dec = n_out = 0
    reference = None
    first_logged = world.history_end + pd.Timedelta(days=warmup_days)
    person = np.arange(n, dtype=np.int64)
    for d in range(warmup_days + days):
        decided_ns = start_ns + d * DAY_NS
        logged = d >= warmup_days
        elig = eligible_static & ~state.unsubscribed & ~holdout[:, None]
        any_elig = elig.any(axis=1)
        send = any_elig & (rng.random(n) < q)
        r = rng.random((n, 4))
        r[~elig] = -1.0
        ch = np.where(send, r.argmax(axis=1), -1).astype(np.int8)
        off = np.where(send, rng.integers(0, n_off, n), -1).astype(np.int8)
        hour = hours[rng.integers(0, len(hours), n)]
        local_day = np.searchsorted(grid.date_ns, decided_ns + 0, side="right") - 1
        day_idx = np.full(n, local_day, dtype=np.int64)
        send_ns = grid.utc_at(tz_idx, day_idx, hour.astype(np.float64))
        send_ns = np.where(send_ns < decided_ns, grid.utc_at(tz_idx, day_idx + 1, hour.astype(np.float64)), send_ns)
        at_ns = np.where(send, send_ns, decided_ns)
        actions = ActionBatch(person, ch, off, at_ns.view("datetime64[ns]"))
        if logged:
            pa = world.true_probabilities(actions, state)
            p0 = world.true_probabilities(ActionBatch.no_send(person, at_ns.view("datetime64[ns]")), state)
            ra = expected_reward(pa.expected_value, ch, pa.unsubscribed, reward)
            r0 = expected_reward(p0.expected_value, np.full(n, -1), p0.unsubscribed, reward)
            tr = ~holdout
            treated_eff["reward"] += float((ra - r0)[tr].sum())
            treated_eff["value"] += float((pa.expected_value - p0.expected_value)[tr].sum())
            treated_eff["converted"] += float((pa.converted - p0.converted)[tr].sum())
            treated_days += int(tr.sum())
        out = world.respond(actions, state, rng)
        if logged:
            n_elig = np.maximum(elig.sum(axis=1), 1)
            prop = np.where(send, q / n_elig / n_off / len(hours), np.where(any_elig, 1 - q, 1.0))
            context = {**static, "sends_7d": sends_7d.sum(axis=0), "opens_7d": opens_7d.sum(axis=0)}
            ctx_frame = pd.DataFrame(context).round(6)
            ctx_rows = ctx_frame.to_dict("records") if validate else None
            if not validate:  # what DecisionLog.append stores (policies.log.encode_context), column-wise:
                # the leading float columns as float64 bytes, the rest as the JSON text json.dumps
                # would write (numbers by repr), at format speed
                keys = list(ctx_frame.columns)
                k = 0
                while k < len(keys) and ctx_frame[keys[k]].dtype == np.float64 \
                        and not keys[k].startswith(FREE_FORM_PREFIX):
                    k += 1
                blobs, lids, _, layouts = encode_context_matrix(ctx_frame[keys[:k]].to_numpy(np.float64), keys[:k])
                raw.executemany("INSERT OR IGNORE INTO context_layouts (id, columns) VALUES (?, ?)",
                                [(i, _dumps(list(v))) for i, v in layouts.items()])
                template = "{" + ",".join(f'"{c}":%r' for c in keys[k:]) + "}"
                extra = [template % t for t in zip(*(ctx_frame[c].tolist() for c in keys[k:]), strict=True)] \
                    if k < len(keys) else [None] * n
                ctx_json = list(zip(blobs, lids, extra, strict=True))
            if reference is None:
                reference = pd.DataFrame(context).assign(**{"score:purchase": score})
            decided = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=decided_ns // 1000)
            records, outcomes = [], []
            for i in range(n):
                did = f"d{d:03d}-{i:07d}"
                c = int(ch[i])
                if c >= 0:
                    action = f"{CH[c]}|{offers[off[i]]}|{int(hour[i])}"
                    s_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(send_ns[i]) // 1000)
                else:
                    action, s_at = NO_SEND, None
                dist = {}
                if log_distribution:
                    dist = {NO_SEND: float(1 - q[i]) if any_elig[i] else 1.0}
                    if any_elig[i]:
                        pe = float(q[i] / n_elig[i] / n_off / len(hours))
                        for j in np.flatnonzero(elig[i]):
                            for o in offers:
                                for h in hours:
                                    dist[f"{CH[j]}|{o}|{int(h)}"] = pe
                fields = dict(
                    decision_id=did, customer_id=ids[i], decided_at=decided, action=action,
                    channel=CH[c] if c >= 0 else None, offer=offers[off[i]] if c >= 0 else None,
                    send_slot=int(hour[i]) if c >= 0 else None, send_at=s_at, timezone=tz[i],
                    propensity=float(prop[i]), distribution=dist,
                    context=ctx_rows[i] if validate else ctx_json[i],
                    scores={"purchase": round(float(score[i]), 6)}, policy=policy,
                    ab_arm=None if holdout[i] else arms[arm_idx[i]], holdout=bool(holdout[i]))
                records.append(DecisionRecord(**fields) if validate else _decision_row(fields, decided_ns))
                for name, event in _EVENTS:
                    if getattr(out, name)[i]:
                        ts = getattr(out, f"{name}_at")[i].astype("datetime64[us]").astype(np.int64)
                        value = float(out.value[i]) if name == "converted" else None
                        outcomes.append(OutcomeRecord(
                            event_id=f"{did}:{name}", decision_id=did, event=event,
                            occurred_at=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(ts)),
                            value=value) if validate else (f"{did}:{name}", did, event.value, int(ts), value,
                                                          decided_ns // 1000))
            if validate:
                log.append(records)
                log.add_outcomes(outcomes)
            else:
                raw.execute("BEGIN")
                raw.executemany(_INSERT_STORED, records)
                raw.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", outcomes)
                raw.execute("COMMIT")
            n_dec += len(records)
            n_out += len(outcomes)
        sends_7d = np.roll(sends_7d, 1, axis=0)
        opens_7d = np.roll(opens_7d, 1, axis=0)
        sends_7d[0] = out.delivered
        opens_7d[0] = out.opened
    log.close()
    if raw is not None:
        raw.close()
    return SimulatedLog(
        path=Path(path), start=first_logged.to_pydatetime(),
        end=(first_logged + pd.Timedelta(days=days)).to_pydatetime(), decisions=n_dec, outcomes=n_out,
        true_incremental={k: v / max(treated_days, 1) for k, v in treated_eff.items()}, reference=reference)

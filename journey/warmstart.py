"""Warm start: the off-policy training set the policy learns from before day 1.

The raw history holds the campaign sends of a logged, randomised, non-uniform policy, each with
its propensity. Every send at one of the arm space's send times becomes a training row: context
as of the start of its UTC day (the journey decides at 00:00 UTC), the arm, the reward
(``policies.reward``: conversion value minus channel cost minus the unsubscribe penalty) and its
propensity. No-send rows come from customer-days without a send: their reward is the value of the
customer's orders in the 24 hours (organic purchases), their propensity the probability that the
logger sent nothing that day times the sampling rate (so importance weights stay comparable).
Sends whose 24-hour window runs past the end of the history are left out (their outcome is not
known yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.types import CHANNELS
from features.compute import ProfileData, features_as_of
from policies.arms import ArmSpace
from policies.context import context_matrix
from policies.funnel import Feedback
from policies.reward import RewardConfig, reward

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """n logged decisions: context (n, d), arm (n,) int64, reward (n,), propensity (n,)."""

    context: np.ndarray
    arm: np.ndarray
    reward: np.ndarray
    attributed: np.ndarray
    propensity: np.ndarray
    feedback: Feedback
    n_sends: int
    n_no_sends: int

    def __len__(self) -> int:
        return len(self.arm)


def _local_hours(times: pd.Series, tz: pd.Series) -> np.ndarray:
    out = np.zeros(len(times), dtype=np.int64)
    for zone, idx in pd.Series(np.arange(len(times))).groupby(tz.to_numpy()).groups.items():
        idx = np.asarray(idx)
        out[idx] = times.iloc[idx].dt.tz_convert(zone).dt.hour.to_numpy()
    return out


def history_training_set(
    data: ProfileData,
    customers: pd.DataFrame,
    arms: ArmSpace,
    hour_plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    reward_config: RewardConfig,
    history_end: pd.Timestamp,
    max_sends: int | None = 60_000,
    no_send_ratio: float = 1.0,
    min_history_days: int = 30,
    seed: int = 0,
) -> TrainingSet:
    """Training rows from the logged campaign history of ``customers`` (customer_id, timezone).

    hour_plan: the guardrails' (actual hour, shift, removed) per (channel level, slot level), so
    a logged send maps to the arm whose send actually goes out at that local hour.
    max_sends: sample at most this many sends (seeded; None: all); no_send_ratio: no-send rows
    per send row.
    """
    rng = np.random.default_rng(seed)
    end = pd.Timestamp(history_end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    tz_of = customers.set_index("customer_id")["timezone"]
    e = data.engagements
    e = e[e["customer_id"].isin(tz_of.index) & e["propensity"].between(0, 1, inclusive="right")
          & e["sent_at"].notna()].copy()
    e = e[e["sent_at"] + pd.Timedelta(hours=reward_config.attribution_hours) <= end]
    # map (channel, offer, local hour) to an arm
    ch_level = e["channel"].map({c.value: i for i, c in enumerate(arms.channels)})
    of_level = e["offer"].map({o: i for i, o in enumerate(arms.offers)})
    hours = _local_hours(e["sent_at"], e["customer_id"].map(tz_of))
    actual, shift, removed = hour_plan
    slot_level = np.full(len(e), -1, dtype=np.int64)
    cl = ch_level.fillna(-1).to_numpy(dtype=np.int64)
    for c in range(len(arms.channels)):
        # prefer an unshifted slot when two slots send at the same hour
        for s in sorted(range(len(arms.slots)), key=lambda s: -shift[c, s]):
            if removed[c, s]:
                continue
            slot_level[(cl == c) & (hours == actual[c, s])] = s
    ok = (cl >= 0) & of_level.notna().to_numpy() & (slot_level >= 0)
    e = e[ok]
    arm = arms.index_of_levels(cl[ok], of_level.to_numpy()[ok].astype(np.int64), slot_level[ok])
    if max_sends is not None and len(e) > max_sends:
        keep = np.sort(rng.choice(len(e), size=max_sends, replace=False))
        e, arm = e.iloc[keep], arm[keep]
    chan = pd.Series(e["channel"]).map({c.value: i for i, c in enumerate(CHANNELS)}).to_numpy(np.int64)
    value = e["conversion_value"].fillna(0.0).to_numpy(np.float64) * e["converted_at"].notna().to_numpy()
    clicked = e["clicked_at"].notna().to_numpy()
    r_send = reward(value, chan, e["unsubscribed_at"].notna().to_numpy(), reward_config)
    a_send = reward(value * clicked, chan, e["unsubscribed_at"].notna().to_numpy(), reward_config)
    at_send = e["sent_at"].dt.floor("D")

    # no-send customer-days
    starts = [x.min() for x in (data.engagements["sent_at"], data.orders["ordered_at"]) if len(x)]
    start = min(starts) if starts else end - pd.Timedelta(days=2 * min_history_days)
    first_day = start.floor("D") + pd.Timedelta(days=min_history_days)
    n_days = max(int((end - first_day).days) - 1, 1)
    n_no = int(round(no_send_ratio * len(e)))
    ids = customers["customer_id"].to_numpy(dtype=object)
    c_idx = rng.integers(0, len(ids), n_no)
    d_idx = rng.integers(0, n_days, n_no)
    day0 = first_day + pd.to_timedelta(d_idx, unit="D")
    cand = pd.DataFrame({"customer_id": ids[c_idx], "at": day0})
    sends_day = set(zip(data.engagements["customer_id"], data.engagements["sent_at"].dt.floor("D"), strict=True))
    had_send = np.fromiter(((c, a) in sends_day for c, a in zip(cand["customer_id"], cand["at"], strict=True)),
                           dtype=bool, count=len(cand))
    cand = cand[~had_send].reset_index(drop=True)
    o = data.orders[data.orders["customer_id"].isin(tz_of.index)][["customer_id", "ordered_at", "amount"]]
    o = o.assign(at=o["ordered_at"].dt.floor("D"))
    value_day = o.groupby(["customer_id", "at"])["amount"].sum()
    key = pd.MultiIndex.from_arrays([cand["customer_id"], cand["at"]])
    v_no = value_day.reindex(key).fillna(0.0).to_numpy(np.float64)
    r_no = reward(v_no, np.full(len(cand), -1), np.zeros(len(cand), bool), reward_config)
    customer_days = len(ids) * n_days
    send_share = len(data.engagements) / max(customer_days, 1)
    q = len(cand) / max(customer_days, 1)
    p_no = np.full(len(cand), max(1.0 - send_share, 1e-6) * q)

    at = pd.concat([at_send.reset_index(drop=True), cand["at"]], ignore_index=True)
    who = np.concatenate([e["customer_id"].to_numpy(dtype=object), cand["customer_id"].to_numpy(dtype=object)])
    feats = features_as_of(data, at, customer_ids=who, snapped=False)
    X = context_matrix(feats)
    return TrainingSet(
        context=X,
        arm=np.concatenate([arm, np.zeros(len(cand), dtype=np.int64)]),
        reward=np.concatenate([r_send, r_no]),
        attributed=np.concatenate([a_send, np.zeros(len(cand))]),
        feedback=Feedback(
            opened=np.concatenate([e["opened_at"].notna().to_numpy(), np.zeros(len(cand), bool)]),
            clicked=np.concatenate([clicked, np.zeros(len(cand), bool)]),
            converted=np.concatenate([e["converted_at"].notna().to_numpy(), v_no > 0]),
            unsubscribed=np.concatenate([e["unsubscribed_at"].notna().to_numpy(), np.zeros(len(cand), bool)]),
            value=np.concatenate([value, v_no]),
        ),
        propensity=np.concatenate([e["propensity"].to_numpy(np.float64), p_no]),
        n_sends=len(e),
        n_no_sends=len(cand),
    )

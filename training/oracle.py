"""The oracle: what the simulator's truth says, on the same test customers, for reporting how far
each model is from the best possible. Only used when ``<workspace>/truth/`` exists.

* propensity / churn: the truth's own probability of an (organic) purchase in the label window,
  from each person's latent purchase rate, sign-up and churn time (``ResponseModel``).
* next-best-offer: for test customers, the true expected reward (``policies.reward``) of every
  offer on the customer's usual channel at 10:00 local the day after the history; the oracle picks
  the best offer per customer, the baseline one offer for everyone, the model its argmax.
* send-time: the true open probability at every local send hour on the customer's usual channel;
  the oracle picks the best hour per customer, the baseline 10:00, the model its argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.types import CHANNELS, SEND_HOURS
from core.workspace import Workspace


@dataclass
class Truth:
    world: object
    person_of: pd.Series  # customer_id -> person_id (majority of its records)

    @classmethod
    def load(cls, workspace: Workspace, history=None) -> Truth | None:
        from world.world import World  # the simulator; present whenever truth/ is

        rm = workspace.profiles / "record_map.parquet"
        ro = workspace.truth / "record_owner.parquet"
        if not rm.is_file() or not ro.is_file():
            return None
        world = World.load(workspace)
        a = pd.read_parquet(rm, columns=["source", "record_id", "customer_id"])
        b = pd.read_parquet(ro, columns=["source", "record_id", "person_id"])
        j = a.merge(b, on=["source", "record_id"], how="inner")
        counts = j.groupby(["customer_id", "person_id"]).size().rename("n").reset_index()
        counts = counts.sort_values(["customer_id", "n", "person_id"], ascending=[True, False, True])
        person_of = counts.drop_duplicates("customer_id").set_index("customer_id")["person_id"]
        return cls(world=world, person_of=person_of)

    def persons(self, customer_ids) -> np.ndarray:
        """(n,) person_id per customer (-1 when unknown)."""
        return self.person_of.reindex(pd.Index(customer_ids)).fillna(-1).to_numpy(dtype=np.int64)

    def _model(self):
        for name in ("model", "response", "_model", "response_model"):
            m = getattr(self.world, name, None)
            if m is not None and hasattr(m, "organic_probability"):
                return m
        return None

    def purchase_probability(self, person: np.ndarray, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        """(n,) P(at least one organic purchase in [start, end)) per person."""
        a = np.full(len(person), pd.Timestamp(start).value, dtype=np.int64)
        b = np.full(len(person), pd.Timestamp(end).value, dtype=np.int64)
        m = self._model()
        if m is not None:
            return m.organic_probability(person, a, b)
        persons = self.world.persons.set_index("person_id").loc[person]
        rate = persons["purchase_rate"].to_numpy()
        signup = pd.to_datetime(persons["signup_at"], utc=True).astype("int64").to_numpy()
        churn = pd.to_datetime(persons["churn_at"], utc=True).astype("int64").to_numpy()
        mult = self.world.config.churn.purchase_multiplier
        lo = np.maximum(a, signup)
        before = np.clip(np.minimum(b, churn) - lo, 0, None)
        after = np.clip(b - np.maximum(lo, churn), 0, None)
        days = (before + mult * after) / 86_400e9
        return -np.expm1(-rate * days)


def oracle_binary(truth: Truth, customer_ids, cutoff, horizon, family: str) -> np.ndarray | None:
    person = truth.persons(customer_ids)
    if (person < 0).mean() > 0.05:
        return None
    p = np.full(len(person), np.nan)
    ok = person >= 0
    p[ok] = truth.purchase_probability(person[ok], cutoff, cutoff + horizon)
    p[~ok] = np.nanmean(p[ok])
    return p if family == "propensity" else 1.0 - p


def _local_send_times(timezones: np.ndarray, day: pd.Timestamp, hour: int) -> np.ndarray:
    """(n,) datetime64[ns] UTC of ``hour``:00 local on the local calendar date of ``day``."""
    out = np.empty(len(timezones), dtype="datetime64[ns]")
    date = pd.Timestamp(day).date()
    for zone in pd.unique(timezones):
        m = timezones == zone
        try:
            t = pd.Timestamp(f"{date} {hour:02d}:00", tz=zone).tz_convert("UTC")
        except Exception:
            t = pd.Timestamp(f"{date} {hour:02d}:00", tz="UTC")
        out[m] = np.datetime64(t.tz_localize(None).to_datetime64(), "ns")
    return out


def _evaluation_set(ctx, family: str):
    """Test customers for the policy oracle: customers with logged sends, their usual channel and
    time zone, sampled (seeded) to ``oracle_customers``; their features as of the day after the
    history's end. Cached in ctx (shared by offer and send-time)."""
    key = ("oracle_set", family)
    if key in ctx.cache:
        return ctx.cache[key]
    from training.data import model_columns
    from training.pipeline import FAMILIES

    sends = ctx.cache["sends"]
    usual = (sends.groupby(["customer_id", "channel"]).size().rename("n").reset_index()
             .sort_values(["customer_id", "n", "channel"], ascending=[True, False, True])
             .drop_duplicates("customer_id").set_index("customer_id")["channel"])
    ids = usual.index.to_numpy()
    person = ctx.truth.persons(ids)
    keep = person >= 0
    ids, person = ids[keep], person[keep]
    rng = np.random.default_rng(ctx.config.seed)
    if len(ids) > ctx.config.oracle_customers:
        pick = np.sort(rng.choice(len(ids), ctx.config.oracle_customers, replace=False))
        ids, person = ids[pick], person[pick]
    prof = ctx.history.profiles.set_index("customer_id")
    tz = prof["timezone"].reindex(ids).fillna("UTC").to_numpy(dtype=object)
    channel = usual.reindex(ids).to_numpy(dtype=np.int64)
    day = (ctx.history.end + pd.Timedelta(days=1)).floor("D")
    service = FAMILIES[family][1]
    ent = pd.DataFrame({"customer_id": ids, "event_timestamp": day})
    frame = ctx.source.training_set(service, ent)
    cols = [c for c in model_columns(frame, ctx.source.feature_names(service))
            if c not in ("channel", "offer", "send_hour")]
    X = frame[cols].reset_index(drop=True)
    X["channel"] = channel
    out = (ids, person, tz, channel, day, X)
    ctx.cache[key] = out
    return out


def true_offer_values(ctx) -> np.ndarray:
    """(n, K) true expected reward of each catalog offer for the offer evaluation set's customers
    (their usual channel, 10:00 local the day after the history). Cached in ctx."""
    from policies.reward import RewardConfig, expected_reward
    from world.response import ActionBatch

    key = ("true_offer_values",)
    if key in ctx.cache:
        return ctx.cache[key]
    world = ctx.truth.world
    ids, person, tz, channel, day, _ = _evaluation_set(ctx, "offer")
    state = world.initial_state()
    n, k = len(ids), len(world.catalog.offers)
    cfg = RewardConfig()
    at = _local_send_times(tz, day, 10)
    values = np.zeros((n, k))
    for j in range(k):
        pr = world.true_probabilities(ActionBatch(person, channel, np.full(n, j), at), state)
        values[:, j] = expected_reward(pr.expected_value, channel, pr.unsubscribed, cfg)
    ctx.cache[key] = values
    return values


def oracle_policy(ctx, family: str, estimator, baseline=None) -> dict:
    """True-value figures of the model, the baseline and the oracle on the same customers."""
    from models.metrics import gap_closed, value_of_choice
    from world.response import ActionBatch

    world = ctx.truth.world
    ids, person, tz, channel, day, X = _evaluation_set(ctx, family)
    state = world.initial_state()
    n = len(ids)
    if family == "offer":
        values = true_offer_values(ctx)
        Xm = X.copy()
        Xm["send_hour"] = 10
        Xm["offer"] = 0
        Xm = Xm[list(estimator.feature_names_in_)]
        choice = estimator.predict(Xm)
        mean = values.mean(axis=0)
        best_single = int(np.argmax(mean))
        model_v = value_of_choice(values, choice)
        oracle_v = float(values.max(axis=1).mean())
        base_offer = baseline.offer_ if baseline is not None else best_single
        base_v = float(mean[base_offer])
        return {
            "true_value": model_v,
            "true_best_single_value": float(mean[best_single]),
            "true_best_single_offer": world.catalog.ids[best_single],
            "true_baseline_value": base_v,
            "oracle_value": oracle_v,
            "gap_closed": gap_closed(model_v, float(mean[best_single]), oracle_v),
            "gap_closed_vs_baseline": gap_closed(model_v, base_v, oracle_v),
            "oracle_customers": n,
        }
    hours = SEND_HOURS
    opens = np.zeros((n, len(hours)))
    offer = np.zeros(n, dtype=np.int64)
    for j, h in enumerate(hours):
        at = _local_send_times(tz, day, h)
        pr = world.true_probabilities(ActionBatch(person, channel, offer, at), state)
        opens[:, j] = pr.opened
    Xm = X.copy()
    Xm["offer"] = 0
    Xm["send_hour"] = 10
    Xm = Xm[list(estimator.feature_names_in_)]
    chosen = estimator.predict(Xm)
    col = np.searchsorted(np.asarray(hours), chosen)
    model_v = value_of_choice(opens, col)
    fixed_v = float(opens[:, hours.index(10)].mean())
    oracle_v = float(opens.max(axis=1).mean())
    by_channel = {CHANNELS[c].value: int((channel == c).sum()) for c in np.unique(channel)}
    return {
        "true_open_rate": model_v,
        "true_fixed_10_open_rate": fixed_v,
        "oracle_open_rate": oracle_v,
        "gap_closed": gap_closed(model_v, fixed_v, oracle_v),
        "oracle_customers": n,
        "oracle_channels": by_channel,
    }

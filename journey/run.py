"""The simulated journey: the decision loop against the simulated world, day by day, in process.

Starting at the world's ``history_end``, every day at 00:00 UTC the journey

1. takes the workspace's customers (profiles) and what is known about them at that moment
   (consent minus the unsubscribes that already happened, sends so far for frequency caps and
   fatigue features);
2. applies the guardrails (before sampling), lets the policy sample, logs every decision in the
   DecisionLog (``<workspace>/decisions/``) before acting, and settles budget reservations;
3. lets the world answer (each customer is mapped to its person through the truth) and reports
   the outcomes as OutcomeRecords as they happen (an outcome is ingested once its time has come);
4. joins the log (decisions whose attribution window has closed) and updates the policy.

On the same world, days and seed it also runs four counterfactual lanes, each on its own copy of
the world's contact state and with the same random stream for the world's answers (common random
numbers): ``random`` (uniform over the eligible arms), ``rule`` (e-mail at 10:00 local with the
best-selling offer, to everyone eligible), ``oracle`` (per customer-day the arm with the highest
TRUE expected reward) and ``no_send``. Every lane goes through the same guardrails, and every send
of every lane is re-checked afterwards by ``journey.audit`` (independently of the guardrail code).

A ``decider`` (see :class:`PolicyDecider`; ``journey.remote.RemotePolicyLane`` drives the decision
service over HTTP) replaces the policy lane's decide, log, outcome and learning steps: it decides
for the whole audience each day, receives the outcomes as they happen and learns at the end of the
day; the other lanes and the world stay in process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InputError, WorkspaceError
from core.types import CHANNELS, OutcomeEvent
from core.workspace import Workspace
from features.compute import ProfileData, features_as_of
from journey.audit import audit_sends
from journey.baselines import MarketerRule, Oracle, best_selling_offer
from journey.population import Population, load_population
from journey.warmstart import history_training_set
from policies.arms import NO_SEND_INDEX, ArmSpace
from policies.bandits import UniformRandom, make_policy
from policies.base import Policy
from policies.budget import BudgetLedger
from policies.config import PolicyLayerConfig
from policies.context import CONTACT_FEATURES, CONTEXT_COLUMNS, ContactFeatures, context_matrix
from policies.funnel import Feedback
from policies.guardrails import Guardrails, SendHistory, holdout_mask
from policies.log import DecisionLog
from policies.records import DecisionRecord, OutcomeRecord
from policies.reward import RewardConfig, expected_reward, reward

LANES = ("policy", "random", "rule", "oracle", "no_send")


class PolicyDecider(Protocol):
    """What replaces the in-process policy lane (e.g. the decision service over HTTP)."""

    def start_day(self, customer_ids: np.ndarray, now: pd.Timestamp, arms: ArmSpace) -> None:
        """Start deciding the day (e.g. in the background, while the other lanes run)."""

    def decide_day(self, customer_ids: np.ndarray, now: pd.Timestamp, arms: ArmSpace
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(arm index, send_at as datetime64[ns] UTC-naive (a no-send: the decision time), holdout, decision_id) per customer."""

    def report(self, outcomes: pd.DataFrame) -> None:
        """Outcome events that happened (event_id, decision_id, event, occurred_at, value)."""

    def end_of_day(self, learn_at: pd.Timestamp) -> int:
        """Learn from what matured by ``learn_at``; returns the number of decisions learned from."""

    def decisions(self) -> pd.DataFrame:
        """Every decision received: customer_id, channel, offer, send_at, decided_at, holdout."""

    def figures(self, now: pd.Timestamp, reward_config: RewardConfig) -> dict:
        """decisions_logged, join_rate, log, and the decider's own figures."""


class JourneySettings(BaseModel):
    """How a journey runs (beyond the policy layer's own config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int = Field(14, ge=1, le=365, description="days to simulate")
    customers: int | None = Field(None, ge=1, description="customers to decide for (None: all profiles)")
    seed: int = Field(0, ge=0, description="seeds the policy, the random lane and the world's answers")
    batch_size: int = Field(5000, ge=1, description="customers decided at once (budgets settle between batches)")
    warm_start_sends: int | None = Field(200_000, ge=1, description="at most this many history sends warm-start the policy")
    log_context: bool = Field(True, description="log the context features with every decision")
    learn: bool = Field(True, description="update the policy from the joined log every day (False: frozen "
                        "after the warm start, an ablation)")


@dataclass
class LaneStats:
    name: str
    reward_sum: float = 0.0
    expected_sum: float = 0.0
    decisions: int = 0
    sends: list[int] = field(default_factory=list)
    unsubscribes: int = 0
    conversions: int = 0
    value_per_day: list[float] = field(default_factory=list)
    expected_per_day: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        n = max(self.decisions, 1)
        return {
            "value": self.reward_sum / n,
            "expected_value": self.expected_sum / n,
            "sends_per_day": float(np.mean(self.sends)) if self.sends else 0.0,
            "send_share": float(np.sum(self.sends)) / n,
            "unsubscribes": self.unsubscribes,
            "conversions": self.conversions,
            "value_per_day": self.value_per_day,
            "expected_value_per_day": self.expected_per_day,
        }


@dataclass
class Lane:
    """One counterfactual run: its own contact state, guardrail budgets, sends and statistics."""

    name: str
    state: object  # world.ContactState
    guard: Guardrails
    contacts: ContactFeatures
    rng: np.random.Generator
    stats: LaneStats
    sends: list[pd.DataFrame] = field(default_factory=list)
    unsubs: list[pd.DataFrame] = field(default_factory=list)

    def recent_sends(self, history: pd.DataFrame, since: pd.Timestamp) -> pd.DataFrame:
        """Sends at or after ``since``: the history's and this lane's (customer_id, channel, send_at)."""
        frames = [history[history["send_at"] >= since]]
        frames += [s.loc[s["send_at"] >= since, ["customer_id", "channel", "send_at"]] for s in self.sends]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else history.iloc[:0]


def _ts(x) -> pd.Timestamp:
    t = pd.Timestamp(x)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _records(arms: ArmSpace, pop_ids: np.ndarray, tz: np.ndarray, idx: np.ndarray, decision_ids: list[str],
             now: pd.Timestamp, chosen: np.ndarray, dist: np.ndarray, elig, context: np.ndarray | None,
             policy_name: str, version: str, journey_id: str) -> list[DecisionRecord]:
    """DecisionRecords of one batch (built without re-validation: every field comes from checked
    arrays of this module)."""
    ids = arms.id_array()
    now_dt = now.to_pydatetime()
    send_at = pd.DatetimeIndex(elig.chosen_send_at(chosen)).tz_localize("UTC").to_pydatetime()
    hours = elig.chosen_send_hour(chosen).tolist()
    reasons = elig.reasons_all()
    holdout = elig.holdout.tolist()
    contexts = context.tolist() if context is not None else None
    out = []
    for j in range(len(idx)):
        a = int(chosen[j])
        row = dist[j]
        nz = np.flatnonzero(row)
        send = a != NO_SEND_INDEX
        ctx = dict(zip(CONTEXT_COLUMNS, contexts[j], strict=True)) if contexts is not None else {}
        out.append(DecisionRecord.model_construct(
            decision_id=decision_ids[j], customer_id=str(pop_ids[idx[j]]), decided_at=now_dt, action=ids[a],
            channel=CHANNELS[arms.channel[a]] if send else None,
            offer=arms.offers[arms.offer_level[a]] if send else None,
            send_slot=int(hours[j]) if send else None,
            send_at=send_at[j] if send else None,
            timezone=str(tz[idx[j]]), propensity=float(row[a]),
            distribution=dict(zip(ids[nz].tolist(), row[nz].tolist(), strict=True)),
            context=ctx, scores={}, reasons=[], guardrails=reasons[j], policy=policy_name,
            policy_version=version, model_versions={}, ab_arm=None, holdout=holdout[j],
            fallback=False, journey_id=journey_id, journey_step=now.date().isoformat(),
        ))
    return out


def _outcome_records(decision_ids: np.ndarray, out, send: np.ndarray) -> pd.DataFrame:
    """Outcome events of a day's decisions as a frame (event_id, decision_id, event, occurred_at,
    value); no-sends report their (organic) conversions only."""
    frames = []
    for event, mask, at in (
        (OutcomeEvent.DELIVERED, out.delivered & send, out.delivered_at),
        (OutcomeEvent.OPENED, out.opened & send, out.opened_at),
        (OutcomeEvent.CLICKED, out.clicked & send, out.clicked_at),
        (OutcomeEvent.CONVERTED, out.converted, out.converted_at),
        (OutcomeEvent.UNSUBSCRIBED, out.unsubscribed & send, out.unsubscribed_at),
    ):
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        frames.append(pd.DataFrame({
            "event_id": [f"{d}:{event.value}" for d in decision_ids[rows]],
            "decision_id": decision_ids[rows],
            "event": event,
            "occurred_at": pd.to_datetime(at[rows]).tz_localize("UTC"),
            "value": out.value[rows] if event is OutcomeEvent.CONVERTED else np.nan,
        }))
    if not frames:
        return pd.DataFrame({"event_id": pd.Series([], dtype=object), "decision_id": pd.Series([], dtype=object),
                             "event": pd.Series([], dtype=object),
                             "occurred_at": pd.Series([], dtype="datetime64[ns, UTC]"),
                             "value": pd.Series([], dtype=np.float64)})
    return pd.concat(frames, ignore_index=True)


def run_journey(
    workspace: Workspace,
    settings: JourneySettings | None = None,
    config: PolicyLayerConfig | None = None,
    reward_config: RewardConfig | None = None,
    progress: Callable[[str], None] | None = None,
    decider: PolicyDecider | None = None,
) -> dict:
    """Run the journey and return its figures (the ``decisioning journey --json`` object). With a
    ``decider``, the policy lane is decided, logged and learned by it (see the module doc).

    A journey owns its log and budget files (by policy and seed) while it runs: a second journey
    of the same policy and seed on the same workspace is refused instead of deleting them."""
    import fcntl

    settings = settings or JourneySettings()
    config = config or PolicyLayerConfig()
    workspace.journeys.mkdir(parents=True, exist_ok=True)
    lock_path = workspace.journeys / f"journey-{config.policy.name}-s{settings.seed}.lock"
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceError(f"another journey of policy '{config.policy.name}' with seed {settings.seed} "
                                 f"is running on {workspace.root}; wait for it or use another seed") from None
        try:
            return _run_journey(workspace, settings, config, reward_config, progress, decider)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_journey(
    workspace: Workspace,
    settings: JourneySettings | None,
    config: PolicyLayerConfig | None,
    reward_config: RewardConfig | None,
    progress: Callable[[str], None] | None,
    decider: PolicyDecider | None,
) -> dict:
    from world import ActionBatch, World

    settings = settings or JourneySettings()
    if decider is not None:  # the decider learns; the in-process policy is not used
        settings = settings.model_copy(update={"learn": False})
    config = config or PolicyLayerConfig()
    rc = reward_config or RewardConfig()
    say = progress or (lambda _m: None)
    t_start = time.perf_counter()

    world = World.load(workspace)
    data = ProfileData.load(workspace.profiles)
    pop: Population = load_population(workspace, data.profiles, data.orders, data.events,
                                      settings.customers, settings.seed)
    n = len(pop)
    arms = ArmSpace.from_config(config.arms, world.catalog)
    start = _ts(world.history_end)
    pop_ids, tz, persons = pop.customer_id, pop.frame["timezone"].to_numpy(object), pop.person_id
    say(f"journey: {n:,} customers, {settings.days} days from {start.date()}, policy {config.policy.name}, "
        f"seed {settings.seed}")

    # history sends and unsubscribes (frequency caps, fatigue features, consent)
    eng = data.engagements
    eng = eng[eng["customer_id"].isin(set(pop_ids))]
    hist_sends = pd.DataFrame({"customer_id": eng["customer_id"].astype(str).to_numpy(),
                               "channel": eng["channel"].astype(str).to_numpy(),
                               "send_at": eng["sent_at"].to_numpy()})
    hist_sends = hist_sends[hist_sends["send_at"] >= start - pd.Timedelta(days=8)].reset_index(drop=True)
    hist_unsubs = eng.loc[eng["unsubscribed_at"].notna(), ["customer_id", "channel", "unsubscribed_at"]]

    # static context at the start; contact features refreshed daily per lane
    t0 = time.perf_counter()
    static = features_as_of(data, start, customer_ids=pop_ids)
    say(f"features of {n:,} customers: {time.perf_counter() - t0:.1f}s")

    def new_contacts() -> ContactFeatures:
        cf = ContactFeatures(pop_ids)
        cf.add_sends(eng["customer_id"].to_numpy(object), eng["channel"].to_numpy(object), eng["sent_at"])
        cf.add_unsubscribes(hist_unsubs["customer_id"].to_numpy(object), hist_unsubs["channel"].to_numpy(object),
                            hist_unsubs["unsubscribed_at"])
        return cf

    def context_at(cf: ContactFeatures, now: pd.Timestamp) -> np.ndarray:
        frame = static.copy()
        dyn = cf.frame(now)
        for c in CONTACT_FEATURES:
            frame[c] = dyn[c].to_numpy()
        return context_matrix(frame)

    # the policy, warm-started off-policy on the logged history
    spec = config.policy
    params = dict(spec.params)
    params.setdefault("seed", settings.seed)
    if "reward_config" not in params and spec.name not in ("random", "uniform"):
        params["reward_config"] = rc
    policy: Policy = make_policy(spec.name, arms, **params)
    base_contacts = new_contacts()
    policy.initialise(context_at(base_contacts, start))
    warm = {"sends": 0, "no_sends": 0, "seconds": 0.0}
    if spec.warm_start and policy.learns and decider is None:
        t0 = time.perf_counter()
        guard0 = Guardrails(arms, config.guardrails, reward_config=rc)
        ts = history_training_set(data, pop.frame, arms, guard0.hour_plan, rc, start,
                                  max_sends=settings.warm_start_sends, seed=settings.seed)
        policy.update(ts.context, ts.arm, ts.reward, ts.propensity, feedback=ts.feedback)
        warm = {"sends": ts.n_sends, "no_sends": ts.n_no_sends, "seconds": round(time.perf_counter() - t0, 2)}
        say(f"warm start on {ts.n_sends:,} logged sends and {ts.n_no_sends:,} no-send days: {warm['seconds']}s")

    # the decision log of this run
    run_dir = workspace.journeys
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"journey-{spec.name}-s{settings.seed}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        p = log_path.with_name(log_path.name + suffix)
        if p.exists():
            p.unlink()
    log = DecisionLog(log_path, synchronous="NORMAL")
    journey_id = f"journey-{spec.name}-s{settings.seed}"

    # lanes
    init_state = world.initial_state()
    lanes: dict[str, Lane] = {}
    for name in LANES:
        ledger_path = run_dir / f"{journey_id}-{name}-budget.sqlite"
        for suffix in ("", "-wal", "-shm"):
            p = ledger_path.with_name(ledger_path.name + suffix)
            if p.exists():
                p.unlink()
        lanes[name] = Lane(
            name=name, state=init_state.copy(),
            guard=Guardrails(arms, config.guardrails, reward_config=rc, ledger=BudgetLedger(ledger_path)),
            contacts=base_contacts if name == "policy" else new_contacts(),
            rng=np.random.default_rng([settings.seed, 20_260_701]), stats=LaneStats(name),
        )
    random_policy = UniformRandom(arms, seed=settings.seed + 1)
    random_policy.initialise(np.zeros((1, 1)))
    rule = MarketerRule(arms, best_selling_offer(data.orders, world.catalog))
    oracle = Oracle(arms, world, rc)

    pending: pd.DataFrame | None = None  # outcome events not yet happened at the current time
    context_cache: dict[str, np.ndarray] = {}
    learned: set[str] = set()
    consent0 = pop.consent_matrix()
    order = np.arange(n)
    timing = {"decide": 0.0, "log": 0.0, "respond": 0.0, "learn": 0.0, "oracle": 0.0}

    for day in range(settings.days):
        t_day = time.perf_counter()
        now = start + pd.Timedelta(days=day)
        now_dt = now.to_pydatetime()
        since = now - pd.Timedelta(hours=max([c.window_hours for c in config.guardrails.frequency_caps] + [24.0]))
        if decider is not None:  # the decider works while the in-process lanes run (they are independent)
            decider.start_day(pop_ids, now, arms)
        for name in ([*LANES[1:], LANES[0]] if decider is not None else LANES):
            lane = lanes[name]
            consent = consent0 & ~lane.contacts.unsubscribed(now)
            audience = pop.audience(consent)
            if name == "policy" and decider is not None:
                t0 = time.perf_counter()
                chosen, send_at, holdout, decision_ids = decider.decide_day(pop_ids, now, arms)
                timing["decide"] += time.perf_counter() - t0
            elif name == "policy":
                recent = log.sends_since(since.to_pydatetime())[["customer_id", "channel", "send_at"]]
                hist = hist_sends[hist_sends["send_at"] >= since]
                recent = pd.concat([hist, recent], ignore_index=True) if len(recent) else hist
                ctx = context_at(lane.contacts, now)
            else:
                recent = lane.recent_sends(hist_sends, since)
                ctx = None
            if name != "policy" or decider is None:
                recent = SendHistory.from_frame(recent)
                chosen = np.zeros(n, dtype=np.int64)
                send_at = np.empty(n, dtype="datetime64[ns]")
                holdout = np.zeros(n, dtype=bool)
                decision_ids = np.array([f"{journey_id}-{day:03d}-{i:07d}" for i in range(n)], dtype=object)
            for lo in range(0, n if name != "policy" or decider is None else 0, settings.batch_size):
                idx = order[lo: lo + settings.batch_size]
                t0 = time.perf_counter()
                elig = lane.guard.apply(audience.take(idx), now_dt, recent)
                if name == "policy":
                    dec = policy.decide(ctx[idx], elig.mask)
                    a, dist = dec.arm, dec.distribution
                elif name == "random":
                    dec = random_policy.decide(np.zeros((len(idx), 1)), elig.mask)
                    a, dist = dec.arm, dec.distribution
                elif name == "rule":
                    a = rule.choose(elig.mask)
                elif name == "oracle":
                    t1 = time.perf_counter()
                    a = oracle.choose(persons[idx], elig.mask, elig.send_at, lane.state)
                    timing["oracle"] += time.perf_counter() - t1
                else:
                    a = np.zeros(len(idx), dtype=np.int64)
                lane.guard.settle(elig, a)
                timing["decide"] += time.perf_counter() - t0
                chosen[idx] = a
                send_at[idx] = elig.chosen_send_at(a)
                holdout[idx] = elig.holdout
                if name == "policy":
                    t0 = time.perf_counter()
                    recs = _records(arms, pop_ids, tz, idx, list(decision_ids[idx]), now, a, dist, elig,
                                    ctx[idx] if settings.log_context else None, spec.name,
                                    str(policy.n_updates_), journey_id)
                    log.append(recs)  # durable before the world sees the decisions
                    for i in idx:
                        context_cache[decision_ids[i]] = ctx[i]
                    timing["log"] += time.perf_counter() - t0
            # the world answers
            t0 = time.perf_counter()
            ch = arms.channel[chosen]
            actions = ActionBatch(persons, ch, arms.offer[chosen], send_at)
            probs = world.true_probabilities(actions, lane.state)
            out = world.respond(actions, lane.state, lane.rng)
            timing["respond"] += time.perf_counter() - t0
            ch64 = ch.astype(np.int64)
            r = reward(out.value, ch64, out.unsubscribed, rc)
            er = expected_reward(probs.expected_value, ch64, probs.unsubscribed, rc)
            send = ch64 >= 0
            st = lane.stats
            st.reward_sum += float(r.sum())
            st.expected_sum += float(er.sum())
            st.decisions += n
            st.sends.append(int(send.sum()))
            st.unsubscribes += int(out.unsubscribed.sum())
            st.conversions += int(out.converted.sum())
            st.value_per_day.append(float(r.mean()))
            st.expected_per_day.append(float(er.mean()))
            sent = pd.DataFrame({
                "decision_id": decision_ids[send], "customer_id": pop_ids[send],
                "channel": [CHANNELS[c].value for c in ch64[send]],
                "offer": [arms.catalog.offers[o].id for o in arms.offer[chosen[send]]],
                "send_at": pd.to_datetime(send_at[send]).tz_localize("UTC"), "decided_at": now,
            })
            lane.sends.append(sent)
            lane.contacts.add_sends(sent["customer_id"].to_numpy(object), sent["channel"].to_numpy(object),
                                    sent["send_at"])
            u = out.unsubscribed & send
            uns = pd.DataFrame({"customer_id": pop_ids[u], "channel": [CHANNELS[c].value for c in ch64[u]],
                                "unsubscribed_at": pd.to_datetime(out.unsubscribed_at[u]).tz_localize("UTC")})
            lane.unsubs.append(uns)
            lane.contacts.add_unsubscribes(uns["customer_id"].to_numpy(object), uns["channel"].to_numpy(object),
                                           uns["unsubscribed_at"])
            if name == "policy":
                events = _outcome_records(decision_ids, out, send)
                pending = events if pending is None else pd.concat([pending, events], ignore_index=True)

        # outcomes reach the log as they happen; the policy learns from matured decisions
        t0 = time.perf_counter()
        learn_at = now + pd.Timedelta(days=1)
        due = pending["occurred_at"] <= learn_at if pending is not None else pd.Series([], dtype=bool)
        if due.any() and decider is not None:
            decider.report(pending[due])
            pending = pending[~due].reset_index(drop=True)
        elif due.any():
            rows = pending[due]
            times = pd.DatetimeIndex(rows["occurred_at"]).to_pydatetime()
            values = rows["value"].to_numpy(dtype=np.float64)
            log.add_outcomes([OutcomeRecord.model_construct(event_id=e, decision_id=d, event=OutcomeEvent(ev),
                                                            occurred_at=t, value=None if v != v else float(v))
                              for e, d, ev, t, v in zip(rows["event_id"], rows["decision_id"], rows["event"],
                                                        times, values, strict=True)])
            pending = pending[~due].reset_index(drop=True)
        n_learn = decider.end_of_day(learn_at) if decider is not None else 0
        if policy.learns and settings.learn:
            j = log.joined(rc, now=learn_at.to_pydatetime(), since=(learn_at - pd.Timedelta(days=4)).to_pydatetime(),
                           columns=["action", "propensity"], parse_json=False)
            j = j[j["matured"] & ~j["decision_id"].isin(learned)]
            if len(j):
                a_idx = arms.index(list(j["action"]))
                X = np.stack([context_cache.pop(d) for d in j["decision_id"]])
                policy.update(X, a_idx, j["reward"].to_numpy(), j["propensity"].to_numpy(),
                              feedback=Feedback.from_frame(j))
                learned.update(j["decision_id"])
                n_learn = len(j)
        timing["learn"] += time.perf_counter() - t0
        vals = " ".join(f"{k} {lanes[k].stats.value_per_day[-1]:.3f}" for k in LANES)
        say(f"day {day + 1}/{settings.days} {now.date()}: {vals} | policy sends {lanes['policy'].stats.sends[-1]:,}, "
            f"learned from {n_learn:,} | {time.perf_counter() - t_day:.1f}s")

    # independent audit of every lane's sends
    cust = pop.frame
    violations: dict[str, dict] = {}
    for name, lane in lanes.items():
        sends = pd.concat(lane.sends, ignore_index=True) if lane.sends else pd.DataFrame()
        if name == "policy":
            logged = decider.decisions() if decider is not None else log.decisions(
                parse_json=False, columns=["customer_id", "channel", "offer", "send_at", "decided_at", "holdout"])
            sends = logged[logged["channel"].notna()].reset_index(drop=True)
            holdouts = logged.loc[logged["holdout"], "customer_id"]
        else:
            holdouts = None
        unsubs = pd.concat([hist_unsubs, *lane.unsubs], ignore_index=True)
        res = audit_sends(sends, cust, config.guardrails, world.catalog, rc, prior_sends=hist_sends,
                          unsubscribes=unsubs, holdout_customers=holdouts)
        violations[name] = res.as_dict()
    summary = {name: lane.stats.summary() for name, lane in lanes.items()}
    pv, rv, ov, nv = (summary[k]["value"] for k in ("policy", "rule", "oracle", "no_send"))
    pe, re_, oe, ne = (summary[k]["expected_value"] for k in ("policy", "rule", "oracle", "no_send"))

    def ratio(a, b):
        return a / b if b else float("nan")

    result = {
        **summary,
        "guardrail_violations": int(sum(v["total"] for v in violations.values())),
        "violations": violations,
        "comparison": {
            "policy_over_rule": ratio(pv, rv),
            "gap_closed": ratio(pv - rv, ov - rv),
            "uplift_over_rule": ratio(pv - nv, rv - nv),
            "expected_policy_over_rule": ratio(pe, re_),
            "expected_gap_closed": ratio(pe - re_, oe - re_),
            "expected_uplift_over_rule": ratio(pe - ne, re_ - ne),
        },
        "days": settings.days,
        "customers": n,
        "customer_days": n * settings.days,
        "seed": settings.seed,
        "policy_name": spec.name,
        "rule_offer": rule.offer,
        "arms": arms.n_arms,
        "warm_start": warm,
        "decisions_logged": len(log),
        "join_rate": log.join_rate(now=(start + pd.Timedelta(days=settings.days)).to_pydatetime(), reward_config=rc),
        "log": str(log_path),
        "holdout_customers": int(holdout_mask(pop_ids, config.guardrails.holdout_share,
                                              config.guardrails.holdout_salt).sum()),
        "seconds": round(time.perf_counter() - t_start, 2),
        "timing": {k: round(v, 2) for k, v in timing.items()},
    }
    if decider is not None:
        result.update(decider.figures(start + pd.Timedelta(days=settings.days), rc))
    log.close()
    for lane in lanes.values():
        lane.guard.ledger.close()
    if not np.isfinite(pv):
        raise InputError("the journey produced no decisions")
    return result


__all__ = ["LANES", "JourneySettings", "PolicyDecider", "run_journey"]

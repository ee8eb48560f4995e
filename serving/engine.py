"""The decide path as a plain class (no BentoML here), vectorised so one call serves one customer
or a whole campaign audience:

    requests -> ONE online-feature read -> policy context (policies.context.context_matrix, contact
    features refreshed from the decision log) -> guardrails (consent, reachability, caps from the
    log's recent sends, quiet hours, budgets, holdout) -> policy distribution (A/B arm by stable
    hash) -> seeded sample -> champion model scores of the chosen action -> DecisionRecords
    appended to the DecisionLog -> responses.

The decision is durable in the log before a response object exists. Degraded paths answer,
flagged ``fallback: true`` with a reason (``FALLBACK_REASONS``), never an error:

  feature_store_unavailable  the online store cannot be read -> no-send (no consent known)
  model_missing              a champion model is not in the registry -> the safe rule
  registry_unavailable       the registry cannot be reached -> the safe rule
  policy_unavailable         no policy could be loaded or warm-started -> the safe rule
  cold_start                 the customer is unknown to the feature store -> the policy on
                             default features (with no consent known, that is no-send)

The safe rule is a marketer's rule under the same guardrails: ``rule_channel`` at ``rule_hour``
local with ``rule_offer`` when allowed, else no-send; its logged propensity is 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.errors import DecisioningError, InputError
from core.types import CATEGORIES, CHANNELS, IDENTITY_KEYS, NO_SEND, Channel
from core.workspace import Workspace
from policies.arms import NO_SEND_INDEX, ArmSpace
from policies.base import Policy
from policies.context import CONTACT_FEATURES, CONTEXT_COLUMNS, ContactFeatures, context_matrix
from policies.guardrails import Audience, Guardrails
from policies.log import DecisionLog
from policies.records import DecisionRecord, OutcomeRecord
from serving.champions import Champions, ChampionSnapshot
from serving.config import MODEL_NAMES, ServingConfig
from serving.schemas import (
    Action,
    BatchDecisionRequest,
    DecisionRequest,
    DecisionResponse,
    OutcomeIn,
    OutcomeResult,
)

log = logging.getLogger(__name__)

FALLBACK_REASONS = ("feature_store_unavailable", "model_missing", "registry_unavailable",
                    "policy_unavailable", "cold_start")
CH = [c.value for c in CHANNELS]
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?\d[\d\s\-().]{7,}\d")
#: the longest look-back of the context's contact features and the caps
_LOOKBACK = timedelta(days=31)


def looks_like_contact(value: str) -> bool:
    """An e-mail address or a phone number (raw contact identifiers stop at the profiles stage)."""
    if _EMAIL.search(value):
        return True
    return any(sum(ch.isdigit() for ch in m.group()) >= 9 for m in _PHONE.finditer(value))


def scrub_context(context: dict) -> dict[str, float | int | str | bool | None]:
    """The request's free-form context as loggable scalars, without contact identifiers: keys
    named like an identity key are dropped, values that look like an e-mail or a phone number
    are replaced by "[redacted]", nested values become their JSON text (truncated)."""
    out: dict[str, float | int | str | bool | None] = {}
    for k, v in list(context.items())[:50]:
        key = str(k)[:100]
        if any(ident in key.lower() for ident in (*IDENTITY_KEYS, "unionid", "mobile", "openid")):
            continue
        if isinstance(v, bool | int | float) or v is None:
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            out[f"request.{key}"] = v
            continue
        text = v if isinstance(v, str) else json.dumps(v, default=str)[:500]
        out[f"request.{key}"] = "[redacted]" if looks_like_contact(text) else text[:500]
    return out


def _uniform(keys: Sequence[str], seed: int) -> np.ndarray:
    """(n,) stable uniforms in [0, 1) from sha256(seed | key)."""
    prefix = f"{seed}|".encode()
    return np.fromiter((int.from_bytes(hashlib.sha256(prefix + k.encode()).digest()[:8], "big") / 2.0**64
                        for k in keys), dtype=np.float64, count=len(keys))


def ab_assignment(customer_ids: Sequence[str], share: float, salt: str) -> np.ndarray:
    """(n,) bool: the customer is in the challenger arm (stable hash of salt | customer_id)."""
    return _uniform([str(c) for c in customer_ids], hash_seed(salt)) < share


def hash_seed(salt: str) -> int:
    return int.from_bytes(hashlib.sha256(salt.encode()).digest()[:4], "big")


@dataclass
class PolicyArm:
    """One arm of the (optional) policy A/B test."""

    name: str  # "champion" or "challenger"
    policy: Policy | None
    source: str  # 'file', 'warm_start' or why it is missing
    version: str = "0"


@dataclass
class Request:
    """One decision to make (the engine's internal form of a request)."""

    customer_id: str
    request_time: datetime
    journey_id: str | None = None
    journey_step: str | None = None
    channels: tuple[Channel, ...] | None = None
    offers: tuple[str, ...] | None = None
    window: tuple[int, int] | None = None
    allow_no_send: bool = True
    context: dict = field(default_factory=dict)


class DecisionEngine:
    """The decision service's logic. Build it with :meth:`open` (loads everything, with fallbacks)
    or give it its parts (tests, benchmarks). Thread-safe: requests may come from many threads."""

    def __init__(self, workspace: Workspace, config: ServingConfig, *, reader, champions: Champions | None,
                 arms: dict[str, PolicyArm], decision_log: DecisionLog, guardrails: Guardrails):
        self.workspace = workspace
        self.config = config
        self.reader = reader  # FastOnlineReader or None (unavailable)
        self.reader_error: str | None = None
        self.champions = champions
        self.policy_arms = arms
        self.log = decision_log
        self.guardrails = guardrails
        self.arm_space: ArmSpace = guardrails.arms
        self._arm_ids = self.arm_space.id_array()
        self._local = threading.local()
        cat = self.arm_space.catalog
        self._rule_offer = config.rule_offer or self.arm_space.offers[0]
        if self._rule_offer not in self.arm_space.offers:
            raise InputError(f"rule_offer {self._rule_offer!r} is not one of the arms' offers {self.arm_space.offers}")
        slots = np.asarray(self.arm_space.slots)
        rule_slot = int(slots[np.argmin(np.abs(slots - config.rule_hour))])
        self._rule_arm = self.arm_space.arm(config.rule_channel, self._rule_offer, rule_slot)
        self.history_sends: pd.DataFrame | None = None  # recent campaign sends of the profiles (caps)
        self._offer_net = [(o.net_value(1.0) - o.net_value(0.0), o.net_value(0.0)) for o in cat.offers]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def open(cls, workspace: Workspace, config: ServingConfig | None = None, *,
             tracking_uri: str | None = None, start_refresh: bool = True) -> DecisionEngine:
        """Everything from the workspace: the online store, the champions (polled in the
        background), the policies (pickle or warm start), the decision log. A part that fails
        to load leaves its fallback in place; nothing here raises for a missing part."""
        from serving.policy_state import load_or_warm_start

        config = config or ServingConfig()
        layer = config.policy_layer
        arms = ArmSpace.from_config(layer.arms)
        from policies.budget import BudgetLedger

        workspace.decisions.mkdir(parents=True, exist_ok=True)
        ledger = BudgetLedger(workspace.decisions / "budget.sqlite")
        guard = Guardrails(arms, layer.guardrails, ledger=ledger)
        decision_log = DecisionLog(workspace.decisions / "decisions.sqlite",
                                   synchronous="FULL" if config.durable else "NORMAL")
        reader, reader_error = None, None
        try:
            from features.online import FastOnlineReader

            reader = FastOnlineReader.open(workspace)
        except DecisioningError as exc:
            reader_error = str(exc)
        policy_arms: dict[str, PolicyArm] = {}
        specs = [("champion", config.policy, config.policy_params)]
        if config.ab_test is not None:
            specs.append(("challenger", config.ab_test.challenger, config.ab_test.challenger_params))
        for arm_name, pname, params in specs:
            try:
                policy, source = load_or_warm_start(workspace, pname, params, layer, config.seed,
                                                    config.warm_start_max_sends)
                policy_arms[arm_name] = PolicyArm(arm_name, policy, source, _policy_version(policy))
            except DecisioningError as exc:
                policy_arms[arm_name] = PolicyArm(arm_name, None, f"unavailable: {exc}")
        champions = Champions(workspace, {f: MODEL_NAMES[f] for f in config.models}, config.model_alias,
                              tracking_uri=tracking_uri or config.registry_uri)
        if start_refresh:
            champions.start(config.refresh_seconds)
        else:
            champions.refresh()
        engine = cls(workspace, config, reader=reader, champions=champions, arms=policy_arms,
                     decision_log=decision_log, guardrails=guard)
        engine.reader_error = reader_error
        engine.history_sends = _history_sends(workspace)
        return engine

    def close(self) -> None:
        if self.champions is not None:
            self.champions.close()
        self.log.close()

    def status(self) -> dict:
        """What is loaded (for /readyz-like checks and logs). No identifiers."""
        snap = self.champions.snapshot() if self.champions else ChampionSnapshot()
        return {
            "feature_store": "ok" if self.reader is not None else f"unavailable: {self.reader_error}",
            "models": dict(snap.versions), "models_missing": dict(snap.missing),
            "policies": {a.name: {"policy": None if a.policy is None else type(a.policy).name,
                                  "source": a.source, "version": a.version} for a in self.policy_arms.values()},
            "decision_log": str(self.log.path),
        }

    # -- public entries ----------------------------------------------------------------------
    def decide(self, request: DecisionRequest) -> DecisionResponse:
        """One decision (logged before it is returned)."""
        return self.decide_many([self._request(request)])[0]

    def decide_batch(self, request: BatchDecisionRequest) -> list[DecisionResponse]:
        """Decisions for a campaign audience, vectorised (one feature read, one policy call per arm)."""
        t = _utc(request.request_time)
        common = dict(journey_id=request.journey.id if request.journey else None,
                      journey_step=request.journey.step if request.journey else None,
                      channels=tuple(request.channels) if request.channels else None,
                      offers=tuple(request.offers) if request.offers else None,
                      window=(request.send_window.start_hour, request.send_window.end_hour)
                      if request.send_window else None,
                      allow_no_send=request.allow_no_send)
        for cid in request.customer_ids:
            _check_customer_id(cid)
        if len(set(request.customer_ids)) != len(request.customer_ids):
            seen: set[str] = set()
            dup = next(c for c in request.customer_ids if c in seen or seen.add(c))
            raise InputError(f"customer_ids: {dup!r} appears more than once; decide once per customer")
        return self.decide_many([Request(str(c), t, **common) for c in request.customer_ids])

    def record_outcomes(self, outcomes: Sequence[OutcomeIn]) -> OutcomeResult:
        """Store outcomes idempotently by event_id; a repeat counts once and is named."""
        records = [OutcomeRecord(event_id=o.event_id, decision_id=o.decision_id, event=o.event,
                                 occurred_at=_utc(o.occurred_at), value=o.value) for o in outcomes]
        res = self.log.add_outcomes(records)
        return OutcomeResult(accepted=res.accepted, duplicates=res.duplicates, unknown_decision=res.unknown_decision,
                             duplicate_event_ids=list(res.duplicate_event_ids),
                             unknown_event_ids=list(res.unknown_event_ids))

    # -- the decide path -----------------------------------------------------------------------
    def _request(self, r: DecisionRequest) -> Request:
        _check_customer_id(r.customer_id)
        return Request(
            customer_id=r.customer_id, request_time=_utc(r.request_time),
            journey_id=r.journey.id if r.journey else None, journey_step=r.journey.step if r.journey else None,
            channels=tuple(r.channels) if r.channels else None, offers=tuple(r.offers) if r.offers else None,
            window=(r.send_window.start_hour, r.send_window.end_hour) if r.send_window else None,
            allow_no_send=r.allow_no_send, context=scrub_context(r.context),
        )

    def decide_many(self, reqs: list[Request]) -> list[DecisionResponse]:
        """Decisions for n requests (any mix of customers and times; the batch path uses one time)."""
        if not reqs:
            return []
        # all requests of one call are decided at one time (the batch path) or one by one
        if len({r.request_time for r in reqs}) > 1:
            return [self.decide_many([r])[0] for r in reqs]
        for r in reqs:
            self._check_request(r)
        plan = self._plan(reqs)
        records = self._records(reqs, plan)
        self.log.append(records)  # durable BEFORE any response exists
        return [self._response(rec) for rec in records]

    def _check_request(self, r: Request) -> None:
        if r.offers:
            bad = [o for o in r.offers if o not in self.arm_space.offers]
            if bad:
                raise InputError(f"offers: {bad} are not offers the service may choose from "
                                 f"({list(self.arm_space.offers)})")
        if r.channels:
            bad = [c.value for c in r.channels if c not in self.arm_space.channels]
            if bad:
                raise InputError(f"channels: {bad} are not channels the service may use "
                                 f"({[c.value for c in self.arm_space.channels]})")

    def _plan(self, reqs: list[Request]) -> _Plan:
        n = len(reqs)
        t = reqs[0].request_time
        ids = [r.customer_id for r in reqs]
        plan = _Plan(n=n, decided_at=t, arm=np.zeros(n, np.int64), propensity=np.ones(n),
                     distribution=None, eligibility=None, fallback=np.array([None] * n, dtype=object),
                     ab_arm=np.array([None] * n, dtype=object), context=None, features=None,
                     known=np.zeros(n, bool))
        snap = self.champions.snapshot() if self.champions is not None else ChampionSnapshot()
        plan.snapshot = snap
        # 1. online features (one read)
        feats = None
        if self.reader is not None:
            try:
                feats = self.reader.read(self.config.feature_service, ids, t)
            except Exception as exc:  # the store is gone, locked, corrupt: never a 5xx
                self.reader_error = f"{type(exc).__name__}: {exc}"
                log.warning("online store unavailable: %s", self.reader_error)
        if feats is None:
            plan.fallback[:] = "feature_store_unavailable"
            plan.arm[:] = NO_SEND_INDEX
            plan.timezone = np.array(["UTC"] * n, dtype=object)
            return plan
        plan.known = np.asarray(feats.known, dtype=bool)
        cols = dict(feats.columns)
        # 2. contact features and unsubscribes from the decision log (what the service itself did)
        self._refresh_contacts(cols, ids, t)
        frame = pd.DataFrame(cols)
        plan.features = frame
        X = context_matrix(frame)
        plan.context = X
        # 3. guardrails
        audience = self._audience(ids, frame)
        plan.timezone = audience.timezone
        recent = self.log.sends_since(t - _LOOKBACK, customer_ids=sorted(set(ids)))[["customer_id", "channel",
                                                                                      "send_at"]]
        hist = self.history_sends
        if hist is not None and len(hist):
            hist = hist[hist["customer_id"].isin(set(ids))]
            if len(hist):
                recent = pd.concat([hist, recent], ignore_index=True)
        elig = self.guardrails.apply(audience, t, recent)
        self._restrict(elig.mask, reqs)
        plan.eligibility = elig
        mask = elig.mask
        # 4. policy (A/B arms) or the safe rule
        keys = [f"{r.customer_id}|{t.isoformat()}|{r.journey_id}|{r.journey_step}" for r in reqs]
        u = _uniform(keys, self.config.seed)
        in_challenger = (ab_assignment(ids, self.config.ab_test.challenger_share, self.config.ab_test.salt)
                         if self.config.ab_test is not None else np.zeros(n, bool))
        dist = np.zeros(mask.shape)
        model_reason = next(iter(dict(snap.missing).values()), None)
        for arm_name, members in (("champion", ~in_challenger), ("challenger", in_challenger)):
            idx = np.flatnonzero(members)
            if not len(idx):
                continue
            parm = self.policy_arms.get(arm_name)
            if self.config.ab_test is not None:
                plan.ab_arm[idx] = arm_name
            reason = model_reason
            if reason is None and (parm is None or parm.policy is None):
                reason = "policy_unavailable"
            if reason is not None:
                plan.fallback[idx] = reason
                rule = np.where(mask[idx, self._rule_arm], self._rule_arm, NO_SEND_INDEX)
                dist[idx, rule] = 1.0
                continue
            try:
                dist[idx] = parm.policy.distribution(X[idx], mask[idx])
            except Exception as exc:  # a policy that cannot answer must not turn into a 5xx
                log.warning("policy %s failed: %s", arm_name, exc)
                plan.fallback[idx] = "policy_unavailable"
                rule = np.where(mask[idx, self._rule_arm], self._rule_arm, NO_SEND_INDEX)
                dist[idx] = 0.0
                dist[idx, rule] = 1.0
        cold = ~plan.known & (plan.fallback == None)  # noqa: E711 (object array)
        plan.fallback[cold] = "cold_start"
        # 5. seeded sample from each row's distribution
        cum = np.cumsum(dist, axis=1)
        arm = np.argmax(cum > (u * cum[:, -1])[:, None], axis=1).astype(np.int64)
        plan.arm = arm
        plan.propensity = dist[np.arange(n), arm]
        plan.distribution = dist
        self.guardrails.settle(elig, arm)
        # 6. champion scores of the chosen action
        plan.scores = self._scores(frame, arm, elig, snap, plan.known)
        return plan

    def _refresh_contacts(self, cols: dict[str, np.ndarray], ids: list[str], t: datetime) -> None:
        """Contact features and consent as of ``t``: the online store's values, updated with the
        sends this service logged and the unsubscribes reported to it."""
        sends = self.log.sends_since(t - _LOOKBACK, until=t, customer_ids=sorted(set(ids)))
        unsub = self._unsubscribes(ids, t)
        if not len(sends) and not unsub:
            return
        cf = ContactFeatures(np.asarray(ids, dtype=object))
        if len(sends):
            cf.add_sends(sends["customer_id"].to_numpy(), sends["channel"].to_numpy(), sends["send_at"])
        if unsub:
            cids, chans = zip(*unsub, strict=True)
            cf.add_unsubscribes(np.asarray(cids, dtype=object), np.asarray(chans, dtype=object), [t - timedelta(seconds=1)] * len(cids))
        logged = cf.frame(t)
        for name in CONTACT_FEATURES:
            if name not in cols:
                continue
            have = np.asarray(cols[name], dtype=np.float64)
            new = logged[name].to_numpy()
            cols[name] = np.minimum(have, new) if name.startswith("days_") else np.maximum(have, new)
        for c in CH:
            name = f"unsubscribed_{c}"
            if name in cols:
                cols[f"consent_{c}"] = np.where(np.asarray(cols[name], dtype=np.float64) > 0, 0,
                                                cols.get(f"consent_{c}", 0))

    def _unsubscribes(self, ids: list[str], t: datetime) -> list[tuple[str, str]]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.log.path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            self._local.conn = conn
        rows = conn.execute(
            "SELECT d.customer_id, d.channel FROM outcomes o JOIN decisions d ON o.decision_id = d.decision_id "
            "WHERE o.event = 'unsubscribed' AND d.channel IS NOT NULL AND o.occurred_at <= ? "
            "AND d.customer_id IN (SELECT value FROM json_each(?))",
            (int((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)), json.dumps(sorted(set(ids)))),
        ).fetchall()
        return [(c, ch) for c, ch in rows]

    def _audience(self, ids: list[str], frame: pd.DataFrame) -> Audience:
        n = len(ids)

        def col(name: str) -> np.ndarray:
            return frame[name].to_numpy(dtype=np.float64) if name in frame else np.zeros(n)

        consent = np.column_stack([col(f"consent_{c}") > 0 for c in CH])
        reachable = np.column_stack([col(f"reachable_{c}") > 0 for c in CH])
        interest = np.column_stack([(col(f"order_share_{c}") > 0) | (col(f"view_share_{c}") > 0) for c in CATEGORIES])
        tz = frame["timezone"].to_numpy(dtype=object) if "timezone" in frame else np.array(["UTC"] * n, dtype=object)
        tz = np.array([z if _valid_tz(z) else "UTC" for z in tz], dtype=object)
        return Audience(np.asarray(ids, dtype=object), tz, consent, reachable, interest)

    def _restrict(self, mask: np.ndarray, reqs: list[Request]) -> None:
        """The request's own limits (candidate channels, offers, send window, allow_no_send)."""
        a = self.arm_space
        send = a.is_send
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            if r.channels or r.offers or r.window or not r.allow_no_send:
                groups.setdefault((r.channels, r.offers, r.window, r.allow_no_send), []).append(i)
        for (channels, offers, window, allow_no_send), rows in groups.items():
            keep = np.ones(a.n_arms, dtype=bool)
            if channels:
                keep &= ~send | np.isin(a.channel, [CHANNELS.index(c) for c in channels])
            if offers:
                keep &= ~send | np.isin(a.offer, [a.catalog.code(o) for o in offers])
            if window:
                keep &= ~send | ((a.slot >= window[0]) & (a.slot < window[1]))
            idx = np.asarray(rows)
            mask[np.ix_(idx, np.flatnonzero(~keep))] = False
            if not allow_no_send:
                can_send = mask[idx][:, send].any(axis=1)
                mask[idx[can_send], NO_SEND_INDEX] = False
        mask[~mask.any(axis=1), NO_SEND_INDEX] = True

    def _scores(self, frame: pd.DataFrame, arm: np.ndarray, elig, snap: ChampionSnapshot,
                known: np.ndarray) -> dict[str, np.ndarray]:
        """Champion scores: propensity, churn (every customer); P(convert) and expected net value
        of the chosen offer, P(open) at the chosen hour (sends only). Each (n,), NaN where absent."""
        n = len(frame)
        out: dict[str, np.ndarray] = {}
        models = snap.models
        a = self.arm_space
        for fam, key in (("propensity", "propensity"), ("churn", "churn")):
            est = models.get(fam)
            if est is not None:
                out[key] = _predict(est, frame)
        sends = np.flatnonzero(a.is_send[arm])
        if len(sends):
            sub = frame.iloc[sends].reset_index(drop=True).copy(deep=False)
            sub["channel"] = a.channel[arm[sends]].astype(np.int64)
            sub["offer"] = a.offer[arm[sends]].astype(np.int64)
            sub["send_hour"] = elig.send_hour[sends, arm[sends]].astype(np.int64)
            est = models.get("offer")
            if est is not None:
                p = np.full(n, np.nan)
                p[sends] = _predict(est, sub)
                out["p_convert"] = p
                try:
                    value = est.expected_order_value(sub)
                    coef = np.asarray([self._offer_net[o] for o in sub["offer"].to_numpy()])
                    ev = np.full(n, np.nan)
                    ev[sends] = p[sends] * (coef[:, 0] * value + coef[:, 1])
                    out["expected_value"] = ev
                except Exception:  # an estimator without order values still gives P(convert)
                    pass
            est = models.get("send_time")
            if est is not None:
                p = np.full(n, np.nan)
                p[sends] = _predict(est, sub)
                out["p_open"] = p
        return out

    # -- records and responses -------------------------------------------------------------------
    def _records(self, reqs: list[Request], plan: _Plan) -> list[DecisionRecord]:
        a = self.arm_space
        t = plan.decided_at
        snap = plan.snapshot
        versions = {f: str(v) for f, v in dict(snap.versions).items()}
        elig = plan.eligibility
        acted = elig.reasons_all() if elig is not None else [[] for _ in reqs]
        send_at = elig.chosen_send_at(plan.arm) if elig is not None else None
        send_hour = elig.chosen_send_hour(plan.arm) if elig is not None else None
        ctx_rows = np.round(plan.context, 6).tolist() if plan.context is not None else None
        holdout = elig.holdout if elig is not None else np.zeros(plan.n, bool)
        score_items = [(k, v) for k, v in (plan.scores or {}).items()]
        out = []
        for i, r in enumerate(reqs):
            k = int(plan.arm[i])
            fb = plan.fallback[i]
            parm_name = plan.ab_arm[i] or "champion"
            parm = self.policy_arms.get(parm_name)
            if fb in ("feature_store_unavailable", "model_missing", "registry_unavailable", "policy_unavailable"):
                pname, pver = "safe_rule", "1"
            else:
                pname = type(parm.policy).name if parm and parm.policy is not None else "safe_rule"
                pver = parm.version if parm else "0"
            if plan.distribution is not None:
                row = plan.distribution[i]
                nz = np.flatnonzero(row)
                dist = {self._arm_ids[j]: float(row[j]) for j in nz}
            else:
                dist = {NO_SEND: 1.0}
            is_send = k != NO_SEND_INDEX
            ch = Channel(CHANNELS[int(a.channel[k])]) if is_send else None
            context = dict(zip(CONTEXT_COLUMNS, ctx_rows[i], strict=True)) if ctx_rows is not None else {}
            context.update(r.context)
            scores = {name: float(v[i]) for name, v in score_items if np.isfinite(v[i])}
            reasons = _reasons(fb, k, float(plan.propensity[i]), acted[i], pname, self._arm_ids)
            out.append(DecisionRecord.model_construct(
                decision_id=uuid.uuid4().hex, customer_id=r.customer_id, decided_at=t,
                action=self._arm_ids[k], channel=ch, offer=a.offers[int(a.offer_level[k])] if is_send else None,
                send_slot=int(send_hour[i]) if is_send else None,
                send_at=pd.Timestamp(send_at[i]).tz_localize("UTC").to_pydatetime() if is_send else None,
                timezone=str(plan.timezone[i]), propensity=float(plan.propensity[i]), distribution=dist,
                context=context, scores=scores, reasons=reasons, guardrails=list(acted[i]), policy=pname,
                policy_version=pver, model_versions=versions, ab_arm=plan.ab_arm[i],
                holdout=bool(holdout[i]), fallback=fb is not None, journey_id=r.journey_id,
                journey_step=r.journey_step,
            ))
        return out

    @staticmethod
    def _response(rec: DecisionRecord) -> DecisionResponse:
        send_at = rec.send_at.astimezone(ZoneInfo(rec.timezone)) if rec.send_at is not None else None
        fallback_reason = next((r.removeprefix("fallback: ") for r in rec.reasons if r.startswith("fallback: ")), None)
        return DecisionResponse.model_construct(
            decision_id=rec.decision_id, customer_id=rec.customer_id,
            action=Action.model_construct(send=rec.channel is not None, channel=rec.channel, offer=rec.offer,
                                          send_at=send_at, send_slot=rec.send_slot, arm=rec.action),
            probability=rec.propensity, scores=rec.scores, reasons=rec.reasons, guardrails=rec.guardrails,
            policy=rec.policy, policy_version=rec.policy_version, model_versions=rec.model_versions,
            ab_arm=rec.ab_arm, holdout=rec.holdout, fallback=rec.fallback, fallback_reason=fallback_reason,
            decided_at=rec.decided_at,
        )


@dataclass
class _Plan:
    n: int
    decided_at: datetime
    arm: np.ndarray
    propensity: np.ndarray
    distribution: np.ndarray | None
    eligibility: object | None
    fallback: np.ndarray
    ab_arm: np.ndarray
    context: np.ndarray | None
    features: pd.DataFrame | None
    known: np.ndarray
    timezone: np.ndarray | None = None
    scores: dict | None = None
    snapshot: ChampionSnapshot | None = None


def _history_sends(workspace: Workspace, days: int = 8) -> pd.DataFrame | None:
    """The last ``days`` of logged campaign sends in the profiles (customer_id, channel, send_at),
    so frequency caps count the sends made before the service existed (as the journey does)."""
    path = workspace.profiles / "engagements.parquet"
    try:
        e = pd.read_parquet(path, columns=["customer_id", "channel", "sent_at"])
    except Exception:
        return None
    e = e[e["sent_at"].notna()]
    if not len(e):
        return None
    sent = pd.to_datetime(e["sent_at"], utc=True)
    keep = sent >= sent.max() - pd.Timedelta(days=days)
    return pd.DataFrame({"customer_id": e.loc[keep, "customer_id"].astype(str).to_numpy(),
                         "channel": e.loc[keep, "channel"].astype(str).to_numpy(),
                         "send_at": sent[keep].to_numpy()}).reset_index(drop=True)


def _reasons(fallback: str | None, arm: int, p: float, acted: list[str], policy: str, arm_ids) -> list[str]:
    out = []
    if fallback is not None:
        out.append(f"fallback: {fallback}")
    if fallback in ("feature_store_unavailable",):
        out.append("no consent known: no send")
    elif fallback in ("model_missing", "registry_unavailable", "policy_unavailable"):
        out.append("safe rule: the rule's send if the guardrails allow it, else no send")
    else:
        out.append(f"{policy} chose {arm_ids[arm]} with probability {p:.3f}")
    if acted:
        out.append(f"guardrails acted: {', '.join(acted)}")
    return out


def _predict(est, frame: pd.DataFrame) -> np.ndarray:
    """P(y=1) of one of our LightGBM estimators on the rows of ``frame``: the native Booster on a
    float matrix in the estimator's feature order (no DataFrame validation on the hot path)."""
    names = list(est.feature_names_in_)
    M = np.column_stack([np.asarray(frame[c], dtype=np.float64) for c in names])
    try:
        return np.asarray(est._raw_proba(est._design(M, names)), dtype=np.float64)
    except AttributeError:  # not one of our estimators: the public path
        return est.predict_proba(frame[names])[:, 1]


def _policy_version(policy: Policy) -> str:
    return f"{type(policy).name}-n{getattr(policy, 'n_seen_', 0)}-u{getattr(policy, 'n_updates_', 0)}"


def _utc(t: datetime | None) -> datetime:
    if t is None:
        return datetime.now(UTC)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


_TZ_OK: dict[str, bool] = {}


def _valid_tz(name) -> bool:
    ok = _TZ_OK.get(name)
    if ok is None:
        try:
            ZoneInfo(str(name))
            ok = True
        except Exception:
            ok = False
        _TZ_OK[str(name)] = ok
    return ok


_PHONE_ONLY = re.compile(r"^\+?[\d\s\-().]{7,}$")


def _check_customer_id(cid: str) -> None:
    if _EMAIL.search(cid) or _PHONE_ONLY.match(cid.strip()):
        raise InputError("customer_id: must be the unified customer id, not a contact identifier "
                         "(e-mail or phone number)")

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

Speed (bench/serving.py measures it against bare floors): no DataFrame on the decide path (the
features stay arrays; the context is policies.context.context_matrix of the arrays); one indexed
query for this service's own recent sends and reported unsubscribes; the profiles' recent sends
indexed once at start; each model predicts once on a float matrix (one row: LightGBM's single-row
C entry, ``_SingleRow``); send-time grids cached per time zone and UTC quarter hour (by
policies.guardrails.Guardrails itself); budget reservations queue on an in-process lock, not on
SQLite's sleeping busy handler; concurrent requests share one commit (GroupCommit), each answered
only after its own records are committed; a record's context goes to the log as the float64 row it
already is (policies.log.encode_context_row), not re-read from its dict; no commit copies the WAL
into the file (a background thread checkpoints it every ``checkpoint_seconds``). The log's SQLite
mode is ``ServingConfig.log_synchronous``: NORMAL by default (a logged decision survives a kill -9
of the service; the fsync of FULL, which also survives a power cut, dominated a single decision's
wall time).

Audiences (``decide_many`` of >= BULK_MIN_REQUESTS requests, so ``decide_batch``): the features
come from the online store's columnar snapshot (features.online, memory-mapped, used only while it
matches the store); the policy is asked only about customers with more than one allowed arm (one
allowed arm has probability 1 under any policy); the log's recent sends are read by one scan of
the send-time index when that is cheaper than a probe per customer; the customer scores (propensity,
churn) are predicted in a second thread while this one runs the guardrails and the policy; only the
rows with more than one arm of non-zero probability need the cumulative sums of the sampling; the
log rows are built column by column (JSON from templates, each distinct float's text once; the
context features as one float64 buffer sliced per row, policies.log.encode_context_matrix) in
chunks of BULK_CHUNK, each handed to a writer thread as soon as it is built, so SQLite inserts one
chunk while the next is built, all in one transaction (the WAL's checkpoint after, off the call's
path); the requests are flyweights sharing the batch's options;
the call returns, only after the commit, a ``DecisionBatch``: the response objects are built when
read, and /decide/batch writes its JSON from the columns. Same decisions, log rows and responses as
the per-record path (tests/serving/test_batch.py).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import logging
import math
import operator
import os
import queue
import re
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.errors import DecisioningError, InputError
from core.types import CATEGORIES, CHANNELS, IDENTITY_KEYS, NO_SEND, Channel
from core.workspace import Workspace
from policies.arms import NO_SEND_INDEX, ArmSpace
from policies.base import Policy
from policies.context import CONTACT_FEATURES, CONTEXT_COLUMNS, ContactFeatures, context_matrix
from policies.guardrails import Audience, Guardrails, SendHistory
from policies.log import DecisionLog, encode_context_row, encode_distribution, encode_distribution_matrix
from policies.records import DecisionRecord, OutcomeRecord
from serving.champions import Champions, ChampionSnapshot
from serving.config import MODEL_NAMES, ServingConfig
from serving.schemas import (
    Action,
    BatchDecisionRequest,
    DecisionBatch,
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
    decision_id: str | None = None  # set from an idempotency key (serving.idempotency); else random


_REQUEST_FIELDS = tuple(f for f in Request.__dataclass_fields__)
_REQUEST_DEFAULT = Request("", datetime(1970, 1, 1, tzinfo=UTC))


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
        self.policy_files = None  # serving.policy_state.ServedPolicies: follow the policy files (workers)
        self.log = decision_log
        self.guardrails = guardrails
        self.arm_space: ArmSpace = guardrails.arms
        self._arm_ids = self.arm_space.id_array()
        #: the arm list the log stores distributions over (policies.log's binary form)
        self.arm_layout: tuple[str, ...] = tuple(str(a) for a in self._arm_ids)
        self._commits = GroupCommit(decision_log, arms=self.arm_layout)
        self._local = threading.local()
        cat = self.arm_space.catalog
        self._rule_offer = config.rule_offer or self.arm_space.offers[0]
        if self._rule_offer not in self.arm_space.offers:
            raise InputError(f"rule_offer {self._rule_offer!r} is not one of the arms' offers {self.arm_space.offers}")
        slots = np.asarray(self.arm_space.slots)
        rule_slot = int(slots[np.argmin(np.abs(slots - config.rule_hour))])
        self._rule_arm = self.arm_space.arm(config.rule_channel, self._rule_offer, rule_slot)
        self.history_sends = None  # recent campaign sends of the profiles (caps); indexed by the setter
        self._offer_net = [(o.net_value(1.0) - o.net_value(0.0), o.net_value(0.0)) for o in cat.offers]
        self._offer_coef = np.asarray(self._offer_net, dtype=np.float64).reshape(len(self._offer_net), 2)
        self._names: dict[int, tuple] = {}  # id(estimator) -> (it, its feature names, their itemgetter)

    @property
    def history_sends(self) -> pd.DataFrame | None:
        """The profiles' recent campaign sends (customer_id, channel, send_at) the caps count."""
        return self._history_frame

    @history_sends.setter
    def history_sends(self, frame: pd.DataFrame | None) -> None:
        self._history_frame = frame
        self._hist = _SendIndex.from_frame(frame)

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
        # the service's worker processes open the same files at once: creating an SQLite file and
        # switching it to WAL is not safe against a concurrent creator ("database is locked")
        with _interprocess_lock(workspace.decisions / ".open.lock"):
            ledger = BudgetLedger(workspace.decisions / "budget.sqlite")
            decision_log = DecisionLog(workspace.decisions / "decisions.sqlite", synchronous=config.log_synchronous,
                                       autocheckpoint=0 if config.checkpoint_seconds > 0 else 1000)
        guard = Guardrails(arms, layer.guardrails, ledger=ledger)
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
                                                    config.warm_start_max_sends, arm=arm_name)
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
        if config.checkpoint_seconds > 0:
            engine._checkpoints = _Checkpointer(engine, config.checkpoint_seconds, config.checkpoint_restart_pages)
        # what is loaded now (models, policies, feature plans, the send index) lives as long as the
        # engine: out of the cyclic collector's sight, so that the full collections a batch's
        # allocations trigger do not walk it each time (measured: ~0.6-1 s of a 100k batch). It is
        # still freed by reference counting when replaced (a new champion, a learned policy).
        gc.freeze()
        return engine

    def close(self) -> None:
        if getattr(self, "_bulk_writer", None) is not None:
            self._bulk_writer.shutdown(wait=True)
        if getattr(self, "_bulk_scorer", None) is not None:
            self._bulk_scorer.shutdown(wait=True)
        if self.champions is not None:
            self.champions.close()
        if getattr(self, "_checkpoints", None) is not None:
            self._checkpoints.close()
        self._commits.close()
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

    def policy_name(self, arm_name: str) -> str:
        """The registered policy name of an A/B arm ('champion' or 'challenger')."""
        if arm_name == "challenger" and self.config.ab_test is not None:
            return self.config.ab_test.challenger
        return self.config.policy

    def swap_policy(self, arm_name: str, policy: Policy, source: str = "learned") -> str:
        """Serve ``policy`` in arm ``arm_name`` from now on (one reference swap: a decide in
        flight finishes on the old one). Returns the new version (used by serving.learning)."""
        version = _policy_version(policy)
        self.policy_arms[arm_name] = PolicyArm(arm_name, policy, source, version)
        return version

    # -- public entries ----------------------------------------------------------------------
    def decide(self, request: DecisionRequest) -> DecisionResponse:
        """One decision (logged before it is returned)."""
        req = self._request(request)
        if getattr(request, "request_id", None):
            return self._idempotent(request.request_id, [req])[0]
        return self.decide_many([req])[0]

    def decide_batch(self, request: BatchDecisionRequest) -> Sequence[DecisionResponse]:
        """Decisions for a campaign audience, vectorised (one feature read, one policy call per arm).
        From BULK_MIN_REQUESTS customers on, a DecisionBatch (responses built when read)."""
        t = _utc(request.request_time)
        common = dict(journey_id=request.journey.id if request.journey else None,
                      journey_step=request.journey.step if request.journey else None,
                      channels=tuple(request.channels) if request.channels else None,
                      offers=tuple(request.offers) if request.offers else None,
                      window=(request.send_window.start_hour, request.send_window.end_hour)
                      if request.send_window else None,
                      allow_no_send=request.allow_no_send)
        _check_customer_ids(request.customer_ids)
        if len(set(request.customer_ids)) != len(request.customer_ids):
            seen: set[str] = set()
            dup = next(c for c in request.customer_ids if c in seen or seen.add(c))
            raise InputError(f"customer_ids: {dup!r} appears more than once; decide once per customer")
        # Request(str(c), t, **common) for each customer, as flyweights: what the audience shares
        # is held once, by a Request subclass made for this call, and each object holds only its
        # customer id (4x cheaper than a dataclass __init__ or a __dict__ per request); the shared
        # context is read-only
        shared = {**{f: getattr(_REQUEST_DEFAULT, f) for f in _REQUEST_FIELDS}, "request_time": t, **common,
                  "context": MappingProxyType({}), "__doc__": None}
        cls = type("AudienceRequest", (Request,), shared)
        new = object.__new__
        reqs = [new(cls) for _ in request.customer_ids]
        for r, c in zip(reqs, request.customer_ids, strict=True):
            r.customer_id = str(c)
        if getattr(request, "request_id", None):
            return self._idempotent(request.request_id, reqs)
        return self.decide_many(reqs)

    def _idempotent(self, request_id: str, reqs: list[Request]) -> list[DecisionResponse]:
        """Decide once per idempotency key: a retry answers the logged decisions (serving.idempotency)."""
        from serving.idempotency import decision_ids, replay

        ids = decision_ids(request_id, [r.customer_id for r in reqs])
        prior = replay(self._read_conn(), ids, request_id)
        if prior is not None:
            return prior
        for r, i in zip(reqs, ids, strict=True):
            r.decision_id = i
        try:
            return self.decide_many(reqs)
        except InputError:  # the same key decided meanwhile (a concurrent retry): answer its decisions
            prior = replay(self._read_conn(), ids, request_id)
            if prior is None:
                raise
            return prior

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
        if self.policy_files is not None:  # another worker learned or promoted: serve its policy now
            self.policy_files.check()
        # all requests of one call are decided at one time (the batch path) or one by one
        if len({r.request_time for r in reqs}) > 1:
            return [self.decide_many([r])[0] for r in reqs]
        if len(reqs) >= BULK_MIN_REQUESTS:  # an audience: the same decisions, built column-wise
            return self._decide_bulk(reqs)
        for r in reqs:
            self._check_request(r)
        plan = self._plan(reqs)
        records = self._records(reqs, plan)
        self._commits.append(records, self._stored_contexts(reqs, plan))  # durable BEFORE any response exists
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
        # 2. what this service logged for these customers (one indexed query): its sends refresh
        # the contact features and count towards the caps; reported unsubscribes revoke consent
        logged = self._logged_sends_bulk(ids, t) if n >= BULK_MIN_REQUESTS else self._logged_sends(ids, t)
        self._refresh_contacts(cols, ids, t, logged)
        plan.features = cols
        early = None
        if n >= BULK_MIN_REQUESTS:
            # an audience: the customer scores (LightGBM predicts without the GIL) are computed in a
            # second thread while this one runs the guardrails and the policy; the same numbers
            with _BULK_WRITER_LOCK:
                if getattr(self, "_bulk_scorer", None) is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._bulk_scorer = ThreadPoolExecutor(1, thread_name_prefix="decision-bulk-scores")
            early = self._bulk_scorer.submit(self._customer_scores, cols, n, snap)
            # and then their texts in the log's JSON (``_bulk_rows``), still while the policy runs
            early_texts = self._bulk_scorer.submit(lambda: {k: _finite_reprs(v) for k, v in early.result().items()})
        X = self._context(cols, n)
        plan.context = X
        # 3. guardrails (caps see the profiles' recent campaign sends and the logged ones)
        audience = self._audience(ids, cols)
        plan.timezone = audience.timezone
        elig = self.guardrails.apply(audience, t, self._recent_sends(ids, logged))
        self._restrict(elig.mask, reqs)
        plan.eligibility = elig
        mask = elig.mask
        # 4. policy (A/B arms) or the safe rule
        stamp = t.isoformat()  # one decision time per call
        keys = [f"{r.customer_id}|{stamp}|{r.journey_id}|{r.journey_step}" for r in reqs]
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
                ask = _policy_rows(parm.policy, X, mask, idx)
                if len(ask) < len(idx):  # the others have one allowed arm: probability 1, as the policy gives
                    dist[idx] = mask[idx]
                dist[ask] = parm.policy.distribution(X[ask], mask[ask])
            except Exception as exc:  # a policy that cannot answer must not turn into a 5xx
                log.warning("policy %s failed: %s", arm_name, exc)
                plan.fallback[idx] = "policy_unavailable"
                rule = np.where(mask[idx, self._rule_arm], self._rule_arm, NO_SEND_INDEX)
                dist[idx] = 0.0
                dist[idx, rule] = 1.0
        cold = ~plan.known & (plan.fallback == None)  # noqa: E711 (object array)
        plan.fallback[cold] = "cold_start"
        # 5. seeded sample from each row's distribution (a row with one arm of non-zero probability
        # samples it whatever its uniform: only the others need the cumulative sums)
        positive = dist > 0
        arm = np.argmax(positive, axis=1).astype(np.int64)
        multi = np.flatnonzero(np.count_nonzero(positive, axis=1) > 1)
        if len(multi):
            cum = np.cumsum(dist[multi], axis=1)
            arm[multi] = np.argmax(cum > (u[multi] * cum[:, -1])[:, None], axis=1)
        plan.arm = arm
        plan.propensity = dist[np.arange(n), arm]
        plan.distribution = dist
        self.guardrails.settle(elig, arm)
        # 6. champion scores of the chosen action
        if n >= BULK_MIN_REQUESTS:
            # an audience: the scorer thread predicts them (LightGBM, without the GIL; queued behind
            # the customer scores) chunk by chunk of the log's rows, while this thread builds, under
            # _decide_bulk (its ``bulk_sink``), each chunk's log rows as soon as its scores are in,
            # so the writer thread inserts the first rows while the last are predicted. The models
            # score row by row: a chunk's scores are those of one call for every row
            sink = getattr(self._local, "bulk_sink", None)
            edges = _chunk_edges(n, np.cumsum(self.arm_space.is_send[arm])) if sink is not None else [0, n]
            chunks = [self._bulk_scorer.submit(self._bulk_scores, cols, n, arm, elig, snap, lo, hi)
                      for lo, hi in zip(edges, edges[1:], strict=False)]
            customer = early.result()
            texts = early_texts.result() if sink is not None else {}
            got = []
            for lo, hi, chunk in zip(edges, edges[1:], chunks, strict=False):
                got.append(chunk.result())
                if sink is not None:
                    sink(plan, lo, hi, {**{k: v[lo:hi] for k, v in customer.items()}, **got[-1]},
                         {k: v[lo:hi] for k, v in texts.items()})
            plan.scores = _joined_scores(customer, edges, got, n)
            return plan
        plan.scores = self._scores(cols, n, arm, elig, snap, None if early is None else early.result())
        return plan

    def _read_conn(self) -> sqlite3.Connection:
        """This thread's read-only connection to the decision log (opened once, never per request)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.log.path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            self._local.conn = conn
        return conn

    def _logged_sends(self, ids: list[str], t: datetime) -> _Sends:
        """The sends this service logged for ``ids`` with ``send_at >= t - _LOOKBACK`` (scheduled
        ones after ``t`` included), and the unsubscribes reported by ``t`` for the logged sends of
        these customers (``_Sends.unsubscribed``), in one query: per customer, one range seek in
        the log's covering index of sends by customer and send time, and one in its unsubscribes
        table (policies.log), so its cost follows what it returns, not the customer's history."""
        now = _us(t)
        if len(ids) == 1 or len(set(ids)) == 1:  # a single decision: plain equality (~3x faster)
            key = ids[0]
            rows = self._read_conn().execute(_SENDS_OF_ONE, (key, now - _LOOKBACK_US, key, now)).fetchall()
        else:
            key = json.dumps(list(dict.fromkeys(ids)))
            rows = self._read_conn().execute(_SENDS_OF_MANY, (key, now - _LOOKBACK_US, key, now)).fetchall()
        if not rows:
            return _NO_SENDS
        sends = [r for r in rows if r[2] is not None]
        unsub = tuple([(c, ch) for c, ch, at in rows if at is None]) if len(sends) < len(rows) else ()
        if not sends:
            return _Sends(_NO_SENDS.customer_id, _NO_SENDS.channel, _NO_SENDS.send_at, unsub)
        cid, ch, at = zip(*sends, strict=True)
        return _Sends(np.array(cid, dtype=object), np.array(ch, dtype=object),
                      np.array(at, dtype=np.int64) * 1000, unsub)

    def _logged_sends_bulk(self, ids: list[str], t: datetime) -> _Sends:
        """``_logged_sends`` for an audience: when the log's recent sends are very few next to the
        audience, reading all of them through the send-time index (a table row each, ~11 us) and
        keeping the audience's beats one covering-index seek per customer (~2.5 us); otherwise the
        seeks win (measured on a 1.4M-decision log with 71k recent sends, 100k customers: 0.24 s
        against 0.78 s). Same rows (in another order, which nothing depends on)."""
        conn = self._read_conn()
        since = _us(t - _LOOKBACK)
        recent = conn.execute("SELECT count(*) FROM decisions WHERE channel IS NOT NULL AND send_at >= ?",
                              (since,)).fetchone()[0]
        if 4 * recent > len(ids):
            return self._logged_sends(ids, t)
        audience = pd.Index(list(dict.fromkeys(ids)), dtype=object)
        rows = conn.execute("SELECT customer_id, channel, send_at FROM decisions WHERE channel IS NOT NULL "
                            "AND send_at >= ?", (since,)).fetchall()
        unsub = conn.execute("SELECT customer_id, channel FROM unsubscribes WHERE occurred_at <= ?",
                             (_us(t),)).fetchall()
        if unsub:
            mine = audience.get_indexer(pd.Index([c for c, _ in unsub], dtype=object)) >= 0
            unsub = [u for u, m in zip(unsub, mine.tolist(), strict=True) if m]
        unsub_t = tuple((c, ch) for c, ch in unsub)
        if not rows:
            return _Sends(_NO_SENDS.customer_id, _NO_SENDS.channel, _NO_SENDS.send_at, unsub_t) if unsub_t \
                else _NO_SENDS
        cid, ch, at = (np.asarray(v) for v in zip(*rows, strict=True))
        keep = audience.get_indexer(pd.Index(cid.astype(object), dtype=object)) >= 0
        if not keep.any():
            return _Sends(_NO_SENDS.customer_id, _NO_SENDS.channel, _NO_SENDS.send_at, unsub_t) if unsub_t \
                else _NO_SENDS
        return _Sends(cid[keep].astype(object), ch[keep].astype(object), at[keep].astype(np.int64) * 1000, unsub_t)

    def _refresh_contacts(self, cols: dict[str, np.ndarray], ids: list[str], t: datetime, logged: _Sends) -> None:
        """Contact features and consent as of ``t``: the online store's values, updated with the
        sends this service logged before ``t`` and the unsubscribes reported to it (which revoke
        the channel's consent)."""
        unsub = logged.unsubscribed
        if not len(logged.send_at) and not unsub:  # nothing logged for them (most single decides)
            return
        t_ns = _ns(t)
        if len(ids) == 1:
            # one customer (a single decide): the same arrays from Python numbers (a handful of
            # logged sends) instead of ContactFeatures' ~30 numpy calls and add_unsubscribes' pandas
            # conversions. Each reported unsubscribe is at t - 1 s: the channel is revoked iff the
            # customer reported one on it (a known channel)
            at_ns = logged.send_at.tolist()
            if not unsub and not any(at < t_ns for at in at_ns):
                return
            code = [_CH_CODE.get(c, -1) for c in logged.channel.tolist()]
            sent = [(k, at) for k, at in zip(code, at_ns, strict=True) if k >= 0 and at < t_ns]
            new = ContactFeatures.values_one([k for k, _ in sent], [at for _, at in sent], t_ns)
            if unsub:
                gone = {_CH_CODE.get(ch, -1) for c, ch in unsub if c == ids[0]}
                for j, c in enumerate(CH):
                    have = np.asarray(cols.get(f"unsubscribed_{c}", np.zeros(1)), dtype=np.float64)
                    cols[f"unsubscribed_{c}"] = np.maximum(have, j in gone)
            # np.maximum / np.minimum(store's value as float64, logged one) on Python floats: NaN
            # from either side, else the larger (smaller), and on a tie the second operand (numpy's
            # rule, which decides a signed zero); then all of them as views of one array
            names, merged = [], []
            for name, v in zip(CONTACT_FEATURES, new, strict=True):
                have = cols.get(name)
                if have is None:
                    continue
                h = float(np.asarray(have, dtype=np.float64).reshape(1)[0]) if not (
                    isinstance(have, np.ndarray) and have.shape == (1,)) else float(have[0])
                names.append(name)
                if name.startswith("days_"):
                    merged.append(h if h < v or h != h else v)
                else:
                    merged.append(h if h > v or h != h else v)
            cols.update(zip(names, np.array(merged, dtype=np.float64).reshape(len(names), 1), strict=True))
            for c in CH:
                u = cols.get(f"unsubscribed_{c}")
                if u is None:
                    continue
                have = cols.get(f"consent_{c}", 0)
                if isinstance(u, np.ndarray) and u.shape == (1,) and isinstance(have, np.ndarray) and have.shape == (1,):
                    # the condition as a Python bool: the same value and dtype as the array form below
                    cols[f"consent_{c}"] = np.where(float(u[0]) > 0, 0, have)
                else:
                    cols[f"consent_{c}"] = np.where(np.asarray(u, dtype=np.float64) > 0, 0, have)
            return
        before = logged.send_at < t_ns
        if not before.any() and not unsub:
            return
        customers = np.asarray(ids, dtype=object)
        if before.any():
            # the logged sends as ContactFeatures keeps them (customer position, channel code, ns),
            # coded here without pandas (every logged send is of one of ``ids``, on a known channel
            # or dropped as add_sends drops it)
            cid, ch = logged.customer_id[before], logged.channel[before]
            code = np.fromiter((_CH_CODE.get(c, -1) for c in ch), dtype=np.int64, count=len(ch))
            where = {c: i for i, c in enumerate(ids)}
            pos = np.fromiter((where[c] for c in cid), dtype=np.int64, count=len(cid))
            keep = code >= 0
            cf = ContactFeatures.of_sends(customers, pos[keep], code[keep], logged.send_at[before][keep])
        else:
            cf = ContactFeatures(customers)
        if unsub:
            cids, chans = zip(*unsub, strict=True)
            cf.add_unsubscribes(np.asarray(cids, dtype=object), np.asarray(chans, dtype=object), [t - timedelta(seconds=1)] * len(cids))
        logged_frame = cf.arrays(t_ns)
        if unsub:  # an unsubscribe reported to the service revokes the channel's consent below
            revoked = cf.unsubscribed(t)
            for j, c in enumerate(CH):
                have = np.asarray(cols.get(f"unsubscribed_{c}", np.zeros(len(ids))), dtype=np.float64)
                cols[f"unsubscribed_{c}"] = np.maximum(have, revoked[:, j])
        for name in CONTACT_FEATURES:
            if name not in cols:
                continue
            have = np.asarray(cols[name], dtype=np.float64)
            new = logged_frame[name]
            cols[name] = np.minimum(have, new) if name.startswith("days_") else np.maximum(have, new)
        for c in CH:
            name = f"unsubscribed_{c}"
            if name in cols:
                cols[f"consent_{c}"] = np.where(np.asarray(cols[name], dtype=np.float64) > 0, 0,
                                                cols.get(f"consent_{c}", 0))

    def _recent_sends(self, ids: list[str], logged: _Sends) -> SendHistory:
        """The sends the frequency caps count for ``ids``: the profiles' recent campaign sends
        (indexed once at start) and this service's logged ones, as the guardrails' SendHistory."""
        uniq = ids if len(ids) == 1 else list(dict.fromkeys(ids))
        h_code, h_ch, h_at = self._hist.rows(uniq)
        if len(logged.customer_id):
            # every logged send is of one of uniq (measured on 100k: a dict and map beat pd.Index's join)
            if len(uniq) == 1:
                l_code = np.zeros(len(logged.customer_id), dtype=np.int64)
            else:
                row = dict(zip(uniq, range(len(uniq)), strict=True))
                l_code = np.array(list(map(row.__getitem__, logged.customer_id)), dtype=np.int64).reshape(-1)
            l_ch = np.array([_CH_CODE.get(c, -1) for c in logged.channel], dtype=np.int64).reshape(-1)
            keep = l_ch >= 0
            if keep.all():
                l_at = logged.send_at
            else:
                l_code, l_ch, l_at = l_code[keep], l_ch[keep], logged.send_at[keep]
            code = np.concatenate([h_code, l_code]) if len(h_code) else l_code
            ch = np.concatenate([h_ch, l_ch]) if len(h_code) else l_ch
            at = np.concatenate([h_at, l_at]) if len(h_code) else np.array(l_at, dtype=np.int64)
        else:
            code, ch, at = h_code, h_ch, h_at
        if not len(code):
            return _NO_HISTORY
        # the guardrails only look the customers up (a plain object array serves as well as an Index;
        # for an audience it is the audience itself, which the guardrails recognise)
        return SendHistory(np.array(uniq, dtype=object), code, ch, at)

    def _context(self, cols: dict[str, np.ndarray], n: int) -> np.ndarray:
        """policies.context.context_matrix of the feature arrays (no DataFrame)."""
        return context_matrix(cols)

    #: the feature columns _audience reads, in the order it stacks them
    _AUDIENCE_COLUMNS = tuple([f"consent_{c}" for c in CH] + [f"reachable_{c}" for c in CH]
                              + [f"order_share_{c}" for c in CATEGORIES]
                              + [f"view_share_{c}" for c in CATEGORIES])

    def _audience(self, ids: list[str], cols: dict[str, np.ndarray]) -> Audience:
        n = len(ids)
        names = self._AUDIENCE_COLUMNS
        zeros = None

        def col(name: str) -> np.ndarray:
            nonlocal zeros
            v = cols.get(name)
            if v is None:
                zeros = np.zeros(n) if zeros is None else zeros
                return zeros
            return np.asarray(v, dtype=np.float64)

        # one (columns, n) matrix of the consent, reachability and category-share features instead
        # of a stack per group. Interest: the customer ordered (viewed) the category. The shares are
        # smoothed ((count + a) / (total + a k)), so a category never seen has the row's smallest
        # share; a share above the smallest is a category seen (conservative: when every category
        # was seen equally often, none counts)
        k = len(CATEGORIES)
        m = None
        if n:
            # the usual case, numeric arrays of every column: one concatenation (the same casts as
            # np.asarray(v, float64); anything else, missing or odd columns, takes the general stack)
            try:
                vals = [cols[name] for name in names]
                if set(map(len, vals)) == {n}:
                    m = np.concatenate(vals, dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                m = None
        if m is None:
            m = np.array([col(name) for name in names], dtype=np.float64)
        m = m.reshape(len(names), n)
        flags = (m[:8] > 0).T
        consent, reachable = flags[:, :4], flags[:, 4:]
        if n == 1:
            # one decision: the shares' comparisons on the 12 Python floats (IEEE doubles as in numpy;
            # a NaN share makes numpy's minimum NaN, so no category of that kind counts)
            f = m[8:, 0].tolist()
            orders, views = f[:k], f[k:]
            lo_o = math.nan if any(x != x for x in orders) else min(orders) + 1e-9
            lo_v = math.nan if any(x != x for x in views) else min(views) + 1e-9
            interest = np.array([[o > lo_o or v > lo_v for o, v in zip(orders, views, strict=True)]], dtype=bool)
        else:
            shares = m[8:].reshape(2, k, n)  # orders, views
            interest = (shares > shares.min(axis=1, keepdims=True) + 1e-9).any(axis=0).T
        tz = np.asarray(cols["timezone"], dtype=object) if "timezone" in cols else np.array(["UTC"] * n, dtype=object)
        if n and all(map(_valid_tz, set(tz.tolist()) if n > 16 else tz)):
            tz = tz.copy()  # every zone is valid (the usual case): checked once per distinct zone
        else:
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
        if not groups:
            return  # no limits: the guardrails' mask keeps no-send for everyone already
        # the arms each kind of limit removes, memoised per arm space (the limits are hashable tuples
        # of a few values; a bounded dict)
        memo = self.__dict__.get("_restrict_memo")
        if memo is None or memo[0] is not a:
            memo = self.__dict__["_restrict_memo"] = (a, {})
        for (channels, offers, window, allow_no_send), rows in groups.items():
            drop = memo[1].get((channels, offers, window))
            if drop is None:
                keep = np.ones(a.n_arms, dtype=bool)
                if channels:
                    keep &= ~send | np.isin(a.channel, [CHANNELS.index(c) for c in channels])
                if offers:
                    keep &= ~send | np.isin(a.offer, [a.catalog.code(o) for o in offers])
                if window:
                    keep &= ~send | ((a.slot >= window[0]) & (a.slot < window[1]))
                drop = np.flatnonzero(~keep)
                if len(memo[1]) > 1024:
                    memo[1].clear()
                memo[1][(channels, offers, window)] = drop
            idx = np.asarray(rows)
            if len(idx) == 1:
                mask[idx[0], drop] = False
            else:
                mask[np.ix_(idx, drop)] = False
            if not allow_no_send:
                can_send = mask[idx][:, send].any(axis=1)
                mask[idx[can_send], NO_SEND_INDEX] = False
        mask[~mask.any(axis=1), NO_SEND_INDEX] = True

    def _customer_scores(self, cols: dict[str, np.ndarray], n: int, snap: ChampionSnapshot) -> dict[str, np.ndarray]:
        """The scores of the customer alone (not of the action): propensity, churn."""
        out: dict[str, np.ndarray] = {}
        memo: dict = {}  # both models read the same feature columns: one matrix for both
        for fam in ("propensity", "churn"):
            est = snap.models.get(fam)
            if est is not None:
                out[fam] = self._predict(est, cols.__getitem__, n, cols, memo)
        return out

    def _scores(self, cols: dict[str, np.ndarray], n: int, arm: np.ndarray, elig,
                snap: ChampionSnapshot, customer: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Champion scores: propensity, churn (every customer; ``customer``: already computed by
        ``_customer_scores``); P(convert) and expected net value of the chosen offer, P(open) at
        the chosen hour (sends only). Each (n,), NaN where absent. Each model predicts once for
        all rows, with its native Booster on a float matrix."""
        out: dict[str, np.ndarray] = dict(customer) if customer is not None else self._customer_scores(cols, n, snap)
        models = snap.models
        a = self.arm_space
        sends = np.flatnonzero(a.is_send[arm])
        if len(sends):
            # every row a send (a single decision that sends): no row selection, no scatter back
            every = len(sends) == n
            arm_s = arm if every else arm[sends]
            extra = {"channel": a.channel[arm_s].astype(np.int64), "offer": a.offer[arm_s].astype(np.int64),
                     "send_hour": elig.send_hour[sends, arm_s].astype(np.int64)}
            taken: dict[str, np.ndarray] = {}  # the send rows of a column, once for both models

            def get(name: str) -> np.ndarray:
                v = extra.get(name)
                if v is not None:
                    return v
                if every:
                    return cols[name]
                v = taken.get(name)
                if v is None:
                    v = taken[name] = np.asarray(cols[name])[sends]
                return v

            def spread(v: np.ndarray) -> np.ndarray:  # (len(sends),) -> (n,), NaN where no send
                if every:
                    return np.ascontiguousarray(v, dtype=np.float64)
                full = np.full(n, np.nan)
                full[sends] = v
                return full

            # the columns are one dict lookup away
            src = {**cols, **extra} if every else None
            est = models.get("offer")
            if est is not None:
                out["p_convert"] = spread(self._predict(est, get, len(sends), src))
                try:
                    try:  # the column it reads, as arrays (a DataFrame per request costs ~0.1 ms)
                        value = est.expected_order_value(_Columns(get, len(sends)))
                    except Exception:  # an estimator that wants a real frame
                        value = est.expected_order_value(_order_value_frame(est, get, len(sends)))
                    coef = self._offer_coef[extra["offer"]]
                    out["expected_value"] = spread(out["p_convert"][sends] * (coef[:, 0] * value + coef[:, 1]))
                except Exception:  # an estimator without order values still gives P(convert)
                    pass
            est = models.get("send_time")
            if est is not None:
                out["p_open"] = spread(self._predict(est, get, len(sends), src))
        return out

    def _bulk_scores(self, cols: dict, n: int, arm: np.ndarray, elig, snap: ChampionSnapshot,
                     lo: int, hi: int) -> dict[str, np.ndarray]:
        """The chosen actions' scores (``_scores`` without the customer's) of rows lo:hi of an
        audience of ``n``."""
        if lo == 0 and hi == n:
            return self._scores(cols, n, arm, elig, snap, {})
        rows = slice(lo, hi)
        return self._scores({k: v[rows] for k, v in cols.items()}, hi - lo, arm[rows], _RowsOf(elig, rows, n),
                            snap, {})

    def _predict(self, est, get, m: int, source: dict | None = None, memo: dict | None = None) -> np.ndarray:
        """P(y=1) of one of our LightGBM estimators on ``m`` rows whose columns ``get(name)``
        returns (or, faster, ``source[name]``: one C-level itemgetter for all of them): the native
        Booster on a float matrix in the estimator's feature order (no DataFrame validation on the
        hot path). ``memo``: matrices already built from the same columns, by feature-name tuple
        (the estimators' ``_design`` never write into their input)."""
        cached = self._names.get(id(est))
        if cached is None or cached[0] is not est:
            if len(self._names) > 64:
                self._names.clear()
            names = list(est.feature_names_in_)
            if len(names) > 1:
                pick = operator.itemgetter(*names)
            else:  # itemgetter of one name returns the item, not a tuple
                pick = (lambda d, n0=names[0]: (d[n0],)) if names else (lambda d: ())
            cached = self._names[id(est)] = (est, names, pick, _SingleRow.of(est), tuple(names))
        names = cached[1]
        M = None if memo is None else memo.get(cached[4])
        if M is None:
            try:  # concatenate: ~25% cheaper than np.array on a list of 1-d arrays
                arrays = cached[2](source) if source is not None else [get(c) for c in names]
                M = np.concatenate(arrays, dtype=np.float64).reshape(len(names), m).T
            except (KeyError, ValueError, TypeError):  # a column missing (get() names it), scalar or ragged
                M = np.array([get(c) for c in names], dtype=np.float64).reshape(len(names), m).T
            if memo is not None:
                memo[cached[4]] = M
        try:
            design = est._design(M, names)
            if m == 1 and cached[3] is not None:  # one row: LightGBM's single-row entry
                return cached[3](design)
            return np.asarray(est._raw_proba(design), dtype=np.float64)
        except AttributeError:  # not one of our estimators: the public path
            return est.predict_proba(pd.DataFrame(dict(zip(names, M.T, strict=True))))[:, 1]

    # -- records and responses -------------------------------------------------------------------
    def _records(self, reqs: list[Request], plan: _Plan) -> list[DecisionRecord]:
        """One DecisionRecord per request. Arrays become Python lists once (``tolist``), not
        element by element: the loop below is the per-decision cost of a large batch."""
        t = plan.decided_at
        snap = plan.snapshot
        versions = {f: str(v) for f, v in dict(snap.versions).items()}
        elig = plan.eligibility
        n = plan.n
        acted = elig.reasons_all() if elig is not None else [[] for _ in reqs]
        arms = plan.arm.tolist()
        sends = np.flatnonzero(plan.arm != NO_SEND_INDEX)
        send_at: list = [None] * n
        send_hour: list = [None] * n
        if elig is not None and len(sends):
            # datetime64[ns] -> aware datetimes (microseconds, as pandas' to_pydatetime; no pandas
            # index per request)
            when = [_EPOCH + timedelta(microseconds=v)
                    for v in (elig.chosen_send_at(plan.arm)[sends].view(np.int64) // 1000).tolist()]
            hours = elig.chosen_send_hour(plan.arm)[sends].tolist()
            for j, i in enumerate(sends.tolist()):
                send_at[i], send_hour[i] = when[j], int(hours[j])
        ctx_rows = _rounded_context(plan).tolist() if plan.context is not None else None
        holdout = (elig.holdout if elig is not None else np.zeros(n, bool)).tolist()
        score_items = [(k, v.tolist()) for k, v in (plan.scores or {}).items()]
        propensity = plan.propensity.tolist()
        fallback, ab_arm, zones = plan.fallback.tolist(), plan.ab_arm.tolist(), plan.timezone.tolist()
        if plan.distribution is not None:
            # only the non-zero probabilities become Python floats (a row has ~1-10 of ~170 arms)
            rows_nz, cols_nz = np.nonzero(plan.distribution)
            bounds = np.searchsorted(rows_nz, np.arange(n + 1)).tolist()
            p_nz = plan.distribution[rows_nz, cols_nz].tolist()
            cols_nz = cols_nz.tolist()
        arm_ids, arm_channel, arm_offer = self._arm_ids, *self._arm_labels()
        out = []
        for i, r in enumerate(reqs):
            k = arms[i]
            fb = fallback[i]
            parm = self.policy_arms.get(ab_arm[i] or "champion")
            if fb in ("feature_store_unavailable", "model_missing", "registry_unavailable", "policy_unavailable"):
                pname, pver = "safe_rule", "1"
            else:
                pname = type(parm.policy).name if parm and parm.policy is not None else "safe_rule"
                pver = parm.version if parm else "0"
            if plan.distribution is not None:
                lo, hi = bounds[i], bounds[i + 1]
                dist = dict(zip([arm_ids[j] for j in cols_nz[lo:hi]], p_nz[lo:hi], strict=True))
            else:
                dist = {NO_SEND: 1.0}
            context = dict(zip(CONTEXT_COLUMNS, ctx_rows[i], strict=True)) if ctx_rows is not None else {}
            context.update(r.context)
            scores = {name: v[i] for name, v in score_items if math.isfinite(v[i])}
            reasons = _reasons(fb, k, propensity[i], acted[i], pname, arm_ids)
            out.append(_construct(DecisionRecord, _RECORD_SET, dict(
                decision_id=r.decision_id or uuid.uuid4().hex, customer_id=r.customer_id, decided_at=t,
                action=arm_ids[k], channel=arm_channel[k], offer=arm_offer[k], send_slot=send_hour[i],
                send_at=send_at[i], timezone=str(zones[i]), propensity=propensity[i], distribution=dist,
                context=context, scores=scores, reasons=reasons, guardrails=list(acted[i]), policy=pname,
                policy_version=pver, model_versions=versions, ab_arm=ab_arm[i],
                holdout=bool(holdout[i]), fallback=fb is not None, journey_id=r.journey_id,
                journey_step=r.journey_step,
            )))
        return out

    @staticmethod
    def _stored_contexts(reqs: list[Request], plan: _Plan) -> list[tuple | None] | None:
        """The log's encoding of each record's context (``_records``: the rounded context row,
        then the request's own entries), straight from the row where the request adds none."""
        if plan.context is None:
            return None
        X = _rounded_context(plan)
        return [None if r.context else encode_context_row(X[i], CONTEXT_COLUMNS) for i, r in enumerate(reqs)]

    # -- the bulk path (campaign audiences) -----------------------------------------------------
    def _decide_bulk(self, reqs: list[Request]) -> Sequence[DecisionResponse]:
        """``decide_many`` for an audience decided at one time: the same plan, then the log rows
        and the responses built column by column (no DecisionRecord per decision, JSON from
        templates and each distinct float's repr once), the same text and values as
        ``_records`` + ``DecisionLog.append`` + ``_response`` (tests/serving/test_batch.py)."""
        seen: set = set()
        for r in reqs:  # the request limits are shared by the whole audience: check each kind once
            key = (r.offers, r.channels)
            if key not in seen:
                seen.add(key)
                self._check_request(r)
        # the log rows are built chunk by chunk and each chunk goes to the writer thread as soon
        # as it is built: SQLite inserts the first rows (without the GIL) while this thread builds
        # the next; all chunks are one transaction, so the batch is logged whole or not at all.
        # The plan hands over each chunk as soon as its scores are predicted (``sink``): the rest
        # of the plan (the other chunks' scores) runs in the scorer thread meanwhile
        feed: queue.SimpleQueue = queue.SimpleQueue()
        parts: list[_BulkRows] = []
        state: dict = {"complete": True, "written": None, "shared": None}

        def start(plan: _Plan) -> None:
            with _BULK_WRITER_LOCK:
                if getattr(self, "_bulk_writer", None) is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._bulk_writer = ThreadPoolExecutor(1, thread_name_prefix="decision-log-bulk")
            state["written"] = self._bulk_writer.submit(self.log.append_column_chunks, _drain(feed))
            state["shared"] = self._bulk_shared(plan)

        def sink(plan: _Plan, lo: int, hi: int, scores: dict | None = None, texts: dict | None = None) -> None:
            if not state["complete"]:
                return
            if state["written"] is None:
                start(plan)
            state["shared"]["scores"] = {lo: scores} if scores is not None else {}
            state["shared"]["score_texts"] = {lo: texts} if texts is not None else {}
            part = self._bulk_rows(reqs[lo:hi], plan, lo, state["shared"])
            if part is None:
                state["complete"] = False
                return
            parts.append(part)
            feed.put((part.columns, part.layouts))

        self._local.bulk_sink = sink
        try:
            try:
                plan = self._plan(reqs)
            finally:
                self._local.bulk_sink = None
            # the rows the plan did not hand over (it returned before the scores: no feature store)
            edges = _chunk_edges(plan.n)
            for lo, hi in zip(edges, edges[1:], strict=False):
                if lo >= sum(len(p.reasons) for p in parts):
                    sink(plan, lo, hi)
            if state["written"] is None:
                start(plan)
        except BaseException as exc:
            if state["written"] is not None:
                feed.put(exc)  # rolls the transaction back
                state["written"].exception()
            raise
        written, complete = state["written"], state["complete"]
        if not complete or not parts:  # a value only the record path can judge (say NaN in a context): its error
            feed.put(_NOT_LOGGED)
            written.exception()
            records = self._records(reqs, plan)
            self._commits.append(records)
            return [self._response(rec) for rec in records]
        feed.put(_END)
        error = written.exception()  # waits for the commit: every decision durable before its response
        if error is not None:
            raise error
        # the WAL's copy into the file, in the writer thread after this returns (the decisions are
        # durable already: committed to the WAL); the next batch's write queues behind it
        self._bulk_writer.submit(self.log.checkpoint)
        return self._bulk_responses(plan, _BulkRows.concat(parts))

    def _bulk_all(self, reqs: list[Request], plan: _Plan, chunk: int | None = None) -> _BulkRows | None:
        """``_bulk_rows`` of every row, built ``chunk`` (default BULK_CHUNK) rows at a time as
        ``_decide_bulk`` does, as one."""
        chunk = chunk or BULK_CHUNK
        shared = self._bulk_shared(plan)
        parts = [self._bulk_rows(reqs[lo:lo + chunk], plan, lo, shared) for lo in range(0, plan.n, chunk)]
        return None if any(p is None for p in parts) else _BulkRows.concat(parts)

    def _bulk_shared(self, plan: _Plan) -> dict:
        """What every chunk of ``_bulk_rows`` reads, computed once for the whole plan."""
        elig, arm, n = plan.eligibility, plan.arm, plan.n
        out: dict = {"who": {}, "said": {}}
        send_us = np.zeros(n, np.int64)
        send_hour = np.zeros(n, np.int64)
        sends = np.flatnonzero(arm != NO_SEND_INDEX)
        if elig is not None and len(sends):
            send_us[sends] = elig.chosen_send_at(arm)[sends].astype("datetime64[ns]").view(np.int64) // 1000
            send_hour[sends] = elig.chosen_send_hour(arm)[sends].astype(np.int64)
        out["send"], out["send_us"], out["send_hour"] = arm != NO_SEND_INDEX, send_us, send_hour
        # guardrails that acted: one tuple and one JSON text per distinct combination
        if elig is not None and elig.acted.shape[1]:
            codes = elig.acted.astype(np.int64) @ (np.int64(1) << np.arange(elig.acted.shape[1], dtype=np.int64))
            uniq, inv = np.unique(codes, return_inverse=True)
            names = [tuple(np.asarray(elig.names, dtype=object)[elig.acted[int(np.argmax(codes == c))]])
                     for c in uniq.tolist()]
            out["acted"] = [names[j] for j in inv.tolist()]
        else:
            out["acted"] = [()] * n
        out["g_json"] = {a: _dumps(list(a)) for a in set(out["acted"])}
        out["holdout"] = elig.holdout if elig is not None else np.zeros(n, bool)
        out["versions"] = versions = {f: str(v) for f, v in dict(plan.snapshot.versions).items()}
        out["versions_json"] = _dumps(versions)
        return out

    def _bulk_rows(self, reqs: list[Request], plan: _Plan, lo: int, shared: dict) -> _BulkRows | None:
        """The decision log's columns of ``_records(reqs, plan)`` for the plan's rows
        ``lo:lo + len(reqs)`` (``reqs`` being those rows' requests), plus the per-row Python
        values the responses need. None when a context value is not finite (the record path raises).
        The scores are the plan's, or those rows' in ``shared["scores"][lo]`` (the plan's are not
        all in yet: ``_decide_bulk``); ``shared["score_texts"][lo]``: float texts of some of them,
        by score name, computed already."""
        n, t, arm = len(reqs), plan.decided_at, plan.arm[lo:lo + len(reqs)]
        rows = slice(lo, lo + n)
        arm_ids, arm_channel, arm_offer = self._arm_ids, *self._arm_labels()
        context = _context_columns(None if plan.context is None else plan.context[rows],
                                   [r.context for r in reqs], n)
        if context is None:
            return None
        arms = arm.tolist()
        given = [r.decision_id for r in reqs]
        dids = _uuid4_hex(n)
        if any(given):
            dids = [g or d for g, d in zip(given, dids, strict=True)]
        send = shared["send"][rows]
        send_slot = np.where(send, shared["send_hour"][rows], None).tolist() if send.any() else [None] * n
        send_at = np.where(send, shared["send_us"][rows], None).tolist() if send.any() else [None] * n
        zones = [str(z) for z in plan.timezone[rows].tolist()]
        propensity = plan.propensity[rows].tolist()
        fallback, ab_arm = plan.fallback[rows].tolist(), plan.ab_arm[rows].tolist()
        acted = shared["acted"][rows]
        g_json = shared["g_json"]
        # scores: the rows of one pattern of finite scores share a template
        scores = shared.get("scores", {}).get(lo)
        if scores is None:
            scores = {k: np.asarray(v, dtype=np.float64)[rows] for k, v in (plan.scores or {}).items()}
        score_names = list(scores.keys())
        score_vals = [np.asarray(v, dtype=np.float64) for v in scores.values()]
        pattern = np.zeros(n, dtype=np.int64)
        for j, v in enumerate(score_vals):
            pattern |= np.isfinite(v).astype(np.int64) << j
        scores_json: list = [None] * n
        done = shared.get("score_texts", {}).get(lo) or {}
        for p in np.unique(pattern).tolist():
            which = [j for j in range(len(score_names)) if p >> j & 1]
            at = np.flatnonzero(pattern == p)
            tmpl = "{" + ",".join(f"{_dumps(score_names[j])}:%s" for j in which) + "}"
            texts = list(zip(*((done[score_names[j]][at] if score_names[j] in done else
                                _float_reprs(score_vals[j][at])).tolist() for j in which), strict=True)) \
                if which else [()] * len(at)
            for i, tx in zip(at.tolist(), texts, strict=True):
                scores_json[i] = tmpl % tx
        # the responses' score dicts are built when a response is (DecisionBatch): their values here
        scores = (score_names, [v.tolist() for v in score_vals], pattern.tolist())
        # policy, version and reasons (worded by _reasons): one per distinct combination
        who, said = shared["who"], shared["said"]
        policy, policy_version = [None] * n, [None] * n
        reasons, reasons_json = [None] * n, [None] * n
        for i, (fb, ab, k, p, a) in enumerate(zip(fallback, ab_arm, arms, propensity, acted, strict=True)):
            pv = who.get((fb, ab))
            if pv is None:
                parm = self.policy_arms.get(ab or "champion")
                if fb in ("feature_store_unavailable", "model_missing", "registry_unavailable", "policy_unavailable"):
                    pv = ("safe_rule", "1")
                else:
                    pv = (type(parm.policy).name if parm and parm.policy is not None else "safe_rule",
                          parm.version if parm else "0")
                who[(fb, ab)] = pv
            policy[i], policy_version[i] = pv
            key = (fb, k, p, a, pv[0])
            words = said.get(key)
            if words is None:
                listed = _reasons(fb, k, p, list(a), pv[0], arm_ids)
                words = said[key] = (tuple(listed), _dumps(listed))
            reasons[i] = words[0]  # a tuple shared by the rows of one wording: listed per response
            reasons_json[i] = words[1]
        holdout = shared["holdout"][rows].astype(np.int64).tolist()
        ch_value = [None if c is None else c.value for c in arm_channel]
        # the distributions in the log's binary form, over the engine's arm list (as the record path)
        if plan.distribution is None:
            blob, lid = encode_distribution({NO_SEND: 1.0}, self.arm_layout)
            dists, arm_layout = [blob] * n, {lid: self.arm_layout}
        else:
            dists, arm_layout = encode_distribution_matrix(plan.distribution[rows], self.arm_layout)
        layouts = {**context[3], **arm_layout}
        columns = {
            "decision_id": dids, "customer_id": [r.customer_id for r in reqs], "decided_at": [_us(t)] * n,
            "action": [arm_ids[k] for k in arms], "channel": [ch_value[k] for k in arms],
            "offer": [arm_offer[k] for k in arms], "send_slot": send_slot, "send_at": send_at,
            "timezone": zones, "propensity": propensity,
            "distribution": dists,
            "context": context[0], "scores": scores_json, "reasons": reasons_json,
            "guardrails": [g_json[a] for a in acted], "policy": policy, "policy_version": policy_version,
            "model_versions": [shared["versions_json"]] * n, "ab_arm": ab_arm, "holdout": holdout,
            "fallback": [int(fb is not None) for fb in fallback],
            "journey_id": [r.journey_id for r in reqs], "journey_step": [r.journey_step for r in reqs],
            "context_layout": context[1], "context_extra": context[2],
        }
        return _BulkRows(columns=columns, scores=scores, reasons=reasons, acted=acted, versions=shared["versions"],
                         layouts=layouts)

    def _bulk_responses(self, plan: _Plan, bulk: _BulkRows) -> DecisionBatch:
        """``_response`` of every logged row, as a DecisionBatch: each response object is built
        (without pydantic's per-object construction cost) when it is first read, and the HTTP body
        is written from the columns (``_bulk_json``) without any."""
        c = bulk.columns
        n = plan.n
        arm_channel = self._arm_labels()[0]
        arms = plan.arm.tolist()
        decided_at = plan.decided_at
        fallback = plan.fallback.tolist()
        score_names, score_values, pattern = bulk.scores
        which = {p: [(score_names[j], score_values[j]) for j in range(len(score_names)) if p >> j & 1]
                 for p in set(pattern)}

        def item(i: int) -> DecisionResponse:
            ch = arm_channel[arms[i]]
            us = c["send_at"][i]
            local = None if us is None else \
                (_EPOCH + timedelta(microseconds=us)).astimezone(ZoneInfo(c["timezone"][i]))
            action = _construct(Action, _ACTION_SET, {
                "send": ch is not None, "arm": c["action"][i], "channel": ch, "offer": c["offer"][i],
                "send_at": local, "send_slot": c["send_slot"][i]})
            return _construct(DecisionResponse, _RESPONSE_SET, {
                "decision_id": c["decision_id"][i], "customer_id": c["customer_id"][i], "action": action,
                "probability": c["propensity"][i], "scores": {k: v[i] for k, v in which[pattern[i]]},
                "reasons": list(bulk.reasons[i]), "guardrails": list(bulk.acted[i]), "policy": c["policy"][i],
                "policy_version": c["policy_version"][i], "model_versions": bulk.versions, "ab_arm": c["ab_arm"][i],
                "holdout": bool(c["holdout"][i]), "fallback": fallback[i] is not None, "fallback_reason": fallback[i],
                "decided_at": decided_at})

        def tally() -> dict:
            send = [arm_channel[k] is not None for k in arms]
            out: dict = {}
            for key in zip(fallback, c["ab_arm"], send, strict=True):
                out[key] = out.get(key, 0) + 1
            return out

        return DecisionBatch(n, item, lambda: self._bulk_json(plan, bulk), tally)

    def _bulk_json(self, plan: _Plan, bulk: _BulkRows) -> bytes:
        """The JSON body of ``BatchDecisionResponse(decisions=<the batch's responses>)``, written
        from the log's columns (the same values as pydantic's; tests/serving/test_batch.py)."""
        from pydantic import TypeAdapter

        c = bulk.columns
        n = plan.n
        arm_channel, arm_offer = self._arm_labels()
        when = TypeAdapter(datetime)
        time_text: dict = {}

        def json_time(us: int, zone: str) -> str:
            key = (us, zone)
            text = time_text.get(key)
            if text is None:
                local = (_EPOCH + timedelta(microseconds=us)).astimezone(ZoneInfo(zone))
                text = time_text[key] = when.dump_json(local).decode()
            return text

        def text(v) -> str:
            return "null" if v is None else _dumps(v)

        decided = when.dump_json(plan.decided_at).decode()
        arm_ids = self._arm_ids
        no_send = {}
        actions = []
        for i, k in enumerate(plan.arm.tolist()):
            us = c["send_at"][i]
            if us is None:
                a = no_send.get(k)
                if a is None:
                    a = no_send[k] = (f'{{"send":{"true" if arm_channel[k] is not None else "false"},'
                                      f'"arm":{_dumps(arm_ids[k])},"channel":{text(_chan(arm_channel[k]))},'
                                      f'"offer":{text(arm_offer[k])},"send_at":null,"send_slot":{text(c["send_slot"][i])}}}')
            else:
                a = (f'{{"send":true,"arm":{_dumps(arm_ids[k])},"channel":{text(_chan(arm_channel[k]))},'
                     f'"offer":{text(arm_offer[k])},"send_at":{json_time(us, c["timezone"][i])},'
                     f'"send_slot":{text(c["send_slot"][i])}}}')
            actions.append(a)
        prob = _float_reprs(np.asarray(c["propensity"], dtype=np.float64)).tolist()
        small: dict = {}

        def cached(v) -> str:
            t = small.get(v)
            if t is None:
                t = small[v] = text(v)
            return t

        fallback = plan.fallback.tolist()
        versions = c["model_versions"][0] if n else "{}"
        rows = [
            f'{{"decision_id":{_dumps(c["decision_id"][i])},"customer_id":{_dumps(c["customer_id"][i])},'
            f'"action":{actions[i]},"probability":{prob[i]},"scores":{c["scores"][i]},"reasons":{c["reasons"][i]},'
            f'"guardrails":{c["guardrails"][i]},"policy":{cached(c["policy"][i])},'
            f'"policy_version":{cached(c["policy_version"][i])},"model_versions":{versions},'
            f'"ab_arm":{cached(c["ab_arm"][i])},"holdout":{"true" if c["holdout"][i] else "false"},'
            f'"fallback":{"false" if fallback[i] is None else "true"},"fallback_reason":{cached(fallback[i])},'
            f'"decided_at":{decided}}}'
            for i in range(n)]
        return ('{"decisions":[' + ",".join(rows) + "]}").encode()

    def _arm_labels(self) -> tuple[list, list]:
        """Per arm: its Channel and offer id (None for no-send), computed once."""
        labels = getattr(self, "_labels", None)
        if labels is None:
            a = self.arm_space
            send = a.is_send
            labels = self._labels = (
                [Channel(CHANNELS[int(a.channel[k])]) if send[k] else None for k in range(a.n_arms)],
                [a.offers[int(a.offer_level[k])] if send[k] else None for k in range(a.n_arms)])
        return labels

    @staticmethod
    def _response(rec: DecisionRecord) -> DecisionResponse:
        send_at = rec.send_at.astimezone(ZoneInfo(rec.timezone)) if rec.send_at is not None else None
        fallback_reason = next((r.removeprefix("fallback: ") for r in rec.reasons if r.startswith("fallback: ")), None)
        return _construct(DecisionResponse, _RESPONSE_SET, dict(
            decision_id=rec.decision_id, customer_id=rec.customer_id,
            action=_construct(Action, _ACTION_SET, dict(send=rec.channel is not None, arm=rec.action,
                                                        channel=rec.channel, offer=rec.offer, send_at=send_at,
                                                        send_slot=rec.send_slot)),
            probability=rec.propensity, scores=rec.scores, reasons=rec.reasons, guardrails=rec.guardrails,
            policy=rec.policy, policy_version=rec.policy_version, model_versions=rec.model_versions,
            ab_arm=rec.ab_arm, holdout=rec.holdout, fallback=rec.fallback, fallback_reason=fallback_reason,
            decided_at=rec.decided_at,
        ))


#: decide_many builds the log rows and responses column-wise from this many requests on
BULK_MIN_REQUESTS = 256
_BULK_WRITER_LOCK = threading.Lock()
#: the bulk path hands its log rows to the writer thread in chunks of this many decisions
BULK_CHUNK = 16_384
_END = object()  # the last chunk of a bulk write was handed over
_NOT_LOGGED = InputError("the batch is logged by the record path instead")  # the bulk write rolls back


def _chunk_edges(n: int, sends: np.ndarray | None = None) -> list[int]:
    """Where the bulk path's chunks of ``n`` rows begin (and ``n``): BULK_CHUNK rows each, the
    first a quarter of that in a large audience (the writer thread starts inserting sooner).
    ``sends``: the number of sends up to each row (cumulative), when the chunks are scored apart:
    a chunk with a single send joins a neighbour (one row would take LightGBM's single-row entry,
    where one call for every row takes the matrix one)."""
    first = BULK_CHUNK // 4 if n >= 4 * BULK_CHUNK else BULK_CHUNK
    edges = [0, *range(first, n, BULK_CHUNK), n] if n > first else [0, n]
    if sends is None or len(edges) == 2:
        return edges

    def count(lo: int, hi: int) -> int:
        return int(sends[hi - 1]) - (int(sends[lo - 1]) if lo else 0)

    cut = [0]
    for hi in edges[1:-1]:
        if count(cut[-1], hi) != 1:
            cut.append(hi)
    cut.append(n)
    while len(cut) > 2 and count(cut[-2], n) == 1:
        cut.pop(-2)
    return cut


def _drain(feed: queue.SimpleQueue):
    """The chunks put on ``feed`` until _END; an exception put on it is raised (the write rolls back)."""
    while True:
        item = feed.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass
class _BulkRows:
    """The decision log's columns of a bulk decide (DecisionLog.append_columns) and the per-row
    Python values of the responses."""

    columns: dict[str, list]
    scores: tuple  # (score names, their values per row as lists, per row the bit mask of finite ones)
    reasons: list[tuple[str, ...]]
    acted: list[tuple[str, ...]]
    versions: dict[str, str]
    layouts: dict[int, tuple[str, ...]] = field(default_factory=dict)  # context layouts used: id -> names

    @classmethod
    def concat(cls, parts: list[_BulkRows]) -> _BulkRows:
        """The rows of ``parts`` (chunks of one plan, in order) as one."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        names = first.scores[0]
        if any(p.scores[0] != names for p in parts):
            # chunks scored apart: one without a send has no action scores (NaN for all its rows)
            names = list(dict.fromkeys(k for p in parts for k in p.scores[0]))
            parts = [p._with_scores(names) for p in parts]
        def joined(lists) -> list:  # concatenated in C (a list comprehension: ~10x the time)
            return list(itertools.chain.from_iterable(lists))

        return cls(
            columns={c: joined(p.columns[c] for p in parts) for c in first.columns},
            scores=(names, [joined(p.scores[1][j] for p in parts) for j in range(len(names))],
                    joined(p.scores[2] for p in parts)),
            reasons=joined(p.reasons for p in parts), acted=joined(p.acted for p in parts),
            versions=first.versions, layouts={i: c for p in parts for i, c in p.layouts.items()})

    def _with_scores(self, names: list[str]) -> _BulkRows:
        """These rows with the scores ``names`` (a superset of theirs; NaN where they have none)."""
        own, values, pattern = self.scores
        n = len(pattern)
        at = {k: j for j, k in enumerate(own)}
        bits = [(at[k], j) for j, k in enumerate(names) if k in at]
        return _BulkRows(
            columns=self.columns, reasons=self.reasons, acted=self.acted, versions=self.versions,
            layouts=self.layouts,
            scores=(names, [values[at[k]] if k in at else [math.nan] * n for k in names],
                    [sum(((p >> i) & 1) << j for i, j in bits) for p in pattern]))


class _RowsOf:
    """The rows ``rows`` of an eligibility object's per-row arrays (those of length ``n``)."""

    def __init__(self, of, rows: slice, n: int):
        self._of, self._rows, self._n = of, rows, n

    def __getattr__(self, name: str):
        v = getattr(self._of, name)
        return v[self._rows] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == self._n else v


def _joined_scores(customer: dict, edges: list[int], chunks: list[dict], n: int) -> dict[str, np.ndarray]:
    """The scores of the whole audience from its customer scores and the action scores of the
    chunks between ``edges`` (NaN where a chunk has none: no send in it)."""
    if len(chunks) == 1:
        return {**customer, **chunks[0]}
    out = dict(customer)
    for lo, hi, got in zip(edges, edges[1:], chunks, strict=False):
        for k, v in got.items():
            if k not in out:
                out[k] = np.full(n, np.nan)
            out[k][lo:hi] = v
    return out


_ACTION_SET = set(Action.model_fields)
_RESPONSE_SET = set(DecisionResponse.model_fields)
_RECORD_SET = set(DecisionRecord.model_fields)


def _chan(ch: Channel | None) -> str | None:
    return None if ch is None else ch.value


def _construct(cls, fields_set: set, values: dict):
    """``cls.model_construct(**values)`` for a model without private attributes or extras, when
    ``values`` holds every field: the same object, ~10x cheaper (what model_construct does after
    its per-field default lookup). ``fields_set`` is shared: every field is set anyway."""
    obj = cls.__new__(cls)
    _set = object.__setattr__
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


#: json.dumps(obj, separators=(",", ":"), allow_nan=False), as the decision log encodes
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _uuid4_hex(n: int) -> list[str]:
    """n random version-4 UUIDs as 32 hex digits (uuid.uuid4().hex), from one read of os.urandom."""
    if not n:
        return []
    b = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    h = b.tobytes().hex()
    return [h[32 * i: 32 * i + 32] for i in range(n)]


def _float_reprs(values: np.ndarray) -> np.ndarray:
    """(same shape) object array of float.__repr__ of each value (what json writes), computing
    each distinct value's text once."""
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    inv, uniq = pd.factorize(flat)  # hashing, no sort; 0.0 and -0.0 are one value here
    text = np.array([float.__repr__(x) for x in uniq.tolist()], dtype=object)
    out = text[inv]
    zero = flat == 0.0
    if zero.any():
        out[zero] = np.where(np.signbit(flat[zero]), "-0.0", "0.0").astype(object)
    return out.reshape(np.shape(values))


def _finite_reprs(values: np.ndarray) -> np.ndarray:
    """``_float_reprs`` of the finite values (None elsewhere: a score the log does not write)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, None, dtype=object)
    ok = np.isfinite(v)
    out[ok] = _float_reprs(v[ok])
    return out


def _context_columns(context: np.ndarray | None, extra: list[dict], n: int) -> tuple | None:
    """The stored context (policies.log.encode_context_matrix: blobs, layout ids, free-form JSON,
    layouts) of ``dict(zip(CONTEXT_COLUMNS, round(row, 6))) | extra[i]`` for every row, as the
    record path logs it; None if a value is not finite (the record path's error)."""
    from policies.log import encode_context_matrix

    X, names = (np.zeros((n, 0)), ()) if context is None else (np.round(context, 6), CONTEXT_COLUMNS)
    try:
        return encode_context_matrix(X, names, extra)
    except ValueError:
        return None


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
    features: dict[str, np.ndarray] | None
    known: np.ndarray
    timezone: np.ndarray | None = None
    scores: dict | None = None
    snapshot: ChampionSnapshot | None = None
    context_rounded: np.ndarray | None = None  # _rounded_context


def _rounded_context(plan: _Plan) -> np.ndarray:
    """The plan's context rounded to 6 decimals as records and the log store it (computed once:
    ``_records`` and ``_stored_contexts`` both need it)."""
    if plan.context_rounded is None:
        plan.context_rounded = np.round(plan.context, 6)
    return plan.context_rounded


def _policy_rows(policy: Policy, X: np.ndarray, mask: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The rows of ``idx`` the policy must be asked about: those with more than one allowed arm
    (a row with one allowed arm gets probability 1 on it from any policy: its normalised
    distribution). Most of an audience usually has no channel it may be contacted on, so this
    saves most of a batch's policy cost. All rows when the answer could depend on the others (a
    policy not initialised yet fits its context scaler on the first call) or when a value is not
    finite (the policy's error must fall on every row, as before); at least one row, so a policy
    that cannot answer still sends the whole group to the safe rule."""
    every = len(idx) == len(X)  # idx is then every row, in order: no copies of X and mask
    if not getattr(policy, "is_initialised", False) or not np.isfinite(X if every else X[idx]).all():
        return idx
    ask = idx[np.count_nonzero(mask if every else mask[idx], axis=1) > 1]
    return ask if len(ask) else idx[:1]


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


class GroupCommit:
    """Appends to the decision log from many threads with one transaction (one fsync) for all
    the records waiting at that moment: a request's ``append`` returns only once ITS records are
    committed, so every decision is still durable before its response exists; while one thread
    waits for the disk, the others decide, and their records share the next commit.

    A failed shared commit is retried record set by record set, so one bad request cannot fail
    the others, and each caller gets its own error.

    Several processes (the service's workers) append to one log: each commit holds an exclusive
    ``flock`` on ``<log>.lock`` (one writer per process at a time holds it, by the above), so the
    processes queue in the kernel, woken the moment the lock is free, instead of in SQLite's busy
    handler, which sleeps 1, 2, 5, 10 ... ms between retries."""

    def __init__(self, decision_log: DecisionLog, arms: Sequence[str] | None = None):
        self.log = decision_log
        self.arms = arms  # the arm list the log stores distributions over (DecisionLog.append)
        self._cv = threading.Condition()
        self._pending: list[list] = []  # [records, error, done]
        self._writing = False
        self.commits = 0  # transactions written (for tests and metrics)
        self._lock_fd: tuple[int, int] | None = None  # (pid, fd) of <log>.lock

    def _flock(self) -> int | None:
        if self._lock_fd is None or self._lock_fd[0] != os.getpid():
            path = getattr(self.log, "path", None)
            if path is None:  # not a file-backed log
                return None
            try:
                fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a read-only folder: SQLite's own locking still holds
                return None
            self._lock_fd = (os.getpid(), fd)
        return self._lock_fd[1]

    def close(self) -> None:
        if self._lock_fd is not None and self._lock_fd[0] == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._lock_fd[1])
        self._lock_fd = None

    @contextlib.contextmanager
    def exclusive(self):
        """No commit of this process (it waits its turn like one) nor, through the ``flock``, of
        the other workers' GroupCommits runs while the block does (the checkpointer's use)."""
        import fcntl

        with self._cv:
            while self._writing:
                self._cv.wait()
            self._writing = True
        fd = self._flock()
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            with self._cv:
                self._writing = False
                self._cv.notify_all()

    def append(self, records: list[DecisionRecord], contexts: list[tuple | None] | None = None) -> None:
        """Commit ``records`` (with their stored contexts, DecisionLog.append) with whatever else is
        waiting; returns once they are durable, or raises their error."""
        entry: list = [records, None, False, contexts]
        with self._cv:
            self._pending.append(entry)
            while not entry[2]:
                if self._writing:
                    self._cv.wait()
                    continue
                batch, self._pending, self._writing = self._pending, [], True
                self._cv.release()
                try:
                    self._write(batch)
                finally:
                    self._cv.acquire()
                    self._writing = False
                    for e in batch:
                        e[2] = True
                    self._cv.notify_all()
        if entry[1] is not None:
            raise entry[1]

    def _write(self, batch: list[list]) -> None:
        import fcntl

        fd = self._flock()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._write_locked(batch)
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _append(self, records: list, contexts: list | None) -> None:
        # (a log given neither needs no such argument: test doubles)
        given = {k: v for k, v in (("contexts", contexts), ("arms", self.arms)) if v is not None}
        self.log.append(records, **given)

    def _write_locked(self, batch: list[list]) -> None:
        try:
            contexts = None
            if any(e[3] is not None for e in batch):
                contexts = [c for e in batch for c in (e[3] if e[3] is not None else [None] * len(e[0]))]
            self._append([r for e in batch for r in e[0]], contexts)
            self.commits += 1
            return
        except BaseException as exc:
            if len(batch) == 1:
                batch[0][1] = exc
                return
        for e in batch:  # one of them spoilt the shared commit: each on its own
            try:
                self._append(e[0], e[3])
                self.commits += 1
            except BaseException as exc:
                e[1] = exc


class _Checkpointer:
    """Copies the decision log's WAL into its file every ``interval`` seconds in a daemon thread,
    and once more at close, so that no decision's commit does it (the log is opened with
    ``autocheckpoint=0``). Each worker process runs one; a checkpoint that finds nothing new
    costs a few microseconds.

    Passive checkpoints, which never block a writer, copy what is there. Under a steady stream of
    decisions new commits land while one runs (its fsync takes milliseconds), so it never leaves
    the WAL fully copied, and SQLite starts a WAL afresh only when a commit begins on a fully
    copied one: the WAL then grows for as long as the traffic lasts (measured: ~5 pages per
    decision, 200 MB after 40k decisions, never reclaimed). So once it holds ``restart_pages``,
    the last pass runs under the engine's write lock (``GroupCommit.exclusive``: this process's
    writers and, through the ``flock``, the other workers'), where no commit can interleave, and
    the next commit restarts the WAL. Commits wait for that pass (12-60 ms here, mostly fsync),
    which is why it is not done every time."""

    def __init__(self, engine: DecisionEngine, interval: float, restart_pages: int = 16_384):
        self.engine = engine
        self.interval = float(interval)
        self.restart_pages = int(restart_pages)
        self.runs = 0  # checkpoints done (tests)
        self.completed = 0  # of which left the WAL fully copied (tests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="decision-log-checkpoint", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._once()

    def _once(self) -> None:
        eng = self.engine
        try:
            state = eng.log.checkpoint()
            if state is not None and state[1] > 0:  # a second pass takes what came during the first
                state = eng.log.checkpoint()  # (and its fsync, with less to flush, is short)
            exclusive = getattr(eng._commits, "exclusive", None)
            # a long WAL: finish under the lock (what commits appended while the passive passes ran
            # is not in their counts), so that the next commit begins on a fully copied WAL
            if state is not None and 0 < self.restart_pages <= state[1] and exclusive is not None:
                with exclusive():
                    state = eng.log.checkpoint()
            self.runs += 1
            if state is not None and state[1] == state[2]:
                self.completed += 1
        except sqlite3.Error as exc:  # busy or gone: the next round (or SQLite's own) catches up
            log.warning("decision log checkpoint failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._once()


@contextlib.contextmanager
def _interprocess_lock(path):
    """An exclusive ``flock`` on ``path`` while the block runs (no lock in a read-only folder)."""
    import fcntl

    try:
        fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


_LOOKBACK_US = _LOOKBACK // timedelta(microseconds=1)
#: the logged sends (send_at >= ?) and reported unsubscribes (occurred_at <= ?, send_at NULL) of some
#: customers: range seeks in the covering index of sends by customer and in the unsubscribes table
#: (policies.log keeps both; INDEXED BY: the send-time index would read every recent send's row)
_SENDS_OF_MANY = (
    "SELECT customer_id, channel, send_at FROM decisions INDEXED BY decisions_customer_sends "
    "WHERE customer_id IN (SELECT value FROM json_each(?)) AND channel IS NOT NULL AND send_at >= ? "
    "UNION ALL "
    "SELECT customer_id, channel, NULL FROM unsubscribes "
    "WHERE customer_id IN (SELECT value FROM json_each(?)) AND occurred_at <= ?")
#: the same for one customer (no JSON array to build and unpack)
_SENDS_OF_ONE = (
    "SELECT customer_id, channel, send_at FROM decisions INDEXED BY decisions_customer_sends "
    "WHERE customer_id = ? AND channel IS NOT NULL AND send_at >= ? "
    "UNION ALL "
    "SELECT customer_id, channel, NULL FROM unsubscribes WHERE customer_id = ? AND occurred_at <= ?")

#: Guardrails caches send-time grids per time zone and UTC quarter hour itself now.
QuarterHourGuardrails = Guardrails

_CH_CODE = {c: i for i, c in enumerate(CH)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (the decision log's unit)."""
    return (t - _EPOCH) // timedelta(microseconds=1)


def _ns(t: datetime) -> int:
    return _us(t) * 1000


@dataclass(frozen=True)
class _Sends:
    """Logged sends: customer ids, channel names, send_at (int64 ns UTC), aligned; and the
    unsubscribes reported for the logged sends of the same customers."""

    customer_id: np.ndarray
    channel: np.ndarray
    send_at: np.ndarray
    unsubscribed: tuple[tuple[str, str], ...] = ()  # (customer_id, channel) unsubscribes reported


_NO_SENDS = _Sends(np.zeros(0, dtype=object), np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64))
_NO_HISTORY = SendHistory(pd.Index([], dtype=object), np.zeros(0, np.int64), np.zeros(0, np.int64),
                          np.zeros(0, np.int64))


def _empty_int64() -> np.ndarray:
    a = np.zeros(0, np.int64)
    a.flags.writeable = False
    return a


_NONE3 = (_empty_int64(), _empty_int64(), _empty_int64())  # no sends (read-only: shared by every caller)


@dataclass(frozen=True)
class _SendIndex:
    """Sends grouped by customer, built once, so a request finds its customers' sends by a dict
    lookup (not a scan of every recent send): ``where[customer] = (start, stop)`` into the
    channel codes and send times (int64 ns UTC), sorted by customer."""

    where: dict[str, tuple[int, int]]
    channel: np.ndarray
    send_at: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame | None) -> _SendIndex:
        """From customer_id, channel (name), send_at (UTC); rows of an unknown channel are dropped
        (as the guardrails' SendHistory drops them)."""
        if frame is None or not len(frame):
            return cls({}, np.zeros(0, np.int64), np.zeros(0, np.int64))
        ch = np.fromiter((_CH_CODE.get(str(c), -1) for c in frame["channel"].to_numpy(dtype=object)),
                         dtype=np.int64, count=len(frame))
        at = pd.to_datetime(pd.Series(frame["send_at"].to_numpy()), utc=True)
        ns = at.dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)
        cid = frame["customer_id"].astype(str).to_numpy(dtype=object)
        keep = ch >= 0
        cid, ch, ns = cid[keep], ch[keep], ns[keep]
        order = np.argsort(cid, kind="stable")
        cid, ch, ns = cid[order], ch[order], ns[order]
        if not len(cid):
            return cls({}, ch, ns)
        starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
        stops = np.r_[starts[1:], len(cid)]
        where = {c: (int(a), int(b)) for c, a, b in zip(cid[starts].tolist(), starts.tolist(), stops.tolist(),
                                                         strict=True)}
        return cls(where, ch, ns)

    def rows(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in ``ids``, channel code, send_at ns) of every send of those customers."""
        if not self.where:
            return _NONE3
        if len(ids) == 1:  # one decision: its customer's run of sends, if any
            s = self.where.get(ids[0])
            if s is None:
                return _NONE3
            a, b = s
            return np.zeros(b - a, np.int64), self.channel[a:b].copy(), self.send_at[a:b].copy()
        got = list(map(self.where.get, ids))
        where = [i for i, s in enumerate(got) if s is not None]
        if not where:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.array(where, dtype=np.int64)
        span = np.array([got[i] for i in where], dtype=np.int64).reshape(len(where), 2)  # (start, stop)
        start, length = span[:, 0], span[:, 1] - span[:, 0]
        src = np.repeat(start - np.cumsum(length) + length, length) + np.arange(length.sum())
        return np.repeat(pos, length), self.channel[src], self.send_at[src]


class _SingleRow:
    """P(y=1) of ONE row through LightGBM's single-row C entry
    (``LGBM_BoosterPredictForMatSingleRowFast``, set up once per booster): the same numbers as
    ``Booster.predict`` (tested), without its per-call Python set-up (a predictor object and a
    deep copy of the parameters: ~22 us -> ~6 us per call, 2-4 calls per decision; called through
    a private prototype on per-thread buffers, about half of what was left, measured). Thread-safe:
    LightGBM serialises the shared single-row predictor itself, outside the GIL, and each thread
    writes its own row and output buffers."""

    def __init__(self, booster, num_iteration: int, num_threads: int):
        import ctypes
        import threading
        import weakref

        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._check = _safe_call
        self.ncol = int(booster.num_feature())
        self._booster = booster  # the config points into it: keep it alive as long as this
        handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(int(num_iteration)),
            ctypes.c_int(1), ctypes.c_int32(self.ncol), _c_str(f"num_threads={int(num_threads)}"),
            ctypes.byref(handle)))
        self._handle = handle
        self._address = handle.value
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, handle).atexit = False
        # a private prototype of the entry (argtypes on _LIB's own function object would change
        # LightGBM's calls): plain addresses in, no ctypes objects built per call.
        # A CFUNCTYPE call releases the GIL, as _LIB's does.
        vp = ctypes.c_void_p
        self._fast = ctypes.CFUNCTYPE(ctypes.c_int, vp, vp, vp, vp)(
            ("LGBM_BoosterPredictForMatSingleRowFast", _LIB))
        self._local = threading.local()  # per-thread row/output buffers at fixed addresses

    def _buffers(self) -> tuple:
        b = getattr(self._local, "b", None)
        if b is None:
            row, out, length = np.empty(self.ncol), np.empty(1), np.zeros(1, np.int64)
            b = self._local.b = (row, out, length, row.ctypes.data, length.ctypes.data, out.ctypes.data)
        return b

    @classmethod
    def of(cls, est) -> _SingleRow | None:
        """For one of our LightGBM estimators (``models.gbm.LightGBMBinary`` whose ``_raw_proba``
        is the booster's plain predict); None for anything else (the general path answers)."""
        try:
            from models.gbm import LightGBMBinary

            if not isinstance(est, LightGBMBinary) or type(est)._raw_proba is not LightGBMBinary._raw_proba:
                return None
            iteration = getattr(est, "best_iteration_", None)
            if not isinstance(iteration, int | np.integer) or iteration <= 0:
                return None
            return cls(est.booster_, int(iteration), 1 if est.n_jobs is None else int(est.n_jobs))
        except Exception:  # an older LightGBM without the entry, an unfitted model: the general path
            log.debug("no single-row LightGBM path for %s", type(est).__name__, exc_info=True)
            return None

    def __call__(self, design: np.ndarray) -> np.ndarray:
        flat = design.reshape(-1)
        if flat.shape[0] != self.ncol:
            raise InputError(f"the model expects {self.ncol} features; got {flat.shape[0]}")
        row, out, _, p_row, p_length, p_out = self._buffers()
        row[:] = flat
        self._check(self._fast(self._address, p_row, p_length, p_out))
        return out.copy()


class _Columns:
    """The little of a DataFrame that ``expected_order_value`` uses (``len`` and ``frame[name]
    .to_numpy(dtype)``), over the feature arrays, without building one per request."""

    __slots__ = ("_get", "_m")

    def __init__(self, get, m: int):
        self._get, self._m = get, m

    def __len__(self) -> int:
        return self._m

    def __getitem__(self, name: str) -> _Column:
        return _Column(self._get(name))


class _Column:
    __slots__ = ("_v",)

    def __init__(self, v):
        self._v = v

    def to_numpy(self, dtype=None) -> np.ndarray:
        return np.asarray(self._v, dtype=dtype)


def _order_value_frame(est, get, m: int) -> pd.DataFrame:
    """The one column ``expected_order_value`` reads (all of them for an unknown estimator)."""
    column = getattr(est, "value_column", None)
    if column is None and hasattr(est, "value_column"):
        return pd.DataFrame(index=pd.RangeIndex(m))
    names = [column] if column is not None else list(est.feature_names_in_)
    return pd.DataFrame({c: get(c) for c in names})


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


def _check_customer_ids(ids: Sequence[str]) -> None:
    """``_check_customer_id`` of each id: one regex scan of all of them (an audience of 100k), the
    per-id check only when the scan finds a candidate (it names the offending id)."""
    text = "\n".join(ids)
    if "@" in text or text.count("\n") != max(len(ids) - 1, 0) or _PHONE_LINES.search(text):
        for cid in ids:
            _check_customer_id(cid)


#: a line that _PHONE_ONLY would match after strip(): leading/trailing blanks (not newlines) allowed
_PHONE_LINES = re.compile(r"^[ \t\r\f\v]*\+?[\d \t\r\f\v\-().]{7,}$", re.MULTILINE)


def _check_customer_id(cid: str) -> None:
    if _EMAIL.search(cid) or _PHONE_ONLY.match(cid.strip()):
        raise InputError("customer_id: must be the unified customer id, not a contact identifier "
                         "(e-mail or phone number)")

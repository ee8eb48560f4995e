"""The BentoML decision service: a thin typed shell over serving.engine (parse, delegate, return).

    POST /decide        flat JSON body of DecisionRequest -> DecisionResponse
    POST /decide/batch  BatchDecisionRequest (a campaign audience) -> BatchDecisionResponse
    POST /outcome       one outcome (flat) or {"outcomes": [...]} -> OutcomeResult (idempotent)
    POST /learn         learn from the matured, joined decision log now (optional ``as_of``)
    POST /policy/promote admin: serve a fitted policy file of the workspace from now on (no restart)
    POST /noop          does nothing (the benchmark's floor on the same server)
    GET  /healthz /readyz /livez /metrics   (BentoML's own)

Idempotent decides: ``request_id`` on /decide and /decide/batch makes a retry return the decisions
already logged under that key instead of deciding again (serving.idempotency).

Learning (serving.learning): the policy updates from the joined log on a wall-clock timer
(``$DECISIONING_LEARN_SECONDS``, default 300; 0 turns it off) and on ``POST /learn``; a client that
drives simulated time calls ``/learn`` with ``as_of`` and the timer stands down.

/metrics also carries the drift status written by ``decisioning drift``
(``<workspace>/reports/drift_status.json``, re-read when it changes): ``decisioning_retraining_due``
(1 due, 0 not, -1 unknown: no status yet), ``decisioning_drift_alarms`` and
``decisioning_drifted_features`` (-1 unknown).

Worker processes: ``ServingConfig.workers`` (default 2), each with its own engine over the same
workspace files (a decide is GIL-bound; one process per core). What they share and how: the
decision log, outcomes (idempotent by event_id), request ids and the budget ledger are SQLite
files (transactions across processes); the served policies are files that every worker re-checks
before each decide (serving.policy_state.ServedPolicies), so a learn or promotion received by one
worker is served by all from their next decide; learning runs under an inter-process lock, its
wall-clock timer only in the first worker (serving.learning); Prometheus counters are summed
over the workers by BentoML's multiprocess collector, so /metrics on any worker tells the total.

The workspace is ``$DECISIONING_HOME``; the config file ``$DECISIONING_SERVING_CONFIG`` (both set
by ``decisioning serve``). Domain errors become HTTP codes here and only here: InputError -> 400
naming the field; anything unexpected in the decide path has already become a fallback decision
inside the engine.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import bentoml
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InputError
from serving.schemas import (
    BatchDecisionRequest,
    BatchDecisionResponse,
    DecisionBatch,
    DecisionRequest,
    DecisionResponse,
    OutcomeRequest,
    OutcomeResult,
)

logger = logging.getLogger(__name__)
LEARN_ENV = "DECISIONING_LEARN_SECONDS"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez"})

# Prometheus metrics (no customer ids or contact identifiers in any label)
DECISIONS = bentoml.metrics.Counter(
    name="decisioning_decisions", documentation="Decisions made, by endpoint, fallback reason and A/B arm",
    labelnames=["endpoint", "fallback", "ab_arm", "send"])
OUTCOMES = bentoml.metrics.Counter(
    name="decisioning_outcomes", documentation="Outcomes received, by result", labelnames=["result"])
# quarter-millisecond buckets where a single decide falls: bench/serving.py reads the engine's p50
# from them, comparable with an in-process p50 (the mean alone is pulled up by the commits' tail)
LATENCY_BUCKETS = (0.00025, 0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.004, 0.006,
                   0.008, 0.016, 0.032, 0.064, 0.128, 0.5, 2, 8, 30)
LATENCY = bentoml.metrics.Histogram(
    name="decisioning_latency_seconds", documentation="Time in the engine per call, by endpoint",
    labelnames=["endpoint"], buckets=LATENCY_BUCKETS)
REJECTED = bentoml.metrics.Counter(
    name="decisioning_rejected", documentation="Requests refused (bad input, missing token)", labelnames=["reason"])
LEARNED = bentoml.metrics.Counter(
    name="decisioning_learned_decisions", documentation="Decisions the policies learned from (POST /learn)")
RETRAIN_DUE = bentoml.metrics.Gauge(
    name="decisioning_retraining_due", documentation="Drift status of `decisioning drift`: 1 retraining due, "
    "0 not due, -1 unknown (no status file)", multiprocess_mode="livemax")
DRIFT_ALARMS = bentoml.metrics.Gauge(
    name="decisioning_drift_alarms", documentation="Alarms of the last drift check (-1 unknown)",
    multiprocess_mode="livemax")
DRIFTED_FEATURES = bentoml.metrics.Gauge(
    name="decisioning_drifted_features", documentation="Features found drifted by the last drift check "
    "(-1 unknown)", multiprocess_mode="livemax")


class LearnRequest(BaseModel):
    """Learn now from the decision log: every decision whose attribution window closed by ``as_of``
    and that the policy has not learned from yet."""

    model_config = ConfigDict(extra="forbid")

    as_of: datetime | None = Field(None, description="the time the log is joined at (UTC if naive); default "
                                   "now. Giving it means the caller drives a simulated clock: the service's "
                                   "wall-clock learning timer then stands down")


class LearnResponse(BaseModel):
    as_of: str
    learned: int = Field(description="decisions learned from in this call")
    skipped_no_context: int = Field(description="matured decisions without logged context (not learned)")
    seconds: float
    versions: dict[str, dict[str, str]] = Field(description="per A/B arm: policy version before and after")
    saved: list[str] = Field(description="policy files written")


class PromoteRequest(BaseModel):
    """Serve a fitted policy file of the workspace from now on (an admin call: it needs the bearer
    token when the service has one)."""

    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$",
                           description="file name of a fitted policy under <workspace>/policies/ (e.g. "
                           "'thompson.candidate' or 'thompson.candidate.pkl'); no paths")
    arm: Literal["champion", "challenger"] = Field("champion", description="the A/B arm that serves it")


class PromoteResponse(BaseModel):
    arm: str
    policy: str = Field(description="policy class the arm serves")
    candidate: str
    version_before: str
    version_after: str
    source_before: str
    saved: str = Field(description="the arm's policy file, now the candidate (a restart serves it too)")


class DriftWatcher:
    """Keeps the drift gauges equal to ``<workspace>/reports/drift_status.json``: re-read when
    its modification time changes (checked every ``interval`` seconds, and on demand)."""

    def __init__(self, reports: Path, interval: float = 2.0):
        self.path = Path(reports) / "drift_status.json"
        self.interval = interval
        self._seen: tuple | None = ()
        self._stop = threading.Event()
        self.check()
        threading.Thread(target=self._loop, name="drift-status", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watcher die on a half-written or odd file
                logger.exception("reading %s failed", self.path)

    def close(self) -> None:
        self._stop.set()

    def check(self) -> None:
        try:
            st = self.path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key == self._seen:
            return
        due, alarms, drifted = -1.0, -1.0, -1.0
        if key is not None:
            try:
                status = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return  # being written: the next check reads it whole
            due = 1.0 if status.get("retrain_due") else 0.0
            alarms = float(status.get("n_alarms", len(status.get("alarms") or [])))
            drifted = _drifted_features(status, self.path.parent)
        RETRAIN_DUE.set(due)
        DRIFT_ALARMS.set(alarms)
        DRIFTED_FEATURES.set(drifted)
        self._seen = key


def _drifted_features(status: dict, folder: Path) -> float:
    if "drifted_features" in status:
        return float(status["drifted_features"])
    try:
        summary = json.loads((folder / "drift.json").read_text())
        return float((summary.get("feature_drift") or {}).get("drifted", -1))
    except (OSError, ValueError, TypeError):
        return -1.0


class BearerAuth:
    """ASGI middleware: when the serving config has an ``auth_token``, every HTTP request but the
    health probes needs ``Authorization: Bearer <token>`` (401 otherwise)."""

    def __init__(self, app, token: str | None = None):
        self.app = app
        self._fixed = token
        self._cache: tuple[str | None, bytes | None] | None = None

    @property
    def expected(self) -> bytes | None:
        """The expected header, from the config named by the environment (re-read when it changes)."""
        import os

        from serving.config import CONFIG_ENV, load_serving_config

        if self._fixed is not None:
            return f"Bearer {self._fixed}".encode()
        where = os.environ.get(CONFIG_ENV)
        if self._cache is None or self._cache[0] != where:
            token = load_serving_config().auth_token
            self._cache = (where, None if token is None else f"Bearer {token}".encode())
        return self._cache[1]

    async def __call__(self, scope, receive, send):
        expected = self.expected
        if expected is None or scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, expected):
            await self.app(scope, receive, send)
            return
        REJECTED.labels(reason="unauthorized").inc()
        body = json.dumps({"error": "unauthorized: send 'Authorization: Bearer <token>'"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def _timeout_middleware_releasing_its_timer() -> None:
    """BentoML (1.4.40) answers 504 when a request has no response after ``traffic.timeout`` seconds
    (300 here: a 100k audience or a learn run takes a while) through its TimeoutMiddleware, which
    never cancels the timer it arms for each request. The timer's handle holds the request's
    context (its OpenTelemetry span, future, timer objects: ~4.7 KB, measured) until it fires, so a
    worker keeps every request of the last 300 s alive: +94 MiB of RSS per 20k requests measured,
    ~0.8 GiB at a sustained 550 req/s, and the cyclic collector's full passes walk them all (pauses
    grow with the traffic). Here the same middleware cancels its timer once the request is over
    (the timer could only act before the response started), so a request's objects go with it.
    Installed when this module is imported, before BentoML builds the app (its middleware list
    looks the class up by name then); a BentoML without that middleware is left as it is."""
    import asyncio

    from bentoml._internal.server.http import traffic

    base = getattr(traffic, "TimeoutMiddleware", None)
    if base is None or getattr(base, "releases_its_timer", False) or not hasattr(base, "_set_timer_out"):
        return

    class TimeoutMiddleware(base):
        releases_its_timer = True

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] not in ("http", "websocket"):
                return await self.app(scope, receive, send)
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

            async def _send(message) -> None:
                if not waiter.done():
                    waiter.set_result(None)
                await send(message)

            fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
            try:
                await waiter
            except TimeoutError:
                if fut.cancel():
                    from starlette.responses import JSONResponse

                    resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                        status_code=504)
                    await resp(scope, receive, send)
            else:
                await fut
            finally:
                timer.cancel()

    traffic.TimeoutMiddleware = TimeoutMiddleware


_timeout_middleware_releasing_its_timer()


def _bad_input(exc: InputError) -> InvalidArgument:
    REJECTED.labels(reason="invalid_input").inc()
    return InvalidArgument(str(exc))


def _count(endpoint: str, decisions: list[DecisionResponse]) -> None:
    counts: dict[tuple, int] = {}
    for d in decisions:
        key = (d.fallback_reason or "none", d.ab_arm or "none", "true" if d.action.send else "false")
        counts[key] = counts.get(key, 0) + 1
    for (fb, ab, snd), k in counts.items():
        DECISIONS.labels(endpoint=endpoint, fallback=fb, ab_arm=ab, send=snd).inc(k)


def _configured_workers() -> int:
    """``workers`` of the serving config named by the environment (read when BentoML imports
    this module, before it starts the workers); 1 when the config cannot be read (the service
    then reports the error from its constructor)."""
    try:
        from serving.config import load_serving_config

        return load_serving_config().workers
    except Exception:
        return 1


def _timer_worker() -> bool:
    """This process runs the learning timer: BentoML's first worker (or no BentoML worker at all,
    e.g. the in-process ASGI app of the tests)."""
    return bentoml.server_context.worker_index in (None, 1)


@bentoml.service(name="decisioning", workers=_configured_workers(), threads=8, traffic={"timeout": 300})
class DecisionService:
    """Decides whether, on which channel, with which offer and when to contact a customer."""

    def __init__(self) -> None:
        from core.workspace import Workspace
        from serving.config import load_serving_config
        from serving.engine import DecisionEngine
        from serving.learning import PolicyLearner
        from serving.policy_state import ServedPolicies

        ws = Workspace.resolve()
        self.engine = DecisionEngine.open(ws, load_serving_config())
        self.engine.policy_files = ServedPolicies(self.engine)  # serve what any worker learned or promoted
        self.learner: PolicyLearner | None = None
        try:
            self.learner = PolicyLearner(self.engine)
            self.learner.start(float(os.environ.get(LEARN_ENV, "300")), timer=_timer_worker())
        except (OSError, ValueError, sqlite3.Error) as exc:  # e.g. a read-only workspace: serve, do not learn
            logger.warning("policy learning disabled: %s", exc)
            self.learner_error = str(exc)
        self.drift = DriftWatcher(ws.reports)

    @bentoml.api(route="/decide", input_spec=DecisionRequest)
    def decide(self, **kwargs) -> DecisionResponse:
        """Decide for one customer. The decision is in the log before this returns."""
        t0 = time.perf_counter()
        try:
            out = self.engine.decide(DecisionRequest.model_construct(**kwargs))
        except InputError as exc:
            raise _bad_input(exc) from None
        LATENCY.labels(endpoint="decide").observe(time.perf_counter() - t0)
        _count("decide", [out])
        return out

    @bentoml.api(route="/decide/batch", input_spec=BatchDecisionRequest)
    def decide_batch(self, **kwargs) -> BatchDecisionResponse:
        """Decide for a campaign audience at once (vectorised)."""
        t0 = time.perf_counter()
        try:
            out = self.engine.decide_batch(BatchDecisionRequest.model_construct(**kwargs))
        except InputError as exc:
            raise _bad_input(exc) from None
        if isinstance(out, DecisionBatch):  # an audience: the body straight from the engine's columns
            from starlette.responses import Response

            body = out.json_bytes()
            LATENCY.labels(endpoint="decide_batch").observe(time.perf_counter() - t0)
            for (fb, ab, snd), k in out.tally().items():
                DECISIONS.labels(endpoint="decide_batch", fallback=fb or "none", ab_arm=ab or "none",
                                 send="true" if snd else "false").inc(k)
            return Response(body, media_type="application/json")
        LATENCY.labels(endpoint="decide_batch").observe(time.perf_counter() - t0)
        _count("decide_batch", out)
        return BatchDecisionResponse.model_construct(decisions=out)

    @bentoml.api(route="/outcome", input_spec=OutcomeRequest)
    def outcome(self, **kwargs) -> OutcomeResult:
        """Report one outcome, or several as ``outcomes``. A repeated event_id counts once and is
        named in ``duplicate_event_ids``; an unknown decision_id is named in ``unknown_event_ids``."""
        t0 = time.perf_counter()
        try:
            res = self.engine.record_outcomes(OutcomeRequest.model_construct(**kwargs).items())
        except InputError as exc:
            raise _bad_input(exc) from None
        LATENCY.labels(endpoint="outcome").observe(time.perf_counter() - t0)
        for name, k in (("accepted", res.accepted), ("duplicate", res.duplicates),
                        ("unknown_decision", res.unknown_decision)):
            if k:
                OUTCOMES.labels(result=name).inc(k)
        return res

    @bentoml.api(route="/learn", input_spec=LearnRequest)
    def learn(self, **kwargs) -> LearnResponse:
        """Update the policies from the joined decision log now: every matured decision (attribution
        window closed by ``as_of``) not learned from yet, as the in-process journey does each day.
        The updated policy replaces the served one atomically and is saved; versions are returned."""
        if self.learner is None:
            raise ServiceUnavailable(f"learning is disabled: {self.learner_error}")
        try:
            res = self.learner.learn(LearnRequest(**kwargs).as_of)
        except InputError as exc:
            raise _bad_input(exc) from None
        if res.learned:
            LEARNED.inc(res.learned)
        return LearnResponse(**res.as_dict())

    @bentoml.api(route="/policy/promote", input_spec=PromoteRequest)
    def promote_policy(self, **kwargs) -> PromoteResponse:
        """Admin: serve the fitted policy file ``candidate`` (under <workspace>/policies/) in ``arm``
        from now on, without a restart (one reference swap; decisions in flight finish on the old
        policy) and save it as the arm's policy file. 400 when the candidate is missing, not a
        fitted policy over the service's arms and context, or of another class than the arm's."""
        from serving.policy_state import promote_candidate

        req = PromoteRequest(**kwargs)
        try:
            if self.learner is not None:
                res = self.learner.promote(req.candidate, req.arm)
            else:
                res = promote_candidate(self.engine, req.candidate, req.arm)
        except InputError as exc:
            raise _bad_input(exc) from None
        logger.info("policy promoted: %s", res)
        return PromoteResponse(**res)

    @bentoml.api(route="/noop")
    def noop(self) -> dict:
        """Does nothing: the benchmark's floor for the HTTP and framework overhead."""
        return {"ok": True}

    @bentoml.api(route="/status")
    def status(self) -> dict:
        """What the service has loaded: feature store, model versions, policies (no identifiers)."""
        if self.engine.policy_files is not None:
            self.engine.policy_files.check()
        learner = self.learner
        return self.engine.status() | {
            "worker": {"index": bentoml.server_context.worker_index, "pid": os.getpid()},
            "learning": {"enabled": learner is not None,
                         "timer": learner is not None and learner.timer_running,
                         "simulated_clock": learner is not None and learner.simulated_clock}}


DecisionService.add_asgi_middleware(BearerAuth)

_APP = None


def asgi_app():
    """The service's ASGI app, built once per process (BentoML registers Prometheus collectors
    when it builds one, so a second build in the same process fails). Tests use this."""
    global _APP
    if _APP is None:
        _APP = DecisionService.to_asgi()
    return _APP

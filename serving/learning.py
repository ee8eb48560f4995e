"""The service learns from its own decision log: outcomes reported to ``POST /outcome`` are joined
to the logged decisions, and every matured decision (attribution window closed) that the policy
has not learned from yet updates the policy that made it, exactly as the in-process journey does
(context from the logged context features, the logged arm, the reward of policies.reward, the
logged propensity and the funnel Feedback).

    learner = PolicyLearner(engine)             # the engine's policies, log and workspace
    result = learner.learn(as_of=None)          # now (wall clock) or a simulated time
    learner.start(interval_seconds=300)         # the production trigger: a background timer

Thread safety: the update runs on a COPY of the policy, which then replaces the served one in one
reference swap (``DecisionEngine.swap_policy``); concurrent decides keep using the old policy until
the swap and never see a half-updated one. One learn runs at a time (a lock).

What was learned is recorded in ``<workspace>/policies/learned.sqlite`` (decision ids per policy
arm), after the updated policy is saved (``policy_state.save_policy``), so a restarted service
neither forgets the update nor learns twice from the same decision (a crash between the two
writes re-learns at most one batch). Every version change is logged.

Simulated time: a client that drives the clock (the HTTP journey) calls ``POST /learn`` with
``as_of``; from then on the wall-clock timer stands down (learning "now" in wall-clock time would
treat every simulated decision as matured before its outcomes were reported).

Several worker processes (``ServingConfig.workers``): each has a learner, and any of them may
receive ``POST /learn`` or ``POST /policy/promote``. One learns at a time: an exclusive ``flock``
on ``<workspace>/policies/.learn.lock`` around each learn and promotion (besides the thread
lock). Inside it the learner first serves the newest policy files (``ServedPolicies.check``: a
learn of another worker may have just finished), reads ``learned.sqlite`` (so a decision learned
by another worker is not learned again), updates, and saves the policy with its sidecar, which the
other workers load before their next decide. The wall-clock timer runs only in the worker that
``start(..., timer=True)`` is given (the service: BentoML's first worker). "The caller drives the
clock" is a file, ``<workspace>/policies/.simulated_clock``, holding the id of the server run
(``$DECISIONING_SERVER_ID``, set by ``decisioning serve``; else the parent process id, which
BentoML's workers share), so every worker of this run sees it and the next run starts afresh.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from core.errors import InputError
from policies.context import CONTEXT_COLUMNS
from policies.funnel import Feedback
from policies.reward import RewardConfig

log = logging.getLogger(__name__)

#: decisions older than this before ``as_of`` are not considered (the in-process journey's 4 days)
DEFAULT_LOOKBACK = timedelta(days=4)
#: the id of this server run, shared by its worker processes (``decisioning serve`` sets it)
SERVER_ID_ENV = "DECISIONING_SERVER_ID"


def server_run_id() -> str:
    """The id every worker process of this server run shares."""
    return os.environ.get(SERVER_ID_ENV) or f"ppid-{os.getppid()}"


@contextlib.contextmanager
def _exclusive(path):
    """An exclusive inter-process lock (``flock``) on ``path`` while the block runs; the kernel
    releases it if the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class LearnResult:
    """What one learn did (the body of ``POST /learn``)."""

    as_of: str
    learned: int = 0
    skipped_no_context: int = 0
    seconds: float = 0.0
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # arm -> {"before", "after"}
    saved: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class PolicyLearner:
    """Updates the engine's policies from the engine's decision log (see the module doc)."""

    def __init__(self, engine, reward_config: RewardConfig | None = None, lookback: timedelta = DEFAULT_LOOKBACK,
                 save: bool = True):
        self.engine = engine
        self.rc = reward_config or RewardConfig()
        self.lookback = lookback
        self.save = save
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._simulated = False  # set by the first learn with an explicit as_of (here or in another worker)
        self.last: LearnResult | None = None
        path = engine.workspace.root / "policies" / "learned.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db_path = path
        self._lock_path = path.parent / ".learn.lock"
        self._clock_path = path.parent / ".simulated_clock"
        # every worker process creates it at start: creating an SQLite file in WAL mode is not safe
        # against a concurrent creator ("database is locked"), so under the learning lock
        with _exclusive(self._lock_path), self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS learned (decision_id TEXT PRIMARY KEY, arm TEXT NOT NULL, "
                       "learned_at INTEGER NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._db_path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    @property
    def simulated_clock(self) -> bool:
        """A caller drives the clock (a learn with ``as_of`` came to any worker of this server run):
        the wall-clock timer stands down."""
        if not self._simulated:
            with contextlib.suppress(OSError):
                self._simulated = self._clock_path.read_text().strip() == server_run_id()
        return self._simulated

    @simulated_clock.setter
    def simulated_clock(self, value: bool) -> None:
        self._simulated = bool(value)
        if value:
            with contextlib.suppress(OSError):
                tmp = self._clock_path.with_name(f"{self._clock_path.name}.{os.getpid()}")
                tmp.write_text(server_run_id())
                os.replace(tmp, self._clock_path)
        else:
            with contextlib.suppress(OSError):
                self._clock_path.unlink()

    # -- triggers --------------------------------------------------------------------------------
    def start(self, interval_seconds: float, timer: bool = True) -> None:
        """Learn every ``interval_seconds`` of wall-clock time in a daemon thread (0 or ``timer``
        False: never; the service gives the timer to one worker process)."""
        if interval_seconds <= 0 or not timer or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                if self.simulated_clock:
                    continue
                try:
                    self.learn()
                except Exception:  # the timer must survive a bad round; the next one retries
                    log.exception("scheduled policy learning failed")

        self._thread = threading.Thread(target=loop, name="policy-learner", daemon=True)
        self._thread.start()

    @property
    def timer_running(self) -> bool:
        """This process runs the wall-clock learning timer."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def close(self) -> None:
        self._stop.set()

    def promote(self, candidate: str, arm: str = "champion") -> dict:
        """``policy_state.promote_candidate`` under the learning lock: a learn in progress (which
        updates a copy of the OLD policy) finishes first and cannot overwrite the promoted one."""
        from serving.policy_state import promote_candidate

        with self._lock, _exclusive(self._lock_path):
            if self.engine.policy_files is not None:
                self.engine.policy_files.check()
            return promote_candidate(self.engine, candidate, arm)

    # -- the update ------------------------------------------------------------------------------
    def learn(self, as_of: datetime | None = None) -> LearnResult:
        """Learn from every matured, not yet learned decision decided in ``[as_of - lookback, as_of]``."""
        if as_of is not None:
            as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
            if not datetime(1971, 1, 1, tzinfo=UTC) <= as_of <= datetime(9000, 1, 1, tzinfo=UTC):
                raise InputError(f"as_of: {as_of.isoformat()} is out of range (1971 .. 9000)")
            self.simulated_clock = True
        now = as_of or datetime.now(UTC)
        with self._lock, _exclusive(self._lock_path):
            t0 = time.perf_counter()
            if self.engine.policy_files is not None:  # another worker may have just learned: build on it
                self.engine.policy_files.check()
            res = LearnResult(as_of=now.isoformat())
            # the join without the wide context column; the context only of what is learned from
            j = self.engine.log.joined(self.rc, now=now, since=now - self.lookback, until=now + timedelta(microseconds=1),
                                       columns=["action", "propensity", "policy", "ab_arm"], parse_json=False)
            j = j[j["matured"].to_numpy(dtype=bool) & (j["policy"] != "safe_rule").to_numpy()]
            if len(j):
                with self._db() as db:
                    done = {r[0] for r in db.execute(
                        "SELECT decision_id FROM learned WHERE decision_id IN (SELECT value FROM json_each(?))",
                        (json.dumps(j["decision_id"].tolist()),))}
                if done:
                    j = j[~j["decision_id"].isin(done)]
                X_all, ok_all = logged_contexts(self.engine.log.path, j["decision_id"].tolist())
            arm_of = j["ab_arm"].fillna("champion").to_numpy(dtype=object) if len(j) else np.array([], object)
            for arm_name in sorted(set(arm_of.tolist())):
                member = arm_of == arm_name
                rows = j[member]
                parm = self.engine.policy_arms.get(arm_name)
                if parm is None or parm.policy is None or not parm.policy.learns:
                    continue
                X, ok = X_all[member], ok_all[member]
                res.skipped_no_context += int((~ok).sum())
                rows = rows[ok]
                if not len(rows):
                    continue
                policy = copy.deepcopy(parm.policy)
                arms = policy.arms.index(list(rows["action"]))
                policy.update(X[ok], arms, rows["reward"].to_numpy(dtype=np.float64),
                              rows["propensity"].to_numpy(dtype=np.float64), feedback=Feedback.from_frame(rows))
                before = parm.version
                after = self.engine.swap_policy(arm_name, policy, source="learned")
                res.versions[arm_name] = {"before": before, "after": after}
                res.learned += len(rows)
                if self.save:
                    from serving.policy_state import policy_path, save_policy

                    if self.engine.policy_files is not None:  # the other workers follow the file
                        path = self.engine.policy_files.save(arm_name, policy, "learned")
                    else:
                        path = policy_path(self.engine.workspace, self.engine.policy_name(arm_name), arm_name)
                        save_policy(policy, path)
                    res.saved.append(str(path))
                stamp = int(time.time())
                with self._db() as db:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR IGNORE INTO learned VALUES (?, ?, ?)",
                                   [(d, arm_name, stamp) for d in rows["decision_id"]])
                    db.execute("COMMIT")
                log.info("policy %s learned from %d decisions as of %s: version %s -> %s", arm_name, len(rows),
                         now.isoformat(), before, after)
            res.seconds = round(time.perf_counter() - t0, 3)
            self.last = res
            return res


def logged_contexts(log_path, ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(CONTEXT_COLUMNS)) context matrix of decisions ``ids`` (in order; None: every
    decision, in logging order) from the decision log's stored contexts (policies.log
    context_matrix_of: the binary rows of the context features' layout without a dict per row;
    schema-1 JSON rows too), and which rows have every context column finite (a fallback decision
    without features logs none)."""
    from policies.log import context_matrix_of, context_sql, layout_names

    conn = sqlite3.connect(f"file:{log_path}?mode=ro", uri=True, timeout=60)
    try:
        conn.execute("BEGIN")
        cols = context_sql(conn)
        if ids is None:
            rows = conn.execute(f"SELECT decision_id, {cols} FROM decisions ORDER BY seq").fetchall()
        else:
            rows = conn.execute(f"SELECT decision_id, {cols} FROM decisions WHERE decision_id IN "
                                "(SELECT value FROM json_each(?))", (json.dumps(ids),)).fetchall()
        names_of = layout_names(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    k = len(CONTEXT_COLUMNS)
    data = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    found = context_matrix_of(data[1], data[2], data[3], names_of, CONTEXT_COLUMNS).reshape(len(rows), k)
    if ids is None:
        M = found
    else:
        pos = {d: i for i, d in enumerate(data[0])}
        M = np.full((len(ids), k), np.nan)
        got = np.array([pos.get(d, -1) for d in ids], dtype=np.int64)
        if rows:
            M[got >= 0] = found[got[got >= 0]]
    ok = np.isfinite(M).all(axis=1)
    return np.where(ok[:, None], M, 0.0), ok


def refit_policy(log_path, name: str, params: dict | None = None, as_of: datetime | None = None,
                 reward_config: RewardConfig | None = None, seed: int = 0, layer=None,
                 until: datetime | None = None, initial=None):
    """A policy ``name`` fitted off-policy on every matured decision (attribution window closed by
    ``as_of``) of a decision log with logged context, decided before ``until`` (default: all).
    ``initial``: a policy already fitted on the campaign history (``policy_state.warm_start``),
    which the log's decisions then update (the batch refit of the demo's retraining step); else
    a fresh one. Returns (policy, n_rows of the log learned from)."""
    from policies.arms import ArmSpace
    from policies.bandits import make_policy
    from policies.config import PolicyLayerConfig
    from policies.log import DecisionLog

    rc = reward_config or RewardConfig()
    layer = layer or PolicyLayerConfig()
    arms = ArmSpace.from_config(layer.arms)
    with DecisionLog(log_path, synchronous="NORMAL") as dl:
        j = dl.joined(rc, now=as_of, until=until, columns=["action", "propensity", "policy"], parse_json=False)
    j = j[j["matured"].to_numpy(dtype=bool) & (j["policy"] != "safe_rule").to_numpy()]
    X, ok = logged_contexts(log_path, j["decision_id"].tolist())
    j = j[ok]
    policy = initial if initial is not None else make_policy(name, arms, **({"seed": seed} | dict(params or {})))
    if not len(j):
        return policy, 0
    if initial is None:
        policy.initialise(X[ok])
    if policy.learns:
        policy.update(X[ok], arms.index(list(j["action"])), j["reward"].to_numpy(dtype=np.float64),
                      j["propensity"].to_numpy(dtype=np.float64), feedback=Feedback.from_frame(j))
    return policy, len(j)


__all__ = ["LearnResult", "PolicyLearner", "refit_policy"]

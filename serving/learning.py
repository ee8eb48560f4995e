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
"""

from __future__ import annotations

import copy
import json
import logging
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
        self.simulated_clock = False  # set by the first learn with an explicit as_of
        self.last: LearnResult | None = None
        path = engine.workspace.root / "policies" / "learned.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db_path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS learned (decision_id TEXT PRIMARY KEY, arm TEXT NOT NULL, "
                       "learned_at INTEGER NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._db_path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    # -- triggers --------------------------------------------------------------------------------
    def start(self, interval_seconds: float) -> None:
        """Learn every ``interval_seconds`` of wall-clock time in a daemon thread (0: never)."""
        if interval_seconds <= 0 or self._thread is not None:
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

    def close(self) -> None:
        self._stop.set()

    def promote(self, candidate: str, arm: str = "champion") -> dict:
        """``policy_state.promote_candidate`` under the learning lock: a learn in progress (which
        updates a copy of the OLD policy) finishes first and cannot overwrite the promoted one."""
        from serving.policy_state import promote_candidate

        with self._lock:
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
        with self._lock:
            t0 = time.perf_counter()
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

                    name = self.engine.policy_name(arm_name)
                    path = policy_path(self.engine.workspace, name)
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
    decision, in logging order) from the decision log's context JSON, extracted by SQLite (no JSON
    parsing in Python), and which rows have every context column finite (a fallback decision
    without features logs none)."""
    cols = ", ".join(f"json_extract(context, '$.\"{c}\"')" for c in CONTEXT_COLUMNS)
    conn = sqlite3.connect(f"file:{log_path}?mode=ro", uri=True, timeout=60)
    try:
        if ids is None:
            rows = conn.execute(f"SELECT decision_id, {cols} FROM decisions ORDER BY seq").fetchall()
        else:
            rows = conn.execute(f"SELECT decision_id, {cols} FROM decisions WHERE decision_id IN "
                                "(SELECT value FROM json_each(?))", (json.dumps(ids),)).fetchall()
    finally:
        conn.close()
    k = len(CONTEXT_COLUMNS)
    if ids is None:
        M = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), k)
    else:
        pos = {r[0]: i for i, r in enumerate(rows)}
        M = np.full((len(ids), k), np.nan)
        got = np.array([pos.get(d, -1) for d in ids], dtype=np.int64)
        if rows:
            found = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), k)
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

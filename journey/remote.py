"""The journey's policy lane over HTTP (``decisioning journey --url URL``): the running decision
service decides, logs and learns; the simulated world, the other lanes and the audit stay in
process (journey.run with a ``decider``).

Each simulated day: ``POST /decide/batch`` for the population in chunks (two in flight; the day's
requests run in a background thread while the journey computes the in-process lanes), with
``request_time`` = the simulated time (the response's arm id maps to the journey's arm; ``send_at`` comes back in the
customer's time zone) and an idempotency key per chunk (``request_id``: a chunk retried after a
lost connection is answered from the log, not decided and logged twice); the world answers; the outcome events are reported to ``POST /outcome`` as
they happen (idempotent by ``event_id``); at the end of the day ``POST /learn`` with ``as_of`` =
the end of the day, so the service learns on the same cadence as the in-process journey.

The audit re-checks the sends of the decisions RECEIVED over HTTP (not the service's log).
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pandas as pd

from core.errors import InputError
from policies.arms import ArmSpace
from policies.reward import RewardConfig
from serving.client import DecisionClient


class RemotePolicyLane:
    """A journey.run.PolicyDecider backed by the decision service at ``url``."""

    def __init__(self, url: str, token: str | None = None, chunk: int = 5000, journey_id: str = "journey-http",
                 learn: bool = True, retries: int = 3, ready_timeout: float = 10.0, concurrency: int = 2,
                 progress=None):
        self.client = DecisionClient(url, token=token, retries=retries)
        self.url = self.client.url
        self.chunk = chunk
        self.concurrency = max(1, int(concurrency))  # requests in flight (the service answers them in parallel)
        self.journey_id = journey_id
        self.learn = learn
        self.say = progress or (lambda _m: None)
        self.client.wait_ready(timeout=ready_timeout)
        self.status = self.client.status()
        self.received: list[pd.DataFrame] = []  # decisions whose response arrived (appended per chunk)
        self.outcomes_sent = {"accepted": 0, "duplicates": 0, "unknown_decision": 0, "events": 0}
        self.learned: list[dict] = []
        self.sent_outcomes: list[dict] = []  # every outcome event reported (a retry re-sends these)
        self.seconds = {"decide": 0.0, "outcome": 0.0, "learn": 0.0}
        self.fallbacks = 0
        self._pool = None
        self._day = None
        import uuid

        self._run = uuid.uuid4().hex[:12]  # keys of this journey run: a retry reuses them, a new run does not

    # -- PolicyDecider ---------------------------------------------------------------------------
    def start_day(self, customer_ids: np.ndarray, now: pd.Timestamp, arms: ArmSpace) -> None:
        """Send the day's requests in a background thread (the service works in its own process
        while the journey runs the in-process lanes); :meth:`decide_day` collects the answer."""
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="decide-day")
        self._day = (now, self._pool.submit(self._decide_day, customer_ids, now, arms))

    def decide_day(self, customer_ids: np.ndarray, now: pd.Timestamp, arms: ArmSpace):
        if self._day is not None and self._day[0] == now:
            fut, self._day = self._day[1], None
            return fut.result()
        return self._decide_day(customer_ids, now, arms)

    def _decide_day(self, customer_ids: np.ndarray, now: pd.Timestamp, arms: ArmSpace):
        n = len(customer_ids)
        chosen = np.zeros(n, dtype=np.int64)
        send_at = np.empty(n, dtype="datetime64[ns]")
        holdout = np.zeros(n, dtype=bool)
        decision_ids = np.empty(n, dtype=object)
        ids = [str(c) for c in customer_ids]
        t0 = time.perf_counter()
        step = now.date().isoformat()
        now_naive = np.datetime64(now.tz_convert("UTC").tz_localize(None).to_datetime64(), "ns")

        def fetch(lo: int) -> tuple[int, pd.DataFrame]:
            part = self.client.decide_batch(ids[lo:lo + self.chunk], request_time=now.to_pydatetime(),
                                            chunk=self.chunk, journey={"id": self.journey_id, "step": step},
                                            request_id=f"{self.journey_id}|{self._run}|{step}|{lo}")
            if len(part) != len(ids[lo:lo + self.chunk]):
                raise InputError(f"the service answered {len(part)} decisions for {len(ids[lo:lo + self.chunk])} "
                                 "customers")
            frame = _frame(part)
            self.received.append(frame)  # as soon as it arrived (the kill -9 test reads this)
            return lo, frame

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="decide-chunk") as pool:
            answers = list(pool.map(fetch, range(0, n, self.chunk)))
        for lo, frame in answers:
            sl = slice(lo, lo + len(frame))
            try:
                chosen[sl] = arms.index(frame["arm"].tolist())
            except Exception as exc:
                raise InputError(f"the service decides over other arms than this journey's ({exc}); run both "
                                 "on the same policy-layer config") from None
            at = frame["send_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
            send_at[sl] = np.where(np.isnat(at), now_naive, at)  # a no-send "happens" at the decision time
            holdout[sl] = frame["holdout"].to_numpy(dtype=bool)
            decision_ids[sl] = frame["decision_id"].to_numpy(dtype=object)
            self.fallbacks += int(frame["fallback"].sum())
        self.seconds["decide"] += time.perf_counter() - t0
        return chosen, send_at, holdout, decision_ids

    def report(self, outcomes: pd.DataFrame) -> None:
        if not len(outcomes):
            return
        t0 = time.perf_counter()
        values = outcomes["value"].to_numpy(dtype=np.float64)
        items = [{"event_id": e, "decision_id": d, "event": getattr(ev, "value", ev), "occurred_at": t.isoformat(),
                  **({"value": float(v)} if v == v else {})}
                 for e, d, ev, t, v in zip(outcomes["event_id"], outcomes["decision_id"], outcomes["event"],
                                           pd.DatetimeIndex(outcomes["occurred_at"]), values, strict=True)]
        self.sent_outcomes += items  # before sending: one in flight when the service dies is re-sent too
        res = self.client.report_outcomes(items)
        for k in ("accepted", "duplicates", "unknown_decision"):
            self.outcomes_sent[k] += int(res[k])
        self.outcomes_sent["events"] += len(items)
        self.seconds["outcome"] += time.perf_counter() - t0

    def end_of_day(self, learn_at: pd.Timestamp) -> int:
        if not self.learn:
            return 0
        t0 = time.perf_counter()
        res = self.client.learn(as_of=learn_at.to_pydatetime())
        self.seconds["learn"] += time.perf_counter() - t0
        self.learned.append({"as_of": res["as_of"], "learned": res["learned"], "versions": res["versions"]})
        return int(res["learned"])

    def decisions(self) -> pd.DataFrame:
        if not self.received:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in
                                 ("decision_id", "customer_id", "channel", "offer", "send_at", "decided_at", "holdout")})
        return pd.concat(self.received, ignore_index=True)

    def figures(self, now: pd.Timestamp, reward_config: RewardConfig) -> dict:
        d = self.decisions()
        window = timedelta(hours=reward_config.attribution_hours)
        anchor = d["send_at"].fillna(d["decided_at"]) if len(d) else pd.Series([], dtype="datetime64[ns, UTC]")
        matured = (anchor + window <= now).to_numpy(dtype=bool) if len(d) else np.zeros(0, bool)
        seen = d["decision_id"].isin(self._reported_ids).to_numpy() if len(d) else np.zeros(0, bool)
        http = self.client.stats()
        busy = self.seconds["decide"]
        versions = [v for day in self.learned for v in day["versions"].values()]
        return {
            "journey_end": now.isoformat(),
            "decisions_logged": len(d),
            "join_rate": float(seen[matured].mean()) if matured.any() else float("nan"),
            "log": self.status.get("decision_log"),
            "http": {
                "url": self.url,
                "requests": http["requests"], "retries": http["retries"], "errors": http["errors"],
                "decisions": len(d), "decisions_per_second": round(len(d) / busy, 1) if busy else None,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "fallback_decisions": self.fallbacks,
                "outcomes": dict(self.outcomes_sent),
                "learned": sum(x["learned"] for x in self.learned),
                "policy_version_first": versions[0]["before"] if versions else None,
                "policy_version_last": versions[-1]["after"] if versions else None,
                "service": {k: self.status.get(k) for k in ("models", "policies")},
            },
        }

    @property
    def _reported_ids(self) -> set[str]:
        return self.client.outcome_decisions

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.client.close()


def _frame(decisions: list[dict]) -> pd.DataFrame:
    """The fields of the responses the journey and its audit use, one row per decision."""
    act = [d["action"] for d in decisions]
    send_at = pd.to_datetime([a.get("send_at") for a in act], utc=True, format="ISO8601")
    return pd.DataFrame({
        "decision_id": [d["decision_id"] for d in decisions],
        "customer_id": [d["customer_id"] for d in decisions],
        "arm": [a["arm"] for a in act],
        "channel": [a.get("channel") for a in act],
        "offer": [a.get("offer") for a in act],
        "send_at": send_at,
        "decided_at": pd.to_datetime([d["decided_at"] for d in decisions], utc=True, format="ISO8601"),
        "holdout": [bool(d.get("holdout")) for d in decisions],
        "fallback": [bool(d.get("fallback")) for d in decisions],
        "probability": [float(d["probability"]) for d in decisions],
        "policy_version": [d.get("policy_version") for d in decisions],
    })


__all__ = ["RemotePolicyLane"]

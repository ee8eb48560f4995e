"""An HTTP driver of the decision service, for the simulated journey over the network
(``decisioning journey --url URL``) and for scripts:

    with DecisionClient("http://127.0.0.1:3000", token=None) as svc:
        svc.wait_ready()
        decisions = svc.decide_batch(customer_ids, request_time=day_start)   # list[dict]
        result = svc.report_outcomes(outcomes)                               # OutcomeResult as dict
        svc.learn(as_of=day_end)                                             # the policy learns
        svc.stats()                                                          # requests, retries, errors

Retries: a request that fails on the network is retried (``retries`` times, with backoff). A
retried outcome is harmless (idempotent by ``event_id``); a retried decide is harmless when it
carries a ``request_id`` (idempotency key: the service answers the decisions it already logged
under that key and logs nothing new): ``decide_batch(..., request_id=KEY)`` sends ``KEY:<offset>``
per chunk. Without a key, a retry after a lost response may log a second decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from core.errors import InputError, UnavailableError


class DecisionClient:
    """Thin httpx client of the service's endpoints; returns plain JSON (dicts)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0, retries: int = 3):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.retries = retries
        self.requests = 0
        self.retried = 0
        self.errors = 0
        self.outcome_decisions: set[str] = set()  # decisions with at least one outcome stored

    def __enter__(self) -> DecisionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict) -> Any:
        import httpx

        delay = 0.2
        for attempt in range(self.retries + 1):
            self.requests += 1
            self.retried += attempt > 0
            try:
                r = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                self.errors += 1
                if attempt == self.retries:
                    raise UnavailableError(f"decision service at {self.url} unreachable: {exc}") from None
                time.sleep(delay)
                delay *= 2
                continue
            if r.status_code in (400, 401, 422):
                raise InputError(f"{path}: the service refused the request ({r.status_code}): {r.text[:500]}")
            if r.status_code >= 500:
                self.errors += 1
            if r.status_code >= 500 and attempt < self.retries:
                time.sleep(delay)
                delay *= 2
                continue
            if r.status_code >= 300:
                raise UnavailableError(f"{path}: HTTP {r.status_code}: {r.text[:500]}")
            return r.json()
        raise UnavailableError(f"{path}: no answer")  # pragma: no cover

    def stats(self) -> dict:
        """Requests sent (retries included), retries, failed attempts."""
        return {"requests": self.requests, "retries": self.retried, "errors": self.errors}

    def status(self) -> dict:
        """What the service has loaded (GET-like ``POST /status``)."""
        return self._post("/status", {})

    def learn(self, as_of: datetime | None = None) -> dict:
        """Let the service learn from its joined log now (``as_of``: a simulated time)."""
        return self._post("/learn", {} if as_of is None else {"as_of": as_of.isoformat()})

    def promote(self, candidate: str, arm: str = "champion") -> dict:
        """Admin: serve the fitted policy file ``candidate`` of the service's workspace in ``arm``
        (``POST /policy/promote``); returns the versions before and after."""
        return self._post("/policy/promote", {"candidate": candidate, "arm": arm})

    def wait_ready(self, timeout: float = 300.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._http.get("/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise UnavailableError(f"decision service at {self.url} not ready after {timeout:.0f} s")

    def decide(self, customer_id: str, request_time: datetime | None = None, **fields) -> dict:
        """One decision (DecisionResponse as a dict)."""
        body = {"customer_id": customer_id, **fields}
        if request_time is not None:
            body["request_time"] = request_time.isoformat()
        return self._post("/decide", body)

    def decide_batch(self, customer_ids: Sequence[str], request_time: datetime | None = None,
                     chunk: int = 20_000, request_id: str | None = None, **fields) -> list[dict]:
        """Decisions for many customers (in order), sent in chunks of ``chunk``; with
        ``request_id``, each chunk carries the key ``<request_id>:<offset>`` (safe retries)."""
        out: list[dict] = []
        ids = [str(c) for c in customer_ids]
        for lo in range(0, len(ids), chunk):
            body = {"customer_ids": ids[lo:lo + chunk], **fields}
            if request_id is not None:
                body["request_id"] = f"{request_id}:{lo}"
            if request_time is not None:
                body["request_time"] = request_time.isoformat()
            out += self._post("/decide/batch", body)["decisions"]
        return out

    def report_outcomes(self, outcomes: Iterable[dict], chunk: int = 20_000) -> dict:
        """Report outcomes (dicts with event_id, decision_id, event, occurred_at, value); returns
        the summed OutcomeResult."""
        items = list(outcomes)
        total = {"accepted": 0, "duplicates": 0, "unknown_decision": 0,
                 "duplicate_event_ids": [], "unknown_event_ids": []}
        for lo in range(0, len(items), chunk):
            part = [_jsonable(o) for o in items[lo:lo + chunk]]
            res = self._post("/outcome", {"outcomes": part})
            for k in total:
                total[k] += res[k]
            unknown = set(res["unknown_event_ids"])
            self.outcome_decisions.update(o["decision_id"] for o in part if o["event_id"] not in unknown)
        return total


def _jsonable(o: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in o.items() if v is not None}

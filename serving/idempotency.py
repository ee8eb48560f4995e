"""Idempotent decides: a client may send a ``request_id`` (an idempotency key) with ``/decide`` and
``/decide/batch``; a retry with the same key returns the decisions already made, from the decision
log, without deciding or logging again.

How: with a key, each decision's id is not random but ``sha256(request_id | customer_id)`` (32 hex
digits), so the log itself remembers the request, in the same transaction as the decisions (no
second store that a crash could leave behind). Before deciding, the engine looks those ids up
(``decision_id`` is indexed): all there -> the logged decisions are answered again; none -> decide
as usual; some -> the key was used for another audience: refused (400). Two identical requests in
flight at once: the second one's insert fails on the unique id and it answers the first one's
decisions.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from core.errors import InputError
from core.types import Channel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = ("decision_id", "customer_id", "decided_at", "action", "channel", "offer", "send_slot", "send_at",
            "timezone", "propensity", "scores", "reasons", "guardrails", "policy", "policy_version",
            "model_versions", "ab_arm", "holdout", "fallback")


def decision_ids(request_id: str, customer_ids: Sequence[str]) -> list[str]:
    """The decision id of each customer of a request with idempotency key ``request_id``."""
    prefix = f"{request_id}|".encode()
    return [hashlib.sha256(prefix + str(c).encode()).hexdigest()[:32] for c in customer_ids]


def _time(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=int(us))


def replay(conn: sqlite3.Connection, ids: list[str], request_id: str) -> list | None:
    """The logged decisions ``ids`` as responses, in that order; None when none is logged.
    InputError when only some are (the key was used for another set of customers)."""
    from serving.schemas import Action, DecisionResponse

    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM decisions WHERE decision_id IN "
                        "(SELECT value FROM json_each(?))", (json.dumps(ids),)).fetchall()
    if not rows:
        return None
    if len(rows) != len(ids):
        raise InputError(f"request_id: {request_id!r} was already used for another request ({len(rows)} of these "
                         f"{len(ids)} customers were decided under it); use a new key per request")
    by_id = {r[0]: dict(zip(_COLUMNS, r, strict=True)) for r in rows}
    out = []
    for i in ids:
        r = by_id[i]
        send_at = _time(r["send_at"])
        if send_at is not None and r["timezone"]:
            send_at = send_at.astimezone(ZoneInfo(r["timezone"]))
        reasons = json.loads(r["reasons"])
        fallback_reason = next((x.removeprefix("fallback: ") for x in reasons if x.startswith("fallback: ")), None)
        out.append(DecisionResponse.model_construct(
            decision_id=r["decision_id"], customer_id=r["customer_id"],
            action=Action.model_construct(send=r["channel"] is not None,
                                          channel=None if r["channel"] is None else Channel(r["channel"]), offer=r["offer"],
                                          send_at=send_at, send_slot=r["send_slot"], arm=r["action"]),
            probability=float(r["propensity"]), scores=json.loads(r["scores"]), reasons=reasons,
            guardrails=json.loads(r["guardrails"]), policy=r["policy"], policy_version=r["policy_version"],
            model_versions=json.loads(r["model_versions"]), ab_arm=r["ab_arm"], holdout=bool(r["holdout"]),
            fallback=bool(r["fallback"]), fallback_reason=fallback_reason, decided_at=_time(r["decided_at"]),
        ))
    return out


__all__ = ["decision_ids", "replay"]

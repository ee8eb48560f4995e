"""Request and response bodies of the decision service (DESIGN section 3). Pydantic, because they
cross a process boundary; their JSON schema is what the OpenAPI document shows."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.catalog import DEFAULT_CATALOG
from core.types import Channel, OutcomeEvent

_CUSTOMER_ID = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$",
                     description="unified customer id (from profiles; never a phone number or e-mail)")


_REQUEST_ID = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:|\-]+$",
                    description="optional idempotency key: a retry with the same key returns the decisions "
                    "already made (from the log) and logs nothing new; a key is for one request only")


def _check_offers(v: list[str] | None) -> list[str] | None:
    if v is None:
        return v
    if len(v) == 0:
        raise ValueError("must name at least one candidate when given")
    bad = [o for o in v if o not in DEFAULT_CATALOG.ids]
    if bad:
        raise ValueError(f"unknown offers {bad[:5]}; the catalog has {list(DEFAULT_CATALOG.ids)}")
    return v


def _check_channels(v: list | None) -> list | None:
    if v is not None and len(v) == 0:
        raise ValueError("must name at least one candidate when given")
    return v


class SendWindow(BaseModel):
    """Local hours (customer's time zone) within which a send may go out: [start_hour, end_hour)."""

    model_config = ConfigDict(extra="forbid")

    start_hour: int = Field(ge=0, le=23)
    end_hour: int = Field(ge=1, le=24)

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.end_hour <= self.start_hour:
            raise ValueError("end_hour must be after start_hour")
        return self


class Journey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    step: str | None = Field(None, max_length=200)


class DecisionRequest(BaseModel):
    """Ask for a decision about one customer."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = _CUSTOMER_ID
    request_time: datetime | None = Field(None, description="decision time (UTC if naive); default now")
    journey: Journey | None = None
    channels: list[Channel] | None = Field(None, max_length=10, description="candidate channels (default all)")
    offers: list[str] | None = Field(None, max_length=100, description="candidate offer ids (default the catalog)")
    send_window: SendWindow | None = None
    allow_no_send: bool = True
    request_id: str | None = _REQUEST_ID
    context: dict[str, Any] = Field(default_factory=dict, max_length=50,
                                    description="free-form, logged with the decision (contact identifiers "
                                    "are dropped)")

    check_offers = field_validator("offers")(_check_offers)
    check_channels = field_validator("channels")(_check_channels)


class BatchDecisionRequest(BaseModel):
    """Decide for a campaign audience at once."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[str] = Field(min_length=1, max_length=200_000, description="unified customer ids")
    request_id: str | None = _REQUEST_ID
    request_time: datetime | None = Field(None, description="decision time (UTC if naive); default now")
    journey: Journey | None = None
    channels: list[Channel] | None = Field(None, max_length=10)
    offers: list[str] | None = Field(None, max_length=100)
    send_window: SendWindow | None = None
    allow_no_send: bool = True

    check_offers = field_validator("offers")(_check_offers)
    check_channels = field_validator("channels")(_check_channels)

    @field_validator("customer_ids")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        import re

        pat = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
        bad = [i for i, c in enumerate(v) if not pat.match(c)]
        if bad:
            raise ValueError(f"customer_ids[{bad[0]}] is not a unified customer id (letters, digits, _ . : -)")
        return v


class Action(BaseModel):
    send: bool
    arm: str = Field(description="arm id: 'no_send' or 'channel|offer|slot'")
    channel: Channel | None = None
    offer: str | None = None
    send_at: datetime | None = Field(None, description="when to send, in the customer's time zone")
    send_slot: int | None = Field(None, description="local hour of the send")


class DecisionResponse(BaseModel):
    decision_id: str
    customer_id: str
    action: Action
    probability: float = Field(description="probability with which the policy chose this action")
    scores: dict[str, float]
    reasons: list[str]
    guardrails: list[str]
    policy: str
    policy_version: str
    model_versions: dict[str, str]
    ab_arm: str | None = Field(None, description="arm of the policy A/B test, when one runs")
    holdout: bool = False
    fallback: bool = Field(False, description="a degraded path answered (see fallback_reason)")
    fallback_reason: str | None = None
    decided_at: datetime


class BatchDecisionResponse(BaseModel):
    decisions: list[DecisionResponse]


class DecisionBatch(Sequence[DecisionResponse]):
    """The decisions of a campaign audience as the engine returns them: a read-only sequence of
    :class:`DecisionResponse` whose items are built on first access (building 100k pydantic objects
    nobody may read costs more than deciding them). ``len``, iteration, indexing (ints and slices)
    and ``==`` behave as on the list of the same objects. :meth:`json_bytes` is the body of
    ``/decide/batch`` (the JSON of :class:`BatchDecisionResponse` of these decisions) written
    straight from the engine's columns; :meth:`tally` counts decisions by (fallback_reason,
    ab_arm, send) for the service's metrics without building them."""

    __slots__ = ("_n", "_item", "_body", "_tally", "_cache")

    def __init__(self, n: int, item: Callable[[int], DecisionResponse], body: Callable[[], bytes],
                 tally: Callable[[], dict[tuple[str | None, str | None, bool], int]]):
        self._n, self._item, self._body, self._tally = n, item, body, tally
        self._cache: list[DecisionResponse | None] = [None] * n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = operator.index(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("decision index out of range")
        d = self._cache[i]
        if d is None:
            d = self._cache[i] = self._item(i)
        return d

    def __iter__(self) -> Iterator[DecisionResponse]:
        for i in range(self._n):
            yield self[i]

    def __eq__(self, other) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # mutable cache, compared by value

    def __repr__(self) -> str:
        return f"DecisionBatch({self._n} decisions)"

    def json_bytes(self) -> bytes:
        """The JSON body ``{"decisions": [...]}`` of these decisions, as BentoML would write
        :class:`BatchDecisionResponse` of them (the same values)."""
        return self._body()

    def tally(self) -> dict[tuple[str | None, str | None, bool], int]:
        """Decisions per (fallback_reason, ab_arm, action.send)."""
        return self._tally()


class OutcomeIn(BaseModel):
    """Something that happened after a decision. A repeat of the same ``event_id`` is harmless."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200, description="makes a retry harmless")
    decision_id: str = Field(min_length=1, max_length=200)
    event: OutcomeEvent
    occurred_at: datetime = Field(description="UTC if naive")
    value: float | None = Field(None, ge=0.0, le=1e9, allow_inf_nan=False)


class OutcomeRequest(BaseModel):
    """One outcome (its fields at the top level) or several (``outcomes``), not both."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[OutcomeIn] | None = Field(None, min_length=1, max_length=100_000)
    event_id: str | None = Field(None, min_length=1, max_length=200)
    decision_id: str | None = Field(None, min_length=1, max_length=200)
    event: OutcomeEvent | None = None
    occurred_at: datetime | None = None
    value: float | None = Field(None, ge=0.0, le=1e9, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_or_many(self) -> OutcomeRequest:
        single = {k: getattr(self, k) for k in ("event_id", "decision_id", "event", "occurred_at")}
        given = [k for k, v in single.items() if v is not None]
        if self.outcomes is not None:
            if given or self.value is not None:
                raise ValueError("give either one outcome's fields or 'outcomes', not both")
            return self
        missing = [k for k, v in single.items() if v is None]
        if missing:
            raise ValueError(f"missing field(s) {missing} (or give a list as 'outcomes')")
        return self

    def items(self) -> list[OutcomeIn]:
        if self.outcomes is not None:
            return list(self.outcomes)
        return [OutcomeIn(event_id=self.event_id, decision_id=self.decision_id, event=self.event,
                          occurred_at=self.occurred_at, value=self.value)]


class OutcomeResult(BaseModel):
    accepted: int
    duplicates: int
    unknown_decision: int
    duplicate_event_ids: list[str] = Field(default_factory=list)
    unknown_event_ids: list[str] = Field(default_factory=list)

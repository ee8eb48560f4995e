"""Request and response bodies of the decision service (DESIGN section 3). Pydantic, because they
cross a process boundary; their JSON schema is what the OpenAPI document shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.types import Channel, OutcomeEvent


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

    customer_id: str = Field(min_length=1, max_length=200, description="unified customer id")
    request_time: datetime | None = Field(None, description="decision time (UTC if naive); default now")
    journey: Journey | None = None
    channels: list[Channel] | None = Field(None, description="candidate channels (default all)")
    offers: list[str] | None = Field(None, description="candidate offer ids (default the catalog)")
    send_window: SendWindow | None = None
    allow_no_send: bool = True
    context: dict[str, Any] = Field(default_factory=dict, description="free-form, logged with the decision")

    @field_validator("channels", "offers")
    @classmethod
    def _not_empty(cls, v: list | None) -> list | None:
        if v is not None and len(v) == 0:
            raise ValueError("must name at least one candidate when given")
        return v


class BatchDecisionRequest(BaseModel):
    """Decide for a campaign audience at once."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[str] = Field(min_length=1, max_length=200_000)
    request_time: datetime | None = None
    journey: Journey | None = None
    channels: list[Channel] | None = None
    offers: list[str] | None = None
    send_window: SendWindow | None = None
    allow_no_send: bool = True


class Action(BaseModel):
    send: bool
    channel: Channel | None = None
    offer: str | None = None
    send_at: datetime | None = Field(None, description="when to send, with the customer's time zone")
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
    ab_arm: str | None = None
    holdout: bool = False
    fallback: bool = False


class BatchDecisionResponse(BaseModel):
    decisions: list[DecisionResponse]


class OutcomeIn(BaseModel):
    """Something that happened after a decision. A repeat of the same ``event_id`` is harmless."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200)
    decision_id: str = Field(min_length=1, max_length=200)
    event: OutcomeEvent
    occurred_at: datetime
    value: float | None = Field(None, ge=0.0)


class OutcomeResult(BaseModel):
    accepted: int
    duplicates: int
    unknown_decision: int
    duplicate_event_ids: list[str] = Field(default_factory=list)
    unknown_event_ids: list[str] = Field(default_factory=list)

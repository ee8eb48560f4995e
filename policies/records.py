"""Records that cross a file or process boundary: decisions and outcomes.

A decision record is written to the decision log before the decision is returned; an outcome
record is what the journey system reports back. Both are pydantic models (typed boundaries).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.types import Channel, OutcomeEvent


class DecisionRecord(BaseModel):
    """One decision, as logged. ``propensity`` is the probability with which the policy chose
    ``action`` after guardrails; ``distribution`` maps every eligible arm id to its probability
    (they sum to one), so any target policy can be evaluated off-policy later."""

    model_config = ConfigDict(frozen=True)

    decision_id: str
    customer_id: str
    decided_at: datetime  # UTC
    action: str  # arm id: "no_send" or "channel|offer|hour", e.g. "email|pct10|10"
    channel: Channel | None = None  # None for no_send
    offer: str | None = None
    send_slot: int | None = Field(None, ge=0, le=23)  # local hour of the send
    send_at: datetime | None = None  # UTC
    timezone: str | None = None
    propensity: float = Field(gt=0.0, le=1.0)
    distribution: dict[str, float] = Field(default_factory=dict)
    context: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)
    guardrails: list[str] = Field(default_factory=list)  # guardrails that acted on this decision
    policy: str
    policy_version: str = "0"
    model_versions: dict[str, str] = Field(default_factory=dict)
    ab_arm: str | None = None  # which arm of a policy A/B test, if any
    holdout: bool = False  # in the never-contacted holdout group
    fallback: bool = False  # a degraded path answered
    journey_id: str | None = None
    journey_step: str | None = None

    @field_validator("decided_at", "send_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps must carry a time zone (UTC)")
        return v


class OutcomeRecord(BaseModel):
    """Something that happened after a decision. ``event_id`` makes a retry harmless."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(min_length=1)
    decision_id: str = Field(min_length=1)
    event: OutcomeEvent
    occurred_at: datetime
    value: float | None = Field(None, ge=0.0)  # conversion value, currency units

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("occurred_at must carry a time zone (UTC)")
        return v

"""Configuration of the policy layer: arms, guardrails and the policy, as pydantic models.

Everything has a sensible default, so ``PolicyLayerConfig()`` is a working setup; a YAML file
(``core.config.load_config(PolicyLayerConfig, path)``) overrides any part of it::

    arms:
      send_slots: [9, 12, 19]
    guardrails:
      holdout_share: 0.1
      frequency_caps:
        - {channel: null, max_sends: 1, window_hours: 24}
        - {channel: sms, max_sends: 1, window_hours: 168}
      sms_daily_budget: 50.0
    policy:
      name: thompson
      params: {floor: 0.02}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.types import CHANNELS, SEND_HOURS, Channel

#: Default local send slots: every two hours inside the allowed send hours.
DEFAULT_SLOTS: tuple[int, ...] = (8, 10, 12, 14, 16, 18, 20)


class ArmsConfig(BaseModel):
    """Which (channel, offer, send slot) combinations a policy may choose from (plus no-send)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: tuple[Channel, ...] = Field(CHANNELS, description="channels a policy may use")
    offers: tuple[str, ...] | None = Field(
        None, description="offer ids from the catalog (None: every offer of the catalog)"
    )
    send_slots: tuple[int, ...] = Field(
        DEFAULT_SLOTS, description="local hours (0-23) at which a message may be scheduled"
    )

    @field_validator("channels", "send_slots")
    @classmethod
    def _non_empty_unique(cls, v: tuple) -> tuple:
        if not v:
            raise ValueError("must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"must not repeat values; got {list(v)}")
        return v

    @field_validator("send_slots")
    @classmethod
    def _hours(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [h for h in v if not 0 <= h <= 23]
        if bad:
            raise ValueError(f"send slots are local hours 0-23; got {bad}")
        return tuple(sorted(v))


class FrequencyCap(BaseModel):
    """At most ``max_sends`` sends on ``channel`` (None: on all channels together) in any sliding
    window of ``window_hours`` hours, the new send included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel | None = None
    max_sends: int = Field(ge=0)
    window_hours: float = Field(gt=0.0)

    @property
    def name(self) -> str:
        return f"frequency_cap:{self.channel.value if self.channel else 'all'}"


def _default_caps() -> tuple[FrequencyCap, ...]:
    return (
        FrequencyCap(channel=None, max_sends=1, window_hours=24.0),
        FrequencyCap(channel=None, max_sends=3, window_hours=168.0),
        FrequencyCap(channel=Channel.SMS, max_sends=1, window_hours=168.0),
        FrequencyCap(channel=Channel.EMAIL, max_sends=2, window_hours=168.0),
        FrequencyCap(channel=Channel.WECHAT, max_sends=2, window_hours=168.0),
        FrequencyCap(channel=Channel.APP_PUSH, max_sends=2, window_hours=168.0),
    )


class GuardrailConfig(BaseModel):
    """Rules no decision may break, whatever the models say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    require_consent: bool = Field(True, description="send only on channels the customer opted in to")
    require_reachable: bool = Field(
        True, description="send only on channels the customer has a valid key for (push needs the app)"
    )
    frequency_caps: tuple[FrequencyCap, ...] = Field(
        default_factory=_default_caps, description="sliding-window caps, per channel and overall"
    )
    allowed_hours: tuple[int, ...] = Field(
        SEND_HOURS, description="local hours at which a send may go out; the others are quiet hours"
    )
    channel_allowed_hours: dict[Channel, tuple[int, ...]] = Field(
        default_factory=lambda: {Channel.SMS: tuple(range(9, 21))},
        description="stricter allowed local hours per channel (default: SMS only 09:00-20:59)",
    )
    quiet_hours_action: Literal["move", "remove"] = Field(
        "move",
        description="a slot inside quiet hours is moved to the next allowed hour, or the arm is removed",
    )
    require_category_interest: bool = Field(
        True,
        description="a category-specific offer (Offer.category) only goes to customers who showed "
        "interest in that category (ordered or viewed it)",
    )
    offer_inventory: dict[str, int] = Field(
        default_factory=dict,
        description="coupons available per offer id over the whole run (overrides Offer.inventory)",
    )
    sms_daily_budget: float | None = Field(
        100.0, ge=0.0, description="SMS spend allowed per UTC day of decision, currency (None: unlimited)"
    )
    holdout_share: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of customers in the never-contacted holdout group"
    )
    holdout_salt: str = Field("holdout-v1", description="salt of the holdout hash; change it to re-draw")

    @field_validator("allowed_hours")
    @classmethod
    def _hours(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not 0 <= h <= 23 for h in v):
            raise ValueError(f"allowed hours must be a non-empty set of hours 0-23; got {list(v)}")
        return tuple(sorted(set(v)))

    @field_validator("channel_allowed_hours")
    @classmethod
    def _channel_hours(cls, v: dict) -> dict:
        for ch, hours in v.items():
            if not hours or any(not 0 <= h <= 23 for h in hours):
                raise ValueError(f"allowed hours of {ch} must be a non-empty set of hours 0-23")
        return {ch: tuple(sorted(set(h))) for ch, h in v.items()}

    @field_validator("offer_inventory")
    @classmethod
    def _inventory(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 0}
        if bad:
            raise ValueError(f"inventory must be >= 0; got {bad}")
        return v

    def hours_for(self, channel: Channel) -> tuple[int, ...]:
        """Local hours at which ``channel`` may send."""
        own = self.channel_allowed_hours.get(channel)
        return tuple(h for h in self.allowed_hours if own is None or h in own)


class PolicySpec(BaseModel):
    """Which policy decides, with its hyper-parameters (see ``policies.bandits.POLICIES``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("thompson", description="registered policy name")
    params: dict[str, Any] = Field(default_factory=dict, description="hyper-parameters of the policy")
    warm_start: bool = Field(
        True, description="fit the reward model off-policy on the logged campaign history first"
    )


class PolicyLayerConfig(BaseModel):
    """The whole policy layer: arms, guardrails and the policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arms: ArmsConfig = Field(default_factory=ArmsConfig)
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig)
    policy: PolicySpec = Field(default_factory=PolicySpec)

    @model_validator(mode="after")
    def _slots_not_all_quiet(self) -> PolicyLayerConfig:
        g = self.guardrails
        if g.quiet_hours_action == "remove":
            for ch in self.arms.channels:
                if not set(self.arms.send_slots) & set(g.hours_for(ch)):
                    raise ValueError(
                        f"every send slot of {ch.value} is inside its quiet hours and quiet_hours_action "
                        "is 'remove': the channel could never be used"
                    )
        return self


def load_policy_config(path: str | Path | None = None, **overrides) -> PolicyLayerConfig:
    """The policy layer's config from a YAML file (defaults when ``path`` is None)."""
    from core.config import load_config

    return load_config(PolicyLayerConfig, path, **overrides)

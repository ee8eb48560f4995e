"""The marketer's vocabulary, as enums and constants shared by every package."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """A channel a message can be sent on."""

    SMS = "sms"
    EMAIL = "email"
    WECHAT = "wechat"
    APP_PUSH = "app_push"


CHANNELS: tuple[Channel, ...] = tuple(Channel)


class OutcomeEvent(StrEnum):
    """What can happen after a decision, in funnel order (``unsubscribed`` is off the funnel)."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    CONVERTED = "converted"
    UNSUBSCRIBED = "unsubscribed"


#: Identity keys a raw record can carry, in the order identity resolution prefers them.
IDENTITY_KEYS: tuple[str, ...] = ("crm_id", "phone", "email", "wechat_unionid", "device_id")

#: The identity key a channel delivers to: no key, no reachability on that channel.
CHANNEL_KEY: dict[Channel, str] = {
    Channel.SMS: "phone",
    Channel.EMAIL: "email",
    Channel.WECHAT: "wechat_unionid",
    Channel.APP_PUSH: "device_id",
}

#: The CRM consent column for each channel.
CHANNEL_CONSENT: dict[Channel, str] = {
    Channel.SMS: "consent_sms",
    Channel.EMAIL: "consent_email",
    Channel.WECHAT: "consent_wechat",
    Channel.APP_PUSH: "consent_push",
}

#: Product categories of the simulated retailer (a real catalog may use any strings).
CATEGORIES: tuple[str, ...] = ("apparel", "beauty", "electronics", "home", "grocery", "sports")

#: The action that sends nothing. It is a real arm, logged like any other.
NO_SEND = "no_send"

#: Local hours at which a message may be sent at all (quiet hours are the rest). A policy's send
#: slots are a subset; the simulated history samples from all of them.
SEND_HOURS: tuple[int, ...] = tuple(range(8, 22))

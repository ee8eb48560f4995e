"""Raw-source schemas: the documented columns a CDP export must have to be imported.

These are the data contract of DESIGN section 3. The simulator writes exactly these columns;
a real user's CSV or Parquet exports with the same column names import the same way. Only the
columns marked ``required`` must exist in a file; optional columns may be absent (treated as all
null, or as their documented default). Timestamps are UTC (ISO 8601 in CSV, timestamp columns in
Parquet; naive values are read as UTC).

Every row of ``orders``, ``events`` and ``engagements`` must carry at least one identity key
(one of ``core.types.IDENTITY_KEYS`` that the source allows); a row with none is rejected with
reason ``no identity key``.

Where the rules live: row validation and the reject reasons in ``features/sources.py``; key
normalisation and identity resolution in ``features/identity.py``; the profiles folder written by
``decisioning profiles`` (a contract other steps read) in ``features/profiles.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["str", "timestamp", "float", "int", "bool"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    description: str
    required: bool = False  # the column must exist in the file
    nullable: bool = True  # a row may leave it empty
    default: object = None  # value used when an optional column is absent or empty


@dataclass(frozen=True)
class SourceSchema:
    name: str
    id_column: str
    identity_columns: tuple[str, ...]
    columns: tuple[Column, ...]
    description: str

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _ids(*names: str, required: tuple[str, ...] = ()) -> tuple[Column, ...]:
    text = {
        "crm_id": "CRM account id",
        "phone": "mobile number; normalised to digits with country code (+86 assumed for 11 digits)",
        "email": "e-mail address; normalised to lower case, trimmed",
        "wechat_unionid": "WeChat unionid of the person (same across the brand's WeChat apps)",
        "device_id": "app install / device id; linked to a person by a login event",
    }
    return tuple(
        Column(n, "str", text[n], required=n in required, nullable=n not in required) for n in names
    )


CUSTOMERS = SourceSchema(
    name="customers",
    id_column="crm_id",
    identity_columns=("crm_id", "phone", "email", "wechat_unionid"),
    description="CRM records. One person may have several (duplicates), with conflicting attributes.",
    columns=(
        *_ids("crm_id", "phone", "email", "wechat_unionid", required=("crm_id",)),
        Column("signup_at", "timestamp", "when the CRM record was created", required=True, nullable=False),
        Column("updated_at", "timestamp", "last change of the record; the newest wins in conflicts"),
        Column("city", "str", "city of residence"),
        Column("timezone", "str", "IANA time zone, e.g. Asia/Shanghai", default="Asia/Shanghai"),
        Column("consent_sms", "bool", "opted in to SMS marketing", default=False),
        Column("consent_email", "bool", "opted in to e-mail marketing", default=False),
        Column("consent_wechat", "bool", "opted in to WeChat template messages", default=False),
        Column("consent_push", "bool", "opted in to app push notifications", default=False),
    ),
)

ORDERS = SourceSchema(
    name="orders",
    id_column="order_id",
    identity_columns=("crm_id", "phone", "email", "wechat_unionid", "device_id"),
    description="Completed orders from any shop (online, mini-program, store with a member id).",
    columns=(
        Column("order_id", "str", "unique order id", required=True, nullable=False),
        *_ids("crm_id", "phone", "email", "wechat_unionid", "device_id"),
        Column("ordered_at", "timestamp", "when the order was placed", required=True, nullable=False),
        Column("amount", "float", "order value paid, currency units, >= 0", required=True, nullable=False),
        Column("quantity", "int", "items in the order, >= 1", default=1),
        Column("category", "str", "main product category of the order"),
        Column("offer", "str", "offer redeemed with the order, if any"),
    ),
)

EVENTS = SourceSchema(
    name="events",
    id_column="event_id",
    identity_columns=("device_id", "crm_id", "phone", "email", "wechat_unionid"),
    description=(
        "App, web, WeChat and mini-program behaviour. A 'login' event that carries both a device_id "
        "and a login identity (crm_id, phone, email or wechat_unionid) links the device to the person."
    ),
    columns=(
        Column("event_id", "str", "unique event id", required=True, nullable=False),
        *_ids("device_id", "crm_id", "phone", "email", "wechat_unionid"),
        Column("event_type", "str", "app_open, login, view_item, add_to_cart, search, wechat_follow, "
               "wechat_message, mini_program_view, ...", required=True, nullable=False),
        Column("occurred_at", "timestamp", "when it happened", required=True, nullable=False),
        Column("platform", "str", "app, web, wechat or mini_program"),
        Column("category", "str", "product category viewed, if any"),
    ),
)

ENGAGEMENTS = SourceSchema(
    name="engagements",
    id_column="send_id",
    identity_columns=("crm_id", "phone", "email", "wechat_unionid", "device_id"),
    description=(
        "Past campaign sends and their outcomes. 'propensity' is the probability with which the "
        "sender chose this send (channel, offer, time) if it logged one: it makes the history usable "
        "for off-policy learning."
    ),
    columns=(
        Column("send_id", "str", "unique send id", required=True, nullable=False),
        *_ids("crm_id", "phone", "email", "wechat_unionid", "device_id"),
        Column("channel", "str", "sms, email, wechat or app_push", required=True, nullable=False),
        Column("offer", "str", "offer id carried by the message (empty: none)"),
        Column("sent_at", "timestamp", "when it was sent", required=True, nullable=False),
        Column("delivered_at", "timestamp", "when it was delivered (empty: not delivered)"),
        Column("opened_at", "timestamp", "when it was opened (empty: not opened)"),
        Column("clicked_at", "timestamp", "when it was clicked (empty: not clicked)"),
        Column("converted_at", "timestamp", "when an attributed order followed (empty: none)"),
        Column("conversion_value", "float", "value of the attributed order, >= 0"),
        Column("unsubscribed_at", "timestamp", "when the person unsubscribed from the channel"),
        Column("propensity", "float", "logging probability of this send, in (0, 1]"),
        Column("campaign_id", "str", "campaign that made the send"),
    ),
)

SOURCES: dict[str, SourceSchema] = {s.name: s for s in (CUSTOMERS, ORDERS, EVENTS, ENGAGEMENTS)}

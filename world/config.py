"""Configuration of the simulated customer world.

Every parameter has a default and a description; ``world/README.md`` tables them. Load a YAML file
with ``core.config.load_config(WorldConfig, path, customers=..., days=..., seed=...)``. Shares are
probabilities in [0, 1]; rates are per day; logit terms are additive on the log-odds scale;
money is in currency units.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from core.catalog import DEFAULT_CATALOG, Catalog
from core.types import CATEGORIES, SEND_HOURS, Channel


def _ch(sms: float, email: float, wechat: float, push: float) -> dict[Channel, float]:
    return {Channel.SMS: sms, Channel.EMAIL: email, Channel.WECHAT: wechat, Channel.APP_PUSH: push}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_channels(v: dict[Channel, float], name: str, lo: float, hi: float) -> dict[Channel, float]:
    missing = [c.value for c in Channel if c not in v]
    if missing:
        raise ValueError(f"{name} needs a value for every channel; missing {missing}")
    bad = {c.value: x for c, x in v.items() if not (lo <= x <= hi)}
    if bad:
        raise ValueError(f"{name} values must be in [{lo}, {hi}]; got {bad}")
    return v


class PopulationConfig(_Section):
    """Who the customers are: time zones, cities, when they became customers, CRM coverage."""

    timezones: dict[str, float] = Field(
        default_factory=lambda: {
            "Asia/Shanghai": 0.70,
            "Asia/Tokyo": 0.08,
            "Asia/Singapore": 0.08,
            "Europe/London": 0.07,
            "America/Los_Angeles": 0.07,
        },
        description="IANA time zone -> share of persons living in it (normalised to sum to 1).",
    )
    cities: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "Asia/Shanghai": ["Shanghai", "Beijing", "Guangzhou", "Shenzhen", "Hangzhou", "Chengdu"],
            "Asia/Tokyo": ["Tokyo", "Osaka"],
            "Asia/Singapore": ["Singapore"],
            "Europe/London": ["London", "Manchester"],
            "America/Los_Angeles": ["Los Angeles", "San Francisco"],
        },
        description="cities per time zone (a person's city is drawn uniformly from its zone's list).",
    )
    signup_during_history_share: float = Field(
        0.25, ge=0, le=1, description="share of persons who become customers during the history "
        "(uniform over it); the others signed up before it.")
    signup_before_days: float = Field(
        1095.0, gt=0, description="persons who signed up before the history did so uniformly within "
        "this many days before its start.")
    crm_share: float = Field(
        0.95, ge=0, le=1, description="share of persons with a CRM (member) record; the rest are guests "
        "known only by phone, WeChat or devices, and are never campaign targets in the history.")
    digital_sd: float = Field(
        1.0, ge=0, description="sd of the latent 'digital' trait that raises app/WeChat reachability, "
        "activity and push/WeChat affinity together.")


class PurchaseConfig(_Section):
    """Organic purchases: a Poisson process per person with a heterogeneous daily rate."""

    mean_daily_rate: float = Field(
        0.025, gt=0, description="mean organic purchase rate (orders per day) of an active person.")
    rate_shape: float = Field(
        0.8, gt=0, description="gamma shape of the purchase rate across persons (smaller = more unequal).")
    max_daily_rate: float = Field(0.5, gt=0, description="cap of the daily purchase rate.")
    mean_order_value: float = Field(
        180.0, gt=0, description="mean gross order value of a person (before category multipliers).")
    order_value_person_sigma: float = Field(
        0.5, ge=0, description="log-sd of a person's mean order value across persons.")
    order_value_sigma: float = Field(
        0.4, ge=0, description="log-sd of one order's value around its person/category mean.")
    min_order_value: float = Field(
        15.0, gt=0, description="floor of a gross order value (a minimum basket); keeps every net "
        "value of a redeemed offer non-negative.")
    category_concentration: float = Field(
        0.6, gt=0, description="Dirichlet concentration of category preferences (smaller = more focused).")
    category_popularity: dict[str, float] = Field(
        default_factory=lambda: {"apparel": 1.5, "beauty": 1.0, "electronics": 0.7, "home": 0.8,
                                 "grocery": 1.2, "sports": 0.6},
        description="relative popularity of each category (scales the Dirichlet base measure).")
    category_value: dict[str, float] = Field(
        default_factory=lambda: {"apparel": 1.0, "beauty": 0.7, "electronics": 2.5, "home": 1.3,
                                 "grocery": 0.4, "sports": 1.1},
        description="order value multiplier per category.")
    extra_items_mean: float = Field(0.6, ge=0, description="mean of (quantity - 1), Poisson.")

    @field_validator("category_popularity", "category_value")
    @classmethod
    def _all_categories(cls, v: dict[str, float]) -> dict[str, float]:
        missing = [c for c in CATEGORIES if c not in v]
        if missing or any(x <= 0 for x in v.values()):
            raise ValueError(f"needs a positive value for every category {list(CATEGORIES)}; missing {missing}")
        return v


class ChurnConfig(_Section):
    """Latent churn: at a time drawn from the person's hazard (from signup) they go inactive."""

    mean_hazard: float = Field(
        1 / 700, gt=0, description="mean churn hazard per day (1/mean lifetime in days).")
    hazard_shape: float = Field(1.0, gt=0, description="gamma shape of the hazard across persons.")
    purchase_multiplier: float = Field(
        0.05, ge=0, le=1, description="purchase rate after churn, as a share of the rate before.")
    activity_multiplier: float = Field(
        0.1, ge=0, le=1, description="app/web/WeChat session rate after churn, as a share of before.")
    response_penalty: float = Field(
        2.5, ge=0, description="logit penalty on opening and clicking a message once churned.")


class ChannelConfig(_Section):
    """Reachability, consent and the open funnel per channel (sms, email, wechat, app_push)."""

    key_on_file: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.92, 0.72, 0.55, 0.40),
        description="share of persons the brand has a key for: phone, e-mail, WeChat unionid, an "
        "app install (wechat and app_push also rise with the digital trait).")
    reachable: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.96, 0.92, 0.85, 0.80),
        description="given a key on file, share that can receive: live number, live mailbox, "
        "follows the official account, push enabled.")
    consent: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.55, 0.60, 0.70, 0.65),
        description="share of persons who opted in to marketing on the channel.")
    deliver_rate: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.98, 0.97, 0.97, 0.95),
        description="transient delivery success for a reachable, subscribed person.")
    open_rate: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.12, 0.15, 0.22, 0.06),
        description="open probability of a delivered message for an average person at a neutral "
        "hour, not fatigued, not churned.")
    affinity_sd: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.9, 0.9, 0.9, 0.9),
        description="sd of the person's open log-odds offset per channel.")
    affinity_digital: dict[Channel, float] = Field(
        default_factory=lambda: _ch(-0.3, 0.1, 0.3, 0.4),
        description="loading of the digital trait on the channel affinity.")
    hour_weight: dict[Channel, float] = Field(
        default_factory=lambda: _ch(1.0, 0.5, 0.8, 1.3),
        description="how much the send hour matters on the channel (multiplies the person's hour "
        "sensitivity; e-mail is read later, push is seen at once).")
    open_delay_hours: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.3, 3.0, 1.0, 0.2),
        description="mean delay from delivery to open, hours (exponential, kept inside 24 h).")
    unsubscribe_rate: dict[Channel, float] = Field(
        default_factory=lambda: _ch(0.004, 0.003, 0.002, 0.003),
        description="unsubscribe probability of a delivered message for an average, unfatigued, "
        "consenting person.")

    @model_validator(mode="after")
    def _every_channel(self) -> ChannelConfig:
        for name in ("key_on_file", "reachable", "consent", "deliver_rate", "open_rate", "unsubscribe_rate"):
            _check_channels(getattr(self, name), name, 0.0, 1.0)
        for name in ("open_rate", "unsubscribe_rate"):
            if any(x in (0.0, 1.0) for x in getattr(self, name).values()):
                raise ValueError(f"{name} values must be strictly between 0 and 1")
        _check_channels(self.affinity_sd, "affinity_sd", 0.0, 10.0)
        _check_channels(self.affinity_digital, "affinity_digital", -10.0, 10.0)
        _check_channels(self.hour_weight, "hour_weight", 0.0, 10.0)
        _check_channels(self.open_delay_hours, "open_delay_hours", 0.0, 24.0)
        return self


class ResponseConfig(_Section):
    """The response function beyond the channel funnel: offers, hours, fatigue, unsubscribes."""

    click_rate: float = Field(0.12, gt=0, lt=1, description="click probability of an opened message "
                              "with a neutral offer (appeal 0).")
    conversion_rate: float = Field(0.12, gt=0, lt=1, description="campaign conversion probability "
                                   "after a click with a neutral offer, for a person of mean purchase rate.")
    click_appeal_weight: float = Field(0.5, ge=0, description="weight of the offer appeal on the click logit.")
    conversion_appeal_weight: float = Field(0.7, ge=0, description="weight of the offer appeal on the "
                                            "post-click conversion logit.")
    purchase_rate_link: float = Field(0.5, ge=0, description="conversion logit gain per unit of "
                                      "log(purchase rate / mean rate): frequent buyers respond more.")
    price_sensitivity_mean: float = Field(1.0, ge=0, description="mean of the person's price sensitivity (gamma).")
    price_sensitivity_shape: float = Field(1.0, gt=0, description="gamma shape of price sensitivity.")
    percent_off_scale: float = Field(1.15, ge=0, description="appeal of a percent-off coupon = scale x "
                                     "price sensitivity x (1 - exp(-discount / discount_saturation)).")
    discount_saturation: float = Field(0.1, gt=0, description="discount at which the coupon's appeal "
                                       "reaches 63% of its maximum (diminishing returns of deeper discounts).")
    shipping_sensitivity_mean: float = Field(1.0, ge=0, description="mean shipping sensitivity (gamma, shape 2).")
    free_shipping_scale: float = Field(10.0, ge=0, description="appeal of free shipping = scale x "
                                       "shipping cost / person's order value x shipping sensitivity.")
    loyalty_mean: float = Field(1.0, ge=0, description="mean loyalty affinity (gamma, shape 1).")
    points_scale: float = Field(10.0, ge=0, description="appeal of a points offer = scale x points "
                                "value share x loyalty affinity.")
    novelty_mean: float = Field(0.2, description="mean appeal of content offers (new arrivals).")
    novelty_sd: float = Field(0.6, ge=0, description="sd of the appeal of content offers.")
    category_fit_weight: float = Field(1.0, ge=0, description="appeal of a category offer gains "
                                       "weight x clip(log(K x preference for its category), -3, 1).")
    hour_sensitivity_mean: float = Field(1.0, ge=0, description="mean of the person's hour sensitivity "
                                         "(gamma, shape 3): open log-odds swing +-(sensitivity x channel "
                                         "hour weight) between peak hour and far from it.")
    peak_hours: dict[int, float] = Field(
        default_factory=lambda: {8: 0.15, 12: 0.25, 19: 0.25, 21: 0.2, 10: 0.15},
        description="mixture of local peak activity hours across persons (hour -> weight); each "
        "person's peak is drawn around one of them (sd 1 h).")
    hour_spread_min: float = Field(1.5, gt=0, description="smallest sd (hours) of a person's active hours.")
    hour_spread_max: float = Field(4.0, gt=0, description="largest sd (hours) of a person's active hours.")
    fatigue_half_life_days: float = Field(4.0, gt=0, description="half-life of the fatigue of a delivered message.")
    fatigue_sensitivity_mean: float = Field(0.3, ge=0, description="mean open log-odds lost per unit of "
                                            "fatigue (gamma, shape 2).")
    unsubscribe_sensitivity_sd: float = Field(0.7, ge=0, description="sd of the person's unsubscribe "
                                              "log-odds offset.")
    unsubscribe_fatigue_weight: float = Field(0.35, ge=0, description="unsubscribe log-odds gained per "
                                              "unit of fatigue.")
    no_consent_unsubscribe_logit: float = Field(2.5, ge=0, description="unsubscribe/complaint log-odds "
                                                "added when sending on a channel without consent.")
    outcome_window_hours: float = Field(24.0, gt=0, le=168, description="a decision's outcomes happen "
                                        "within this many hours after send_at (organic purchases too).")

    @model_validator(mode="after")
    def _hours(self) -> ResponseConfig:
        if self.hour_spread_max < self.hour_spread_min:
            raise ValueError("hour_spread_max must be >= hour_spread_min")
        if not self.peak_hours or any(not (0 <= h < 24) or w < 0 for h, w in self.peak_hours.items()) \
                or sum(self.peak_hours.values()) <= 0:
            raise ValueError("peak_hours maps hours 0..23 to non-negative weights with a positive sum")
        return self


class ActivityConfig(_Section):
    """App, web, mini-program and WeChat behaviour (the events source)."""

    session_rate: float = Field(0.08, ge=0, description="mean sessions per day of an active person.")
    session_rate_shape: float = Field(1.5, gt=0, description="gamma shape of the session rate across persons.")
    events_per_session: float = Field(1.5, ge=0, description="mean extra events per session (Poisson) "
                                      "after the first.")
    platform_weights: dict[str, float] = Field(
        default_factory=lambda: {"app": 0.5, "mini_program": 0.25, "web": 0.25},
        description="session platform weights (app needs an install, mini_program a WeChat unionid).")
    login_share: float = Field(0.15, ge=0, le=1, description="share of sessions that start with a login event.")
    login_alternate_key_share: float = Field(0.2, ge=0, le=1, description="share of app/web logins made "
                                             "with phone or e-mail instead of the member id.")
    second_device_share: float = Field(0.2, ge=0, le=1, description="share of app users with a second app device.")
    extra_cookies_mean: float = Field(0.3, ge=0, description="mean extra web cookies per person (Poisson).")
    wechat_message_rate: float = Field(0.005, ge=0, description="WeChat messages per day from a "
                                       "follower of the official account.")
    view_preference_share: float = Field(0.8, ge=0, le=1, description="share of viewed categories drawn "
                                         "from the person's preferences (the rest uniform).")
    order_platform_weights: dict[str, float] = Field(
        default_factory=lambda: {"app": 0.35, "web": 0.30, "mini_program": 0.20, "store": 0.15},
        description="where orders are placed: app (device + member id), web (member id or phone/e-mail), "
        "mini_program (WeChat unionid), store (phone).")

    @field_validator("platform_weights")
    @classmethod
    def _platforms(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"app", "mini_program", "web"} or any(x < 0 for x in v.values()) or sum(v.values()) <= 0:
            raise ValueError("platform_weights needs non-negative weights for exactly app, mini_program, web")
        return v

    @field_validator("order_platform_weights")
    @classmethod
    def _order_platforms(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"app", "web", "mini_program", "store"} or any(x < 0 for x in v.values()) \
                or v.get("web", 0) <= 0:
            raise ValueError("order_platform_weights needs non-negative weights for exactly app, web, "
                             "mini_program, store, with web > 0 (the fallback)")
        return v


class LoggingPolicyConfig(_Section):
    """The randomised policy that made the history's campaign sends (deliberately NOT uniform).

    Each local day, each CRM customer (after signup) with at least one eligible channel (a key on
    file, consent, not unsubscribed) is sent a message with probability ``send_probability``
    (times ``recent_buyer_multiplier`` if they ordered in the last ``recent_days`` as of the day
    before yesterday); the channel is drawn from ``channel_weights`` over the eligible channels,
    the offer from ``offer_weights``, the local send hour from ``hour_weights``. The logged
    propensity is the product of these probabilities.
    """

    send_probability: float = Field(0.06, gt=0, le=1, description="daily send probability per customer.")
    recent_buyer_multiplier: float = Field(2.0, gt=0, description="send probability multiplier for recent buyers.")
    recent_days: int = Field(30, ge=1, description="window of 'recent buyer', days.")
    channel_weights: dict[Channel, float] = Field(
        default_factory=lambda: _ch(2.0, 4.0, 2.0, 1.0), description="channel weights (renormalised "
        "over the person's eligible channels).")
    offer_weights: dict[str, float] = Field(
        default_factory=lambda: {"pct10": 4.0}, description="offer id -> weight; offers not listed "
        "weigh default_offer_weight.")
    default_offer_weight: float = Field(1.0, gt=0, description="weight of offers not in offer_weights.")
    hour_weights: dict[int, float] = Field(
        default_factory=lambda: {10: 5.0}, description="local send hour -> weight, for hours in "
        "core.types.SEND_HOURS; hours not listed weigh default_hour_weight.")
    default_hour_weight: float = Field(1.0, gt=0, description="weight of send hours not in hour_weights.")
    crm_id_on_send_share: float = Field(0.5, ge=0, le=1, description="share of send records that also "
                                        "carry the member id (besides the channel's own key).")

    @field_validator("channel_weights")
    @classmethod
    def _cw(cls, v: dict[Channel, float]) -> dict[Channel, float]:
        _check_channels(v, "channel_weights", 1e-12, 1e12)
        return v

    @field_validator("hour_weights")
    @classmethod
    def _hw(cls, v: dict[int, float]) -> dict[int, float]:
        bad = [h for h, w in v.items() if h not in SEND_HOURS or w <= 0]
        if bad:
            raise ValueError(f"hour_weights keys must be send hours {SEND_HOURS[0]}..{SEND_HOURS[-1]} "
                             f"with positive weights; bad: {bad}")
        return v


class DirtConfig(_Section):
    """What a real import meets. Every share is of rows (or persons, where said).

    Malformed rows (share ``malformed_share`` of each source) get one defect drawn from
    ``malformed_mix`` among those the source can have: ``bad_timestamp`` (in CSV an unparseable
    text; in Parquet, whose timestamp columns stay typed, a null), ``negative_amount`` (orders),
    ``unknown_channel`` (engagements: 'fax', 'telex', 'pager'), ``bad_propensity`` (engagements:
    0 or above 1), ``missing_required`` (a required non-id value left empty). Ids are never
    corrupted, so every row stays traceable in ``truth/record_owner.parquet``.
    """

    malformed_share: float = Field(0.005, ge=0, le=0.5, description="share of malformed rows per source.")
    malformed_mix: dict[str, float] = Field(
        default_factory=lambda: {"bad_timestamp": 0.4, "negative_amount": 0.3, "unknown_channel": 0.3,
                                 "bad_propensity": 0.2, "missing_required": 0.3},
        description="relative weights of the malformed-row defects (renormalised per source over "
        "the defects it can have).")
    phone_formats: dict[str, float] = Field(
        default_factory=lambda: {"plain": 0.5, "spaced": 0.2, "dashed": 0.15, "plus": 0.15},
        description="how phones are written: plain '13800138000', spaced '+86 138 0013 8000', dashed "
        "'86-13800138000', plus '+8613800138000' (all normalise to the same key).")
    email_case_share: float = Field(0.2, ge=0, le=1, description="share of e-mails written in mixed/upper case.")
    email_space_share: float = Field(0.05, ge=0, le=1, description="share of e-mails written with a stray space.")
    id_space_share: float = Field(0.02, ge=0, le=1, description="share of member ids written with a stray "
                                  "space when they appear as a key in other sources.")
    key_typo_share: float = Field(0.002, ge=0, le=1, description="share of phone/e-mail keys with a real "
                                  "typo (a changed digit, a dropped character): normalisation cannot fix it.")
    invalid_phone_share: float = Field(0.02, ge=0, le=1, description="share of persons whose phone on file "
                                       "is malformed (10 digits): not a usable key, not reachable.")
    invalid_email_share: float = Field(0.01, ge=0, le=1, description="share of persons whose e-mail on "
                                       "file is malformed (no '@'): not a usable key, not reachable.")
    crm_duplicate_share: float = Field(0.03, ge=0, le=1, description="share of CRM persons with a second "
                                       "CRM record (new member id, sharing the phone or the e-mail).")
    conflict_city_share: float = Field(0.5, ge=0, le=1, description="share of duplicated persons whose "
                                       "older record has a stale city.")
    conflict_timezone_share: float = Field(0.3, ge=0, le=1, description="share of duplicated persons whose "
                                           "older record has a stale time zone.")
    conflict_consent_share: float = Field(0.3, ge=0, le=1, description="share of duplicated persons whose "
                                          "older record has stale consents.")
    missing_city_share: float = Field(0.03, ge=0, le=1, description="share of CRM records without a city.")
    missing_timezone_share: float = Field(0.03, ge=0, le=1, description="share of CRM records without a time zone.")
    no_key_share: float = Field(0.001, ge=0, le=0.5, description="share of order/event/engagement rows "
                                "with no identity key at all.")
    shared_device_share: float = Field(0.002, ge=0, le=1, description="share of app users who also use "
                                       "another person's device (a family tablet): the one planted key "
                                       "collision; both persons log in on it.")
    anonymous_cookie_share: float = Field(0.01, ge=0, le=1, description="share of web cookies never "
                                          "logged in on: their events cannot be linked to anyone.")


class Shift(_Section):
    """Planted drift: from ``start_day`` (days after the history start; >= days means during a
    later journey) persons of a segment change. The segment is the persons in ``timezone`` (all
    zones if None) and ``city`` (all if None), of which a seeded random ``share``."""

    start_day: float = Field(ge=0, description="when the shift starts, days after the history start.")
    timezone: str | None = Field(None, description="segment: persons in this time zone (None: any).")
    city: str | None = Field(None, description="segment: persons in this city (None: any).")
    share: float = Field(1.0, ge=0, le=1, description="segment: seeded random share of the above.")
    affinity_delta: dict[Channel, float] = Field(default_factory=dict, description="open log-odds "
                                                 "added per channel.")
    peak_hour_shift: float = Field(0.0, ge=-12, le=12, description="hours added to the peak active hour.")
    purchase_multiplier: float = Field(1.0, ge=0, description="organic purchase rate multiplier.")


class WorldConfig(BaseModel):
    """Everything that defines a simulated world. Same config (seed included) -> same world."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="seed of every random draw.")
    customers: int = Field(10_000, ge=1, le=50_000_000, description="number of persons.")
    days: int = Field(180, ge=1, le=3650, description="days of history.")
    history_end: datetime = Field(datetime(2026, 6, 30, tzinfo=UTC), description="end of the history "
                                  "(exclusive), UTC; fixed so runs are reproducible.")
    catalog: Catalog = Field(DEFAULT_CATALOG, description="offers the campaigns and decisions use.")
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    purchases: PurchaseConfig = Field(default_factory=PurchaseConfig)
    churn: ChurnConfig = Field(default_factory=ChurnConfig)
    channels: ChannelConfig = Field(default_factory=ChannelConfig)
    response: ResponseConfig = Field(default_factory=ResponseConfig)
    activity: ActivityConfig = Field(default_factory=ActivityConfig)
    logging_policy: LoggingPolicyConfig = Field(default_factory=LoggingPolicyConfig)
    dirt: DirtConfig = Field(default_factory=DirtConfig)
    shifts: list[Shift] = Field(default_factory=list, description="planted drift (default none).")

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data):
        # world.yaml records the derived history_start for readers; it is not an input.
        if isinstance(data, dict) and "history_start" in data:
            data = dict(data)
            data.pop("history_start")
        return data

    @field_validator("history_end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @computed_field(description="start of the history (inclusive), UTC: history_end - days.")
    @property
    def history_start(self) -> datetime:
        from datetime import timedelta

        return self.history_end - timedelta(days=self.days)

    @model_validator(mode="after")
    def _consistent(self) -> WorldConfig:
        tz = self.population.timezones
        if not tz or any(s < 0 for s in tz.values()) or sum(tz.values()) <= 0:
            raise ValueError("population.timezones needs non-negative shares with a positive sum")
        for name in list(tz) + [s.timezone for s in self.shifts if s.timezone]:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {name!r}") from None
        for name in tz:
            if not self.population.cities.get(name):
                raise ValueError(f"population.cities needs at least one city for time zone {name!r}")
        ids = set(self.catalog.ids)
        unknown = [o for o in self.logging_policy.offer_weights if o not in ids]
        if unknown:
            raise ValueError(f"logging_policy.offer_weights names offers not in the catalog: {unknown}")
        floor = self.purchases.min_order_value
        for o in self.catalog.offers:
            if floor * (1.0 - o.discount) < o.fixed_cost:
                raise ValueError(f"offer {o.id!r} could make an order's net value negative: "
                                 f"purchases.min_order_value x (1 - discount) must be >= fixed_cost")
            if o.category is not None and o.category not in CATEGORIES:
                raise ValueError(f"offer {o.id!r} has unknown category {o.category!r}")
        if self.history_end.year > 2200 or self.history_start.year < 1900:
            raise ValueError("history must lie between 1900 and 2200")
        if not math.isfinite(self.purchases.mean_daily_rate):
            raise ValueError("purchases.mean_daily_rate must be finite")
        return self

    # ---- derived helpers -------------------------------------------------------------------
    @property
    def timezone_names(self) -> tuple[str, ...]:
        return tuple(self.population.timezones)

    def offer_probabilities(self) -> list[float]:
        """Probability of each catalog offer (catalog order) under the logging policy."""
        lp = self.logging_policy
        w = [lp.offer_weights.get(o, lp.default_offer_weight) for o in self.catalog.ids]
        s = sum(w)
        return [x / s for x in w]

    def hour_probabilities(self) -> list[float]:
        """Probability of each hour of core.types.SEND_HOURS under the logging policy."""
        lp = self.logging_policy
        w = [lp.hour_weights.get(h, lp.default_hour_weight) for h in SEND_HOURS]
        s = sum(w)
        return [x / s for x in w]

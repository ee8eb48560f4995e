"""Feature services: the versioned contract between training and serving.

A model family asks for its features only through a service name (``propensity_v1``, ...). The same
name resolves to a Feast FeatureService (historical retrieval for training sets, online retrieval
at decision time) and, without Feast, to the same columns of ``features.compute``. Changing what a
service contains means adding ``*_v2`` beside it, never editing ``*_v1`` in place: a registered
model records the service it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from core.errors import NotFoundError
from core.types import CHANNELS
from features.compute import FeatureConfig, feature_groups

_CH = tuple(c.value for c in CHANNELS)

#: Stored inputs that only feed the on-demand features; no service lists them (a model sees the
#: derived 'days since' values instead).
INTERNAL = ("signup_ts", "last_order_ts", "last_event_ts", "last_contact_ts",
            *(f"last_contact_{ch}_ts" for ch in _CH))


@dataclass(frozen=True)
class ServiceSpec:
    """A service: per feature group, the features it takes (``None``: every feature of the group
    but the internal timestamps)."""

    name: str
    family: str
    description: str
    groups: tuple[tuple[str, tuple[str, ...] | None], ...]


def _rates(*kinds: str) -> tuple[str, ...]:
    return tuple(f"{k}_{ch}" for k in kinds for ch in _CH)


_CUSTOMER_VALUE = (
    ("customer_profile", ("n_crm_records", *(f"consent_{ch}" for ch in _CH), *(f"reachable_{ch}" for ch in _CH))),
    ("rfm", None),
    ("preferences", None),
    ("engagement", ("sends_total", "conversions_total", "conversion_value_total",
                    *_rates("sends", "open_rate", "click_rate", "conversion_rate", "unsubscribed"))),
    ("fatigue", None),
    ("activity", None),
    ("request_features", ("tenure_days", "days_since_last_order", "days_since_last_event",
                          "days_since_last_contact")),
)

SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec("propensity_v1", "propensity",
                    "P(purchase within H days): value, recency, engagement, activity.", _CUSTOMER_VALUE),
        ServiceSpec("churn_v1", "churn",
                    "P(no purchase within H days | active): the propensity features.", _CUSTOMER_VALUE),
        ServiceSpec(
            "offer_v1", "offer",
            "Next-best offer: value, category affinities, offer redemptions, response per channel.",
            (
                ("customer_profile", tuple(f"consent_{ch}" for ch in _CH) + tuple(f"reachable_{ch}" for ch in _CH)),
                ("rfm", None),
                ("preferences", None),
                ("engagement", ("sends_total", "conversions_total", "conversion_value_total",
                                *_rates("sends", "open_rate", "click_rate", "conversion_rate"))),
                ("fatigue", None),
                ("activity", None),
                ("request_features", ("tenure_days", "days_since_last_order", "days_since_last_contact",
                                      "local_weekday", "is_weekend")),
            ),
        ),
        ServiceSpec(
            "send_time_v1", "send_time",
            "Send time: local-time activity pattern, opens per channel, fatigue, request's local time.",
            (
                ("customer_profile", tuple(f"reachable_{ch}" for ch in _CH)),
                ("engagement", _rates("sends", "open_rate", "click_rate", "unsubscribed")),
                ("fatigue", None),
                ("activity", None),
                ("active_hours", None),
                ("request_features", ("local_hour", "local_weekday", "is_weekend", "utc_offset_hours",
                                      "days_since_last_event", "days_since_last_contact",
                                      *(f"days_since_contact_{ch}" for ch in _CH))),
            ),
        ),
        ServiceSpec(
            "decision_v1", "decision",
            "Everything the decision policy reads at request time: consent, reachability, "
            "unsubscribes, time zone, response rates, fatigue, value, activity pattern.",
            (
                ("customer_profile", None),
                ("rfm", None),
                ("preferences", None),
                ("engagement", None),
                ("fatigue", None),
                ("activity", None),
                ("active_hours", None),
                ("request_features", None),
            ),
        ),
    )
}

#: The service each model family trains and serves on.
FAMILY_SERVICE: dict[str, str] = {s.family: s.name for s in SERVICES.values()}


def check_service(name: str) -> ServiceSpec:
    """The spec of a service; NotFoundError naming the known services otherwise."""
    try:
        return SERVICES[name]
    except KeyError:
        raise NotFoundError(f"unknown feature service {name!r}; known: {', '.join(SERVICES)}") from None


def service_groups(name: str, config: FeatureConfig | None = None) -> dict[str, list[str]]:
    """Feature group -> the features the service takes from it, in catalogue order."""
    return {g: list(n) for g, n in _service_groups(name, config or FeatureConfig()).items()}


@lru_cache(maxsize=64)
def _service_groups(name: str, config: FeatureConfig) -> dict[str, tuple[str, ...]]:
    spec = check_service(name)
    groups = {g.name: g for g in feature_groups(config)}
    out: dict[str, tuple[str, ...]] = {}
    for group, wanted in spec.groups:
        names = groups[group].names
        if wanted is None:
            out[group] = tuple(n for n in names if n not in INTERNAL)
        else:
            missing = [w for w in wanted if w not in names]
            if missing:  # a config (windows, categories) can rename features; fail loudly
                raise NotFoundError(f"service {name}: group {group} has no feature(s) {missing}")
            out[group] = tuple(n for n in names if n in wanted)
    return out


def service_features(name: str, config: FeatureConfig | None = None) -> tuple[str, ...]:
    """The feature names of a service, in a stable order (plain names, no view prefix)."""
    return tuple(n for names in _service_groups(name, config or FeatureConfig()).values() for n in names)

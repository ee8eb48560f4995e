"""Feature services: the versioned names resolve to real features, the same in Feast and pandas."""

from __future__ import annotations

import pytest

from core.errors import NotFoundError
from features.compute import feature_defs, feature_groups
from features.services import (
    FAMILY_SERVICE,
    INTERNAL,
    SERVICES,
    check_service,
    service_features,
    service_groups,
)


def test_one_versioned_service_per_model_family_and_one_for_the_policy():
    assert FAMILY_SERVICE == {"propensity": "propensity_v1", "churn": "churn_v1", "offer": "offer_v1",
                              "send_time": "send_time_v1", "decision": "decision_v1"}


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_resolves_to_known_unique_features(name):
    names = service_features(name)
    defs = feature_defs()
    assert len(names) == len(set(names)) > 10
    assert all(n in defs for n in names)
    assert not set(names) & set(INTERNAL)
    # every service reads the profile view: that is how an unknown customer is recognised online
    assert service_groups(name)["customer_profile"]


def test_unknown_service_names_the_known_ones():
    with pytest.raises(NotFoundError, match="propensity_v1"):
        check_service("propensity_v9")


def test_feature_names_are_unique_across_groups():
    names = [f.name for g in feature_groups() for f in g.features]
    assert len(names) == len(set(names))


def test_send_time_service_sees_local_time_and_the_decision_service_sees_the_time_zone():
    assert {"local_hour", "act_hour_mean", "act_peak_hour"} <= set(service_features("send_time_v1"))
    assert {"timezone", "consent_email", "unsubscribed_sms", "sends_7d"} <= set(service_features("decision_v1"))

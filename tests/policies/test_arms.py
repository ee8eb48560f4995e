from __future__ import annotations

import pickle

import numpy as np
import pytest

from core.catalog import DEFAULT_CATALOG
from core.config import load_config
from core.errors import ConfigError, InputError
from core.types import CHANNELS, NO_SEND, Channel
from policies.arms import ArmSpace
from policies.config import PolicyLayerConfig


def test_arm_space_enumerates_channel_offer_slot_plus_no_send():
    arms = ArmSpace.build(slots=(9, 19))
    assert arms.ids[0] == NO_SEND
    assert arms.n_arms == 1 + len(CHANNELS) * len(DEFAULT_CATALOG.offers) * 2
    assert len(set(arms.ids)) == arms.n_arms
    i = arms.index("email|pct20|19")
    assert CHANNELS[arms.channel[i]] is Channel.EMAIL
    assert DEFAULT_CATALOG.offers[arms.offer[i]].id == "pct20"
    assert arms.slot[i] == 19
    assert arms.channel[0] == -1 and arms.offer[0] == -1 and arms.slot[0] == -1


def test_index_is_vectorised_and_round_trips():
    arms = ArmSpace.build()
    idx = np.arange(arms.n_arms)
    ids = arms.id_array()[idx]
    assert (arms.index(list(ids)) == idx).all()
    assert arms.arm("sms", "pct10", 8) == arms.index("sms|pct10|8")


def test_unknown_arm_and_bad_space_are_input_errors():
    arms = ArmSpace.build()
    with pytest.raises(InputError, match="unknown arm"):
        arms.index("fax|pct10|10")
    with pytest.raises(InputError, match="unknown arms"):
        arms.index(["no_send", "email|nothing|10"])
    with pytest.raises(InputError, match="not in the catalog"):
        ArmSpace.build(offers=["nope"])


def test_arms_where_selects_by_attribute():
    arms = ArmSpace.build(slots=(10, 18))
    m = arms.arms_where(channel="email", slot=10)
    assert m.sum() == len(DEFAULT_CATALOG.offers)
    assert all(arms.ids[i].startswith("email|") and arms.ids[i].endswith("|10") for i in np.flatnonzero(m))
    assert not arms.arms_where()[0]  # no-send is not a send arm


def test_arm_space_pickles():
    arms = ArmSpace.build(slots=(10,))
    back = pickle.loads(pickle.dumps(arms))
    assert back.same_as(arms) and (back.channel == arms.channel).all()


def test_config_loads_from_yaml_with_clear_errors(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("arms:\n  send_slots: [19, 9]\nguardrails:\n  holdout_share: 0.1\npolicy:\n  name: greedy\n")
    cfg = load_config(PolicyLayerConfig, p)
    assert cfg.arms.send_slots == (9, 19) and cfg.guardrails.holdout_share == 0.1
    assert ArmSpace.from_config(cfg.arms).slots == (9, 19)
    p.write_text("arms:\n  send_slots: [25]\n")
    with pytest.raises(ConfigError, match="send_slots"):
        load_config(PolicyLayerConfig, p)
    p.write_text("guardrails:\n  quiet_hours_action: remove\n  allowed_hours: [3]\n")
    with pytest.raises(ConfigError, match="quiet hours"):
        load_config(PolicyLayerConfig, p)

from __future__ import annotations

import numpy as np
import pytest

from policies.reward import RewardConfig, reward


def test_reward_is_value_minus_channel_cost_minus_unsubscribe_penalty():
    cfg = RewardConfig()
    r = reward(np.array([10.0, 0.0, 0.0]), np.array([1, -1, 0]), np.array([False, False, True]), cfg)
    assert r[0] == pytest.approx(10.0 - 0.002)
    assert r[1] == 0.0  # no send costs nothing
    assert r[2] == pytest.approx(-0.05 - 5.0)

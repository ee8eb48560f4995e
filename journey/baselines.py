"""Baselines the journey scores a policy against: the marketer's rule and the oracle.

Both decide within the same guardrails as the policy (they receive its eligibility mask) and are
deterministic: their distribution puts probability 1 on the chosen arm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.types import Channel
from policies.arms import NO_SEND_INDEX, ArmSpace
from policies.reward import RewardConfig, expected_reward


def best_selling_offer(orders: pd.DataFrame, catalog: Catalog) -> str:
    """The offer redeemed with the most orders in the history (the catalog's first offer when no
    order redeemed one)."""
    if "offer" in orders.columns:
        counts = orders["offer"].dropna().astype(str)
        counts = counts[counts.isin(catalog.ids)].value_counts()
        if len(counts):
            return str(counts.index[0])
    return catalog.ids[0]


class MarketerRule:
    """"E-mail at 10:00 local with the best-selling offer, to everyone the guardrails allow."""

    name = "rule"

    def __init__(self, arms: ArmSpace, offer: str, channel: Channel = Channel.EMAIL, hour: int = 10):
        self.arms = arms
        self.offer = offer
        self.arm = arms.arm(channel, offer, hour)

    def choose(self, eligible: np.ndarray) -> np.ndarray:
        """(n,) the rule's arm where eligible, else no-send."""
        return np.where(eligible[:, self.arm], self.arm, NO_SEND_INDEX).astype(np.int64)


class Oracle:
    """Per customer-day, the eligible arm with the highest TRUE expected reward (the world's
    ``true_probabilities`` under the current contact state): the best any policy could do on the
    day, myopically."""

    name = "oracle"

    def __init__(self, arms: ArmSpace, world, reward_config: RewardConfig):
        self.arms = arms
        self.world = world
        self.reward_config = reward_config

    def expected_rewards(self, person_id: np.ndarray, eligible: np.ndarray, send_at: np.ndarray, state) -> np.ndarray:
        """(n, K) true expected reward of every eligible arm (-inf where not eligible)."""
        from world import ActionBatch

        rows, cols = np.nonzero(eligible)
        actions = ActionBatch(person_id[rows], self.arms.channel[cols], self.arms.offer[cols], send_at[rows, cols])
        probs = self.world.true_probabilities(actions, state)
        r = expected_reward(probs.expected_value, self.arms.channel[cols].astype(np.int64), probs.unsubscribed,
                            self.reward_config)
        out = np.full(eligible.shape, -np.inf)
        out[rows, cols] = r
        return out

    def choose(self, person_id: np.ndarray, eligible: np.ndarray, send_at: np.ndarray, state) -> np.ndarray:
        return self.expected_rewards(person_id, eligible, send_at, state).argmax(axis=1).astype(np.int64)

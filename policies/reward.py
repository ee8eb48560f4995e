"""The reward of a decision, defined once: conversion value minus channel cost minus an
unsubscribe penalty. Every learner, evaluator and report computes reward through this module."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.types import CHANNELS, Channel


class RewardConfig(BaseModel):
    """Money terms of the reward, in currency units per decision."""

    model_config = ConfigDict(frozen=True)

    channel_cost: dict[Channel, float] = Field(
        default_factory=lambda: {
            Channel.SMS: 0.05,
            Channel.EMAIL: 0.002,
            Channel.WECHAT: 0.01,
            Channel.APP_PUSH: 0.001,
        },
        description="cost of one send on each channel (delivered or not)",
    )
    unsubscribe_penalty: float = Field(
        5.0, ge=0.0, description="lifetime value lost when a customer unsubscribes from a channel"
    )
    attribution_hours: float = Field(
        24.0, gt=0.0, description="outcomes later than this after the decision are not attributed"
    )

    def cost_vector(self) -> np.ndarray:
        """(4,) cost per channel, in the order of core.types.CHANNELS."""
        return np.array([self.channel_cost.get(c, 0.0) for c in CHANNELS], dtype=np.float64)


def reward(
    value: np.ndarray, channel: np.ndarray, unsubscribed: np.ndarray, config: RewardConfig
) -> np.ndarray:
    """Reward of n decisions.

    value: (n,) net conversion value (0 when nothing converted); channel: (n,) int index into
    core.types.CHANNELS, -1 for no send; unsubscribed: (n,) bool. Returns (n,) float64.
    A decision with no outcome reported has value 0 and unsubscribed False: its reward is minus
    the channel cost (the default reward).
    """
    value = np.asarray(value, dtype=np.float64)
    channel = np.asarray(channel)
    sent = channel >= 0
    cost = np.where(sent, config.cost_vector()[np.where(sent, channel, 0)], 0.0)
    return value - cost - config.unsubscribe_penalty * np.asarray(unsubscribed, dtype=np.float64)


def expected_reward(
    expected_value: np.ndarray, channel: np.ndarray, p_unsubscribed: np.ndarray, config: RewardConfig
) -> np.ndarray:
    """Expected reward from expected value and unsubscribe probability (same shapes as ``reward``).
    Linear in its inputs, so it equals the mean of ``reward`` over outcomes."""
    return reward(expected_value, channel, p_unsubscribed, config)

"""Small builders shared by the policy tests (not a test module)."""

from __future__ import annotations

import numpy as np

from core.types import CATEGORIES, CHANNELS
from policies.guardrails import Audience

TZS = np.array(["Asia/Shanghai", "Asia/Tokyo", "Europe/London", "America/Los_Angeles"], dtype=object)


def audience(n: int, seed: int = 0, consent: float = 1.0, reachable: float = 1.0,
             interest: float = 1.0, prefix: str = "c") -> Audience:
    rng = np.random.default_rng(seed)
    return Audience(
        customer_id=np.array([f"{prefix}{i:05d}" for i in range(n)], dtype=object),
        timezone=TZS[rng.integers(0, len(TZS), n)],
        consent=rng.random((n, len(CHANNELS))) < consent,
        reachable=rng.random((n, len(CHANNELS))) < reachable,
        category_interest=rng.random((n, len(CATEGORIES))) < interest,
    )


def audience_frame(aud: Audience):
    import pandas as pd

    from policies.guardrails import CHANNEL_SUFFIX

    df = pd.DataFrame({"customer_id": aud.customer_id, "timezone": aud.timezone})
    for j, ch in enumerate(CHANNELS):
        df[f"consent_{CHANNEL_SUFFIX[ch]}"] = aud.consent[:, j]
        df[f"reachable_{CHANNEL_SUFFIX[ch]}"] = aud.reachable[:, j]
    if aud.category_interest is not None:
        for j, cat in enumerate(CATEGORIES):
            df[f"interest_{cat}"] = aud.category_interest[:, j]
    return df


def synthetic_rewards(arms, X: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, K) expected rewards of a known factorised linear world (obp-style synthetic data):
    no-send 0, each send a channel, offer and slot effect that depends on the context."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    wc = rng.normal(0, 0.6, (len(arms.channels), d))
    wo = rng.normal(0, 0.4, (len(arms.offers), d))
    ws = rng.normal(0, 0.3, (len(arms.slots), d))
    bias = rng.normal(-0.2, 0.3, (len(arms.channels),))
    r = np.zeros((X.shape[0], arms.n_arms))
    send = arms.is_send
    cl, ol, sl = (arms.channel_level[send].astype(int), arms.offer_level[send].astype(int),
                  arms.slot_level[send].astype(int))
    r[:, send] = X @ wc[cl].T + X @ wo[ol].T + X @ ws[sl].T + bias[cl]
    return r


class SyntheticFunnel:
    """A known funnel world over an arm space (obp-style synthetic data for the funnel model):
    open depends on context x channel and slot, click and conversion on context x offer, order
    value on context. ``expected`` is the true expected uplift (n, K) of every arm."""

    def __init__(self, arms, X: np.ndarray, seed: int = 0):
        from scipy.special import expit

        rng = np.random.default_rng(seed)
        d = X.shape[1]
        self.arms = arms
        send = arms.is_send
        cl, ol, sl = (np.where(send, arms.channel_level, 0).astype(int), np.where(send, arms.offer_level, 0).astype(int),
                      np.where(send, arms.slot_level, 0).astype(int))
        wc = rng.normal(0, 0.8, (len(arms.channels), d))
        ws = rng.normal(0, 0.5, (len(arms.slots), d))
        wo = rng.normal(0, 0.8, (len(arms.offers), d))
        bo = rng.normal(0, 0.7, len(arms.offers))
        self.p_open = expit(-1.5 + (X @ wc.T)[:, cl] + (X @ ws.T)[:, sl])
        self.p_click = expit(-1.0 + bo[ol] + (X @ wo.T)[:, ol])
        self.p_conv = np.full_like(self.p_click, 0.3)
        gross = np.exp(4.0 + 0.3 * X[:, :1])
        offers = [arms.catalog[o] for o in arms.offers]
        disc = np.array([o.discount for o in offers])[ol]
        fixed = np.array([o.fixed_cost for o in offers])[ol]
        self.value = gross * (1 - disc) - fixed  # net value of the order with the offer
        self.p_unsub = np.full_like(self.p_click, 0.01)
        self.expected = self.p_open * self.p_click * self.p_conv * self.value - 0.01 - 5.0 * self.p_unsub
        self.expected[:, ~send] = 0.0
        self.rng = np.random.default_rng(seed + 1)

    def feedback(self, rows: np.ndarray, arms_chosen: np.ndarray):
        """Sampled (rewards, Feedback) of customers ``rows`` receiving ``arms_chosen``."""
        from policies.funnel import Feedback

        u = self.rng.random((len(rows), 4))
        send = self.arms.is_send[arms_chosen]
        pick = (rows, arms_chosen)
        opened = send & (u[:, 0] < self.p_open[pick])
        clicked = opened & (u[:, 1] < self.p_click[pick])
        converted = clicked & (u[:, 2] < self.p_conv[pick])
        unsub = send & (u[:, 3] < self.p_unsub[pick])
        value = np.where(converted, self.value[pick], 0.0)
        rewards = value - 0.01 * send - 5.0 * unsub
        return rewards, Feedback(opened, clicked, converted, unsub, value)

"""The policies: Thompson sampling and LinUCB (exploring), epsilon-greedy and softmax (baselines),
greedy, and the uniform random policy. All share the factorised Bayesian linear reward model of
``policies.linear`` and the machinery of ``policies.base.Policy``; each only says how reward
estimates become a distribution over the eligible arms.

``POLICIES`` maps a name to its class; :func:`make_policy` builds one by name (the CLI, the
journey and off-policy evaluation look policies up here).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from core.errors import InputError
from policies.arms import ArmSpace
from policies.base import Policy, argmax_distribution, run_blocks, uniform_distribution


class ThompsonSampling(Policy):
    """Thompson sampling: the probability of an arm is the probability that it is the best under
    the posterior of the reward model.

    That probability has no closed form, so it is estimated with ``n_draws`` posterior draws
    (shared by the customers of a call, seeded by the policy's seed and update count); the policy
    then SAMPLES FROM THAT ESTIMATE, so the logged propensity is exact for what was done. The
    posterior spread is multiplied by ``exploration`` (1 = plain Thompson sampling; the default
    0.05 explores less, which paid off on the simulated world where much of the posterior spread
    is about offers whose appeal no observable feature reveals, and whose models do not learn
    online by default, see ``online_parts``: 20k customers x 14 days, seeds 1/2/3, share of the
    rule->oracle gap expected 0.567/0.502/0.572 at 0.1 -> 0.570/0.509/0.577 at 0.05). The floor
    defaults to 0.01: every eligible arm keeps probability >= 0.01 / #eligible for off-policy
    evaluation.
    """

    name: ClassVar[str] = "thompson"

    def __init__(self, arms: ArmSpace, *, n_draws: int = 32, exploration: float = 0.05, **kwargs):
        kwargs.setdefault("floor", 0.01)
        super().__init__(arms, **kwargs)
        self.n_draws = n_draws
        self.exploration = exploration

    @classmethod
    def test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"n_draws": 8, "exploration": 2.0, "floor": 0.1}]

    def _check_params(self) -> None:
        super()._check_params()
        if int(self.n_draws) < 1:
            raise InputError(f"The 'n_draws' parameter of ThompsonSampling must be >= 1; got {self.n_draws!r}.")
        if float(self.exploration) < 0:
            raise InputError(f"The 'exploration' parameter of ThompsonSampling must be >= 0; "
                             f"got {self.exploration!r}.")

    def _draws(self):
        """The posterior draws of the current policy version (cached until the next update): a
        function of (seed, number of updates), so the distribution of a customer does not depend
        on the batch it is decided in, and a single decision costs only the products."""
        key = (int(self.n_updates_), int(self.n_draws), float(self.exploration))
        cached = getattr(self, "draws_", None)
        if cached is None or cached[0] != key:
            rng = np.random.default_rng([int(self.seed), int(self.n_updates_), 0x7A5])
            cached = (key, self.model_.draw(int(self.n_draws), rng, float(self.exploration)))
            self.draws_ = cached
        return cached[1]

    def _preferences(self, Z, E, S):
        draws = self._draws()
        n, K = E.shape
        M = int(self.n_draws)
        counts = np.zeros((n, K))
        chunk = max(1, int(8_000_000 // max(1, M * K)))  # customers per chunk: bounded memory
        fast = getattr(self.model_, "best_arms_from", None)

        def block(lo: int) -> None:
            sl = slice(lo, min(n, lo + chunk))
            e = E[sl]
            best = fast(Z[sl], e, draws) if fast is not None else None
            if best is None:
                means = self.model_.means_from(Z[sl], None if S is None else S[sl], draws)  # (M, c, K)
                np.putmask(means, np.broadcast_to(~e[None], means.shape), -np.inf)
                best = means.argmax(axis=2)  # (M, c)
            c = e.shape[0]
            flat = (np.arange(c)[:, None] * K + best.T).ravel()
            counts[sl] = np.bincount(flat, minlength=c * K).reshape(c, K)

        # the chunks are independent (the same chunks, the same numbers, whichever thread)
        run_blocks(block, range(0, n, chunk))
        counts /= M
        return counts


class LinUCB(Policy):
    """LinUCB-style: the arm with the highest upper confidence bound mean + alpha * std of the
    reward model (ties share), mixed with the exploration floor so that every eligible arm keeps
    a positive, logged probability."""

    name: ClassVar[str] = "linucb"

    def __init__(self, arms: ArmSpace, *, alpha: float = 1.0, **kwargs):
        super().__init__(arms, **kwargs)
        self.alpha = alpha

    @classmethod
    def test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"alpha": 0.1, "floor": 0.3}]

    def _check_params(self) -> None:
        super()._check_params()
        if float(self.alpha) < 0:
            raise InputError(f"The 'alpha' parameter of LinUCB must be >= 0; got {self.alpha!r}.")

    def _preferences(self, Z, E, S):
        ucb = self.model_.mean(Z, S)
        if float(self.alpha) > 0:
            ucb = ucb + float(self.alpha) * self.model_.std(Z, S)
        return argmax_distribution(ucb, E)


class EpsilonGreedy(Policy):
    """The best arm of the reward model with probability 1 - epsilon, uniform over the eligible
    arms otherwise (the uniform share is max(epsilon, floor))."""

    name: ClassVar[str] = "epsilon_greedy"

    def __init__(self, arms: ArmSpace, *, epsilon: float = 0.1, **kwargs):
        super().__init__(arms, **kwargs)
        self.epsilon = epsilon

    @classmethod
    def test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"epsilon": 0.5}]

    def _check_params(self) -> None:
        super()._check_params()
        if not 0.0 < float(self.epsilon) <= 1.0:
            raise InputError(f"The 'epsilon' parameter of EpsilonGreedy must be in (0, 1]; got {self.epsilon!r}.")

    def _exploration_share(self) -> float:
        return max(float(self.epsilon), float(self.floor))

    def _preferences(self, Z, E, S):
        return argmax_distribution(self.model_.mean(Z, S), E)


class Softmax(Policy):
    """Boltzmann exploration: probability proportional to exp(mean reward / temperature) over the
    eligible arms (temperature in reward units, currency)."""

    name: ClassVar[str] = "softmax"

    def __init__(self, arms: ArmSpace, *, temperature: float = 0.05, **kwargs):
        kwargs.setdefault("floor", 0.01)
        super().__init__(arms, **kwargs)
        self.temperature = temperature

    @classmethod
    def test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"temperature": 1e-4}, {"temperature": 100.0}]

    def _check_params(self) -> None:
        super()._check_params()
        if float(self.temperature) <= 0:
            raise InputError(f"The 'temperature' parameter of Softmax must be > 0; got {self.temperature!r}.")

    def _preferences(self, Z, E, S):
        v = np.where(E, self.model_.mean(Z, S) / float(self.temperature), -np.inf)
        v = v - v.max(axis=1, keepdims=True)
        return np.where(E, np.exp(v), 0.0)


class Greedy(Policy):
    """The best arm of the reward model (ties share). Exploration only through the floor (keep it
    small but positive: logs must stay usable for off-policy evaluation)."""

    name: ClassVar[str] = "greedy"

    def __init__(self, arms: ArmSpace, **kwargs):
        kwargs.setdefault("floor", 0.01)
        super().__init__(arms, **kwargs)

    @classmethod
    def test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"floor": 1e-6}]

    def _preferences(self, Z, E, S):
        return argmax_distribution(self.model_.mean(Z, S), E)


class UniformRandom(Policy):
    """Uniform over the eligible arms; learns nothing (the 'random' baseline)."""

    name: ClassVar[str] = "random"
    learns: ClassVar[bool] = False

    def __init__(self, arms: ArmSpace, **kwargs):
        kwargs.setdefault("floor", 1.0)
        kwargs.setdefault("weighting", "none")
        super().__init__(arms, **kwargs)

    def _preferences(self, Z, E, S):
        return uniform_distribution(E)


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (ThompsonSampling, LinUCB, EpsilonGreedy, Softmax, Greedy, UniformRandom)
}
POLICIES["uniform"] = UniformRandom  # alias


def make_policy(name: str, arms: ArmSpace, **params) -> Policy:
    """A policy by registered name (``POLICIES``), with hyper-parameters ``params``."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise InputError(f"unknown policy {name!r}; choose from {sorted(POLICIES)}") from None
    try:
        policy = cls(arms, **params)
    except TypeError as exc:
        raise InputError(f"bad parameters for policy {name!r}: {exc}") from None
    policy._check_params()
    return policy

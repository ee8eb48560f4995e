"""The policy interface, small like river's bandits, and the behaviour every policy shares.

A policy turns a context matrix (n, d), the guardrails' eligibility mask (n, K) and optional
model scores (n, K, m) into a probability distribution (n, K) over the eligible arms;
:meth:`Policy.decide` samples it with a seeded generator and returns the chosen arms with their
exact probabilities. :meth:`Policy.update` learns from logged feedback (incrementally: the reward
model keeps sufficient statistics, so an update of a batch equals a refit on everything seen).

Shared here, once: validation at the public entries, the context scaler, the reward model,
seeding, burn-in, the exploration floor (every eligible arm keeps probability >= floor / #eligible,
so logs stay usable for off-policy evaluation) and pickling. A subclass only says how it turns
reward estimates into preferences (:meth:`Policy._preferences`).
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from core.errors import InputError
from policies.arms import ArmSpace
from policies.funnel import FUNNEL_PARTS, Feedback, FunnelRewardModel, check_feedback_events
from policies.linear import FACTORS, LinearRewardModel
from policies.reward import RewardConfig

Weighting = Literal["none", "ips"]
RewardModel = Literal["funnel", "linear"]


@dataclass(frozen=True, eq=False)
class Decision:
    """Decisions for n customers: ``arm`` (n,) int64 chosen arm indices, ``propensity`` (n,) the
    probability each was chosen with, ``distribution`` (n, K) the whole distribution."""

    arm: np.ndarray
    propensity: np.ndarray
    distribution: np.ndarray


# ----------------------------------------------------------------------------------------------
# validation (one helper per concept, used at the public entries only)
# ----------------------------------------------------------------------------------------------
def check_context(context: Any, owner: str, n_features: int | None = None) -> np.ndarray:
    try:
        X = np.asarray(context, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"The 'context' parameter of {owner} must be a numeric (n, d) array; "
                         f"got {type(context).__name__} instead.") from None
    if X.ndim != 2:
        raise InputError(f"The 'context' parameter of {owner} must be a 2-d (n, d) array; "
                         f"got {X.ndim} dimensions instead.")
    if not np.isfinite(X).all():
        raise InputError(f"The 'context' parameter of {owner} must be finite; got NaN or infinity instead.")
    if n_features is not None and X.shape[1] != n_features:
        raise InputError(f"The 'context' parameter of {owner} must have {n_features} columns, as when "
                         f"the policy was first used; got {X.shape[1]} instead.")
    return X


def check_eligible(eligible: Any, n: int, n_arms: int, owner: str) -> np.ndarray:
    E = np.asarray(eligible)
    if E.shape != (n, n_arms):
        raise InputError(f"The 'eligible' parameter of {owner} must have shape ({n}, {n_arms}); "
                         f"got {E.shape} instead.")
    if E.dtype != bool:
        raise InputError(f"The 'eligible' parameter of {owner} must be a bool array; got {E.dtype} instead.")
    empty = ~E.any(axis=1)
    if empty.any():
        raise InputError(f"The 'eligible' parameter of {owner} must allow at least one arm per row; "
                         f"rows {np.nonzero(empty)[0][:5].tolist()} allow none.")
    return E


def check_scores(scores: Any, n: int, n_arms: int, n_scores: int, owner: str) -> np.ndarray | None:
    if n_scores == 0:
        if scores is not None:
            raise InputError(f"The 'scores' parameter of {owner} must be None when the policy was built "
                             "with n_scores=0; got an array instead.")
        return None
    if scores is None:
        raise InputError(f"The 'scores' parameter of {owner} must be an (n, K, {n_scores}) array; got None.")
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim == 2:
        S = S[:, :, None]
    if S.shape != (n, n_arms, n_scores):
        raise InputError(f"The 'scores' parameter of {owner} must have shape ({n}, {n_arms}, {n_scores}); "
                         f"got {S.shape} instead.")
    if not np.isfinite(S).all():
        raise InputError(f"The 'scores' parameter of {owner} must be finite; got NaN or infinity instead.")
    return S


def check_feedback(arms: Any, rewards: Any, propensities: Any, n: int, n_arms: int, owner: str):
    a = np.asarray(arms)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"The 'arms' parameter of {owner} must be an ({n},) int array; "
                         f"got shape {a.shape} and dtype {a.dtype} instead.")
    if n and (a.min() < 0 or a.max() >= n_arms):
        raise InputError(f"The 'arms' parameter of {owner} must index the {n_arms} arms; "
                         f"got values in [{a.min()}, {a.max()}] instead.")
    r = np.asarray(rewards, dtype=np.float64)
    if r.shape != (n,) or not np.isfinite(r).all():
        raise InputError(f"The 'rewards' parameter of {owner} must be ({n},) finite floats; "
                         f"got shape {r.shape} instead.")
    p = None
    if propensities is not None:
        p = np.asarray(propensities, dtype=np.float64)
        if p.shape != (n,):
            raise InputError(f"The 'propensities' parameter of {owner} must have shape ({n},); "
                             f"got {p.shape} instead.")
        if not ((p > 0) & (p <= 1)).all():
            raise InputError(f"The 'propensities' parameter of {owner} must lie in (0, 1]; got values in "
                             f"[{np.nanmin(p)}, {np.nanmax(p)}] instead.")
    return a.astype(np.int64), r, p


def sample_rows(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) one draw from each row of ``dist`` (n, K); never an arm of probability 0."""
    cum = np.cumsum(dist, axis=1)
    u = rng.random(dist.shape[0]) * cum[:, -1]
    return np.argmax(cum > u[:, None], axis=1).astype(np.int64)


def argmax_distribution(values: np.ndarray, eligible: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """(n, K) uniform over the eligible arms with the highest value (ties share)."""
    v = np.where(eligible, values, -np.inf)
    best = v.max(axis=1, keepdims=True)
    top = eligible & (v >= best - tol * np.maximum(1.0, np.abs(best)))
    return top / top.sum(axis=1, keepdims=True)


def uniform_distribution(eligible: np.ndarray) -> np.ndarray:
    return eligible / eligible.sum(axis=1, keepdims=True)


#: rows per block of Policy._distribution's normalisation
_NORMALISE_ROWS = 2048

_HELPER_LOCK = threading.Lock()
_helper = None  # one helper thread for the row blocks of large calls (run_blocks), made on first use


def run_blocks(work: Callable[[object], None], items: Sequence) -> None:
    """``work(item)`` for every item, on this thread and one helper thread, each taking the next
    item when it is done with one. For large calls whose blocks of rows are independent (each
    writes its own rows of an output): the array work of a block (ufuncs, reductions, GEMMs)
    releases the GIL, so a campaign batch keeps both cores busy while the other one of the pair
    is idle. Every block is computed exactly as serially, so the numbers do not depend on which
    thread took it. A helper busy with another call simply takes no block of this one."""
    global _helper
    if len(items) < 2:
        for item in items:
            work(item)
        return
    with _HELPER_LOCK:
        if _helper is None:
            from concurrent.futures import ThreadPoolExecutor

            _helper = ThreadPoolExecutor(1, thread_name_prefix="policy-blocks")
    taken = itertools.count()  # next() on a count is atomic under the GIL
    failed: list[BaseException] = []

    def loop() -> None:
        while not failed:
            k = next(taken)
            if k >= len(items):
                return
            try:
                work(items[k])
            except BaseException as exc:  # stop both loops; raised by the caller below
                failed.append(exc)
                raise

    _one_blas_thread(+1)
    try:
        helped = _helper.submit(loop)
        try:
            loop()
        finally:
            if not helped.cancel():  # not started yet: nothing of ours runs there
                helped.exception()  # wait: it may still be writing a block
    finally:
        _one_blas_thread(-1)
    if failed:
        raise failed[0]


_blas = {"users": 0, "limiter": None}


def _one_blas_thread(step: int) -> None:
    """While any run_blocks call runs, BLAS uses one thread per caller: the two threads of
    run_blocks are the parallelism, and a parallel BLAS's worker, which spins between the many
    small GEMMs of the blocks, would take a core from them (about a core-second per 100k-customer
    campaign on 2 cores). OpenBLAS computes every element of a GEMM the same way whatever its
    thread count (it splits the output, not the sums), so the numbers do not change. The limit
    is process-wide (threadpoolctl): counted, so the last call to finish restores it."""
    with _HELPER_LOCK:
        _blas["users"] += step
        try:
            if step > 0 and _blas["users"] == 1:
                from threadpoolctl import threadpool_limits

                _blas["limiter"] = threadpool_limits(limits=1, user_api="blas")
            elif step < 0 and _blas["users"] == 0 and _blas["limiter"] is not None:
                _blas["limiter"].restore_original_limits()
                _blas["limiter"] = None
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass


def _normalise(pref: np.ndarray | None, E: np.ndarray, share: float) -> np.ndarray:
    """The distribution of preferences ``pref`` (None: uniform) over the eligible arms ``E``,
    normalised, then mixed with ``share`` of uniform."""
    uniform = uniform_distribution(E)
    pref = np.where(E, uniform if pref is None else pref, 0.0)
    total = pref.sum(axis=1, keepdims=True)
    pref = np.where(total > 0, pref / np.where(total > 0, total, 1.0), uniform)
    dist = (1.0 - share) * pref + share * uniform
    dist = np.where(E, dist, 0.0)
    return dist / dist.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# the base class
# ----------------------------------------------------------------------------------------------
class Policy:
    """Base of every policy. Hyper-parameters (stored unchanged by ``__init__``):

    arms: the ArmSpace; seed: seeds sampling (and posterior draws); floor: share of probability
    spread uniformly over the eligible arms (0 < floor <= 1), so every eligible arm has
    probability >= floor / #eligible; burn_in: observations seen before the policy trusts its
    model (uniform over eligible until then); ridge: prior precision of the reward model;
    factors: the reward model's arm factors (see policies.linear.FACTORS); n_scores: number of
    model scores per (customer, arm) the policy takes as inputs; weighting: 'ips' weights feedback
    by 1 / propensity (normalised to mean 1, capped at max_weight) so a non-uniform logging policy
    does not bias the fit, 'none' weights it equally; discount: multiply past evidence by this at
    each update (1 = never forget); model: the reward model, 'funnel' (policies.funnel: learns
    open, click, conversion, unsubscribe and order value from the logged funnel events; needs
    ``feedback`` in :meth:`update`) or 'linear' (policies.linear: a Bayesian linear regression of
    the reward itself; the one that takes model scores as inputs); reward_config: money terms of
    the reward (channel costs, unsubscribe penalty) for the funnel model; level_ridge: prior
    precision of the per-level (channel, offer, slot) context weights of the funnel model (None:
    ridge), larger shrinks personalisation per level harder than the shared weights; offer_ridge:
    the same for the per-offer weights of the click and conversion models (None: level_ridge);
    focus_ridge: the prior precision of the per-level weights on the context columns that carry a
    level's effect (policies.funnel.OPEN_FOCUS for channels and send slots: channel response
    rates, active hours; OFFER_FOCUS for offers: order value, category affinity, redemptions),
    so those personalise while every other per-level weight stays shrunk hard (None: no focus).
    The defaults were chosen on the simulated world: personalising offers through every context
    column overfits (the few hundred logged conversions per offer cannot support it), through
    the focus columns only it pays. send_cost: an opportunity cost charged to every send arm by
    the funnel model (currency; 0 = none): a send must beat no-send by that much (measured on the
    simulated world: no gain at 0.05 or 0.15, so off by default). online_weight: weight of every
    feedback row of the updates after the first one (the first is the off-policy warm start; later
    ones are the policy's own, on-policy feedback), in (0, 1]: tempers how far the policy's own,
    strongly selected data moves a reward model that cannot be exactly right. online_weighting:
    the weighting of those later updates ('none' or 'ips'; None: ``weighting``), so an off-policy
    warm start can be fitted unweighted while the policy's own feedback is importance-weighted by
    the exact propensity it was logged with (exploration rows count more, the rows the policy
    chose because the model liked them less). Off by default: on the simulated world (Thompson,
    20k customers x 14 days, seeds 1/2/3) it raised seed 1 and lowered seeds 2 and 3 (share of the
    rule->oracle gap, realised: 0.45/0.49/0.53 -> 0.47/0.48/0.50; max_weight 5: 0.50/0.48/0.51),
    as online_weight 0.25 and freezing after the warm start do: the daily updates help some worlds
    and hurt others. online_parts: the funnel GLMs (policies.funnel.FUNNEL_PARTS) that learn from
    the updates after the first one (None: all); the others keep the off-policy warm start. By
    default the open and unsubscribe models (channel and send time) learn from the policy's own
    feedback and the offer side (click, conversion, order value) does not: the policy's own sends
    concentrate on one or two offers chosen because the model liked them, and updating the offer
    models on them cost seed 1 of the simulated world a tenth of the gap (20k customers x 14 days,
    share of the rule->oracle gap realised/expected: 0.51/0.54 with the offer side frozen, 0.45/0.50
    learning everything; both with the earlier events-only hour fit). Over 10 days with the current
    context, frozen vs learning everything: seed 2 0.50/0.51 vs 0.52/0.51, seed 3 0.54/0.57 vs
    0.55/0.58 (a wash), seed 1 0.54/0.56 frozen.

    Learned state ends with ``_``: ``model_`` (LinearRewardModel), ``center_``/``scale_`` (the
    context scaler, fitted on the first context seen), ``n_updates_``, ``rng_``.
    """

    name: ClassVar[str] = ""
    #: whether the policy needs a reward model (the uniform policy does not)
    learns: ClassVar[bool] = True

    def __init__(self, arms: ArmSpace, *, seed: int = 0, floor: float = 0.02, burn_in: int = 0,
                 ridge: float = 10.0, factors: tuple[str, ...] = ("channel", "offer", "slot"),
                 n_scores: int = 0, weighting: Weighting = "none", max_weight: float = 20.0,
                 discount: float = 1.0, model: RewardModel = "funnel", reward_config: RewardConfig | None = None,
                 level_ridge: float | None = 300.0, offer_ridge: float | None = 10_000.0,
                 focus_ridge: float | None = 30.0, send_cost: float = 0.0, online_weight: float = 1.0,
                 online_weighting: Weighting | None = None,
                 online_parts: tuple[str, ...] | None = ("open", "unsubscribe")):
        self.arms = arms
        self.seed = seed
        self.floor = floor
        self.burn_in = burn_in
        self.ridge = ridge
        self.factors = factors
        self.n_scores = n_scores
        self.weighting = weighting
        self.max_weight = max_weight
        self.discount = discount
        self.model = model
        self.reward_config = reward_config
        self.level_ridge = level_ridge
        self.offer_ridge = offer_ridge
        self.focus_ridge = focus_ridge
        self.send_cost = send_cost
        self.online_weight = online_weight
        self.online_weighting = online_weighting
        self.online_parts = online_parts

    # -- sklearn-style parameter access ------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            if klass is object or "__init__" not in klass.__dict__:
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def clone(self, **overrides) -> Policy:
        """A fresh, unfitted policy with the same parameters (overridden by ``overrides``)."""
        params = self.get_params() | overrides
        arms = params.pop("arms")
        return type(self)(arms, **params)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.get_params().items() if k != "arms"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def test_params(cls) -> list[dict[str, Any]]:
        """Parameter sets the contract test runs this policy with (river-style)."""
        return [{}]

    # -- validation of hyper-parameters (once, at first use) ---------------------------------------
    def _check_params(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.arms, ArmSpace):
            raise InputError(f"The 'arms' parameter of {owner} must be an ArmSpace; got {type(self.arms).__name__}.")
        if not 0.0 < float(self.floor) <= 1.0:
            raise InputError(f"The 'floor' parameter of {owner} must be in (0, 1]; got {self.floor!r} instead.")
        if int(self.burn_in) < 0:
            raise InputError(f"The 'burn_in' parameter of {owner} must be >= 0; got {self.burn_in!r} instead.")
        if float(self.ridge) <= 0:
            raise InputError(f"The 'ridge' parameter of {owner} must be > 0; got {self.ridge!r} instead.")
        bad = [f for f in self.factors if f not in FACTORS]
        if bad:
            raise InputError(f"The 'factors' parameter of {owner} must be a subset of {FACTORS}; got {bad}.")
        if self.weighting not in ("none", "ips"):
            raise InputError(f"The 'weighting' parameter of {owner} must be 'none' or 'ips'; "
                             f"got {self.weighting!r} instead.")
        if self.online_weighting not in (None, "none", "ips"):
            raise InputError(f"The 'online_weighting' parameter of {owner} must be None, 'none' or 'ips'; "
                             f"got {self.online_weighting!r} instead.")
        if float(self.max_weight) < 1:
            raise InputError(f"The 'max_weight' parameter of {owner} must be >= 1; got {self.max_weight!r}.")
        if not 0.0 < float(self.discount) <= 1.0:
            raise InputError(f"The 'discount' parameter of {owner} must be in (0, 1]; got {self.discount!r}.")
        if int(self.n_scores) < 0:
            raise InputError(f"The 'n_scores' parameter of {owner} must be >= 0; got {self.n_scores!r}.")
        if self.focus_ridge is not None and not float(self.focus_ridge) > 0:
            raise InputError(f"The 'focus_ridge' parameter of {owner} must be > 0 or None; got {self.focus_ridge!r}.")
        if not 0.0 < float(self.online_weight) <= 1.0:
            raise InputError(f"The 'online_weight' parameter of {owner} must be in (0, 1]; got {self.online_weight!r}.")
        if self.online_parts is not None:
            bad = [p for p in self.online_parts if p not in FUNNEL_PARTS] if not isinstance(self.online_parts, str) \
                else [self.online_parts]
            if bad:
                raise InputError(f"The 'online_parts' parameter of {owner} must be None or a list of funnel "
                                 f"models from {list(FUNNEL_PARTS)}; got {bad} instead.")
        if not float(self.send_cost) >= 0:
            raise InputError(f"The 'send_cost' parameter of {owner} must be >= 0; got {self.send_cost!r}.")
        if self.model not in ("funnel", "linear"):
            raise InputError(f"The 'model' parameter of {owner} must be 'funnel' or 'linear'; got {self.model!r}.")
        if self.model == "funnel" and int(self.n_scores) and self.learns:
            raise InputError(f"The 'n_scores' parameter of {owner} must be 0 with model='funnel' (model scores "
                             f"enter the linear model); got {self.n_scores!r}.")

    # -- learned state -------------------------------------------------------------------------------
    @property
    def needs_feedback(self) -> bool:
        """Whether :meth:`update` needs the funnel events (``feedback``)."""
        return self.learns and self.model == "funnel"

    @property
    def is_initialised(self) -> bool:
        return hasattr(self, "center_")

    def _init_state(self, X: np.ndarray) -> None:
        """Create the learned state; the context scaler comes from this first context."""
        self._check_params()
        self.center_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        self.n_features_ = X.shape[1]
        if not self.learns:
            self.model_ = None
        elif self.model == "funnel":
            self.model_ = FunnelRewardModel(
                self.arms, X.shape[1], self.reward_config, float(self.ridge),
                level_ridge=None if self.level_ridge is None else float(self.level_ridge),
                offer_ridge=None if self.offer_ridge is None else float(self.offer_ridge),
                focus_ridge=None if self.focus_ridge is None else float(self.focus_ridge),
                send_cost=float(self.send_cost))
        else:
            self.model_ = LinearRewardModel(self.arms, X.shape[1], self.factors, int(self.n_scores),
                                            float(self.ridge))
        self.n_updates_ = 0
        self.n_seen_ = 0
        self.rng_ = np.random.default_rng(self.seed)

    def _prepare(self, context, owner: str) -> np.ndarray:
        X = check_context(context, owner, self.n_features_ if self.is_initialised else None)
        if not self.is_initialised:
            self._init_state(X)
        Z = X - self.center_  # a new array: scaled and clipped in place
        Z /= self.scale_
        return np.clip(Z, -8.0, 8.0, out=Z)

    def initialise(self, context) -> Policy:
        """Forget everything and fit the context scaler on ``context`` (n, d), a representative
        sample of the customers the policy will see. Optional: otherwise the first context given
        to any method fixes the scaler. Returns self."""
        self.reset()
        self._init_state(check_context(context, f"{type(self).__name__}.initialise"))
        return self

    def reset(self) -> Policy:
        """Forget everything learned (keeps hyper-parameters)."""
        for k in [k for k in vars(self) if k.endswith("_")]:
            delattr(self, k)
        return self

    # -- the interface ---------------------------------------------------------------------------------
    def distribution(self, context, eligible, scores=None) -> np.ndarray:
        """(n, K) probabilities: > 0 exactly on the eligible arms, rows summing to 1.

        context: (n, d) float; eligible: (n, K) bool (from the guardrails); scores: (n, K, m)
        model scores when the policy was built with n_scores=m, else None.
        """
        owner = f"{type(self).__name__}.distribution"
        Z = self._prepare(context, owner)
        E = check_eligible(eligible, Z.shape[0], self.arms.n_arms, owner)
        S = check_scores(scores, Z.shape[0], self.arms.n_arms, int(self.n_scores), owner)
        return self._distribution(Z, E, S)

    def _distribution(self, Z: np.ndarray, E: np.ndarray, S: np.ndarray | None) -> np.ndarray:
        if Z.shape[0] == 0:
            return np.zeros((0, self.arms.n_arms))
        if np.count_nonzero(E) == Z.shape[0]:
            # every row allows exactly one arm (none allows none: check_eligible): the normalised
            # distribution below is then exactly 1.0 on it whatever the preferences (x / x), so
            # the reward model is not asked (a single decide mostly is such a row)
            return E.astype(np.float64)
        burn_in = self.learns and self.n_seen_ < int(self.burn_in)
        pref = None if burn_in else self._preferences(Z, E, S)
        share = self._exploration_share()
        n = Z.shape[0]
        if n <= _NORMALISE_ROWS:
            return _normalise(pref, E, share)
        # row by row arithmetic: blocks of rows whose temporaries stay in cache, same numbers (on
        # two threads: run_blocks)
        dist = np.empty(E.shape)

        def block(lo: int) -> None:
            sl = slice(lo, lo + _NORMALISE_ROWS)
            dist[sl] = _normalise(None if pref is None else pref[sl], E[sl], share)

        run_blocks(block, range(0, n, _NORMALISE_ROWS))
        return dist

    def decide(self, context, eligible, scores=None, rng: np.random.Generator | None = None) -> Decision:
        """Sample one arm per customer from :meth:`distribution` with ``rng`` (default: the
        policy's own generator, seeded by ``seed``)."""
        owner = f"{type(self).__name__}.decide"
        Z = self._prepare(context, owner)
        E = check_eligible(eligible, Z.shape[0], self.arms.n_arms, owner)
        S = check_scores(scores, Z.shape[0], self.arms.n_arms, int(self.n_scores), owner)
        dist = self._distribution(Z, E, S)
        arm = sample_rows(dist, rng if rng is not None else self.rng_)
        return Decision(arm=arm, propensity=dist[np.arange(len(arm)), arm], distribution=dist)

    def update(self, context, arms, rewards, propensities=None, scores=None,
               feedback: Feedback | None = None) -> Policy:
        """Learn from n logged decisions: context (n, d), arms (n,) int, rewards (n,), the
        propensities (n,) the logging policy chose them with (needed for weighting='ips'),
        scores (n, K, m) as given at decision time, feedback: the funnel events of each decision
        (needed by the funnel model). Returns self."""
        owner = f"{type(self).__name__}.update"
        Z = self._prepare(context, owner)
        n = Z.shape[0]
        a, r, p = check_feedback(arms, rewards, propensities, n, self.arms.n_arms, owner)
        S = check_scores(scores, n, self.arms.n_arms, int(self.n_scores), owner)
        weighting = self._weighting_of_next_update()
        if weighting == "ips" and p is None and n:
            raise InputError(f"The 'propensities' parameter of {owner} is needed with weighting='ips'; got None.")
        fb = check_feedback_events(feedback, n, owner) if self.needs_feedback else None
        if n == 0:
            return self
        if self.learns:
            w = self._weights(p, n, weighting)
            if self.n_updates_ > 0:
                w = w * float(self.online_weight)
            if self.model == "funnel":
                online_parts = getattr(self, "online_parts", None)  # None in policies pickled before it
                parts = None if self.n_updates_ == 0 or online_parts is None else tuple(online_parts)
                self.model_.discount_evidence(float(self.discount), parts)
                self.model_.add(Z, a, r, w, None, fb, parts=parts)
            else:
                self.model_.discount(float(self.discount))
                self.model_.add(Z, a, r, w, None if S is None else S[np.arange(n), a])
        self.n_updates_ += 1
        self.n_seen_ += n
        return self

    def fit(self, context, arms, rewards, propensities=None, scores=None,
            feedback: Feedback | None = None) -> Policy:
        """Forget, fit the scaler on this batch's context, then learn from it (a batch refit).
        Returns self."""
        return self.initialise(context).update(context, arms, rewards, propensities, scores, feedback)

    def predict_reward(self, context, scores=None) -> np.ndarray:
        """(n, K) the reward model's posterior mean reward of every arm (the funnel model: the
        uplift over no-send, which differs from the reward by the same organic value for every
        arm)."""
        owner = f"{type(self).__name__}.predict_reward"
        Z = self._prepare(context, owner)
        S = check_scores(scores, Z.shape[0], self.arms.n_arms, int(self.n_scores), owner)
        if not self.learns:
            return np.zeros((Z.shape[0], self.arms.n_arms))
        return self.model_.mean(Z, S)

    # -- hooks ------------------------------------------------------------------------------------------
    def _weighting_of_next_update(self) -> Weighting:
        """``online_weighting`` for the updates after the first (when set), else ``weighting``."""
        online = getattr(self, "n_updates_", 0) > 0 and self.online_weighting is not None
        return self.online_weighting if online else self.weighting

    def _weights(self, p: np.ndarray | None, n: int, weighting: Weighting | None = None) -> np.ndarray:
        if (weighting or self.weighting) == "none" or p is None:
            return np.ones(n)
        w = 1.0 / p
        w = w / w.mean()
        return np.minimum(w, float(self.max_weight))

    def _exploration_share(self) -> float:
        """Share of probability spread uniformly over the eligible arms."""
        return float(self.floor)

    def _preferences(self, Z: np.ndarray, E: np.ndarray, S: np.ndarray | None) -> np.ndarray:
        """(n, K) non-negative preferences over arms (normalised over the eligible ones by the
        base class, then mixed with the floor)."""
        raise NotImplementedError

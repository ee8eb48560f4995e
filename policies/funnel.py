"""A funnel reward model: the expected reward of a send as open x click x conversion x value.

The reward of a decision (``policies.reward``) is the conversion value minus the channel cost
minus the unsubscribe penalty. Most of the conversion value of any decision is organic (the
customer would have bought anyway), which is pure noise for choosing between arms: a regression
on the reward needs enormous samples to see the uplift of a message through it. The funnel model
learns the parts of the uplift from the much more frequent funnel events the log holds, each with
its own factorised Bayesian GLM (``policies.glm``):

    P(open | send)            logistic over context x (channel, send slot)    rows: sends
    P(click | opened)         logistic over context x offer                   rows: opened sends
    P(convert | clicked)      logistic over context x offer                   rows: clicked sends
    P(unsubscribe | send)     logistic over context x channel                 rows: sends
    E[log order value]        gaussian over context                           rows: conversions

    uplift(x, a) = P(open) P(click) P(convert) * net_value(offer, order value)
                   - channel cost - unsubscribe penalty * P(unsubscribe)

and no-send has uplift 0. The offer's net value comes from the catalog (``Offer.net_value``): the
business knows what its coupons cost. Uplift differs from the expected reward of an arm by the
customer's organic value, which is the same for every arm, so argmax and exploration are
unaffected. (What the decomposition leaves out: a coupon redeemed on a purchase the customer
would have made anyway; it is small next to the campaign conversions.)

Thompson sampling draws each GLM's parameters from its posterior; the value model's posterior
mean is used as is. ``add(parts=...)`` lets only some of the GLMs learn from a batch (the
policies' ``online_parts``: after the warm start, only the open and unsubscribe models learn from
the policy's own feedback by default).

Priors: the per-level (channel, slot, offer) context weights are shrunk hard (``level_ridge``,
``offer_ridge``) except on the few columns that carry a level's effect (``focus_ridge`` on
:data:`OPEN_FOCUS` and :data:`OFFER_FOCUS`): per-offer personalisation through every column
overfits the few hundred logged conversions per offer; through order value, category affinity
and redemptions it pays (day-1 share of the rule->oracle gap on three simulated worlds, seeds
1/2/3: 0.51/0.46/0.53 -> 0.53/0.48/0.55).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from core.errors import InputError
from policies.arms import ArmSpace
from policies.glm import FactorGLM
from policies.reward import RewardConfig


@dataclass(frozen=True, eq=False)
class Feedback:
    """Funnel events of n logged decisions (within the attribution window), all (n,):
    opened, clicked, converted, unsubscribed (bool) and value (net conversion value, >= 0)."""

    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    unsubscribed: np.ndarray
    value: np.ndarray

    @classmethod
    def from_frame(cls, frame) -> Feedback:
        """From a frame with columns opened, clicked, converted, unsubscribed, value (e.g.
        ``DecisionLog.joined``)."""
        missing = [c for c in ("opened", "clicked", "converted", "unsubscribed", "value") if c not in frame]
        if missing:
            raise InputError(f"feedback needs columns {missing}")
        return cls(*(frame[c].to_numpy(dtype=bool) for c in ("opened", "clicked", "converted", "unsubscribed")),
                   value=frame["value"].fillna(0.0).to_numpy(dtype=np.float64))

    def take(self, rows: np.ndarray) -> Feedback:
        return Feedback(self.opened[rows], self.clicked[rows], self.converted[rows], self.unsubscribed[rows],
                        self.value[rows])


def check_feedback_events(feedback, n: int, owner: str) -> Feedback:
    if not isinstance(feedback, Feedback):
        raise InputError(f"The 'feedback' parameter of {owner} must be a policies.funnel.Feedback with the "
                         f"funnel events (opened, clicked, converted, unsubscribed, value); got "
                         f"{type(feedback).__name__} instead.")
    for name in ("opened", "clicked", "converted", "unsubscribed", "value"):
        v = np.asarray(getattr(feedback, name))
        if v.shape != (n,):
            raise InputError(f"The 'feedback.{name}' of {owner} must have shape ({n},); got {v.shape} instead.")
    v = np.asarray(feedback.value, dtype=np.float64)
    if not np.isfinite(v).all() or (v < 0).any():
        raise InputError(f"The 'feedback.value' of {owner} must be finite and >= 0.")
    return feedback


#: context columns whose per-level weights (per channel and per send slot) carry what the open
#: rate depends on: the customer's channel habits and active hours
OPEN_FOCUS: tuple[str, ...] = (
    *(f"{k}_rate_{c}" for c in ("sms", "email", "wechat", "app_push") for k in ("open", "click")),
    *(f"act_share_h{b:02d}" for b in range(0, 24, 4)), "act_hour_concentration",
    *(f"{f}_{t}" for f in ("act_hour_mean", "open_hour_mean") for t in ("cos", "sin")),
    *(f"hour_fit_h{h:02d}" for h in range(0, 24, 2)),
)
#: context columns whose per-offer weights carry what an offer's appeal depends on: order value
#: (fixed-cost offers), category affinity (category offers), past redemptions
OFFER_FOCUS: tuple[str, ...] = (
    "avg_order_value", "inv_avg_order_value", "order_share_beauty", "view_share_beauty", "offer_order_share",
    *(f"redeemed_{o}" for o in ("pct10", "pct20", "free_shipping", "points_2x", "new_arrivals", "beauty_15")),
)


#: (row, draw, channel, slot) values per block of rows of ``FunnelRewardModel.best_arms_from``:
#: a block's temporaries (a few of these, 8 bytes each) then stay in cache
_BLOCK_CELLS = 262_144

#: the funnel's GLMs, by name (``FunnelRewardModel.add(parts=...)``, the policies' ``online_parts``)
FUNNEL_PARTS: tuple[str, ...] = ("open", "click", "convert", "unsubscribe", "order_value")


def _focus_prior(n_features: int, level: float, focus: float | None, names: tuple[str, ...]):
    """Prior precision of the level blocks' context weights: ``level`` everywhere, ``focus`` on the
    named columns of ``policies.context.CONTEXT_COLUMNS`` (only when the context is that one)."""
    from policies.context import CONTEXT_COLUMNS

    if focus is None or n_features != len(CONTEXT_COLUMNS):
        return level
    out = np.full(n_features + 1, float(level))
    for name in names:
        if name in CONTEXT_COLUMNS:
            out[1 + CONTEXT_COLUMNS.index(name)] = float(focus)
    return out


def _best_cells(eta_open, q, per_channel, cs_ok) -> tuple[np.ndarray, np.ndarray]:
    """(n, M) the best eligible (channel, slot) cell and its value P(open) q - per_channel, from
    the open model's linear predictors (n, M, C*S), the best offer's value q (n, M), the channel
    costs (n, M, C) and the eligible cells (n, C, S)."""
    n, M = q.shape
    nc, ns = cs_ok.shape[1:]
    r = expit(eta_open).reshape(n, M, nc, ns)
    with np.errstate(invalid="ignore"):  # 0 * -inf only where no offer is eligible (masked next)
        r *= q[:, :, None, None]
    r -= per_channel[..., None]
    if not cs_ok.all():
        np.copyto(r, -np.inf, where=~cs_ok[:, None])
    r = r.reshape(n, M, nc * ns)
    return r.argmax(axis=2), r.max(axis=2)  # max: the value at the argmax (NaN only where q is -inf: no send)


class FunnelRewardModel:
    """Expected uplift of every arm over no-send, from funnel GLMs (see the module docstring).

    Same prediction interface as ``policies.linear.LinearRewardModel``: ``mean``, ``sample_means``,
    ``std``; learns with ``add(..., feedback=...)``.
    """

    def __init__(self, arms: ArmSpace, n_features: int, reward_config: RewardConfig | None = None,
                 ridge: float = 1.0, level_ridge: float | None = None, intercept_ridge: float = 1e-2,
                 offer_ridge: float | None = None, focus_ridge: float | None = None, send_cost: float = 0.0):
        self.arms = arms
        self.n_features = int(n_features)
        self.reward_config = reward_config or RewardConfig()
        n_ch, n_of, n_sl = len(arms.channels), len(arms.offers), len(arms.slots)
        cs = np.array([[0, 1 + c, 1 + n_ch + s] for c in range(n_ch) for s in range(n_sl)])
        prior = {"ridge": ridge, "level_ridge": level_ridge, "intercept_ridge": intercept_ridge}
        level = level_ridge if level_ridge is not None else ridge
        open_level = _focus_prior(self.n_features, level, focus_ridge, OPEN_FOCUS)
        self.open = FactorGLM(n_features, cs, 1 + n_ch + n_sl, **(prior | {"level_ridge": open_level}))
        offer_cells = np.array([[0, 1 + o] for o in range(n_of)])
        offer_level = offer_ridge if offer_ridge is not None else (level_ridge if level_ridge is not None else ridge)
        offer_prior = prior | {"level_ridge": _focus_prior(self.n_features, offer_level, focus_ridge, OFFER_FOCUS)}
        self.click = FactorGLM(n_features, offer_cells, 1 + n_of, **offer_prior)
        self.convert = FactorGLM(n_features, offer_cells, 1 + n_of, **offer_prior)
        self.unsubscribe = FactorGLM(n_features, np.array([[0, 1 + c] for c in range(n_ch)]), 1 + n_ch, **prior)
        self.order_value = FactorGLM(n_features, np.array([[0]]), 1, family="gaussian", **prior)
        offers = [arms.catalog[o] for o in arms.offers]
        self.discount = np.array([o.discount for o in offers])
        self.fixed_cost = np.array([o.fixed_cost for o in offers])
        from core.types import CHANNELS

        cost = self.reward_config.cost_vector()
        # a send also costs the opportunity it uses up (fatigue lowers the response to the next
        # messages, frequency caps spend capacity): ``send_cost`` per send, currency
        self.send_cost = float(send_cost)
        self.channel_cost = np.array([cost[CHANNELS.index(c)] for c in arms.channels]) + self.send_cost
        send = arms.is_send
        self._send = send
        self._cs = np.where(send, arms.channel_level.astype(np.int64) * n_sl + arms.slot_level, 0)
        self._o = np.where(send, arms.offer_level, 0).astype(np.int64)
        self._c = np.where(send, arms.channel_level, 0).astype(np.int64)
        self.n_obs = 0

    @staticmethod
    def with_intercept(Z: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((Z.shape[0], 1)), Z])

    # -- learning -------------------------------------------------------------------------------
    def add(self, Z: np.ndarray, arms: np.ndarray, rewards: np.ndarray, weights: np.ndarray,
            scores: np.ndarray | None = None, feedback: Feedback | None = None,
            parts: tuple[str, ...] | None = None) -> None:
        """Learn from n logged decisions and their funnel events. ``parts``: the GLMs that learn
        (names from :data:`FUNNEL_PARTS`; None: all of them), the others keep their posterior."""
        if feedback is None:
            raise InputError("the funnel reward model learns from funnel events: pass feedback=Feedback(...)")
        learn = set(FUNNEL_PARTS if parts is None else parts)
        X1 = self.with_intercept(Z)
        send = self._send[arms]
        op, cl, cv = feedback.opened & send, feedback.clicked & send, feedback.converted
        if "open" in learn:
            self.open.update(X1[send], self._cs[arms[send]], feedback.opened[send].astype(float), weights[send])
        if "click" in learn:
            self.click.update(X1[op], self._o[arms[op]], feedback.clicked[op].astype(float), weights[op])
        if "convert" in learn:
            self.convert.update(X1[cl], self._o[arms[cl]], feedback.converted[cl].astype(float), weights[cl])
        if "unsubscribe" in learn:
            self.unsubscribe.update(X1[send], self._c[arms[send]], feedback.unsubscribed[send].astype(float),
                                    weights[send])
        if "order_value" in learn:
            # a clicked conversion redeemed the offer (net -> gross), others are taken as gross
            has = cv & (feedback.value > 0)
            gross = feedback.value.copy()
            red = has & cl
            o = self._o[arms[red]]
            gross[red] = (feedback.value[red] + self.fixed_cost[o]) / (1.0 - self.discount[o])
            self.order_value.update(X1[has], np.zeros(int(has.sum()), dtype=np.int64), np.log(gross[has]),
                                    weights[has])
        self.n_obs += len(arms)

    def discount_evidence(self, factor: float, parts: tuple[str, ...] | None = None) -> None:
        """Forget old evidence (precision times ``factor``) of the GLMs named in ``parts`` (None:
        all of them)."""
        if factor < 1.0:
            for name in FUNNEL_PARTS if parts is None else parts:
                m = getattr(self, name)
                m.precision = m.precision * factor
                m._chol = None

    # -- prediction -------------------------------------------------------------------------------
    def _net_value(self, X1: np.ndarray) -> np.ndarray:
        """(n, O) expected net value of a conversion with each offer."""
        noise = self.order_value.noise or 0.0
        gross = np.exp(np.clip(self.order_value.linear_predictor(X1)[:, 0] + 0.5 * noise, -20, 20))
        return np.maximum(gross[:, None] * self._tables()[1] - self.fixed_cost, 0.0)

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Arrays of the arm space and catalog, built once per model (and on first use by a model
        unpickled from before they existed): per (channel, slot) cell the arm with the space's
        first offer (that cell's other offers follow every ``len(slots)`` arms), and per offer the
        share of the order value the customer pays (1 - discount)."""
        tables = self.__dict__.get("_arm_tables")
        if tables is None:
            n_sl = len(self.arms.slots)
            cells = np.divmod(np.arange(len(self.arms.channels) * n_sl), n_sl)
            tables = (self.arms.index_of_levels(cells[0], np.zeros_like(cells[0]), cells[1]), 1.0 - self.discount)
            self._arm_tables = tables
        return tables

    def _combine(self, eta_open, eta_click, eta_conv, eta_unsub, value, dtype=np.float64) -> np.ndarray:
        """Linear predictors (..., n, cells) -> uplift (..., n, K):
        P(open)[c, s] * (P(click) P(convert) value)[o] - (cost + penalty * P(unsubscribe))[c].

        The send arms of an ArmSpace are ordered channel, offer, slot, so the (C, O, S) product is
        formed by broadcasting (no gathers) and written behind the no-send column."""
        nc, no, ns = len(self.arms.channels), len(self.arms.offers), len(self.arms.slots)
        lead = eta_open.shape[:-1]
        per_offer = (expit(eta_click) * expit(eta_conv) * value).astype(dtype, copy=False)
        per_channel = (self.channel_cost + self.reward_config.unsubscribe_penalty * expit(eta_unsub)).astype(
            dtype, copy=False)
        p_open = expit(eta_open).astype(dtype, copy=False).reshape(*lead, nc, 1, ns)
        out = np.empty((*lead, 1 + nc * no * ns), dtype=dtype)
        out[..., 0] = 0.0
        body = out[..., 1:].reshape(*lead, nc, no, ns)
        np.multiply(p_open, per_offer.reshape(*lead, 1, no, 1), out=body)
        body -= per_channel.reshape(*lead, nc, 1, 1)
        return out

    def draw(self, n_draws: int, rng: np.random.Generator, scale: float = 1.0) -> tuple[np.ndarray, ...]:
        """Posterior draws of the four funnel GLMs: their per-cell context weights, each
        (n_draws, cells, d1), in the order open, click, convert, unsubscribe."""
        return tuple(m.draw_cell_weights(n_draws, rng, scale)
                     for m in (self.open, self.click, self.convert, self.unsubscribe))

    def means_from(self, Z: np.ndarray, scores: np.ndarray | None, draws: tuple[np.ndarray, ...]) -> np.ndarray:
        """(M, n, K) uplifts under the funnel draws of :meth:`draw`."""
        X1 = self.with_intercept(Z)
        etas = [FactorGLM.predictors(X1, W) for W in draws]
        return self._combine(*etas, self._net_value(X1)[None], dtype=np.float32)

    def best_arms_from(self, Z: np.ndarray, eligible: np.ndarray,
                       draws: tuple[np.ndarray, ...]) -> np.ndarray | None:
        """(M, n) the best eligible arm under each draw of :meth:`draw`, or None when the
        eligibility mask does not factorise.

        Guardrails act per customer on channels, offers and (channel, slot) pairs, so eligibility
        is usually (channel, slot) x offer. Then, since P(open) >= 0 and the per-offer term
        P(click) P(convert) value >= 0, the best arm of a draw is the best eligible offer combined
        with the best eligible (channel, slot): exact, and O + C*S work per customer instead of
        C*O*S. (Same draws, same result as the argmax over :meth:`means_from`.)"""
        nc, no, ns = len(self.arms.channels), len(self.arms.offers), len(self.arms.slots)
        n = eligible.shape[0]
        body = eligible[:, 1:].reshape(n, nc, no, ns)
        cs_ok = body.any(axis=2)  # (n, C, S)
        o_ok = body.any(axis=(1, 3))  # (n, O)
        # body is always within cs_ok x o_ok, so it factorises exactly when the counts agree (row
        # by row; one customer: the totals, which skip count_nonzero's per-axis overhead)
        if n == 1:
            factorises = np.count_nonzero(body) == np.count_nonzero(cs_ok) * np.count_nonzero(o_ok)
        else:
            n_cs, n_o = np.count_nonzero(cs_ok.reshape(n, nc * ns), axis=1), np.count_nonzero(o_ok, axis=1)
            factorises = np.array_equal(np.count_nonzero(body.reshape(n, -1), axis=1), n_cs * n_o)
        if not factorises:
            return None
        # the GEMMs as before (all rows at once); then everything is (n, M, ...), the layout they
        # produce (no transposing copies, argmaxes along contiguous rows), on blocks of rows whose
        # temporaries stay in cache; (M, n) only at the end
        X1 = self.with_intercept(Z)
        etas = [FactorGLM.row_predictors(X1, W) for W in draws]
        value = self._net_value(X1)
        M = etas[0].shape[1]
        step = max(1, _BLOCK_CELLS // (M * nc * ns))
        if n <= step:
            return self._best_arms_block(*etas, value, cs_ok, o_ok, eligible[:, :1]).T
        best = np.empty((n, M), dtype=np.int64)
        for lo in range(0, n, step):
            sl = slice(lo, lo + step)
            best[sl] = self._best_arms_block(*(e[sl] for e in etas), value[sl], cs_ok[sl], o_ok[sl],
                                             eligible[sl, :1])
        return best.T

    def _best_arms_block(self, eta_open, eta_click, eta_conv, eta_unsub, value, cs_ok, o_ok, no_send_ok):
        """(n, M) best arms of :meth:`best_arms_from` for n rows: linear predictors (n, M, cells),
        net values (n, O), eligible (channel, slot) cells (n, C, S), offers (n, O) and no-send (n, 1)."""
        nc, ns = len(self.arms.channels), len(self.arms.slots)
        n, M = eta_open.shape[:2]
        per_offer = expit(eta_click)
        per_offer *= expit(eta_conv)
        per_offer *= value[:, None, :]  # (n, M, O)
        if not o_ok.all():
            np.copyto(per_offer, -np.inf, where=~o_ok[:, None, :])
        best_o = per_offer.argmax(axis=2)  # (n, M)
        q = per_offer.max(axis=2)  # the value at best_o
        per_channel = self.channel_cost + self.reward_config.unsubscribe_penalty * expit(eta_unsub)  # (n, M, C)
        # a customer who may be contacted on one channel only (most of an audience: consent): the
        # other channels' cells are -inf, so the best cell is that channel's best slot, the same
        # values on 1/C of the cells (first maximum: the same cell, ties included)
        single = np.count_nonzero(cs_ok.any(axis=2), axis=1) == 1
        if not single.any():
            best_cs, best_r = _best_cells(eta_open, q, per_channel, cs_ok)
        else:
            best_cs, best_r = np.empty((n, M), dtype=np.int64), np.empty((n, M))
            one = slice(None) if single.all() else np.flatnonzero(single)
            ch = cs_ok[one].any(axis=2).argmax(axis=1)  # (n1,) the channel
            at = np.arange(len(ch))
            slots = cs_ok[one][at, ch]  # (n1, S)
            r = expit(eta_open[one].reshape(-1, M, nc, ns)[at, :, ch])  # (n1, M, S)
            with np.errstate(invalid="ignore"):
                r *= q[one][:, :, None]
            r -= per_channel[one][at, :, ch][..., None]
            if not slots.all():
                np.copyto(r, -np.inf, where=~slots[:, None])
            best_cs[one] = ch[:, None] * ns + r.argmax(axis=2)
            best_r[one] = r.max(axis=2)
            if not single.all():
                rest = np.flatnonzero(~single)
                best_cs[rest], best_r[rest] = _best_cells(eta_open[rest], q[rest], per_channel[rest], cs_ok[rest])
        arm = self._tables()[0][best_cs] + best_o * ns  # index_of_levels(c, best_o, s)
        send_ok = np.isfinite(best_r) & np.isfinite(q)
        # no-send (uplift 0) wins ties and whenever nothing to send beats it
        return np.where(send_ok & (best_r > 0.0) | ~no_send_ok, arm, 0)

    def sample_best_arms(self, Z: np.ndarray, eligible: np.ndarray, n_draws: int, rng: np.random.Generator,
                         scale: float = 1.0) -> np.ndarray | None:
        """:meth:`best_arms_from` on fresh posterior draws."""
        return self.best_arms_from(Z, eligible, self.draw(n_draws, rng, scale))

    def mean(self, Z: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """(n, K) expected uplift over no-send under the posterior means."""
        X1 = self.with_intercept(Z)
        return self._combine(self.open.linear_predictor(X1), self.click.linear_predictor(X1),
                             self.convert.linear_predictor(X1), self.unsubscribe.linear_predictor(X1),
                             self._net_value(X1))

    def sample_means(self, Z: np.ndarray, scores: np.ndarray | None, n_draws: int,
                     rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """(n_draws, n, K) uplifts under funnel parameters drawn from their posteriors."""
        return self.means_from(Z, scores, self.draw(n_draws, rng, scale))

    def std(self, Z: np.ndarray, scores: np.ndarray | None = None, n_draws: int = 32) -> np.ndarray:
        """(n, K) posterior standard deviation of the uplift (Monte Carlo, fixed seed)."""
        return self.sample_means(Z, scores, n_draws, np.random.default_rng(0)).std(axis=0)

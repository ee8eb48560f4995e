"""The response function of the simulated world: what a person does after a decision.

A decision's outcome window is the ``response.outcome_window_hours`` (24 h) after ``send_at``.
Funnel of a send on channel c with offer o to person i at time t (all conditional on the step
before; ``unsubscribed`` only needs delivery)::

    delivered   = reachable[i,c] and not unsubscribed[i,c]  x  deliver_rate[c]
    opened      = sigmoid(logit(open_rate[c]) + affinity[i,c] + shift deltas
                          + hour_sensitivity[i] x hour_weight[c] x (2 exp(-d^2 / 2 spread[i]^2) - 1)
                          - fatigue_sensitivity[i] x F_i(t) - churn_penalty x churned_i(t))
                  d = circular distance (hours) between the local send hour and the person's peak hour
    clicked     = sigmoid(logit(click_rate) + click_appeal_weight x A[i,o] - churn_penalty x churned)
    campaign    = sigmoid(logit(conversion_rate) + conversion_appeal_weight x A[i,o]
                          + purchase_rate_link x log(rate_i / mean rate))
    unsubscribe = sigmoid(logit(unsubscribe_rate[c]) + unsubscribe_sensitivity[i]
                          + unsubscribe_fatigue_weight x F_i(t) + no_consent_logit x [no consent])
    organic     = 1 - exp(-integral of the person's purchase rate over the window)
    converted   = organic OR campaign  (so a no-send decision converts organically only)

F_i(t) is the fatigue: the sum over the person's delivered messages of 2^(-age / half-life).
A[i,o] is the offer's appeal (world.traits.offer_appeal; 0 for no offer). The value of a
conversion is its order's net value (``Offer.net_value``) when the offer is redeemed (a campaign
conversion, or an organic one after the message was opened, if the offer applies to the order's
category), else the gross order value. ``true_probabilities`` returns these probabilities in closed
form and ``sample`` draws outcomes from exactly them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.special import ndtr

from core.errors import InputError
from core.types import CATEGORIES, CHANNELS
from world.config import WorldConfig
from world.timeutil import DAY_NS, HOUR_NS, NAT, local_hours
from world.traits import Traits, logit, sample_categories, sigmoid

LN2 = float(np.log(2.0))


# ---------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActionBatch:
    """n decisions.

    person_id: (n,) int64; channel: (n,) int8 index into core.types.CHANNELS, -1 = no send;
    offer: (n,) int8 index into the catalog's offers, -1 = no offer (always -1 for no send);
    send_at: (n,) datetime64[ns] UTC, when the message goes out (for no send: the decision time).
    """

    person_id: np.ndarray
    channel: np.ndarray
    offer: np.ndarray
    send_at: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "person_id", np.asarray(self.person_id, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "channel", np.asarray(self.channel, dtype=np.int8).reshape(-1))
        object.__setattr__(self, "offer", np.asarray(self.offer, dtype=np.int8).reshape(-1))
        send_at = np.asarray(self.send_at)
        if send_at.dtype.kind == "M" or send_at.dtype == object:
            send_at = send_at.astype("datetime64[ns]")
        else:
            send_at = send_at.astype(np.int64).view("datetime64[ns]")
        object.__setattr__(self, "send_at", send_at.reshape(-1))

    def __len__(self) -> int:
        return len(self.person_id)

    @classmethod
    def no_send(cls, person_id: np.ndarray, at) -> ActionBatch:
        """No-send decisions for ``person_id`` (n,) at ``at`` (one time or (n,) times)."""
        person_id = np.asarray(person_id, dtype=np.int64)
        n = len(person_id)
        at = np.broadcast_to(np.asarray(at, dtype="datetime64[ns]"), (n,))
        return cls(person_id, np.full(n, -1, np.int8), np.full(n, -1, np.int8), at.copy())


@dataclass(frozen=True)
class ResponseProbabilities:
    """Unconditional probabilities of n decisions' outcomes within the window; all (n,) float64.

    ``expected_value`` is E[net conversion value] in currency after the offer's cost, organic
    purchases included. ``organic`` is the probability of an organic purchase in the window (what
    ``converted`` would be without the message); ``campaign`` that of a conversion caused by it.
    """

    delivered: np.ndarray
    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    unsubscribed: np.ndarray
    expected_value: np.ndarray
    organic: np.ndarray
    campaign: np.ndarray


@dataclass(frozen=True)
class Outcomes:
    """Sampled outcomes of n decisions, all (n,).

    Bool arrays: delivered, opened, clicked, converted, unsubscribed (and ``campaign``: the
    conversion was caused by the message; ``redeemed``: the offer was used). ``value``: net value
    of the conversion (0 if none). ``category``: int8 category of the converting order (-1 if none).
    Times: datetime64[ns] UTC, NaT when the event did not happen; all inside the window.
    """

    delivered: np.ndarray
    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    unsubscribed: np.ndarray
    value: np.ndarray
    delivered_at: np.ndarray
    opened_at: np.ndarray
    clicked_at: np.ndarray
    converted_at: np.ndarray
    unsubscribed_at: np.ndarray
    campaign: np.ndarray
    redeemed: np.ndarray
    category: np.ndarray
    gross: np.ndarray  # gross order value of the conversion (0 if none)


@dataclass
class ContactState:
    """Per-person contact history the world needs: fatigue and unsubscribes (index = person_id).

    fatigue: (N,) fatigue level at ``fatigue_at`` (N,) datetime64[ns] (NaT: never contacted);
    unsubscribed: (N, 4) bool per channel (core.types.CHANNELS order); unsubscribed_at: (N, 4)
    datetime64[ns]; last_sent_at: (N, 4) datetime64[ns]; sends: (N, 4) int32 sends so far (delivered
    or not); half_life_days: fatigue half-life. Picklable; ``copy()`` for counterfactual runs.
    """

    fatigue: np.ndarray
    fatigue_at: np.ndarray
    unsubscribed: np.ndarray
    unsubscribed_at: np.ndarray
    last_sent_at: np.ndarray
    sends: np.ndarray
    half_life_days: float

    @classmethod
    def empty(cls, n: int, half_life_days: float) -> ContactState:
        nat = np.full(n, NAT, np.int64).view("datetime64[ns]")
        nat4 = np.full((n, 4), NAT, np.int64).view("datetime64[ns]")
        return cls(np.zeros(n), nat, np.zeros((n, 4), bool), nat4, nat4.copy(), np.zeros((n, 4), np.int32),
                   float(half_life_days))

    def copy(self) -> ContactState:
        return ContactState(**{f.name: (v.copy() if isinstance(v := getattr(self, f.name), np.ndarray) else v)
                               for f in fields(self)})

    def __len__(self) -> int:
        return len(self.fatigue)

    def fatigue_level(self, person_id: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
        """Fatigue of ``person_id`` (n,) at int64 ns times ``at_ns`` (n,) (no decay backwards)."""
        t0 = self.fatigue_at.view(np.int64)[person_id]
        f0 = self.fatigue[person_id]
        valid = t0 != NAT
        dt = np.where(valid, np.maximum(at_ns - np.where(valid, t0, 0), 0), 0)
        return np.where(valid, f0 * np.exp(-LN2 * dt / (self.half_life_days * DAY_NS)), 0.0)

    def equals(self, other: ContactState) -> bool:
        """Same contents (NaT equals NaT)."""

        def same(a, b):
            if isinstance(a, np.ndarray) and a.dtype.kind == "M":
                return isinstance(b, np.ndarray) and b.dtype == a.dtype and np.array_equal(a.view(np.int64),
                                                                                           b.view(np.int64))
            return bool(np.array_equal(a, b))

        return all(same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Funnel:
    """Per-row conditional probabilities and values (internal)."""

    send: np.ndarray
    ch: np.ndarray
    has_offer: np.ndarray
    off: np.ndarray
    p_del: np.ndarray
    p_open: np.ndarray
    p_click: np.ndarray
    p_conv: np.ndarray
    p_unsub: np.ndarray
    organic: np.ndarray
    v_campaign: np.ndarray
    v_open_organic: np.ndarray
    v_organic: np.ndarray


def check_actions(actions: ActionBatch, n_persons: int, n_offers: int) -> None:
    """Validate an ActionBatch at a public entry; raise InputError with one clear message."""
    if not isinstance(actions, ActionBatch):
        raise InputError(f"actions must be an ActionBatch; got {type(actions).__name__}")
    n = len(actions.person_id)
    for name in ("channel", "offer", "send_at"):
        if len(getattr(actions, name)) != n:
            raise InputError(f"ActionBatch.{name} has {len(getattr(actions, name))} rows; person_id has {n}")
    if n == 0:
        return
    p = actions.person_id
    if p.min() < 0 or p.max() >= n_persons:
        raise InputError(f"ActionBatch.person_id must be in [0, {n_persons}); got {p.min()}..{p.max()}")
    c, o = actions.channel, actions.offer
    if c.min() < -1 or c.max() >= len(CHANNELS):
        raise InputError(f"ActionBatch.channel must be -1 (no send) or in [0, {len(CHANNELS)})")
    if o.min() < -1 or o.max() >= n_offers:
        raise InputError(f"ActionBatch.offer must be -1 (no offer) or in [0, {n_offers})")
    if np.any((c < 0) & (o >= 0)):
        raise InputError("a no-send decision (channel -1) cannot carry an offer (use offer -1)")
    if np.isnat(actions.send_at).any():
        raise InputError("ActionBatch.send_at must not contain NaT")


def _expected_gross(mean: np.ndarray, floor: float, sigma: float) -> np.ndarray:
    """E[max(floor, mean x X)] for X lognormal with E[X] = 1 and log-sd sigma."""
    if sigma <= 0:
        return np.maximum(mean, floor)
    a = (np.log(floor) - np.log(mean) + 0.5 * sigma**2) / sigma
    return floor * ndtr(a) + mean * ndtr(sigma - a)


class ResponseModel:
    """The closed-form response function over a population's traits (vectorised over rows)."""

    def __init__(self, config: WorldConfig, traits: Traits, segments: np.ndarray):
        self.config = config
        self.t = traits
        self.tz_names = config.timezone_names
        self.segments = segments  # (n_shifts, N) bool: person is in the shift's segment
        ch, r, pur = config.channels, config.response, config.purchases
        self.deliver_rate = np.array([ch.deliver_rate[c] for c in CHANNELS])
        self.open_logit = logit([ch.open_rate[c] for c in CHANNELS])
        self.hour_weight = np.array([ch.hour_weight[c] for c in CHANNELS])
        self.unsub_logit = logit([ch.unsubscribe_rate[c] for c in CHANNELS])
        self.open_delay_ns = np.array([ch.open_delay_hours[c] for c in CHANNELS]) * HOUR_NS
        self.window_ns = int(round(r.outcome_window_hours * HOUR_NS))
        offers = config.catalog.offers
        self.discount = np.array([o.discount for o in offers])
        self.fixed_cost = np.array([o.fixed_cost for o in offers])
        self.offer_cat = np.array([CATEGORIES.index(o.category) if o.category else -1 for o in offers],
                                  dtype=np.int8)
        self.cat_value = np.array([pur.category_value[c] for c in CATEGORIES])
        # expected gross order value per person and category, and of an organic order
        mean = traits.order_value[:, None] * self.cat_value[None, :]
        self.exp_gross = _expected_gross(mean, pur.min_order_value, pur.order_value_sigma)  # (N, K)
        self.exp_gross_organic = (traits.pref * self.exp_gross).sum(axis=1)
        self.rate_link = r.purchase_rate_link * np.clip(
            np.log(np.maximum(traits.purchase_rate, 1e-9) / pur.mean_daily_rate), -3.0, 3.0)
        shifts = config.shifts
        self.shift_start = np.array([int(round(s.start_day * DAY_NS)) for s in shifts], dtype=np.int64) \
            + int(np.datetime64(config.history_start.replace(tzinfo=None), "ns").astype(np.int64))
        self.shift_aff = np.array([[s.affinity_delta.get(c, 0.0) for c in CHANNELS] for s in shifts]
                                  ).reshape(len(shifts), 4)
        self.shift_peak = np.array([s.peak_hour_shift for s in shifts], dtype=np.float64)
        self.shift_mult = np.array([s.purchase_multiplier for s in shifts], dtype=np.float64)

    # -- time-dependent person state -------------------------------------------------------
    def peak_at(self, p: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """Peak local hour of persons p at times t (shifts applied)."""
        peak = self.t.peak_hour[p].copy()
        for j in range(len(self.shift_peak)):
            if self.shift_peak[j] != 0.0:
                peak += np.where(self.segments[j, p] & (t_ns >= self.shift_start[j]), self.shift_peak[j], 0.0)
        return np.mod(peak, 24.0)

    def rate_factor(self, p: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """Purchase-rate multiplier at t: 0 before signup, churn and shift multipliers after."""
        f = np.where(t_ns >= self.t.signup_ns[p], 1.0, 0.0)
        f = f * np.where(t_ns >= self.t.churn_ns[p], self.config.churn.purchase_multiplier, 1.0)
        for j in range(len(self.shift_mult)):
            if self.shift_mult[j] != 1.0:
                f = f * np.where(self.segments[j, p] & (t_ns >= self.shift_start[j]), self.shift_mult[j], 1.0)
        return f

    def organic_probability(self, p: np.ndarray, a_ns: np.ndarray, b_ns: np.ndarray) -> np.ndarray:
        """P(at least one organic purchase in [a, b)) for persons p: 1 - exp(-integral of rate)."""
        pts = [self.t.signup_ns[p], self.t.churn_ns[p]]
        for j in range(len(self.shift_mult)):
            if self.shift_mult[j] != 1.0:
                pts.append(np.where(self.segments[j, p], self.shift_start[j], np.iinfo(np.int64).max))
        inner = np.sort(np.clip(np.stack(pts, axis=1), a_ns[:, None], b_ns[:, None]), axis=1)
        edges = np.concatenate([a_ns[:, None], inner, b_ns[:, None]], axis=1)
        total = np.zeros(len(p))
        for k in range(edges.shape[1] - 1):
            lo, hi = edges[:, k], edges[:, k + 1]
            mid = lo + (hi - lo) // 2
            total += self.rate_factor(p, mid) * (hi - lo) / DAY_NS
        return -np.expm1(-self.t.purchase_rate[p] * total)

    # -- the funnel ------------------------------------------------------------------------
    def funnel(self, actions: ActionBatch, state: ContactState) -> _Funnel:
        t, r, cfg = self.t, self.config.response, self.config
        p = actions.person_id
        ts = actions.send_at.view(np.int64)
        send = actions.channel >= 0
        ch = np.where(send, actions.channel, 0).astype(np.int64)
        has_offer = actions.offer >= 0
        off = np.where(has_offer, actions.offer, 0).astype(np.int64)
        churned = ts >= t.churn_ns[p]
        pen = cfg.churn.response_penalty * churned

        organic = self.organic_probability(p, ts, ts + self.window_ns)
        p_del = np.where(send & t.reachable[p, ch] & ~state.unsubscribed[p, ch], self.deliver_rate[ch], 0.0)

        fatigue = state.fatigue_level(p, ts)
        hour = local_hours(ts, t.tz_idx[p], self.tz_names)
        d = np.abs(hour - self.peak_at(p, ts))
        d = np.minimum(d, 24.0 - d)
        fit = np.exp(-0.5 * (d / t.hour_spread[p]) ** 2)
        aff = t.affinity[p, ch].copy()
        for j in range(len(self.shift_start)):
            if np.any(self.shift_aff[j] != 0.0):
                aff += np.where(self.segments[j, p] & (ts >= self.shift_start[j]), self.shift_aff[j, ch], 0.0)
        z_open = (self.open_logit[ch] + aff + t.hour_sensitivity[p] * self.hour_weight[ch] * (2.0 * fit - 1.0)
                  - t.fatigue_sensitivity[p] * fatigue - pen)
        appeal = np.where(has_offer, t.appeal[p, off], 0.0)
        z_click = logit(r.click_rate) + r.click_appeal_weight * appeal - pen
        z_conv = logit(r.conversion_rate) + r.conversion_appeal_weight * appeal + self.rate_link[p]
        z_unsub = (self.unsub_logit[ch] + t.unsubscribe_sensitivity[p] + r.unsubscribe_fatigue_weight * fatigue
                   + r.no_consent_unsubscribe_logit * ~t.consent[p, ch])

        # values: campaign conversion, organic after opening (offer may apply), plain organic
        disc = np.where(has_offer, self.discount[off], 0.0)
        fc = np.where(has_offer, self.fixed_cost[off], 0.0)
        ocat = np.where(has_offer, self.offer_cat[off], -1)
        is_cat = ocat >= 0
        ocat0 = np.where(is_cat, ocat, 0)
        g_org = self.exp_gross_organic[p]
        g_cat = self.exp_gross[p, ocat0]
        pref_cat = t.pref[p, ocat0]
        v_campaign = np.where(is_cat, g_cat, g_org) * (1.0 - disc) - fc
        v_open_organic = np.where(is_cat, g_org - disc * pref_cat * g_cat - fc * pref_cat,
                                  g_org * (1.0 - disc) - fc)
        return _Funnel(send=send, ch=ch, has_offer=has_offer, off=off, p_del=p_del,
                       p_open=sigmoid(z_open), p_click=sigmoid(z_click), p_conv=sigmoid(z_conv),
                       p_unsub=sigmoid(z_unsub), organic=organic, v_campaign=v_campaign,
                       v_open_organic=v_open_organic, v_organic=g_org)

    def probabilities(self, actions: ActionBatch, state: ContactState) -> ResponseProbabilities:
        f = self.funnel(actions, state)
        delivered = f.p_del
        opened = delivered * f.p_open
        clicked = opened * f.p_click
        campaign = clicked * f.p_conv
        g = f.organic
        converted = 1.0 - (1.0 - g) * (1.0 - campaign)
        value = campaign * f.v_campaign + g * ((opened - campaign) * f.v_open_organic + (1.0 - opened) * f.v_organic)
        return ResponseProbabilities(delivered=delivered, opened=opened, clicked=clicked, converted=converted,
                                     unsubscribed=delivered * f.p_unsub, expected_value=value, organic=g,
                                     campaign=campaign)

    # -- sampling --------------------------------------------------------------------------
    def sample(self, actions: ActionBatch, state: ContactState, rng: np.random.Generator,
               organic_at: np.ndarray | None = None, organic_gross: np.ndarray | None = None,
               organic_cat: np.ndarray | None = None) -> Outcomes:
        """Draw outcomes from exactly the probabilities of ``probabilities`` and update ``state``.

        The history passes its organic order stream instead of drawing organic purchases:
        ``organic_at`` (n,) int64 ns of the first organic order in the window (-1: none) with its
        gross value and category; that stream is a Poisson process with the same rate, so the
        organic probability is the same.
        """
        f = self.funnel(actions, state)
        n = len(actions)
        p = actions.person_id
        ts = actions.send_at.view(np.int64)
        u = rng.random((n, 7))
        delay = rng.exponential(1.0, (n, 5))
        z = rng.standard_normal(n)

        delivered = u[:, 0] < f.p_del
        opened = delivered & (u[:, 1] < f.p_open)
        clicked = opened & (u[:, 2] < f.p_click)
        campaign = clicked & (u[:, 3] < f.p_conv)
        unsub = delivered & (u[:, 5] < f.p_unsub)

        end = ts + self.window_ns - 10**9
        minute = 60 * 10**9

        def later(t0, mean_ns, k):  # t0 + exponential delay, whole seconds, inside the window
            return np.minimum(t0 + (delay[:, k] * mean_ns // 10**9).astype(np.int64) * 10**9, end)

        delivered_at = later(ts, minute, 0)
        opened_at = later(delivered_at, self.open_delay_ns[f.ch], 1)
        clicked_at = later(opened_at, 3 * minute, 2)
        campaign_at = later(clicked_at, 20 * minute, 3)
        unsub_at = later(delivered_at, 30 * minute, 4)

        sigma = self.config.purchases.order_value_sigma
        floor = self.config.purchases.min_order_value
        noise = np.exp(sigma * z - 0.5 * sigma**2)
        drawn_cat = sample_categories(self.t.pref_cum[p], u[:, 6])
        if organic_at is None:
            organic = u[:, 4] < f.organic
            org_at = ts + (u[:, 4] / np.maximum(f.organic, 1e-300) * (self.window_ns // 10**9 - 1)).astype(np.int64) \
                * 10**9
            org_cat = drawn_cat
            org_gross = np.maximum(floor, self.t.order_value[p] * self.cat_value[org_cat] * noise)
        else:
            organic = organic_at >= 0
            org_at = organic_at
            org_cat = np.where(organic, organic_cat, drawn_cat).astype(np.int8)
            org_gross = organic_gross

        ocat = np.where(f.has_offer, self.offer_cat[f.off], -1)
        camp_cat = np.where(ocat >= 0, ocat, drawn_cat).astype(np.int8)
        camp_gross = np.maximum(floor, self.t.order_value[p] * self.cat_value[camp_cat] * noise)
        converted = campaign | organic
        applies = f.has_offer & ((ocat < 0) | (ocat == org_cat))
        redeemed = campaign | (organic & opened & applies)
        gross = np.where(campaign, camp_gross, np.where(organic, org_gross, 0.0))
        category = np.where(campaign, camp_cat, np.where(organic, org_cat, -1)).astype(np.int8)
        disc = np.where(f.has_offer, self.discount[f.off], 0.0)
        fc = np.where(f.has_offer, self.fixed_cost[f.off], 0.0)
        value = np.where(redeemed, gross * (1.0 - disc) - fc, gross)
        converted_at = np.where(campaign, campaign_at, np.where(organic, org_at, NAT))

        def nat(mask, x):
            return np.where(mask, x, NAT).view("datetime64[ns]")

        out = Outcomes(
            delivered=delivered, opened=opened, clicked=clicked, converted=converted, unsubscribed=unsub,
            value=np.where(converted, value, 0.0), delivered_at=nat(delivered, delivered_at),
            opened_at=nat(opened, opened_at), clicked_at=nat(clicked, clicked_at),
            converted_at=nat(converted, converted_at), unsubscribed_at=nat(unsub, unsub_at),
            campaign=campaign, redeemed=redeemed & converted, category=category, gross=gross,
        )
        self._record(state, p, f.ch, f.send, ts, delivered, unsub, unsub_at)
        return out

    @staticmethod
    def _record(state: ContactState, p, ch, send, ts, delivered, unsub, unsub_at) -> None:
        """Apply a batch's contacts to ``state`` (rows of a batch are simultaneous)."""
        sp, sc, st = p[send], ch[send], ts[send]
        np.add.at(state.sends, (sp, sc), 1)
        last = state.last_sent_at.view(np.int64)
        np.maximum.at(last, (sp, sc), st)
        if delivered.any():
            dp, dt = p[delivered], ts[delivered]
            fat_at = state.fatigue_at.view(np.int64)
            touched = np.unique(dp)
            new_t = fat_at.copy()
            np.maximum.at(new_t, dp, dt)
            state.fatigue[touched] = state.fatigue_level(touched, new_t[touched])
            np.add.at(state.fatigue, dp, np.exp(-LN2 * (new_t[dp] - dt) / (state.half_life_days * DAY_NS)))
            fat_at[touched] = new_t[touched]
        if unsub.any():
            up, uc, ut = p[unsub], ch[unsub], unsub_at[unsub]
            state.unsubscribed[up, uc] = True
            ua = state.unsubscribed_at.view(np.int64)
            # several unsubscribes of one (person, channel) in a batch: keep the earliest
            order = np.lexsort((ut, uc, up))
            first = np.ones(len(order), bool)
            first[1:] = (up[order][1:] != up[order][:-1]) | (uc[order][1:] != uc[order][:-1])
            sel = order[first]
            cur = ua[up[sel], uc[sel]]
            ua[up[sel], uc[sel]] = np.where(cur == NAT, ut[sel], np.minimum(cur, ut[sel]))

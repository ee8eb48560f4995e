"""The simulated history: organic orders, app/web/WeChat activity and logged campaign sends.

Generated per chunk of persons (persons are independent given their keys), vectorised inside a
chunk; the only Python loop runs over the days of the campaign history, because fatigue and
unsubscribes carry from one day's sends to the next. Every chunk has its own random stream
derived from the world's seed, so the output does not depend on anything but the config.

Organic purchases and sessions are Poisson processes whose intensity follows the person's active
hours in local time (a daily-periodic density around the peak hour), switched off before signup,
cut by churn and scaled by planted shifts (thinning). Campaign sends come from the logging policy
(``LoggingPolicyConfig``), their outcomes from the response function (``world.response``), with
the organic stream standing in for the organic draw: an organic order in a send's window makes it
convert, and a campaign conversion adds an order that redeems the offer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.types import CATEGORIES, CHANNELS, SEND_HOURS
from world.identity import APP, WEB, Identities
from world.response import ActionBatch, ContactState, ResponseModel
from world.timeutil import DAY_NS, HOUR_NS, NAT, DayGrid, utc_offsets
from world.traits import sample_categories

EVENT_TYPES = ("app_open", "login", "view_item", "search", "add_to_cart", "wechat_follow", "wechat_message",
               "mini_program_view")
PLATFORMS = ("app", "web", "wechat", "mini_program")
ORDER_PLATFORMS = ("app", "web", "mini_program", "store")
EV = {name: i for i, name in enumerate(EVENT_TYPES)}
PF = {name: i for i, name in enumerate(PLATFORMS)}

# identity keys a row carries (bit mask)
K_CRM, K_PHONE, K_EMAIL, K_UNION, K_DEVICE = 1, 2, 4, 8, 16

CHUNK_PERSONS = 100_000


@dataclass
class ChunkHistory:
    """One chunk's history as arrays (times int64 ns UTC; NAT = none).

    orders: o_* (organic stream plus campaign conversions), sorted by person then time.
    events: e_*; e_dev is a device row of Identities (-1: none); e_keys the keys the row carries.
    sends: s_* (one row per logged campaign send).
    """

    o_person: np.ndarray
    o_time: np.ndarray
    o_gross: np.ndarray
    o_cat: np.ndarray
    o_qty: np.ndarray
    o_offer: np.ndarray
    o_campaign: np.ndarray
    o_platform: np.ndarray
    o_keys: np.ndarray
    o_dev: np.ndarray
    e_person: np.ndarray
    e_time: np.ndarray
    e_type: np.ndarray
    e_platform: np.ndarray
    e_cat: np.ndarray
    e_dev: np.ndarray
    e_keys: np.ndarray
    s_person: np.ndarray
    s_decided: np.ndarray
    s_date: np.ndarray  # local calendar date of the campaign day (naive midnight ns)
    s_send: np.ndarray
    s_channel: np.ndarray
    s_offer: np.ndarray
    s_hour: np.ndarray
    s_propensity: np.ndarray
    s_delivered: np.ndarray
    s_opened: np.ndarray
    s_clicked: np.ndarray
    s_converted: np.ndarray
    s_unsubscribed: np.ndarray
    s_value: np.ndarray
    s_keys: np.ndarray


class HistoryGenerator:
    """Generates the history of chunks of persons for one world."""

    def __init__(self, config, traits, model: ResponseModel, ids: Identities):
        self.config, self.t, self.model, self.ids = config, traits, model, ids
        self.start = int(np.datetime64(config.history_start.replace(tzinfo=None), "ns").astype(np.int64))
        self.end = int(np.datetime64(config.history_end.replace(tzinfo=None), "ns").astype(np.int64))
        self.tz_names = config.timezone_names
        self.grid = DayGrid(self.start, self.end, self.tz_names)
        self.window = model.window_ns

    # -- helpers ---------------------------------------------------------------------------
    def _local_day(self, t_ns: np.ndarray, tz: np.ndarray) -> np.ndarray:
        local = t_ns + utc_offsets(t_ns, tz, self.tz_names)
        return ((local - self.grid.date_ns[0]) // DAY_NS).astype(np.int64)

    def _poisson_times(self, rng, persons, rate, a, b, spread_scale=1.0):
        """Poisson process on [a, b) per person with daily intensity ``rate`` spread over the
        person's active hours. Returns (person, t_ns) of the events."""
        ok = b > a
        persons, rate, a, b = persons[ok], rate[ok], a[ok], b[ok]
        tz = self.t.tz_idx[persons]
        ga = self._local_day(a, tz)
        gb = self._local_day(b - 1, tz)
        span = gb - ga + 1
        n = rng.poisson(rate * span)
        rep = np.repeat(np.arange(len(persons)), n)
        p = persons[rep]
        day = ga[rep] + np.floor(rng.random(len(rep)) * span[rep]).astype(np.int64)
        day = np.clip(day, 0, self.grid.n_days - 1)
        noon = self.grid.utc_at(self.t.tz_idx[p], day, np.full(len(p), 12.0))
        peak = self.model.peak_at(p, noon)
        hour = np.mod(peak + spread_scale * self.t.hour_spread[p] * rng.standard_normal(len(p)), 24.0)
        t = self.grid.utc_at(self.t.tz_idx[p], day, hour)
        t = (t // 10**9) * 10**9
        keep = (t >= a[rep]) & (t < b[rep])
        return p[keep], t[keep]

    # -- orders ----------------------------------------------------------------------------
    def organic_orders(self, rng, persons):
        t, m = self.t, self.model
        a = np.maximum(t.signup_ns[persons], self.start)
        b = np.full(len(persons), self.end)
        cand = np.ones(len(persons))
        for j in range(len(m.shift_mult)):
            cand = np.where(m.segments[j, persons], np.maximum(cand, m.shift_mult[j]), cand)
        p, when = self._poisson_times(rng, persons, t.purchase_rate[persons] * cand, a, b)
        idx = np.searchsorted(persons, p)
        keep = rng.random(len(p)) * cand[idx] < m.rate_factor(p, when)  # thinning
        p, when = p[keep], when[keep]
        order = np.lexsort((when, p))
        return p[order], when[order]

    def _order_values(self, rng, p, cat):
        pur = self.config.purchases
        s = pur.order_value_sigma
        noise = np.exp(s * rng.standard_normal(len(p)) - 0.5 * s**2)
        return np.maximum(pur.min_order_value, self.t.order_value[p] * self.model.cat_value[cat] * noise)

    def _order_keys(self, rng, p):
        """Where each order was placed and which keys it carries."""
        t, ids, act = self.t, self.ids, self.config.activity
        n = len(p)
        has_crm = t.has_crm[p]
        phone_ok = t.key_on_file[p, 0]
        email_ok = t.key_on_file[p, 1]
        union_ok = t.key_on_file[p, 2]
        app_ok = ids.own_app[p] >= 0
        w = np.array([act.order_platform_weights[k] for k in ORDER_PLATFORMS])
        avail = np.stack([app_ok, np.ones(n, bool), union_ok, phone_ok], axis=1)
        ww = avail * w
        cum = np.cumsum(ww, axis=1)
        u = rng.random((n, 4))
        plat = np.minimum((cum < (u[:, 0] * cum[:, -1])[:, None]).sum(axis=1), 3)
        keys = np.zeros(n, np.uint8)
        crm_or_phone = np.where(has_crm, K_CRM, K_PHONE)
        keys = np.where(plat == 0, K_DEVICE | crm_or_phone, keys)
        web = np.where(has_crm, K_CRM, K_PHONE) | np.where(email_ok & (u[:, 1] < np.where(has_crm, 0.3, 0.5)),
                                                             K_EMAIL, 0)
        keys = np.where(plat == 1, web, keys)
        keys = np.where(plat == 2, K_UNION | np.where(phone_ok & (u[:, 2] < 0.3), K_PHONE, 0), keys)
        keys = np.where(plat == 3, K_PHONE | np.where(has_crm & (u[:, 3] < 0.3), K_CRM, 0), keys)
        dev = np.where(plat == 0, ids.own_app[p], -1)
        return plat.astype(np.int8), keys.astype(np.uint8), dev

    # -- events ----------------------------------------------------------------------------
    def events(self, rng, persons):
        t, ids, act, cfg = self.t, self.ids, self.config.activity, self.config
        a = np.maximum(t.signup_ns[persons], self.start)
        b = np.full(len(persons), self.end)
        p, when = self._poisson_times(rng, persons, t.session_rate[persons], a, b)
        keep = rng.random(len(p)) < np.where(when >= t.churn_ns[p], cfg.churn.activity_multiplier, 1.0)
        p, when = p[keep], when[keep]
        ns = len(p)
        # platform of the session
        w = np.array([act.platform_weights["app"], act.platform_weights["web"], act.platform_weights["mini_program"]])
        avail = np.stack([ids.app_count[p] > 0, np.ones(ns, bool), t.key_on_file[p, 2]], axis=1)
        cum = np.cumsum(avail * w, axis=1)
        u = rng.random((ns, 4))
        plat3 = np.minimum((cum < (u[:, 0] * cum[:, -1])[:, None]).sum(axis=1), 2)  # 0 app, 1 web, 2 mini
        platform = np.array([PF["app"], PF["web"], PF["mini_program"]], np.int8)[plat3]
        dev = np.full(ns, -1, np.int64)
        borrowed = np.zeros(ns, bool)
        is_app, is_web = plat3 == 0, plat3 == 1
        k = ids.app_start[p] + np.floor(u[:, 1] * ids.app_count[p]).astype(np.int64)
        dev = np.where(is_app, ids.use_dev[np.minimum(k, len(ids.use_dev) - 1)], dev)
        borrowed = is_app & ids.use_borrowed[np.minimum(k, len(ids.use_dev) - 1)]
        k = ids.web_start[p] + np.floor(u[:, 2] * ids.web_count[p]).astype(np.int64)
        dev = np.where(is_web, ids.use_dev[np.minimum(k, len(ids.use_dev) - 1)], dev)
        anon = (dev >= 0) & ids.dev_anonymous[np.maximum(dev, 0)]
        login = ((u[:, 3] < act.login_share) | borrowed) & ~anon
        n_ev = 1 + rng.poisson(act.events_per_session, ns)
        # expand sessions to events: optional login first, then the session's events
        n_rows = n_ev + login
        rep = np.repeat(np.arange(ns), n_rows)
        pos = np.arange(len(rep)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
        is_login = login[rep] & (pos == 0)
        k_in = pos - login[rep]  # 0 = first event of the session proper
        gap = rng.exponential(90.0, len(rep)).astype(np.int64) * 10**9
        gap[pos == 0] = 0
        etime = when[rep] + np.cumsum(gap) - np.repeat((np.cumsum(gap))[np.cumsum(n_rows) - n_rows], n_rows)
        ue = rng.random((len(rep), 3))
        follow_type = np.where(ue[:, 0] < 0.55, EV["view_item"], np.where(ue[:, 0] < 0.75, EV["search"],
                                                                          EV["add_to_cart"]))
        pl = plat3[rep]
        first_type = np.select([pl == 0, pl == 1], [EV["app_open"], EV["view_item"]], EV["mini_program_view"])
        mini_follow = np.where(ue[:, 0] < 0.6, EV["mini_program_view"], follow_type)
        etype = np.where(k_in == 0, first_type, np.where(pl == 2, mini_follow, follow_type))
        etype = np.where(is_login, EV["login"], etype).astype(np.int8)
        ep = p[rep]
        has_cat = np.isin(etype, [EV["view_item"], EV["add_to_cart"], EV["mini_program_view"]])
        cat = sample_categories(t.pref_cum[ep], ue[:, 1])
        uniform_cat = (ue[:, 2] * len(CATEGORIES)).astype(np.int8)
        cat = np.where(ue[:, 2] < act.view_preference_share, cat, uniform_cat)
        cat = np.where(has_cat, cat, -1).astype(np.int8)
        edev = dev[rep]
        ekeys = np.where(edev >= 0, K_DEVICE, 0)
        ekeys = np.where(pl == 2, K_UNION, ekeys)
        ekeys = ekeys | np.where(is_login, self._login_keys(rng, ep, mini=pl == 2), 0)
        parts = [(ep, etime, etype, platform[rep], cat, edev, ekeys.astype(np.uint8))]
        parts.append(self._registration_events(rng, persons, a, b))
        parts.append(self._wechat_events(rng, persons, a, b))
        cols = [np.concatenate([x[i] for x in parts]) for i in range(7)]
        order = np.lexsort((cols[1], cols[0]))
        return [c[order] for c in cols]

    def _login_keys(self, rng, p, mini):
        """Identity a login carries: member id, else phone, else e-mail (some log in by phone or
        e-mail); mini-program logins carry the unionid and the member id (guests: the phone)."""
        t = self.t
        alt = rng.random(len(p)) < self.config.activity.login_alternate_key_share
        phone_ok, email_ok, crm = t.key_on_file[p, 0], t.key_on_file[p, 1], t.has_crm[p]
        by_alt = np.where(phone_ok, K_PHONE, np.where(email_ok, K_EMAIL, K_CRM))
        app_keys = np.where(crm & ~alt, K_CRM, np.where(crm, by_alt, K_PHONE))
        mini_keys = K_UNION | np.where(crm, K_CRM, K_PHONE)
        return np.where(mini, mini_keys, app_keys)

    def _registration_events(self, rng, persons, a, b):
        """A login on every device / cookie a person owns (except anonymous cookies) and a
        mini-program binding of every unionid, at a random time of the history: the links a
        resolver needs. Returns event columns."""
        ids, t = self.ids, self.t
        in_chunk = np.zeros(t.n, bool)
        in_chunk[persons] = True
        dev = np.flatnonzero(in_chunk[ids.dev_owner] & ~ids.dev_anonymous)
        dp = ids.dev_owner[dev]
        union_p = persons[t.key_on_file[persons, 2]]
        p = np.concatenate([dp, union_p])
        dev = np.concatenate([dev, np.full(len(union_p), -1)])
        idx = np.searchsorted(persons, p)
        when = a[idx] + (rng.random(len(p)) * (b[idx] - a[idx])).astype(np.int64)
        when = (when // 10**9) * 10**9
        mini = dev < 0
        platform = np.where(mini, PF["mini_program"], np.where(ids.dev_kind[np.maximum(dev, 0)] == APP,
                                                               PF["app"], PF["web"]))
        keys = np.where(mini, 0, K_DEVICE) | self._login_keys(rng, p, mini)
        return (p, when, np.full(len(p), EV["login"], np.int8), platform.astype(np.int8),
                np.full(len(p), -1, np.int8), dev, keys.astype(np.uint8))

    def _wechat_events(self, rng, persons, a, b):
        """Following the official account (when it happens inside the history) and messages to it."""
        t = self.t
        fol = persons[t.reachable[persons, 2]]
        idx = np.searchsorted(persons, fol)
        follow_at = t.signup_ns[fol] + (rng.exponential(2.0, len(fol)) * DAY_NS).astype(np.int64)
        inside = (follow_at >= self.start) & (follow_at < self.end)
        fp, ft = fol[inside], (follow_at[inside] // 10**9) * 10**9
        rate = np.full(len(fol), self.config.activity.wechat_message_rate)
        mp, mt = self._poisson_times(rng, fol, rate, a[idx], b[idx])
        p = np.concatenate([fp, mp])
        when = np.concatenate([ft, mt])
        etype = np.concatenate([np.full(len(fp), EV["wechat_follow"]), np.full(len(mp), EV["wechat_message"])])
        n = len(p)
        return (p, when, etype.astype(np.int8), np.full(n, PF["wechat"], np.int8), np.full(n, -1, np.int8),
                np.full(n, -1, np.int64), np.full(n, K_UNION, np.uint8))

    # -- campaign sends ---------------------------------------------------------------------
    def sends(self, rng, persons, state: ContactState, o_person, o_time, o_gross, o_cat):
        """Run the logging policy day by day over ``persons`` (sorted), sampling outcomes with the
        response model and updating ``state``. Returns (send columns, campaign orders, redeemed
        organic order index -> offer)."""
        cfg, t, m, g = self.config, self.t, self.model, self.grid
        lp = cfg.logging_policy
        members = persons[t.has_crm[persons]]
        nm = len(members)
        tz = t.tz_idx[members]
        static = t.key_on_file[members] & t.consent[members]
        w_ch = np.array([lp.channel_weights[c] for c in CHANNELS])
        p_off = np.asarray(cfg.offer_probabilities())
        cum_off = np.cumsum(p_off)
        p_hour = np.asarray(cfg.hour_probabilities())
        cum_hour = np.cumsum(p_hour)
        hours = np.asarray(SEND_HOURS, dtype=np.float64)
        n_off = len(p_off)

        # recent-buyer counts per local day (orders known by the end of the day before yesterday)
        local_of = np.full(t.n, -1, np.int64)
        local_of[members] = np.arange(nm)
        counts = np.zeros((nm, g.n_days), np.int16)
        om = local_of[o_person]
        ok = om >= 0
        od = self._local_day(o_time[ok], t.tz_idx[o_person[ok]])
        np.add.at(counts, (om[ok], np.clip(od, 0, g.n_days - 1)), 1)
        rolling = np.zeros(nm, np.int32)
        R = lp.recent_days

        # organic stream lookup over the members' orders: key = member index * 2^30 + seconds
        mem_orders = np.flatnonzero(local_of[o_person] >= 0)
        okey = self._stream_key(local_of[o_person[mem_orders]], o_time[mem_orders])
        redeemed_offer = np.full(len(o_person), -1, np.int8)
        cols: dict[str, list] = {k: [] for k in ("person", "decided", "date", "send", "channel", "offer", "hour",
                                                 "propensity", "delivered", "opened", "clicked", "converted",
                                                 "unsubscribed", "value")}
        camp = {k: [] for k in ("person", "time", "gross", "cat", "offer")}
        for day in range(g.n_days):
            if day >= 2:
                rolling += counts[:, day - 2]
            if day - 2 - R >= 0:
                rolling -= counts[:, day - 2 - R]
            d = np.full(nm, day)
            decided = g.date_ns[day] - g.offset_ns[tz, day]
            first = decided + 8 * HOUR_NS
            last = decided + 22 * HOUR_NS
            u = rng.random((nm, 4))
            valid = (first >= self.start) & (last <= self.end) & (t.signup_ns[members] < decided)
            if not valid.any():
                continue
            elig = static & ~state.unsubscribed[members]
            weights = elig * w_ch
            total = weights.sum(axis=1)
            p_send = np.minimum(1.0, lp.send_probability * np.where(rolling > 0, lp.recent_buyer_multiplier, 1.0))
            send = valid & (total > 0) & (u[:, 0] < p_send)
            if not send.any():
                continue
            idx = np.flatnonzero(send)
            cw = np.cumsum(weights[idx], axis=1)
            ch = np.minimum((cw < (u[idx, 1] * total[idx])[:, None]).sum(axis=1), 3)
            off = np.minimum(np.searchsorted(cum_off, u[idx, 2], side="right"), n_off - 1)
            hi = np.minimum(np.searchsorted(cum_hour, u[idx, 3], side="right"), len(hours) - 1)
            prop = p_send[idx] * weights[idx, ch] / total[idx] * p_off[off] * p_hour[hi]
            pid = members[idx]
            send_at = g.utc_at(tz[idx], d[idx], hours[hi])
            # the organic stream stands in for the organic draw
            key = self._stream_key(idx, send_at)
            if len(okey):
                pos = np.searchsorted(okey, key, side="left")
                posc = mem_orders[np.minimum(pos, len(okey) - 1)]
                hit = (pos < len(okey)) & (o_person[posc] == pid) & (o_time[posc] >= send_at) \
                    & (o_time[posc] < send_at + self.window)
                org_at, org_gross, org_cat = o_time[posc], o_gross[posc], o_cat[posc]
            else:
                posc = np.zeros(len(idx), np.int64)
                hit = np.zeros(len(idx), bool)
                org_at, org_gross, org_cat = posc, np.zeros(len(idx)), np.zeros(len(idx), np.int8)
            actions = ActionBatch(pid, ch.astype(np.int8), off.astype(np.int8), send_at.view("datetime64[ns]"))
            out = m.sample(actions, state, rng, organic_at=np.where(hit, org_at, -1),
                           organic_gross=np.where(hit, org_gross, 0.0), organic_cat=np.where(hit, org_cat, -1))
            red = hit & out.redeemed & ~out.campaign
            redeemed_offer[posc[red]] = off[red]
            c_at = out.converted_at.view(np.int64)
            cm = out.campaign
            camp["person"].append(pid[cm])
            camp["time"].append(c_at[cm])
            camp["gross"].append(out.gross[cm])
            camp["cat"].append(out.category[cm])
            camp["offer"].append(off[cm].astype(np.int8))
            cday = self._local_day(c_at[cm], tz[idx][cm])
            np.add.at(counts, (idx[cm], np.clip(cday, 0, g.n_days - 1)), 1)
            for name, val in (("person", pid), ("decided", decided[idx]), ("date", np.full(len(idx), g.date_ns[day])), ("send", send_at), ("channel", ch),
                              ("offer", off), ("hour", hours[hi]), ("propensity", prop),
                              ("delivered", out.delivered_at), ("opened", out.opened_at),
                              ("clicked", out.clicked_at), ("converted", out.converted_at),
                              ("unsubscribed", out.unsubscribed_at), ("value", out.value)):
                cols[name].append(np.asarray(val))
        sends = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
        campaign = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in camp.items()}
        return sends, campaign, redeemed_offer

    def _stream_key(self, local_person, t_ns):
        sec = np.clip((t_ns - self.start) // 10**9 + 86_400, 0, 2**30 - 1)
        return local_person.astype(np.int64) * 2**30 + sec

    # -- one chunk -------------------------------------------------------------------------
    def chunk(self, rng: np.random.Generator, persons: np.ndarray, state: ContactState) -> ChunkHistory:
        """The history of ``persons`` (sorted person ids); updates ``state`` with their sends."""
        t = self.t
        op, ot = self.organic_orders(rng, persons)
        ocat = sample_categories(t.pref_cum[op], rng.random(len(op)))
        ogross = self._order_values(rng, op, ocat)
        s, camp, red = self.sends(rng, persons, state, op, ot, ogross, ocat)
        cp = camp["person"].astype(np.int64)
        ct = camp["time"].astype(np.int64)
        inside = ct < self.end
        o_person = np.concatenate([op, cp[inside]])
        o_time = np.concatenate([ot, ct[inside]])
        o_gross = np.concatenate([ogross, camp["gross"][inside].astype(np.float64)])
        o_cat = np.concatenate([ocat, camp["cat"][inside].astype(np.int8)])
        o_offer = np.concatenate([red, camp["offer"][inside].astype(np.int8)])
        o_campaign = np.concatenate([np.zeros(len(op), bool), np.ones(int(inside.sum()), bool)])
        order = np.lexsort((o_time, o_person))
        o_person, o_time, o_gross, o_cat, o_offer, o_campaign = (x[order] for x in (
            o_person, o_time, o_gross, o_cat, o_offer, o_campaign))
        o_qty = 1 + rng.poisson(self.config.purchases.extra_items_mean, len(o_person))
        o_platform, o_keys, o_dev = self._order_keys(rng, o_person)
        ev = self.events(rng, persons)
        sp = s["person"].astype(np.int64)
        s_keys = self._send_keys(rng, sp, s["channel"].astype(np.int64))
        return ChunkHistory(
            o_person=o_person, o_time=o_time, o_gross=o_gross, o_cat=o_cat, o_qty=o_qty, o_offer=o_offer,
            o_campaign=o_campaign, o_platform=o_platform, o_keys=o_keys, o_dev=o_dev,
            e_person=ev[0], e_time=ev[1], e_type=ev[2], e_platform=ev[3], e_cat=ev[4], e_dev=ev[5],
            e_keys=ev[6],
            s_person=sp, s_decided=s["decided"].astype(np.int64),
            s_date=s["date"].astype(np.int64), s_send=s["send"].astype(np.int64),
            s_channel=s["channel"].astype(np.int8), s_offer=s["offer"].astype(np.int8),
            s_hour=s["hour"].astype(np.int8), s_propensity=s["propensity"].astype(np.float64),
            s_delivered=_ns(s["delivered"]), s_opened=_ns(s["opened"]), s_clicked=_ns(s["clicked"]),
            s_converted=_ns(s["converted"]), s_unsubscribed=_ns(s["unsubscribed"]),
            s_value=s["value"].astype(np.float64), s_keys=s_keys,
        )

    def _send_keys(self, rng, p, ch):
        """The channel's own key, plus the member id on a share of send records."""
        own = np.array([K_PHONE, K_EMAIL, K_UNION, K_DEVICE], np.uint8)[ch] if len(ch) else np.zeros(0, np.uint8)
        crm = rng.random(len(p)) < self.config.logging_policy.crm_id_on_send_share
        return (own | np.where(crm, K_CRM, 0)).astype(np.uint8)


def _ns(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "M":
        return x.astype("datetime64[ns]").view(np.int64)
    if len(x) == 0:
        return np.zeros(0, np.int64)
    return x.astype(np.int64)


__all__ = ["CHUNK_PERSONS", "ChunkHistory", "EVENT_TYPES", "HistoryGenerator", "NAT", "ORDER_PLATFORMS",
           "PLATFORMS", "WEB"]

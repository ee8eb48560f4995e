"""The Bayes posterior of a purchase in the label window under the simulator's own generative model:
a DIAGNOSTIC of how far the observable data can go, not a product feature (it reads the world's
configuration from the truth).

The world (``world.traits``, ``world.history``): a person orders as a Poisson process with rate
``lambda ~ Gamma(rate_shape, mean mean_daily_rate)`` from sign-up; at a churn time ``tau`` (sign-up
plus an exponential lifetime whose hazard is ``Gamma(hazard_shape, mean mean_hazard)``, i.e. a Lomax
age at churn) the rate drops to ``purchase_multiplier`` of itself. Sessions (app/web visits) follow
a Poisson process with rate ``u x (lambda / mean_daily_rate)^0.4`` (``u`` = Gamma(session_rate_shape,
mean session_rate) x exp(0.3 x digital)), cut to ``activity_multiplier`` after churn. Delivered
messages are opened far less once churned (``response_penalty`` on the open logit).

Given the orders (and sessions, and opens) a customer shows before the cutoff ``c``, the posterior
sums over ``tau`` on a half-day grid (plus "before the observation window" and "after c + H"),
integrates ``lambda`` in closed form (orders only) or on a grid of prior quantiles (with sessions,
whose rate is tied to ``lambda``), and integrates the session-rate factor in closed form (moment-
matched Gamma). Its score is P(at least one order in (c, c + H]). The open model integrates each
person's channel affinity (Gauss-Hermite) around the channel's open rate among persons still
active (measured from the truth).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Constants of ``world.traits.sample_persons`` the session model mirrors.
SESSION_RATE_LINK = 0.4  # sessions ~ (purchase rate / mean)^0.4
SESSION_DIGITAL_LOADING = 0.3  # sessions ~ exp(0.3 x digital)
#: Event types that are not visits (WeChat messages and follows run on their own clocks).
NON_VISIT_EVENTS = ("wechat_follow", "wechat_message")
DAY = pd.Timedelta(days=1)


def _lomax_survival(L: np.ndarray, k: float, beta: float) -> np.ndarray:
    return (beta / (beta + np.maximum(L, 0.0))) ** k


def counts_on_grid(rows: np.ndarray, t_days: np.ndarray, n: int, edges: np.ndarray) -> np.ndarray:
    """(n, len(edges) - 1) counts of events per row and grid cell (events outside are dropped)."""
    j = np.searchsorted(edges, t_days, side="right") - 1
    ok = (j >= 0) & (j < len(edges) - 1)
    out = np.zeros((n, len(edges) - 1))
    np.add.at(out, (rows[ok], j[ok]), 1.0)
    return out


class Grid:
    """The churn-time grid of one cutoff, in days from the history start ``0``: half cells of
    width ``delta / 2`` for counting (an event before a cell's midpoint or after it) and cells of
    width ``delta`` over [0, c + H) for ``tau``."""

    def __init__(self, c: float, H: float, delta: float = 0.5):
        self.c, self.H, self.delta = float(c), float(H), float(delta)
        self.n_obs = int(np.ceil(self.c / delta))
        self.n_fut = int(np.ceil(self.H / delta))
        self.half_edges = (delta / 2) * np.arange(2 * self.n_obs + 1)
        lo = delta * np.arange(self.n_obs + self.n_fut)
        self.lo, self.hi, self.mid = lo, lo + delta, lo + delta / 2

    def after_counts(self, half_counts: np.ndarray) -> np.ndarray:
        """(n, J + 2) events at or after each tau cell's midpoint (before the window: all; after
        c + H: none)."""
        n = half_counts.shape[0]
        rc = np.cumsum(half_counts[:, ::-1], axis=1)[:, ::-1][:, 1::2]  # second half of each cell onward
        k = np.zeros((n, self.n_obs + self.n_fut))
        k[:, :self.n_obs] = rc[:, :self.n_obs]
        total = half_counts.sum(axis=1)
        return np.column_stack([total, k, np.zeros(n)])

    def prior_and_exposure(self, A: np.ndarray, s: np.ndarray, k: float, beta: float, share: float):
        """Prior mass of each tau cell (n, J + 2) and the observed exposure (active days + share x
        churned days in [A, c)) given tau in the cell."""
        c = self.c
        lo_c = np.maximum(self.lo[None, :], A[:, None])
        hi_c = np.maximum(self.hi[None, :], A[:, None])
        mass = (_lomax_survival(lo_c - s[:, None], k, beta) - _lomax_survival(hi_c - s[:, None], k, beta))
        mid = np.clip(self.mid[None, :], A[:, None], None)
        T = c - A
        E = np.where(self.mid[None, :] < c, (mid - A[:, None]) + share * (c - mid), T[:, None])
        mass = np.column_stack([1.0 - _lomax_survival(A - s, k, beta), mass, _lomax_survival(c + self.H - s, k, beta)])
        E = np.column_stack([share * T, E, T])
        return np.maximum(mass, 0.0), E

    def future_exposure(self, n: int, share: float) -> np.ndarray:
        """(n, J + 2) exposure in (c, c + H] given tau in each cell."""
        c, H = self.c, self.H
        inner = np.where(self.mid < c, share * H, (self.mid - c) + share * (c + H - self.mid))
        row = np.concatenate([[share * H], inner, [H]])
        return np.broadcast_to(row, (n, len(row)))


def _normalise(lw: np.ndarray) -> np.ndarray:
    lw = lw - lw.max(axis=-1, keepdims=True)
    w = np.exp(lw)
    return w / w.sum(axis=-1, keepdims=True)


def posterior_orders(grid: Grid, order_half: np.ndarray, A: np.ndarray, s: np.ndarray, prior: dict):
    """P(order in (c, c + H]) and P(active at c) from orders alone; lambda in closed form."""
    r, alpha, k, beta, m = (prior[x] for x in ("r", "alpha", "k", "beta", "m"))
    n = len(A)
    mass, E = grid.prior_and_exposure(A, s, k, beta, m)
    K = grid.after_counts(order_half)
    x = order_half.sum(axis=1)
    with np.errstate(divide="ignore"):
        lw = np.log(mass) + K * np.log(m) - (r + x)[:, None] * np.log(alpha + E)
    w = _normalise(lw)
    Ef = grid.future_exposure(n, m)
    p_none = ((alpha + E) / (alpha + E + Ef)) ** (r + x)[:, None]
    return 1.0 - (w * p_none).sum(axis=1), w[:, 1 + grid.n_obs:].sum(axis=1)


def posterior_joint(grid: Grid, order_half: np.ndarray, visit_half: np.ndarray, A: np.ndarray, s: np.ndarray,
                    prior: dict, extra: np.ndarray | None = None, n_lambda: int = 60, chunk: int = 400):
    """P(order in (c, c + H]) and P(active at c) from orders and visits (sessions), plus an optional
    extra log-likelihood per tau cell (n, J + 2) (the opens). lambda on ``n_lambda`` prior
    quantiles; the session factor u ~ Gamma(a_s, b_s) in closed form."""
    from scipy.stats import gamma

    r, alpha, k, beta, m = (prior[x] for x in ("r", "alpha", "k", "beta", "m"))
    a_s, b_s, m_s, lam_mean = (prior[x] for x in ("a_s", "b_s", "m_s", "lam_mean"))
    lam = gamma.ppf((np.arange(n_lambda) + 0.5) / n_lambda, r, scale=1.0 / alpha)
    f = (lam / lam_mean) ** SESSION_RATE_LINK
    n = len(A)
    p_buy, p_active = np.zeros(n), np.zeros(n)
    for a0 in range(0, n, chunk):
        sl = slice(a0, min(n, a0 + chunk))
        Ai, si = A[sl], s[sl]
        nn = len(Ai)
        mass, Eo = grid.prior_and_exposure(Ai, si, k, beta, m)
        _, Es = grid.prior_and_exposure(Ai, si, k, beta, m_s)
        Ko, Ks = grid.after_counts(order_half[sl]), grid.after_counts(visit_half[sl])
        x, y = order_half[sl].sum(axis=1), visit_half[sl].sum(axis=1)
        with np.errstate(divide="ignore"):
            base = np.log(mass) + Ko * np.log(m) + Ks * np.log(m_s)
        if extra is not None:
            base = base + extra[sl]
        L = (base[:, None, :] + x[:, None, None] * np.log(lam)[None, :, None] - lam[None, :, None] * Eo[:, None, :]
             + y[:, None, None] * np.log(f)[None, :, None]
             - (a_s + y)[:, None, None] * np.log(b_s + f[None, :, None] * Es[:, None, :]))
        w = _normalise(L.reshape(nn, -1)).reshape(L.shape)
        Ef = grid.future_exposure(nn, m)
        p_none = np.exp(-lam[None, :, None] * Ef[:, None, :])
        p_buy[sl] = 1.0 - (w * p_none).sum(axis=(1, 2))
        p_active[sl] = w.sum(axis=1)[:, 1 + grid.n_obs:].sum(axis=1)
    return p_buy, p_active


def open_loglik(grid: Grid, rows: np.ndarray, t_days: np.ndarray, opened: np.ndarray, base_logit: np.ndarray,
                n: int, penalty: float, affinity_sd: float, n_nodes: int = 9) -> np.ndarray:
    """(n, J + 2) log-likelihood of the open outcomes of delivered messages given tau in each cell
    (a churned person opens with ``penalty`` less log-odds), the person's affinity integrated."""
    from scipy.special import log_expit

    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    weights = weights / weights.sum()
    half = np.clip((t_days // (grid.delta / 2)).astype(np.int64), 0, 2 * grid.n_obs - 1)
    sign = np.where(opened, 1.0, -1.0)
    terms = []
    for a, wa in zip(nodes * affinity_sd, weights, strict=True):
        la = log_expit(sign * (base_logit + a))
        lc = log_expit(sign * (base_logit + a - penalty))
        active_all = np.bincount(rows, weights=la, minlength=n)
        churned_all = np.bincount(rows, weights=lc, minlength=n)
        D = np.zeros((n, 2 * grid.n_obs))
        np.add.at(D, (rows, half), lc - la)
        after = np.cumsum(D[:, ::-1], axis=1)[:, ::-1][:, 1::2]
        M = np.empty((n, grid.n_obs + grid.n_fut + 2))
        M[:, 0] = churned_all
        M[:, 1:1 + grid.n_obs] = active_all[:, None] + after
        M[:, 1 + grid.n_obs:] = active_all[:, None]
        terms.append(np.log(wa) + M)
    T = np.stack(terms)
    mx = T.max(axis=0)
    return mx + np.log(np.exp(T - mx).sum(axis=0))


def world_prior(config) -> dict:
    """The generative model's prior, from a ``world.config.WorldConfig``."""
    pur, ch, act = config.purchases, config.churn, config.activity
    d2 = config.population.digital_sd ** 2
    load = SESSION_DIGITAL_LOADING
    mean_u = act.session_rate * np.exp(0.5 * load**2 * d2)
    second_u = act.session_rate**2 * (1.0 + 1.0 / act.session_rate_shape) * np.exp(2.0 * load**2 * d2)
    var_u = second_u - mean_u**2
    return {"r": pur.rate_shape, "alpha": pur.rate_shape / pur.mean_daily_rate, "lam_mean": pur.mean_daily_rate,
            "k": ch.hazard_shape, "beta": ch.hazard_shape / ch.mean_hazard, "m": ch.purchase_multiplier,
            "m_s": ch.activity_multiplier, "a_s": mean_u**2 / var_u, "b_s": mean_u / var_u}


def visits(events: pd.DataFrame, gap_hours: float = 1.0) -> pd.DataFrame:
    """Sessions from the events: a customer's events closer than ``gap_hours`` form one visit;
    WeChat messages/follows and lone logins (device registrations) are not visits. Returns
    customer_id, t (the visit's first event)."""
    e = events[~events["event_type"].isin(NON_VISIT_EVENTS)].sort_values(["customer_id", "occurred_at"])
    cid = e["customer_id"].to_numpy()
    t = e["occurred_at"].to_numpy()
    new = np.ones(len(t), bool)
    new[1:] = (cid[1:] != cid[:-1]) | ((t[1:] - t[:-1]) > np.timedelta64(int(gap_hours * 3600), "s"))
    sid = np.cumsum(new) - 1
    size = np.bincount(sid) if len(sid) else np.zeros(0, np.int64)
    lone_login = (size == 1) & (e["event_type"].to_numpy()[new] == "login")
    return pd.DataFrame({"customer_id": cid[new][~lone_login], "t": pd.to_datetime(t[new][~lone_login], utc=True)})


def posterior_scores(truth, data, ids: np.ndarray, cutoff: pd.Timestamp, horizon: pd.Timedelta,
                     visit_frame: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """The three posteriors for customers ``ids`` at ``cutoff``: P(order in the window) from orders
    (``orders``), orders and visits (``orders_visits``), and those plus the opens (``all``), and
    P(active at the cutoff) of the last (``active``). ``truth``: ``training.oracle.Truth``;
    ``data``: ``features.compute.ProfileData``."""
    from scipy.special import logit

    world = truth.world
    cfg = world.config
    start = pd.Timestamp(cfg.history_start)

    def days(ts) -> np.ndarray:
        return ((pd.to_datetime(ts, utc=True) - start) / DAY).to_numpy(dtype=np.float64)

    c = float((cutoff - start) / DAY)
    grid = Grid(c, horizon / DAY)
    prior = world_prior(cfg)
    n = len(ids)
    pos = pd.Series(np.arange(n), index=pd.Index(ids))
    prof = data.profiles.set_index("customer_id")
    born = prof["signup_at"].reindex(ids).fillna(prof["first_seen_at"].reindex(ids))
    s = np.nan_to_num(days(born), nan=0.0)
    A = np.clip(s, 0.0, c)

    def half_counts(frame: pd.DataFrame, col: str) -> np.ndarray:
        f = frame[(frame[col] < cutoff) & frame["customer_id"].isin(pos.index)]
        return counts_on_grid(pos[f["customer_id"]].to_numpy(), days(f[col]), n, grid.half_edges)

    oh = half_counts(data.orders, "ordered_at")
    vis = visit_frame if visit_frame is not None else visits(data.events)
    vh = half_counts(vis, "t")
    out = {"orders": posterior_orders(grid, oh, A, s, prior)[0]}
    out["orders_visits"], _ = posterior_joint(grid, oh, vh, A, s, prior)
    eg = data.engagements
    eg = eg[eg["delivered_at"].notna() & (eg["sent_at"] < cutoff) & eg["customer_id"].isin(pos.index)]
    if len(eg):
        rows = pos[eg["customer_id"]].to_numpy()
        t = days(eg["sent_at"])
        opened = (eg["opened_at"].notna() & (eg["opened_at"] < cutoff)).to_numpy()
        # each channel's open rate among persons active at the send (truth), as the base
        person = truth.persons(eg["customer_id"].to_numpy())
        churn = world.persons.set_index("person_id")["churn_at"].reindex(person)
        active = (pd.to_datetime(churn, utc=True) > pd.to_datetime(eg["sent_at"], utc=True).to_numpy()).to_numpy()
        channel = eg["channel"].to_numpy()
        base = np.zeros(len(eg))
        for ch in np.unique(channel):
            mk = channel == ch
            rate = float(np.clip(opened[mk & active].mean() if (mk & active).any() else 0.1, 1e-3, 0.999))
            base[mk] = logit(rate)
        sd = float(np.mean([v for v in cfg.channels.affinity_sd.values()]))
        extra = open_loglik(grid, rows, t, opened, base, n, cfg.churn.response_penalty, sd)
        out["all"], out["active"] = posterior_joint(grid, oh, vh, A, s, prior, extra=extra)
    else:
        out["all"], out["active"] = posterior_joint(grid, oh, vh, A, s, prior)
    return out

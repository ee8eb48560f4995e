"""Buyer dynamics derived from a customer's feature columns, for the propensity and churn models.

Trees split one column at a time, so they approximate ratios and the classic buy-till-you-die
posterior poorly. ``BuyerDynamics`` computes them once from the stored features, by column name:

* BG/NBD (Fader, Hardie and Lee 2005) on (x, t_x, T) = (distinct purchase days - 1, days from the
  first to the last order, days since the first order), fitted on the training rows:
  ``bg_p_alive`` and ``bg_p_buy_30d`` (P(alive) x P(the Poisson clock rings within 30 days));
* purchase rhythm: ``order_rate`` (purchase days per day as a buyer), ``order_overdue``
  (days since the last order x that rate: how many purchases the customer "owes"),
  ``order_trend`` (orders in the last 30 days against the 60 before, per 30 days);
* activity rhythm (churn cuts sessions): ``event_rate`` (events per day since the first event),
  ``event_overdue`` (days since the last event x that rate), ``event_trend_30d`` and
  ``event_trend_90d`` (recent events against the lifetime rate);
* with ``latent=True``, the latent-state posterior of ``models.latent.LatentState`` (purchase rate
  and churn time from sign-up, orders and events in windows; prior fitted by empirical Bayes on
  the training rows): ``lat_p_buy`` (P(an order within 30 days)), ``lat_p_active`` (P(not
  churned)), ``lat_rate``.

Every input is an existing feature of ``features.compute``; a missing column skips the figures
that need it, so a model trained on orders only still works.
"""

from __future__ import annotations

import math

import numpy as np

_BG = ("order_days_total", "order_span_days", "days_since_last_order", "orders_total")
_EVENTS = ("events_total", "event_span_days", "days_since_last_event")
HORIZON = 30.0
_BIG = float(np.finfo(np.float64).max)  # what np.nan_to_num makes of +inf


class BuyerDynamics:
    """Column positions of the inputs and the fitted BG/NBD parameters (a plain picklable object)."""

    def __init__(self, columns: list[str], latent: bool = False):
        from models.latent import LatentState

        self.index = {c: i for i, c in enumerate(columns)}
        self.bg_params: tuple[float, float, float, float] | None = None
        self.latent = LatentState(list(columns), horizon_days=HORIZON) \
            if latent and LatentState.applicable(columns) else None

    def _has(self, names) -> bool:
        return all(n in self.index for n in names)

    def _col(self, M: np.ndarray, name: str) -> np.ndarray:
        c = M[:, self.index[name]].astype(np.float64)  # a copy
        if not np.isfinite(c).all():  # rare; np.nan_to_num costs ~10 us even on one row (the decide path)
            c = np.nan_to_num(c, nan=0.0)
        return c

    def summary(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, t_x, T, buyer) per row: BG/NBD's summary; non-buyers get x = t_x = 0, T = 1."""
        buyer = self._col(M, "orders_total") > 0
        x = np.where(buyer, np.maximum(self._col(M, "order_days_total") - 1.0, 0.0), 0.0)
        t_x = np.where(buyer, np.maximum(self._col(M, "order_span_days"), 0.0), 0.0)
        T = np.where(buyer, t_x + np.maximum(self._col(M, "days_since_last_order"), 0.0), 1.0)
        return x, t_x, np.maximum(T, np.maximum(t_x, 1e-3)), buyer

    def fit(self, M: np.ndarray, seed: int = 0, max_rows: int = 30_000) -> BuyerDynamics:
        """Fit BG/NBD on the buyers among the rows (a seeded sample of at most ``max_rows``) and the
        latent-state prior (``models.latent``) on a sample of the rows."""
        if self.latent is not None:
            self.latent.fit(M, seed=seed)
        if not self._has(_BG):
            return self
        from models.btyd import BGNBDClassifier

        x, t_x, T, buyer = self.summary(M)
        rows = np.flatnonzero(buyer)
        if len(rows) < 50:
            return self
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
        bg = BGNBDClassifier(horizon_days=HORIZON).fit(np.column_stack([x[rows], t_x[rows], T[rows]]))
        p = bg.params_
        self.bg_params = (p["r"], p["alpha"], p["a"], p["b"])
        return self

    def names(self) -> list[str]:
        out = []
        if self._has(_BG):
            out += ["order_rate", "order_overdue"]
            if self.bg_params is not None:
                out += ["bg_p_alive", "bg_p_buy_30d"]
        if self._has(("orders_30d", "orders_90d")):
            out.append("order_trend")
        if self._has(_EVENTS):
            out += ["event_rate", "event_overdue"]
            if "events_30d" in self.index:
                out.append("event_trend_30d")
            if "events_90d" in self.index:
                out.append("event_trend_90d")
        if getattr(self, "latent", None) is not None and self.latent.params is not None:
            from models.latent import NAMES

            out += list(NAMES)
        return out

    def transform(self, M: np.ndarray) -> np.ndarray:
        """(n, d) features -> (n, len(names())) derived columns."""
        if M.shape[0] == 1 and M.dtype == np.float64:
            row = self.transform_row(M[0].tolist())
            if row is not None:
                return np.array([row]) if row else np.zeros((1, 0))
        cols = []
        if self._has(_BG):
            x, t_x, T, buyer = self.summary(M)
            rate = np.where(buyer, (x + 1.0) / np.maximum(T, 1.0), 0.0)
            cols += [rate, np.where(buyer, rate * np.maximum(self._col(M, "days_since_last_order"), 0.0), np.nan)]
            if self.bg_params is not None:
                r, alpha, a, b = self.bg_params
                xm = np.where(x > 0, x, 1.0)
                odds = (a / (b + xm - 1.0)) * np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
                alive = np.where(x > 0, 1.0 / (1.0 + odds), 1.0)
                ring = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + HORIZON)))
                cols += [np.where(buyer, alive, np.nan), np.where(buyer, alive * ring, np.nan)]
        if self._has(("orders_30d", "orders_90d")):
            o30, o90 = self._col(M, "orders_30d"), self._col(M, "orders_90d")
            cols.append(o30 - (o90 - o30) / 2.0)
        if self._has(_EVENTS):
            n = self._col(M, "events_total")
            since = np.maximum(self._col(M, "days_since_last_event"), 0.0)
            age = np.maximum(self._col(M, "event_span_days") + since, 1.0)
            rate = np.where(n > 0, n / age, 0.0)
            cols += [rate, np.where(n > 0, rate * since, np.nan)]
            if "events_30d" in self.index:
                cols.append(self._col(M, "events_30d") / (30.0 * rate + 0.1))
            if "events_90d" in self.index:
                cols.append(self._col(M, "events_90d") / (90.0 * rate + 0.1))
        latent = getattr(self, "latent", None)
        if latent is not None and latent.params is not None:
            cols += list(latent.transform(M).T)
        return np.column_stack(cols) if cols else np.zeros((M.shape[0], 0))

    def transform_row(self, v: list[float]) -> list[float] | None:
        """``transform`` of ONE row given as Python floats (``M[0].tolist()``), as a list; None when
        the vector code must answer (the latent state, a division by zero). The serving path scores
        one customer at a time, where ``transform``'s ~60 numpy calls on 1-element arrays cost ~1 us
        each; this does the same IEEE operations in the same order on floats (+, -, *, / and max
        are exact-rounded alike), and the exp/log through numpy (its SIMD exp/log need not match
        libm's last bit). The same numbers as the vector code (tests/models/test_buyer_dynamics.py)."""
        if getattr(self, "latent", None) is not None and self.latent.params is not None:
            return None
        idx = self.index
        has = idx.__contains__

        def col(name: str) -> float:  # _col: NaN -> 0, +-inf -> +-max float
            c = v[idx[name]]
            if c - c == 0.0:
                return c
            return 0.0 if c != c else math.copysign(_BIG, c)

        # np.maximum(c, k) is max(k, c): Python's max keeps k unless c > k, and numpy gives its second
        # operand on a tie too (0.0 vs -0.0); c is never NaN (finite inputs, sums of them >= 0)
        out: list[float] = []
        try:
            if all(map(has, _BG)):
                buyer = col("orders_total") > 0
                since = max(0.0, col("days_since_last_order"))
                if buyer:
                    x = max(0.0, col("order_days_total") - 1.0)
                    t_x = max(0.0, col("order_span_days"))
                    T = t_x + since
                else:
                    x, t_x, T = 0.0, 0.0, 1.0
                T = max(max(1e-3, t_x), T)
                rate = (x + 1.0) / max(1.0, T) if buyer else 0.0
                out += [rate, rate * since if buyer else math.nan]
                if self.bg_params is not None:
                    r, alpha, a, b = map(float, self.bg_params)
                    if buyer:
                        lg = np.log(np.array([alpha + T, alpha + t_x, alpha + T + HORIZON])).tolist()
                        ex = np.exp(np.array([(r + x) * (lg[0] - lg[1]), (r + x) * (lg[0] - lg[2])])).tolist()
                        alive = 1.0 / (1.0 + (a / (b + x - 1.0)) * ex[0]) if x > 0 else 1.0
                        out += [alive, alive * (1.0 - ex[1])]
                    else:
                        out += [math.nan, math.nan]
            if has("orders_30d") and has("orders_90d"):
                o30, o90 = col("orders_30d"), col("orders_90d")
                out.append(o30 - (o90 - o30) / 2.0)
            if all(map(has, _EVENTS)):
                n = col("events_total")
                since = max(0.0, col("days_since_last_event"))
                age = max(1.0, col("event_span_days") + since)
                rate = n / age if n > 0 else 0.0
                out += [rate, rate * since if n > 0 else math.nan]
                if has("events_30d"):
                    out.append(col("events_30d") / (30.0 * rate + 0.1))
                if has("events_90d"):
                    out.append(col("events_90d") / (90.0 * rate + 0.1))
        except ZeroDivisionError:  # numpy gives inf/NaN there: let it
            return None
        return out

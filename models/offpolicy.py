"""Next-best-offer and send-time models, learnt off-policy from logged campaign sends.

The history's logging policy is not uniform (it favours some channels, offers and hours), so a
naive fit learns the logging policy's emphasis. Both models weight each logged send by its
inverse logging propensity (normalised to mean 1 and clipped at ``max_weight``, then normalised
again): the weighted sample stands for sends made uniformly at random over the logged actions,
which is the distribution the model is queried on when it compares actions.

Inputs are DataFrames: the customer's feature columns plus the action columns (``offer`` code,
``channel`` code, ``send_hour`` in local time, as configured).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from core.catalog import DEFAULT_CATALOG, Catalog
from core.types import SEND_HOURS
from models._validation import (
    EstimatorInputError,
    check_choice,
    check_fitted,
    check_number,
    check_vector,
    param_error,
)
from models.gbm import LightGBMBinary


def ipw_weights(propensity: np.ndarray, max_weight: float) -> np.ndarray:
    """Inverse-propensity weights (n,), mean 1, clipped at ``max_weight`` times the mean."""
    w = 1.0 / propensity
    w = w / w.mean()
    w = np.minimum(w, max_weight)
    return w / w.mean()


class _OffPolicyBinary(LightGBMBinary):
    """Shared fit for the off-policy classifiers: (X, y, propensity) -> weighted LightGBM."""

    _action_params: tuple[str, ...] = ()

    def _validate_offpolicy(self):
        check_choice(self.weighting, "weighting", self, ("ipw", "none"))
        check_number(self.max_weight, "max_weight", self, low=1.0)

    def _check_frame(self, X) -> None:
        if not isinstance(X, pd.DataFrame):
            raise param_error("X", self, "a pandas DataFrame with the action columns", type(X).__name__)
        for p in self._action_params:
            col = getattr(self, p)
            if col not in X.columns:
                raise param_error(p, self, f"a column of X (columns: {list(X.columns)[:8]}...)", col)

    def _weights(self, propensity, n):
        if self.weighting == "none":
            return np.ones(n)
        if propensity is None:
            raise EstimatorInputError(
                f"{type(self).__name__} with weighting='ipw' needs the logged 'propensity' of every row"
            )
        p = check_vector(propensity, n, self, "propensity", unit=True)
        return ipw_weights(p, self.max_weight)

    def fit(self, X, y, propensity=None, eval_set=None, callbacks=None, **kwargs):
        """X: (n, d) DataFrame of context + action columns; y: (n,) 0/1 outcome of the logged
        action; propensity: (n,) logging probability of that action, in (0, 1]. ``eval_set`` may be
        (X, y) or (X, y, propensity)."""
        self._validate_offpolicy()
        self._check_frame(X)
        w = self._weights(propensity, len(X))
        ev = None
        if eval_set is not None:
            Xv, yv = eval_set[0], eval_set[1]
            pv = eval_set[2] if len(eval_set) > 2 else None
            self._check_frame(Xv)
            wv = self._weights(pv, len(Xv)) if (pv is not None or self.weighting == "none") else None
            ev = (Xv, yv, wv)
        self._fit_extra(X, **kwargs)
        super().fit(X, y, sample_weight=w, eval_set=ev, callbacks=callbacks)
        self.weighting_ = self.weighting
        return self

    def _fit_extra(self, X, **kwargs):
        if kwargs:
            raise EstimatorInputError(f"unexpected fit arguments: {sorted(kwargs)}")

    def _with_action(self, X: pd.DataFrame, column: str, value) -> pd.DataFrame:
        Z = X.copy(deep=False)
        Z[column] = value
        return Z


class NextBestOfferModel(_OffPolicyBinary):
    """P(convert | customer, offer, channel, hour) and the expected net value of each offer.

    Learnt from logged sends with inverse-propensity weights. ``offer_values`` (n, K) is
    P(convert | x, offer k) x net value of the order under offer k (``Offer.net_value`` of the
    expected order value: the context column ``value_column`` where positive, else the mean value
    of converted sends seen in fit). ``predict`` returns the offer code of highest value, shrunk
    toward ``default_offer_`` (the offer of highest mean predicted value over the fitted rows):
    another offer is chosen only when its value beats the default's by ``min_relative_uplift``.
    The personal differences rest on few conversions, so small ones are mostly noise.
    """

    _action_params = ("offer_column",)

    def __init__(self, offer_column: str = "offer", catalog: Catalog | None = None,
                 value_column: str | None = None, weighting: str = "ipw", max_weight: float = 20.0,
                 min_relative_uplift: float = 1.0,
                 n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 8,
                 min_child_samples: int = 300, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 reg_lambda: float = 1.0, early_stopping_rounds: int | None = 30, n_jobs: int | None = None,
                 random_state: int = 0):
        super().__init__(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                         min_child_samples=min_child_samples, subsample=subsample,
                         colsample_bytree=colsample_bytree, reg_lambda=reg_lambda,
                         early_stopping_rounds=early_stopping_rounds, n_jobs=n_jobs, random_state=random_state)
        self.offer_column = offer_column
        self.catalog = catalog
        self.value_column = value_column
        self.weighting = weighting
        self.max_weight = max_weight
        self.min_relative_uplift = min_relative_uplift

    def _catalog(self) -> Catalog:
        return DEFAULT_CATALOG if self.catalog is None else self.catalog

    def fit(self, X, y, propensity=None, value=None, clicked=None, eval_set=None, callbacks=None):
        """X: (n, d) context + action columns; y: (n,) 0/1 conversion caused by the send;
        propensity: (n,) logging probability; value: (n,) conversion value (0 when none).

        With ``clicked`` (n,) 0/1 the model has two stages, each inverse-propensity weighted:
        P(click | x, offer) on every send (``booster_``, tuned and early-stopped through
        ``eval_set`` = (X, clicked, propensity)) times P(convert | click, x, offer) on the clicked
        sends (``conversion_model_``; a constant rate when too few clicks). Clicks are several times more frequent than conversions,
        so the offer's appeal is learnt from far more positives.
        """
        check_number(self.min_relative_uplift, "min_relative_uplift", self, low=0.0)
        self._fit_stages(X, y, propensity, value, clicked, eval_set, callbacks)
        # the default offer: highest mean predicted value over (a seeded sample of) the fitted rows
        rows = np.random.default_rng(self.random_state).permutation(len(X))[:5000]
        self.default_offer_ = int(np.argmax(self.offer_values(X.iloc[np.sort(rows)]).mean(axis=0)))
        return self

    def _fit_stages(self, X, y, propensity, value, clicked, eval_set, callbacks):
        if clicked is None:
            if hasattr(self, "conversion_model_"):
                del self.conversion_model_
            return super().fit(X, y, propensity=propensity, eval_set=eval_set, callbacks=callbacks, value=value)
        self._check_frame(X)
        c = check_vector(clicked, len(X), self, "clicked", binary=True)
        yy = check_vector(y, len(X), self, "y", binary=True)
        if ((yy > 0) & (c == 0)).any():
            raise param_error("y", self, "0 wherever clicked is 0 (a caused conversion follows a click)",
                              "conversions without a click")
        super().fit(X, c, propensity=propensity, eval_set=eval_set, callbacks=callbacks, value=value)
        m = c > 0
        if m.sum() < 20 or np.unique(yy[m]).size < 2:  # too few clicks to learn from: a constant rate
            self.conversion_model_ = float(yy[m].mean()) if m.any() else 0.0
            return self
        second = clone(self).set_params(early_stopping_rounds=None,
                                        min_child_samples=max(5, self.min_child_samples // 4))
        p_sub = None if propensity is None else np.asarray(propensity, dtype=np.float64)[m]
        second._fit_stages(X.loc[m].reset_index(drop=True), yy[m], p_sub,
                           None if value is None else np.asarray(value, dtype=np.float64)[m], None, None, None)
        self.conversion_model_ = second
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): column 1 is P(the send causes a conversion | x, its offer)."""
        p = super().predict_proba(X)[:, 1]
        second = getattr(self, "conversion_model_", None)
        if isinstance(second, float):
            p = p * second
        elif second is not None:
            p = p * second.predict_proba(X)[:, 1]
        return np.column_stack([1.0 - p, p])

    def _categorical(self) -> list[int]:
        return [self._feature_names().index(self.offer_column)]

    def _fit_extra(self, X, value=None):
        """``value``: (n,) gross order value of each send's conversion (0 when none)."""
        k = len(self._catalog().offers)
        codes = X[self.offer_column].to_numpy(dtype=np.float64)
        if np.isnan(codes).any() or not np.isin(codes, np.arange(k)).all():
            raise param_error("X", self, f"offer codes in 0..{k - 1} in column {self.offer_column!r}",
                              np.unique(codes)[:8].tolist())
        if self.value_column is not None and self.value_column not in X.columns:
            raise param_error("value_column", self, "a column of X or None", self.value_column)
        mean_value = None
        if value is not None:
            v = check_vector(value, len(X), self, "value", nonnegative=True)
            mean_value = float(v[v > 0].mean()) if (v > 0).any() else None
        if mean_value is None and self.value_column is not None:
            col = X[self.value_column].to_numpy(dtype=np.float64)
            ok = np.isfinite(col) & (col > 0)
            mean_value = float(col[ok].mean()) if ok.any() else None
        self.order_value_ = 1.0 if mean_value is None else mean_value
        self.n_offers_ = k
        cols = list(X.columns)
        cats = [o.category for o in self._catalog().offers]
        self.offer_index_ = {
            "offer": cols.index(self.offer_column),
            "value": None if self.value_column is None else cols.index(self.value_column),
            "category_share": [cols.index(f"order_share_{c}") if c and f"order_share_{c}" in cols else -1
                               for c in cats],
        }

    # offer attributes the trees can generalise over (rather than an opaque offer id alone): the
    # discount, the fixed cost, the offer's cost as a share of the customer's usual order, and the
    # customer's share of orders in the offer's category (1 for offers valid on any category)
    _OFFER_FEATURES = ("offer_discount", "offer_fixed_cost", "offer_cost_share", "offer_category_share")

    def _design(self, X: np.ndarray, columns) -> np.ndarray:
        idx = getattr(self, "offer_index_", None)
        if idx is None:
            return X
        offers = self._catalog().offers
        t = _offer_table(offers, idx["category_share"])
        if X.shape[0] == 1 and X.dtype == np.float64:
            # one send (serving): the same IEEE operations on floats, not ~20 numpy calls on
            # 1-element arrays; an offer code the cast below would clip (or NaN) takes the vector code
            row = X[0].tolist()
            c = row[idx["offer"]]
            if 0.0 <= c < len(offers):
                k = int(c)
                v = self.order_value_ if idx["value"] is None else row[idx["value"]]
                if not (v - v == 0.0 and v > 0):  # not finite and positive
                    v = self.order_value_
                disc, fixed, j = t.discount[k], t.fixed_cost[k], t.share_list[k]
                if v != 0.0:
                    return np.array([row + [disc, fixed, (disc * v + fixed) / v, row[j] if j >= 0 else 1.0]])
        code = np.clip(np.nan_to_num(X[:, idx["offer"]], nan=0.0).astype(np.int64), 0, len(offers) - 1)
        disc = t.discounts[code]
        fixed = t.fixed_costs[code]
        v = np.full(X.shape[0], self.order_value_) if idx["value"] is None else X[:, idx["value"]]
        v = np.where(np.isfinite(v) & (v > 0), v, self.order_value_)
        share_col = t.share_columns[code]
        cat_share = np.ones(X.shape[0])
        has = share_col >= 0
        if has.any():
            cat_share[has] = X[np.flatnonzero(has), share_col[has]]
        return np.column_stack([X, disc, fixed, (disc * v + fixed) / v, cat_share])

    def _model_feature_names(self) -> list[str]:
        return self._feature_names() + list(self._OFFER_FEATURES)

    def expected_order_value(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) gross value of the order a conversion would bring."""
        check_fitted(self, "order_value_")
        if self.value_column is None:
            return np.full(len(X), self.order_value_)
        col = X[self.value_column].to_numpy(dtype=np.float64)
        return np.where(np.isfinite(col) & (col > 0), col, self.order_value_)

    def conversion_matrix(self, X: pd.DataFrame) -> np.ndarray:
        """(n, K) P(convert | x, offer k) with the rows' other action columns as given."""
        self._check_frame(X)
        check_fitted(self, "booster_")
        n, k = len(X), self.n_offers_
        big = pd.concat([self._with_action(X, self.offer_column, j) for j in range(k)], ignore_index=True)
        return self.predict_proba(big)[:, 1].reshape(k, n).T

    def offer_values(self, X: pd.DataFrame) -> np.ndarray:
        """(n, K) expected net conversion value of each offer of the catalog."""
        p = self.conversion_matrix(X)
        v = self.expected_order_value(X)
        return p * _net_values(self._catalog(), v)

    def predict(self, X) -> np.ndarray:
        """(n,) code of the offer with the highest expected net value, or ``default_offer_`` unless
        the best beats it by ``min_relative_uplift`` (relative to the default's value)."""
        v = self.offer_values(X)
        best = np.argmax(v, axis=1)
        default = getattr(self, "default_offer_", None)
        if default is None:
            return best
        rows = np.arange(len(best))
        keep = v[rows, best] > (1.0 + self.min_relative_uplift) * v[:, default]
        return np.where(keep, best, default)


class _OfferTable(NamedTuple):
    discounts: np.ndarray  # (K,) as the vector design indexes them
    fixed_costs: np.ndarray
    share_columns: np.ndarray  # (K,) input column of the customer's share of the offer's category, -1: none
    discount: list  # the same as Python floats / ints, for one row
    fixed_cost: list
    share_list: list


#: per catalog (its frozen offers tuple, by identity) and category-share columns: built once, not
#: per design call
_OFFER_TABLES: dict[tuple[int, int], tuple] = {}


def _offer_table(offers: tuple, share: list[int]) -> _OfferTable:
    hit = _OFFER_TABLES.get((id(offers), id(share)))
    if hit is not None and hit[0] is offers and hit[1] is share:
        return hit[2]
    disc, fixed, cols = np.array([o.discount for o in offers]), np.array([o.fixed_cost for o in offers]), \
        np.array(share)
    t = _OfferTable(disc, fixed, cols, [float(d) for d in disc.tolist()], [float(f) for f in fixed.tolist()],
                    [int(j) for j in cols.tolist()])
    if len(_OFFER_TABLES) > 64:
        _OFFER_TABLES.clear()
    _OFFER_TABLES[(id(offers), id(share))] = (offers, share, t)  # holds both: the ids stay theirs
    return t


def _net_values(catalog: Catalog, order_value: np.ndarray) -> np.ndarray:
    """(n, K) Offer.net_value for each offer (vectorised; net_value is affine in the order value)."""
    cols = []
    for o in catalog.offers:
        a = o.net_value(1.0) - o.net_value(0.0)
        b = o.net_value(0.0)
        cols.append(a * order_value + b)
    return np.column_stack(cols)


class SendTimeModel(_OffPolicyBinary):
    """P(open | customer, channel, local send hour), learnt off-policy from logged sends.

    ``hour_profile`` optionally names the context columns that hold the customer's activity
    share per local-hour bucket (equal-width buckets covering 0..23 in order, e.g. 24 hourly or
    6 four-hour columns): the model then also sees the activity share and its rank at the
    candidate hour, which lets trees compare hours per customer. ``reference_hours`` names
    context columns holding a typical local hour of the customer (peak or mean activity hour):
    the model also sees the circular distance in hours from the candidate hour to each. With
    ``hour_as_feature=False`` (and a profile or reference hours) the candidate hour enters only
    through those per-customer figures, not as a raw column: a population-wide hour effect then
    cannot override the customer's own hours (seed 1 x 20k: gap closed 0.70 -> 0.74).
    ``hour_scores`` gives (n, H) open
    probabilities over ``hours``; ``predict`` returns the best hour per row.
    """

    _action_params = ("hour_column",)

    def __init__(self, hour_column: str = "send_hour", hours: tuple[int, ...] = SEND_HOURS,
                 hour_profile: tuple[str, ...] | None = None, reference_hours: tuple[str, ...] | None = None,
                 hour_as_feature: bool = True, weighting: str = "ipw", max_weight: float = 20.0, n_estimators: int = 300,
                 learning_rate: float = 0.05, num_leaves: int = 31, min_child_samples: int = 100,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                 early_stopping_rounds: int | None = 30, n_jobs: int | None = None, random_state: int = 0):
        super().__init__(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                         min_child_samples=min_child_samples, subsample=subsample,
                         colsample_bytree=colsample_bytree, reg_lambda=reg_lambda,
                         early_stopping_rounds=early_stopping_rounds, n_jobs=n_jobs, random_state=random_state)
        self.hour_column = hour_column
        self.hours = hours
        self.hour_profile = hour_profile
        self.reference_hours = reference_hours
        self.hour_as_feature = hour_as_feature
        self.weighting = weighting
        self.max_weight = max_weight

    def _validate_offpolicy(self):
        super()._validate_offpolicy()
        hours = list(self.hours) if self.hours is not None else []
        if not hours or any((not isinstance(h, int | np.integer)) or not 0 <= h <= 23 for h in hours):
            raise param_error("hours", self, "a non-empty tuple of local hours in 0..23", self.hours)
        if self.hour_profile is not None and (len(self.hour_profile) == 0 or 24 % len(self.hour_profile)):
            raise param_error("hour_profile", self, "None or 1, 2, 3, 4, 6, 8, 12 or 24 column names",
                              self.hour_profile)

    def _fit_extra(self, X):
        for col in (self.hour_profile or ()):
            if col not in X.columns:
                raise param_error("hour_profile", self, "columns of X", col)
        for col in (self.reference_hours or ()):
            if col not in X.columns:
                raise param_error("reference_hours", self, "columns of X", col)
        self.feature_index_ = self._feature_index(list(X.columns))

    def _feature_index(self, columns):
        return {
            "hour": columns.index(self.hour_column),
            "profile": [columns.index(c) for c in (self.hour_profile or ())],
            "reference": [columns.index(c) for c in (self.reference_hours or ())],
        }

    def _design(self, X: np.ndarray, columns) -> np.ndarray:
        idx = getattr(self, "feature_index_", None)
        if idx is None:
            return X
        hour = X[:, idx["hour"]]
        if not getattr(self, "hour_as_feature", True) and (idx["profile"] or idx["reference"]):
            # the candidate hour enters only through its fit with the customer's own hours
            X = X.copy()
            X[:, idx["hour"]] = 0.0
        extra = []
        if idx["profile"]:
            prof = X[:, idx["profile"]]
            width = 24 // len(idx["profile"])
            b = np.clip(np.nan_to_num(hour, nan=0.0) // width, 0, len(idx["profile"]) - 1).astype(int)
            at = prof[np.arange(X.shape[0]), b]
            rank = (prof > at[:, None]).sum(axis=1).astype(np.float64)
            total = np.nansum(prof, axis=1)
            share = np.where(total > 0, at / np.where(total > 0, total, 1.0), np.nan)
            extra += [at, share, rank]
        for j in idx["reference"]:
            d = np.abs(hour - X[:, j]) % 24
            extra.append(np.minimum(d, 24 - d))
        return np.column_stack([X, *extra]) if extra else X

    def _model_feature_names(self) -> list[str]:
        names = self._feature_names()
        if self.hour_profile:
            names += ["activity_at_send_hour", "activity_share_at_send_hour", "activity_rank_at_send_hour"]
        names += [f"hours_from_{c}" for c in (self.reference_hours or ())]
        return names

    def _monotone(self) -> list[int] | None:
        # the chance of an open falls with the distance from the customer's usual hours
        names = self._model_feature_names()
        return [-1 if n.startswith("hours_from_") else 0 for n in names] if self.reference_hours else None

    def hour_scores(self, X: pd.DataFrame, hours: tuple[int, ...] | None = None) -> np.ndarray:
        """(n, H) P(open) at each local hour of ``hours`` (default: the model's ``hours``)."""
        self._check_frame(X)
        check_fitted(self, "booster_")
        hours = tuple(self.hours if hours is None else hours)
        n = len(X)
        big = pd.concat([self._with_action(X, self.hour_column, h) for h in hours], ignore_index=True)
        return self.predict_proba(big)[:, 1].reshape(len(hours), n).T

    def predict(self, X) -> np.ndarray:
        """(n,) best local send hour per row. Trees score in steps, so several hours often tie
        exactly; a tie goes to the hour nearest the first reference hour (else the earliest)."""
        scores = self.hour_scores(X)
        if self.reference_hours:
            ref = X[self.reference_hours[0]].to_numpy(dtype=np.float64)
            d = np.abs(np.asarray(self.hours, dtype=np.float64)[None, :] - ref[:, None]) % 24
            d = np.where(np.isfinite(d), np.minimum(d, 24 - d), 0.0)
            best = scores.max(axis=1, keepdims=True)
            scores = np.where(scores >= best, -d, -np.inf)
        return np.asarray(self.hours)[np.argmax(scores, axis=1)]


class BestSingleOfferBaseline(BaseEstimator):
    """The offer a marketer would send to everyone: the one with the highest self-normalised IPS
    estimate of value per send in the logged history (not the most *sent* offer, which is the
    logging policy's favourite)."""

    def __init__(self, n_offers: int | None = None):
        self.n_offers = n_offers

    def fit(self, offer, reward, propensity):
        """offer: (n,) int codes; reward: (n,) value of each send; propensity: (n,) in (0, 1]."""
        offer = np.asarray(offer, dtype=np.int64)
        n = offer.size
        reward = check_vector(reward, n, self, "reward")
        p = check_vector(propensity, n, self, "propensity", unit=True)
        k = self.n_offers or int(offer.max()) + 1
        w = 1.0 / p
        num = np.bincount(offer, weights=w * reward, minlength=k)
        den = np.bincount(offer, weights=w, minlength=k)
        self.values_ = np.where(den > 0, num / np.where(den > 0, den, 1.0), -np.inf)
        self.offer_ = int(np.argmax(self.values_))
        return self

    def predict(self, n: int) -> np.ndarray:
        check_fitted(self, "offer_")
        return np.full(n, self.offer_, dtype=np.int64)


class FixedHourBaseline(BaseEstimator):
    """Send at one fixed local hour (10:00) to everyone."""

    def __init__(self, hour: int = 10):
        self.hour = hour

    def fit(self, *args, **kwargs):
        check_number(self.hour, "hour", self, integer=True, low=0, high=23)
        self.hour_ = int(self.hour)
        return self

    def predict(self, n: int) -> np.ndarray:
        check_fitted(self, "hour_")
        return np.full(n, self.hour_, dtype=np.int64)

"""Latent traits of the simulated persons: drawn once, vectorised, from one generator.

``sample_persons`` returns the truth table (one row per person, documented columns; written to
``truth/persons.parquet``). ``Traits`` is the same data as plain arrays, the form the response
function and the history generator compute with; it is built from the table, so a world loaded
from disk computes exactly what the generating world did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.catalog import Catalog, OfferKind
from core.types import CATEGORIES, CHANNELS
from world.config import WorldConfig

DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
CH = tuple(c.value for c in CHANNELS)  # column suffixes, in channel-code order

#: Documentation of every column of truth/persons.parquet (copied into world/README.md).
PERSON_COLUMNS: dict[str, str] = {
    "person_id": "int64, 0..N-1: the person (the unit every raw record belongs to)",
    "timezone": "IANA time zone the person lives in",
    "city": "city of residence (true, current)",
    "signup_at": "when the person became a customer (UTC); no purchases or activity before",
    "has_crm": "has a CRM member record (else a guest: never targeted by the logged campaigns)",
    "digital": "latent digital affinity (standard normal x digital_sd): app/WeChat reach, activity",
    "purchase_rate": "organic purchase rate while active, orders per day",
    "churn_hazard": "churn hazard per day (from signup)",
    "churn_at": "when the person goes inactive (may lie after the history); then purchase and "
                "activity rates drop and messages are barely answered",
    "order_value": "mean gross order value of the person (before category multipliers)",
    **{f"pref_{c}": f"preference for category {c} (Dirichlet share; orders and views follow it)"
       for c in CATEGORIES},
    "price_sensitivity": "how much a percent-off discount lifts click and conversion (gamma)",
    "shipping_sensitivity": "how much free shipping lifts them, relative to order value (gamma)",
    "loyalty": "how much loyalty points lift them (gamma)",
    "novelty": "appeal of content offers such as new arrivals (normal, logit units)",
    "appeal_<offer>": "derived: the offer's appeal for the person (logit units), from the above",
    **{f"key_on_file_{c}": f"the brand holds a usable key for {c} (valid phone / e-mail, WeChat "
                           "unionid, app install)" for c in CH},
    **{f"reachable_{c}": f"a {c} message can be delivered (live number/mailbox, follows the official "
                         "account, push enabled)" for c in CH},
    **{f"consent_{c}": f"opted in to {c} marketing at the start (the CRM export also reflects "
                       "unsubscribes during the history)" for c in CH},
    **{f"affinity_{c}": f"open log-odds offset on {c}" for c in CH},
    "phone_malformed": "the phone on file is malformed (10 digits): not a key, not reachable",
    "email_malformed": "the e-mail on file is malformed (no '@'): not a key, not reachable",
    "peak_hour": "local hour of peak activity (float, 0-24)",
    "hour_spread": "sd of active hours around the peak, hours",
    "hour_sensitivity": "open log-odds swing between the peak hour and far from it",
    "fatigue_sensitivity": "open log-odds lost per unit of fatigue (recent delivered messages, decaying)",
    "unsubscribe_sensitivity": "unsubscribe log-odds offset",
    "session_rate": "app/web/mini-program sessions per day while active",
}


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _gamma(rng: np.random.Generator, mean: float, shape: float, n: int) -> np.ndarray:
    if mean == 0:
        return np.zeros(n)
    return rng.gamma(shape, mean / shape, n)


def _round_s(ns: np.ndarray) -> np.ndarray:
    return (ns // 10**9) * 10**9


def offer_appeal(config: WorldConfig, catalog: Catalog, t: dict[str, np.ndarray]) -> np.ndarray:
    """(N, n_offers) appeal of each catalog offer for each person, logit units."""
    r = config.response
    n = len(t["price_sensitivity"])
    k = len(CATEGORIES)
    out = np.zeros((n, len(catalog.offers)))
    for j, o in enumerate(catalog.offers):
        if o.kind == OfferKind.PERCENT_OFF:
            a = r.percent_off_scale * t["price_sensitivity"] * -np.expm1(-o.discount / r.discount_saturation)
        elif o.kind == OfferKind.FREE_SHIPPING:
            a = r.free_shipping_scale * o.fixed_cost / t["order_value"] * t["shipping_sensitivity"]
        elif o.kind == OfferKind.POINTS:
            a = r.points_scale * o.discount * t["loyalty"]
        else:
            a = t["novelty"].copy()
        if o.category is not None:
            pref = t["pref"][:, CATEGORIES.index(o.category)]
            a = a + r.category_fit_weight * np.clip(np.log(np.maximum(pref * k, 1e-12)), -3.0, 1.0)
        out[:, j] = a
    return out


def sample_persons(config: WorldConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Draw every latent trait of ``config.customers`` persons. Returns the truth table."""
    n = config.customers
    pop, pur, chn, rsp, act = (config.population, config.purchases, config.channels, config.response,
                               config.activity)
    start_ns = pd.Timestamp(config.history_start).value

    tz_names = list(pop.timezones)
    tz_p = np.array([pop.timezones[z] for z in tz_names], dtype=np.float64)
    tz_idx = rng.choice(len(tz_names), size=n, p=tz_p / tz_p.sum())
    city = np.empty(n, dtype=object)
    for i, z in enumerate(tz_names):
        m = tz_idx == i
        cities = np.array(pop.cities[z], dtype=object)
        city[m] = cities[rng.integers(0, len(cities), m.sum())]

    during = rng.random(n) < pop.signup_during_history_share
    before_days = rng.random(n) * pop.signup_before_days
    during_days = rng.random(n) * config.days
    signup = np.where(during, start_ns + during_days * DAY_NS, start_ns - before_days * DAY_NS)
    signup = _round_s(signup.astype(np.int64))
    has_crm = rng.random(n) < pop.crm_share
    digital = rng.standard_normal(n) * pop.digital_sd

    rate = np.minimum(_gamma(rng, pur.mean_daily_rate, pur.rate_shape, n), pur.max_daily_rate)
    hazard = _gamma(rng, config.churn.mean_hazard, config.churn.hazard_shape, n)
    life_days = np.minimum(rng.exponential(1.0, n) / np.maximum(hazard, 1e-12), 36_500.0)
    churn_at = _round_s(signup + (life_days * DAY_NS).astype(np.int64))
    order_value = pur.mean_order_value * np.exp(
        rng.standard_normal(n) * pur.order_value_person_sigma - 0.5 * pur.order_value_person_sigma**2)
    pop_w = np.array([pur.category_popularity[c] for c in CATEGORIES], dtype=np.float64)
    alpha = pur.category_concentration * len(CATEGORIES) * pop_w / pop_w.sum()
    pref = rng.dirichlet(alpha, n)
    pref = np.maximum(pref, 1e-9)
    pref /= pref.sum(axis=1, keepdims=True)

    price = _gamma(rng, rsp.price_sensitivity_mean, rsp.price_sensitivity_shape, n)
    shipping = _gamma(rng, rsp.shipping_sensitivity_mean, 2.0, n)
    loyalty = _gamma(rng, rsp.loyalty_mean, 1.0, n)
    novelty = rsp.novelty_mean + rsp.novelty_sd * rng.standard_normal(n)

    # reachability: a key on file, then a live endpoint; WeChat and app rise with the digital trait
    d = config.dirt
    on_file = np.zeros((n, 4), dtype=bool)
    for j, c in enumerate(CHANNELS):
        base = logit(np.clip(chn.key_on_file[c], 1e-9, 1 - 1e-9))
        load = 0.8 if j >= 2 else 0.0
        on_file[:, j] = rng.random(n) < sigmoid(base + load * digital)
    phone_written = on_file[:, 0] | ~has_crm  # guests are always known by a phone
    phone_bad = phone_written & has_crm & (rng.random(n) < d.invalid_phone_share)
    email_bad = on_file[:, 1] & (rng.random(n) < d.invalid_email_share)
    on_file[:, 0] = phone_written & ~phone_bad
    email_written = on_file[:, 1].copy()
    on_file[:, 1] = email_written & ~email_bad
    reach = on_file & (rng.random((n, 4)) < np.array([chn.reachable[c] for c in CHANNELS]))
    consent = rng.random((n, 4)) < np.array([chn.consent[c] for c in CHANNELS])
    aff = rng.standard_normal((n, 4)) * np.array([chn.affinity_sd[c] for c in CHANNELS]) \
        + np.outer(digital, [chn.affinity_digital[c] for c in CHANNELS])

    hours = np.array(list(rsp.peak_hours), dtype=np.float64)
    hw = np.array(list(rsp.peak_hours.values()), dtype=np.float64)
    peak = np.mod(hours[rng.choice(len(hours), size=n, p=hw / hw.sum())] + rng.standard_normal(n), 24.0)
    spread = rsp.hour_spread_min + (rsp.hour_spread_max - rsp.hour_spread_min) * rng.random(n)
    hour_sens = _gamma(rng, rsp.hour_sensitivity_mean, 3.0, n)
    fatigue_sens = _gamma(rng, rsp.fatigue_sensitivity_mean, 2.0, n)
    unsub_sens = rsp.unsubscribe_sensitivity_sd * rng.standard_normal(n)
    session = _gamma(rng, act.session_rate, act.session_rate_shape, n) \
        * np.sqrt(np.maximum(rate, 1e-6) / pur.mean_daily_rate) ** 0.8 * np.exp(0.3 * digital)

    cols: dict[str, object] = {
        "person_id": np.arange(n, dtype=np.int64),
        "timezone": np.array(tz_names, dtype=object)[tz_idx],
        "city": city,
        "signup_at": pd.to_datetime(signup, utc=True),
        "has_crm": has_crm,
        "digital": digital,
        "purchase_rate": rate,
        "churn_hazard": hazard,
        "churn_at": pd.to_datetime(churn_at, utc=True),
        "order_value": order_value,
    }
    for j, c in enumerate(CATEGORIES):
        cols[f"pref_{c}"] = pref[:, j]
    cols.update(price_sensitivity=price, shipping_sensitivity=shipping, loyalty=loyalty, novelty=novelty)
    appeal = offer_appeal(config, config.catalog, {
        "price_sensitivity": price, "shipping_sensitivity": shipping, "loyalty": loyalty,
        "novelty": novelty, "order_value": order_value, "pref": pref})
    for j, oid in enumerate(config.catalog.ids):
        cols[f"appeal_{oid}"] = appeal[:, j]
    for j, c in enumerate(CH):
        cols[f"key_on_file_{c}"] = on_file[:, j]
    for j, c in enumerate(CH):
        cols[f"reachable_{c}"] = reach[:, j]
    for j, c in enumerate(CH):
        cols[f"consent_{c}"] = consent[:, j]
    for j, c in enumerate(CH):
        cols[f"affinity_{c}"] = aff[:, j]
    cols.update(
        phone_malformed=phone_bad, email_malformed=email_bad, peak_hour=peak, hour_spread=spread,
        hour_sensitivity=hour_sens, fatigue_sensitivity=fatigue_sens, unsubscribe_sensitivity=unsub_sens,
        session_rate=session,
    )
    return pd.DataFrame(cols)


@dataclass(frozen=True)
class Traits:
    """The persons' traits as arrays (index = person_id). Shapes: (N,) unless said."""

    n: int
    tz_idx: np.ndarray  # int16 index into config.timezone_names
    city: np.ndarray  # object
    signup_ns: np.ndarray  # int64
    has_crm: np.ndarray
    digital: np.ndarray
    purchase_rate: np.ndarray
    churn_ns: np.ndarray  # int64
    order_value: np.ndarray
    pref: np.ndarray  # (N, K) category preferences
    pref_cum: np.ndarray  # (N, K) cumulative, for sampling
    appeal: np.ndarray  # (N, n_offers)
    key_on_file: np.ndarray  # (N, 4) bool
    reachable: np.ndarray  # (N, 4) bool
    consent: np.ndarray  # (N, 4) bool
    affinity: np.ndarray  # (N, 4)
    phone_malformed: np.ndarray
    email_malformed: np.ndarray
    peak_hour: np.ndarray
    hour_spread: np.ndarray
    hour_sensitivity: np.ndarray
    fatigue_sensitivity: np.ndarray
    unsubscribe_sensitivity: np.ndarray
    session_rate: np.ndarray
    organic_gross: np.ndarray  # expected gross value of an organic order: order_value x sum(pref x mult)

    @classmethod
    def from_frame(cls, persons: pd.DataFrame, config: WorldConfig) -> Traits:
        tz_names = config.timezone_names
        tz_map = {z: i for i, z in enumerate(tz_names)}
        tz_idx = persons["timezone"].map(tz_map)
        if tz_idx.isna().any():
            raise ValueError("persons carry a time zone that is not in the config")
        pref = persons[[f"pref_{c}" for c in CATEGORIES]].to_numpy(np.float64)
        mult = np.array([config.purchases.category_value[c] for c in CATEGORIES])

        def col(prefix: str) -> np.ndarray:
            return persons[[f"{prefix}_{c}" for c in CH]].to_numpy()

        def ns(name: str) -> np.ndarray:
            return persons[name].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)

        ov = persons["order_value"].to_numpy(np.float64)
        return cls(
            n=len(persons),
            tz_idx=tz_idx.to_numpy(np.int16),
            city=persons["city"].to_numpy(object),
            signup_ns=ns("signup_at"),
            has_crm=persons["has_crm"].to_numpy(bool),
            digital=persons["digital"].to_numpy(np.float64),
            purchase_rate=persons["purchase_rate"].to_numpy(np.float64),
            churn_ns=ns("churn_at"),
            order_value=ov,
            pref=pref,
            pref_cum=np.cumsum(pref, axis=1),
            appeal=persons[[f"appeal_{o}" for o in config.catalog.ids]].to_numpy(np.float64),
            key_on_file=col("key_on_file").astype(bool),
            reachable=col("reachable").astype(bool),
            consent=col("consent").astype(bool),
            affinity=col("affinity").astype(np.float64),
            phone_malformed=persons["phone_malformed"].to_numpy(bool),
            email_malformed=persons["email_malformed"].to_numpy(bool),
            peak_hour=persons["peak_hour"].to_numpy(np.float64),
            hour_spread=persons["hour_spread"].to_numpy(np.float64),
            hour_sensitivity=persons["hour_sensitivity"].to_numpy(np.float64),
            fatigue_sensitivity=persons["fatigue_sensitivity"].to_numpy(np.float64),
            unsubscribe_sensitivity=persons["unsubscribe_sensitivity"].to_numpy(np.float64),
            session_rate=persons["session_rate"].to_numpy(np.float64),
            organic_gross=ov * (pref @ mult),
        )


def sample_categories(pref_cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draws: row i picks the first category whose cumulative preference exceeds u[i].
    pref_cum: (n, K); u: (n,) uniforms. Returns (n,) int8."""
    k = pref_cum.shape[1]
    return np.minimum((pref_cum < u[:, None]).sum(axis=1), k - 1).astype(np.int8)

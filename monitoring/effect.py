"""The effect of the decisions, from a joined decision-log window (``monitoring.logdata.read_window``).

Definitions (every money figure in currency units; the reward is ``policies.reward``'s):

* per channel / offer / policy: ``decisions``, ``sends``, ``conversions`` (attributed within the
  attribution window), ``revenue`` (sum of their net value), ``channel_cost`` (cost of the sends),
  ``unsubscribes``, ``reward`` (sum), and ``roi = (revenue - channel_cost) / channel_cost``: the
  *attributed* return, which credits every conversion in the window to the send before it
  (organic purchases included), so it overstates the causal return; the causal figure is
  ``incremental_roi`` from the holdout.
* holdout lift: the holdout (``holdout=True``, never contacted) and the treated (everyone else) are
  split per customer by a stable hash, so the customer is the unit of randomisation. The figure
  is the mean per **customer-day** (a customer's decisions on one UTC day) of ``reward``, ``value``
  and ``converted`` in each group; the difference treated - holdout gets a normal interval with a
  cluster-robust standard error (customers as clusters: delta method for the ratio
  sum / customer-days, which also covers customers with different numbers of days).
  ``incremental_roi = (lift of value x treated customer-days - channel cost) / channel cost``.
* A/B split: decisions carry ``ab_arm``; the holdout is left out (it is never contacted whatever its
  arm). The figure is the value (sum of reward) per customer over the window in each arm; each arm
  is compared with the control arm by Welch's t-test (unequal variances, Welch-Satterthwaite degrees of
  freedom): difference, t interval and two-sided p-value (identical to
  ``scipy.stats.ttest_ind(..., equal_var=False)``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from policies.log import channel_codes
from policies.reward import RewardConfig

LIFT_METRICS: tuple[str, ...] = ("reward", "value", "converted")


def channel_cost(frame: pd.DataFrame, reward: RewardConfig) -> np.ndarray:
    """(n,) cost of each decision's send (0 for a no-send)."""
    codes, uniques = pd.factorize(frame["channel"], use_na_sentinel=True)  # one lookup per distinct channel
    codes = np.array([*channel_codes(list(uniques)), -1], dtype=np.int8)[codes]
    return np.where(codes >= 0, reward.cost_vector()[np.maximum(codes, 0)], 0.0)


def money_by(frame: pd.DataFrame, by: str, reward: RewardConfig) -> list[dict]:
    """One row per value of ``by`` (no-sends under ``no_send`` when ``by`` is channel or offer)."""
    if frame.empty:
        return []
    key = frame[by].astype(object).where(frame[by].notna(), "no_send")
    work = pd.DataFrame({
        "key": key.to_numpy(), "sent": frame["sent"].to_numpy(), "converted": frame["converted"].to_numpy(),
        "value": frame["value"].to_numpy(), "cost": channel_cost(frame, reward),
        "unsubscribed": frame["unsubscribed"].to_numpy(), "reward": frame["reward"].to_numpy(),
    })
    g = work.groupby("key", sort=True)
    out = []
    for name, part in g:
        cost = float(part["cost"].sum())
        revenue = float(part["value"].sum())
        out.append({
            by: str(name), "decisions": int(len(part)), "sends": int(part["sent"].sum()),
            "conversions": int(part["converted"].sum()), "revenue": revenue, "channel_cost": cost,
            "unsubscribes": int(part["unsubscribed"].sum()),
            "unsubscribe_cost": float(part["unsubscribed"].sum() * reward.unsubscribe_penalty),
            "reward": float(part["reward"].sum()),
            "reward_per_decision": float(part["reward"].mean()),
            "conversion_rate": float(part["converted"].mean()),
            "roi": (revenue - cost) / cost if cost > 0 else None,
        })
    return out


def cluster_mean(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Ratio mean ``sum(sums) / sum(counts)`` over k clusters and its delta-method standard error.

    sums, counts: (k,) per cluster (counts > 0). With equal counts this is the mean of the
    cluster means and the usual standard error of a mean (with the k / (k - 1) correction).
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    k = len(sums)
    total = counts.sum()
    if k == 0 or total <= 0:
        return math.nan, math.nan
    mean = sums.sum() / total
    if k < 2:
        return float(mean), math.nan
    resid = sums - mean * counts
    var = (resid**2).sum() / total**2 * k / (k - 1)
    return float(mean), float(math.sqrt(var))


def _codes(frame: pd.DataFrame) -> np.ndarray:
    """(n,) int64 customer codes (equal ids, equal codes): ``customer_code`` when the frame has it
    (``monitoring.logdata.read_window`` adds it), else factorised ``customer_id``."""
    if "customer_code" in frame:
        return frame["customer_code"].to_numpy(dtype=np.int64)
    return pd.factorize(frame["customer_id"])[0].astype(np.int64)


def _day_numbers(frame: pd.DataFrame) -> np.ndarray:
    """(n,) int64 UTC day number of each decision (days since 1970-01-01)."""
    return frame["decided_at"].array.asi8 // 86_400_000_000_000  # UTC nanoseconds, whatever the tz


def holdout_lifts(frame: pd.DataFrame, metrics: tuple[str, ...] = LIFT_METRICS, level: float = 0.95) -> dict:
    """:func:`holdout_lift` of several metrics, sharing the work: ``{metric: result}``.

    Clusters are (customer, group) pairs; a cluster's sum is the sum of the metric over its
    decisions and its size the number of distinct UTC days with a decision (vectorised: one
    np.unique of (cluster, day) keys, then np.bincount per metric).
    """
    hold = frame["holdout"].to_numpy(bool)
    if len(frame):
        cluster = _codes(frame) * 2 + hold
        day = _day_numbers(frame)
        day = day - day.min()
        n_days = int(day.max()) + 1
        k = int(cluster.max()) + 1
        days = np.bincount(np.unique(cluster * n_days + day) // n_days, minlength=k)
    else:
        cluster, days, k = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    present = days > 0
    in_group = {"treated": present & (np.arange(k) % 2 == 0), "holdout": present & (np.arange(k) % 2 == 1)}
    z = stats.norm.ppf(0.5 + level / 2)
    out = {}
    for metric in metrics:
        sums = np.bincount(cluster, weights=frame[metric].to_numpy(dtype=np.float64), minlength=k) if k else days
        groups = {}
        for name, sel in in_group.items():
            mean, se = cluster_mean(sums[sel], days[sel])
            groups[name] = {"mean": mean, "se": se, "ci": [mean - z * se, mean + z * se],
                            "customers": int(sel.sum()), "customer_days": int(days[sel].sum())}
        t, h = groups["treated"], groups["holdout"]
        lift = t["mean"] - h["mean"]
        se = math.sqrt(t["se"] ** 2 + h["se"] ** 2) if math.isfinite(t["se"]) and math.isfinite(h["se"]) else math.nan
        p = float(2 * stats.norm.sf(abs(lift) / se)) if math.isfinite(se) and se > 0 else math.nan
        out[metric] = {
            "metric": metric, "unit": "customer-day", "level": level,
            "method": "difference of means per customer-day; normal interval, cluster-robust (delta-method) "
                      "standard errors with customers as clusters",
            "treated": t, "holdout": h, "lift": lift, "se": se, "ci": [lift - z * se, lift + z * se], "p_value": p,
            "relative_lift": lift / h["mean"] if h["mean"] not in (0.0,) and math.isfinite(h["mean"]) else math.nan,
        }
    return out


def holdout_lift(frame: pd.DataFrame, metric: str = "reward", level: float = 0.95) -> dict:
    """Treated minus holdout mean ``metric`` per customer-day, with a cluster-robust normal interval.

    Returns treated / holdout ``{mean, se, ci, customers, customer_days}``, ``lift``, ``se``,
    ``ci`` ([low, high]), ``p_value`` (two-sided, normal), ``relative_lift`` (lift / holdout mean).
    Figures are NaN (null in JSON) when a group is empty.
    """
    return holdout_lifts(frame, (metric,), level)[metric]


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Welch's two-sample t-test of mean(a) - mean(b): ``difference``, ``se``, ``df``, ``t``,
    ``ci`` (t interval at ``level``), ``p_value`` (two-sided)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = len(a), len(b)
    diff = float(a.mean() - b.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return {"difference": diff, "se": math.nan, "df": math.nan, "t": math.nan, "ci": [math.nan, math.nan],
                "p_value": math.nan}
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return {"difference": diff, "se": 0.0, "df": math.nan, "t": math.nan, "ci": [diff, diff],
                "p_value": 1.0 if diff == 0 else 0.0}
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    q = stats.t.ppf(0.5 + level / 2, df)
    return {"difference": diff, "se": se, "df": float(df), "t": float(t), "ci": [diff - q * se, diff + q * se],
            "p_value": float(2 * stats.t.sf(abs(t), df))}


def ab_test(frame: pd.DataFrame, level: float = 0.95, control: str | None = None, metric: str = "reward") -> dict | None:
    """The A/B split of the window: value per customer (sum of ``metric``) per arm, and each arm
    against ``control`` (default: first arm in sort order). None when no decision carries an arm.
    Customers seen in several arms are left out (counted in ``mixed_customers``)."""
    treat = frame[~frame["holdout"].to_numpy(bool) & frame["ab_arm"].notna().to_numpy()]
    if treat.empty:
        return None
    cust = _codes(treat)
    arm_codes, arm_names = pd.factorize(treat["ab_arm"].astype(str).to_numpy())
    n_arms = len(arm_names)
    keys, inverse = np.unique(cust * n_arms + arm_codes, return_inverse=True)
    key_value = np.bincount(inverse.ravel(), weights=treat[metric].to_numpy(dtype=np.float64), minlength=len(keys))
    key_cust, key_arm = keys // n_arms, keys % n_arms
    arms_per_customer = np.bincount(key_cust, minlength=int(cust.max()) + 1)
    single = arms_per_customer[key_cust] == 1
    mixed = int((arms_per_customer > 1).sum())
    per_arm = {str(arm_names[j]): key_value[single & (key_arm == j)] for j in range(n_arms)}
    per_arm = {a: v for a, v in per_arm.items() if len(v)}
    arms = sorted(per_arm)
    if not arms:
        return None
    control = control if control in arms else arms[0]
    z_arm = {}
    for arm in arms:
        v = per_arm[arm]
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        q = stats.t.ppf(0.5 + level / 2, max(len(v) - 1, 1))
        z_arm[arm] = {"customers": int(len(v)), "value_per_customer": float(v.mean()), "se": se,
                      "ci": [float(v.mean() - q * se), float(v.mean() + q * se)]}
    comparisons = []
    for arm in arms:
        if arm == control:
            continue
        res = welch(per_arm[arm], per_arm[control], level)
        comparisons.append({"arm": arm, "control": control, **res})
    return {"metric": metric, "unit": "customer (sum over the window)", "level": level,
            "method": "Welch's t-test (unequal variances), two-sided", "control": control, "arms": z_arm,
            "comparisons": comparisons, "mixed_customers": mixed}


def daily_lift(frame: pd.DataFrame, metric: str = "reward") -> list[dict]:
    """Per UTC day: mean ``metric`` per customer-day of the treated and of the holdout."""
    if frame.empty:
        return []
    cust = _codes(frame)
    day = _day_numbers(frame)
    d0 = int(day.min())
    day = day - d0
    n_days = int(day.max()) + 1
    hold = frame["holdout"].to_numpy(bool).astype(np.int64)
    # sum per (day, group) over decisions / number of distinct customers per (day, group)
    cell = day * 2 + hold
    sums = np.bincount(cell, weights=frame[metric].to_numpy(dtype=np.float64), minlength=2 * n_days)
    distinct = np.unique(cell * (int(cust.max()) + 1) + cust) // (int(cust.max()) + 1)
    customers = np.bincount(distinct, minlength=2 * n_days)
    out = []
    for d in np.unique(day):
        row = {"day": (pd.Timestamp(0) + pd.Timedelta(days=d0 + int(d))).date().isoformat()}
        for name, g in (("treated", 0), ("holdout", 1)):
            c = customers[2 * d + g]
            row[name] = float(sums[2 * d + g] / c) if c else math.nan
        out.append(row)
    return out

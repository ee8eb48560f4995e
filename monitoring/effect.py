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
    codes = channel_codes(frame["channel"])
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


def _per_customer(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """customer_id -> sum of ``metric`` and number of customer-days."""
    work = pd.DataFrame({"customer_id": frame["customer_id"].to_numpy(),
                         "day": frame["day"].to_numpy(),
                         "m": frame[metric].to_numpy(dtype=np.float64)})
    # one customer-day may hold several decisions: their values add up
    per_day = work.groupby(["customer_id", "day"], sort=False)["m"].sum().reset_index()
    return per_day.groupby("customer_id", sort=False)["m"].agg(["sum", "count"])


def holdout_lift(frame: pd.DataFrame, metric: str = "reward", level: float = 0.95) -> dict:
    """Treated minus holdout mean ``metric`` per customer-day, with a cluster-robust normal interval.

    Returns treated / holdout ``{mean, se, ci, customers, customer_days}``, ``lift``, ``se``,
    ``ci`` ([low, high]), ``p_value`` (two-sided, normal), ``relative_lift`` (lift / holdout mean).
    Figures are NaN (null in JSON) when a group is empty.
    """
    z = stats.norm.ppf(0.5 + level / 2)
    groups = {}
    for name, mask in (("treated", ~frame["holdout"].to_numpy(bool)), ("holdout", frame["holdout"].to_numpy(bool))):
        pc = _per_customer(frame[mask], metric)
        mean, se = cluster_mean(pc["sum"].to_numpy(), pc["count"].to_numpy())
        groups[name] = {"mean": mean, "se": se, "ci": [mean - z * se, mean + z * se],
                        "customers": int(len(pc)), "customer_days": int(pc["count"].sum())}
    t, h = groups["treated"], groups["holdout"]
    lift = t["mean"] - h["mean"]
    se = math.sqrt(t["se"] ** 2 + h["se"] ** 2) if math.isfinite(t["se"]) and math.isfinite(h["se"]) else math.nan
    p = float(2 * stats.norm.sf(abs(lift) / se)) if math.isfinite(se) and se > 0 else math.nan
    return {
        "metric": metric, "unit": "customer-day", "level": level,
        "method": "difference of means per customer-day; normal interval, cluster-robust (delta-method) "
                  "standard errors with customers as clusters",
        "treated": t, "holdout": h, "lift": lift, "se": se, "ci": [lift - z * se, lift + z * se], "p_value": p,
        "relative_lift": lift / h["mean"] if h["mean"] not in (0.0,) and math.isfinite(h["mean"]) else math.nan,
    }


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
    per = pd.DataFrame({"customer_id": treat["customer_id"].to_numpy(), "arm": treat["ab_arm"].astype(str).to_numpy(),
                        "m": treat[metric].to_numpy(dtype=np.float64)})
    arms_per_customer = per.groupby("customer_id")["arm"].nunique()
    mixed = arms_per_customer.index[arms_per_customer > 1]
    per = per[~per["customer_id"].isin(mixed)]
    values = per.groupby(["arm", "customer_id"], sort=True)["m"].sum()
    arms = sorted(values.index.get_level_values(0).unique())
    if not arms:
        return None
    control = control if control in arms else arms[0]
    z_arm = {}
    for arm in arms:
        v = values.loc[arm].to_numpy()
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        q = stats.t.ppf(0.5 + level / 2, max(len(v) - 1, 1))
        z_arm[arm] = {"customers": int(len(v)), "value_per_customer": float(v.mean()), "se": se,
                      "ci": [float(v.mean() - q * se), float(v.mean() + q * se)]}
    comparisons = []
    for arm in arms:
        if arm == control:
            continue
        res = welch(values.loc[arm].to_numpy(), values.loc[control].to_numpy(), level)
        comparisons.append({"arm": arm, "control": control, **res})
    return {"metric": metric, "unit": "customer (sum over the window)", "level": level,
            "method": "Welch's t-test (unequal variances), two-sided", "control": control, "arms": z_arm,
            "comparisons": comparisons, "mixed_customers": int(len(mixed))}


def daily_lift(frame: pd.DataFrame, metric: str = "reward") -> list[dict]:
    """Per UTC day: mean ``metric`` per customer-day of the treated and of the holdout."""
    out = []
    for day, part in frame.groupby("day", sort=True):
        row = {"day": pd.Timestamp(day).date().isoformat()}
        for name, mask in (("treated", ~part["holdout"].to_numpy(bool)), ("holdout", part["holdout"].to_numpy(bool))):
            sub = part[mask]
            cd = sub.groupby("customer_id", sort=False)[metric].sum()
            row[name] = float(cd.mean()) if len(cd) else math.nan
        out.append(row)
    return out

"""The policy's own health, from joined decision-log windows (``monitoring.logdata.read_window``).

* **Action shares** per channel, offer and send slot in the current window against the previous
  one (no-sends count as ``no_send``): the shares, their total-variation distance (TVD, half the
  sum of absolute differences, in [0, 1]) and a chi-square test of homogeneity.
* **Exploration**: ``max_importance_weight`` = max 1/propensity (the largest weight an
  evaluation of any other policy can put on one logged decision), ``min_propensity``, and, on a
  sample of logged distributions, the importance weights of the policy's own greedy version
  (w = 1[logged action = argmax of the distribution] / propensity): their effective sample size
  ESS = (sum w)^2 / sum w^2 and ``ess_share`` = ESS / n. An exploring policy keeps ESS large; a
  policy that has collapsed to greedy has propensities near 1 (ESS share ~ 1 but no exploration,
  seen in ``mean_max_probability`` ~ 1).
* **Over time**, per UTC day: decisions, sends, reward rate (mean reward per matured decision),
  open and conversion rate of matured sends, join rate (share of matured sends with an outcome).
* **Outcome drift** (what a shift of the world really changes): among *matured* sends, the open
  rate per channel, per time zone (the customer's segment), per channel x time zone, per local
  slot band and per time zone x slot band, and the reward per send per channel, in the current
  window against the previous one. Open rates: two-proportion z-test; reward: Welch z-test. The
  p-values are Bonferroni-corrected over every test run; a test is an alarm when its corrected
  p-value is below ``outcome_alpha`` **and** the relative change is at least
  ``outcome_min_relative_change`` (a tiny but significant change on a huge log is no reason to
  retrain). A segment's channel affinity shift moves its open rate on that channel; an
  active-hours shift moves its open rate per slot band.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from monitoring.config import DriftThresholds

SHARE_DIMENSIONS: dict[str, str] = {"channel": "channel_share", "offer": "offer_share", "send_slot": "slot_share"}


def _counts(frame: pd.DataFrame, column: str) -> pd.Series:
    """Decisions per value of ``column`` (no-sends, null, under ``no_send``; slots as "9", "10"...)."""
    counts = frame[column].value_counts(dropna=False, sort=False)
    labels = ["no_send" if pd.isna(k) else (str(int(k)) if column == "send_slot" else k) for k in counts.index]
    return pd.Series(counts.to_numpy(), index=labels).groupby(level=0, sort=False).sum()


def action_shares(current: pd.DataFrame, previous: pd.DataFrame) -> dict:
    """``{channel_share, offer_share, slot_share}``, each ``{current, previous, tvd, p_value}``
    (shares as {label: share}; previous/tvd/p_value null when there is no previous window)."""
    out = {}
    for column, key in SHARE_DIMENSIONS.items():
        cur = _counts(current, column)
        prev = _counts(previous, column) if len(previous) else pd.Series(dtype=np.int64)
        labels = sorted(set(cur.index) | set(prev.index), key=str)
        c = np.array([cur.get(k, 0) for k in labels], dtype=np.float64)
        p = np.array([prev.get(k, 0) for k in labels], dtype=np.float64)
        entry = {"current": {k: float(v / c.sum()) for k, v in zip(labels, c, strict=True)} if c.sum() else {},
                 "previous": None, "tvd": None, "p_value": None}
        if p.sum() and c.sum():
            entry["previous"] = {k: float(v / p.sum()) for k, v in zip(labels, p, strict=True)}
            entry["tvd"] = float(0.5 * np.abs(c / c.sum() - p / p.sum()).sum())
            table = np.vstack([c, p])
            table = table[:, table.sum(axis=0) > 0]
            entry["p_value"] = float(stats.chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0
        out[key] = entry
    return out


def _greedy_arm(distribution: dict) -> str | None:
    if not distribution:
        return None
    return max(distribution.items(), key=lambda kv: (kv[1], kv[0]))[0]


def exploration(frame: pd.DataFrame, sample: pd.DataFrame | None = None) -> dict:
    """Exploration health of the window (see module doc). ``sample``: rows with ``action``,
    ``propensity`` and a parsed ``distribution`` (dict arm -> probability)."""
    p = frame["propensity"].to_numpy(dtype=np.float64)
    out: dict = {"decisions": int(len(p))}
    if not len(p):
        return out
    w = 1.0 / p
    out.update({"min_propensity": float(p.min()), "mean_propensity": float(p.mean()),
                "max_importance_weight": float(w.max()),
                "share_propensity_above_0_99": float((p > 0.99).mean())})
    if sample is not None and len(sample) and "distribution" in sample:
        greedy = [_greedy_arm(d) for d in sample["distribution"]]
        match = np.array([g == a for g, a in zip(greedy, sample["action"], strict=True)], dtype=np.float64)
        wg = match / sample["propensity"].to_numpy(dtype=np.float64)
        ess = float(wg.sum() ** 2 / (wg**2).sum()) if (wg**2).sum() > 0 else 0.0
        out.update({
            "sample": int(len(sample)), "greedy_match_share": float(match.mean()),
            "ess": ess, "ess_share": ess / len(sample), "greedy_max_importance_weight": float(wg.max()),
            "mean_max_probability": float(np.mean([max(d.values()) if d else 1.0 for d in sample["distribution"]])),
            "mean_eligible_arms": float(np.mean([len(d) for d in sample["distribution"]])),
        })
    return out


def daily(frame: pd.DataFrame) -> list[dict]:
    """Per UTC day of ``decided_at``: decisions, sends, matured, reward_rate, open_rate,
    conversion_rate, join_rate (matured sends with an outcome)."""
    if frame.empty:
        return []
    mat = frame["matured"].to_numpy(bool)
    sent = frame["sent"].to_numpy(bool)
    ms = mat & sent
    work = pd.DataFrame({
        "day": frame["decided_at"].array.asi8 // 86_400_000_000_000, "decisions": 1, "sends": sent, "matured": mat,
        "reward": np.where(mat, frame["reward"].to_numpy(dtype=np.float64), 0.0), "matured_sends": ms,
        "opened": ms & frame["opened"].to_numpy(bool), "converted": ms & frame["converted"].to_numpy(bool),
        "seen": ms & frame["outcome_seen"].to_numpy(bool),
    })
    g = work.groupby("day", sort=True).sum()

    def rate(num: str, den: str) -> np.ndarray:
        d = g[den].to_numpy(dtype=np.float64)
        return np.divide(g[num].to_numpy(dtype=np.float64), d, out=np.full(len(d), np.nan), where=d > 0)

    rates = {"reward_rate": rate("reward", "matured"), "open_rate": rate("opened", "matured_sends"),
             "conversion_rate": rate("converted", "matured_sends"), "join_rate": rate("seen", "matured_sends")}
    return [{"day": (pd.Timestamp(0) + pd.Timedelta(days=int(day))).date().isoformat(), "decisions": int(g["decisions"].iloc[i]),
             "sends": int(g["sends"].iloc[i]), "matured": int(g["matured"].iloc[i]),
             **{k: float(v[i]) for k, v in rates.items()}} for i, day in enumerate(g.index)]


def join_rate(frame: pd.DataFrame) -> float:
    """Share of the matured sends of ``frame`` with at least one outcome (NaN when none)."""
    m = frame["matured"].to_numpy(bool) & frame["sent"].to_numpy(bool)
    return float(frame["outcome_seen"].to_numpy(bool)[m].mean()) if m.any() else math.nan


def slot_band(slots: pd.Series, bands: list[int]) -> np.ndarray:
    """Local send hour -> label of its band ("08-10", ...); bands are sorted band starts."""
    starts = sorted(bands)
    hours = slots.astype("Int64").to_numpy(dtype=np.float64, na_value=np.nan)
    labels = [f"{a:02d}-{(b - 1) if b else 23:02d}" for a, b in zip(starts, [*starts[1:], 24], strict=True)]
    idx = np.searchsorted(starts, hours, side="right") - 1
    out = np.where((idx >= 0) & ~np.isnan(hours), np.array(labels, dtype=object)[np.clip(idx, 0, None)], "other")
    return out.astype(object)


def _sends(frame: pd.DataFrame, bands: list[int]) -> pd.DataFrame:
    m = frame["matured"].to_numpy(bool) & frame["sent"].to_numpy(bool)
    s = frame[m]
    return pd.DataFrame({
        "channel": s["channel"].astype(str).to_numpy(),
        "timezone": s["timezone"].astype(object).where(s["timezone"].notna(), "unknown").astype(str).to_numpy(),
        "band": slot_band(s["send_slot"], bands),
        "opened": s["opened"].to_numpy(dtype=np.float64),
        "reward": s["reward"].to_numpy(dtype=np.float64),
    })


_GROUPINGS: tuple[tuple[str, ...], ...] = (("channel",), ("timezone",), ("channel", "timezone"), ("band",),
                                          ("timezone", "band"))


def outcome_drift(current: pd.DataFrame, previous: pd.DataFrame, thresholds: DriftThresholds,
                  bands: list[int]) -> dict:
    """Outcome-rate tests of the current window against the previous one (see module doc).

    Returns ``{tests: [...], n_tests, alpha, alarms: [...]}``; each test has ``metric``
    (open_rate / reward_per_send), ``group`` ({column: value}), ``current``, ``previous``,
    ``n_current``, ``n_previous``, ``relative_change``, ``p_value`` (raw), ``p_adjusted``
    (Bonferroni) and ``alarm``.
    """
    cur, prev = _sends(current, bands), _sends(previous, bands)
    min_n = thresholds.outcome_min_sends
    tests = []
    for keys in _GROUPINGS:
        gc = cur.groupby(list(keys), sort=True)
        gp = dict(iter(prev.groupby(list(keys), sort=True))) if len(prev) else {}
        for name, a in gc:
            b = gp.get(name)
            if b is None or len(a) < min_n or len(b) < min_n:
                continue
            group = dict(zip(keys, name if isinstance(name, tuple) else (name,), strict=True))
            # open rate: two-proportion z-test (pooled)
            x1, n1, x0, n0 = a["opened"].sum(), len(a), b["opened"].sum(), len(b)
            p1, p0 = x1 / n1, x0 / n0
            pool = (x1 + x0) / (n1 + n0)
            se = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n0))
            pv = float(2 * stats.norm.sf(abs(p1 - p0) / se)) if se > 0 else (1.0 if p1 == p0 else 0.0)
            tests.append({"metric": "open_rate", "group": group, "current": float(p1), "previous": float(p0),
                          "n_current": int(n1), "n_previous": int(n0), "p_value": pv,
                          "relative_change": float((p1 - p0) / p0) if p0 > 0 else (math.inf if p1 > 0 else 0.0)})
            if keys == ("channel",):
                r1, r0 = a["reward"].to_numpy(), b["reward"].to_numpy()
                se = math.sqrt(r1.var(ddof=1) / n1 + r0.var(ddof=1) / n0)
                d = r1.mean() - r0.mean()
                pv = float(2 * stats.norm.sf(abs(d) / se)) if se > 0 else (1.0 if d == 0 else 0.0)
                tests.append({"metric": "reward_per_send", "group": group, "current": float(r1.mean()),
                              "previous": float(r0.mean()), "n_current": int(n1), "n_previous": int(n0),
                              "p_value": pv,
                              "relative_change": float(d / abs(r0.mean())) if r0.mean() != 0 else math.inf})
    m = len(tests)
    alpha = thresholds.outcome_alpha
    alarms = []
    for t in tests:
        t["p_adjusted"] = min(1.0, t["p_value"] * m)
        t["alarm"] = bool(alpha is not None and t["p_adjusted"] < alpha
                          and abs(t["relative_change"]) >= thresholds.outcome_min_relative_change)
        if t["alarm"]:
            alarms.append(t)
    return {"tests": tests, "n_tests": m, "alpha": alpha,
            "min_relative_change": thresholds.outcome_min_relative_change, "alarms": alarms}

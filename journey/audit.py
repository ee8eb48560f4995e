"""Independent re-check of logged sends against the guardrail rules.

Written apart from ``policies.guardrails`` on purpose (per send, from the rules as stated in the
config, with pandas rather than the guardrails' masks), so that a bug in the guardrails shows up
here as a violation instead of being repeated. Used by the journey (``guardrail_violations``) and
by the property tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.types import CATEGORIES, CHANNEL_CONSENT, Channel
from policies.config import GuardrailConfig
from policies.reward import RewardConfig


@dataclass
class AuditResult:
    """Violations found, by rule, and the offending decision ids (first few per rule)."""

    checked_sends: int = 0
    violations: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.violations.values()))

    def add(self, rule: str, ids: pd.Series | list) -> None:
        ids = list(ids)
        if ids:
            self.violations[rule] = self.violations.get(rule, 0) + len(ids)
            self.examples.setdefault(rule, []).extend(str(i) for i in ids[:5])

    def as_dict(self) -> dict:
        return {"checked_sends": self.checked_sends, "total": self.total,
                "by_rule": dict(self.violations), "examples": {k: v[:5] for k, v in self.examples.items()}}


def _in_holdout(customer_id: str, share: float, salt: str) -> bool:
    digest = hashlib.sha256(f"{salt}|{customer_id}".encode()).hexdigest()
    return int(digest[:16], 16) < share * 16**16


def audit_sends(
    sends: pd.DataFrame,
    customers: pd.DataFrame,
    config: GuardrailConfig,
    catalog: Catalog,
    reward_config: RewardConfig | None = None,
    prior_sends: pd.DataFrame | None = None,
    unsubscribes: pd.DataFrame | None = None,
    holdout_customers: pd.Series | None = None,
) -> AuditResult:
    """Re-check every send.

    sends: one row per logged send: decision_id, customer_id, channel (name), offer (id),
    send_at (UTC), decided_at (UTC). customers: customer_id, timezone, consent_<x>,
    reachable_<x> (x in sms, email, wechat, push) and optionally interest_<category> (bool).
    prior_sends: earlier sends (customer_id, channel, send_at) that count towards frequency caps.
    unsubscribes: customer_id, channel, unsubscribed_at: consent is revoked from then on.
    holdout_customers: optional customer ids the log flagged as holdout (checked too).
    """
    reward_config = reward_config or RewardConfig()
    res = AuditResult(checked_sends=len(sends))
    if len(sends) == 0:
        return res
    s = sends.copy()
    s["send_at"] = pd.to_datetime(s["send_at"], utc=True)
    s["decided_at"] = pd.to_datetime(s["decided_at"], utc=True)
    s["channel"] = s["channel"].astype(str)
    cust = customers.set_index("customer_id")
    known = s["customer_id"].isin(cust.index)
    res.add("unknown_customer", s.loc[~known, "decision_id"])
    s = s[known]

    # holdout: recomputed from the hash definition, and the log's own flags
    in_hold = s["customer_id"].map(lambda c: _in_holdout(c, config.holdout_share, config.holdout_salt))
    res.add("holdout", s.loc[in_hold, "decision_id"])
    if holdout_customers is not None:
        res.add("holdout", s.loc[s["customer_id"].isin(set(holdout_customers)) & ~in_hold, "decision_id"])

    # consent (with unsubscribes) and reachability
    suffix = {c.value: CHANNEL_CONSENT[c].removeprefix("consent_") for c in Channel}
    bad_channel = ~s["channel"].isin(list(suffix))
    res.add("unknown_channel", s.loc[bad_channel, "decision_id"])
    s = s[~bad_channel]
    pos = cust.index.get_indexer(s["customer_id"])
    consent = np.zeros(len(s), dtype=bool)
    reach = np.zeros(len(s), dtype=bool)
    for ch, suf in suffix.items():
        rows = (s["channel"] == ch).to_numpy()
        consent[rows] = cust[f"consent_{suf}"].fillna(False).to_numpy(dtype=bool)[pos[rows]]
        reach[rows] = cust[f"reachable_{suf}"].fillna(False).to_numpy(dtype=bool)[pos[rows]]
    if config.require_consent:
        res.add("consent", s.loc[~consent, "decision_id"])
        if unsubscribes is not None and len(unsubscribes):
            u = unsubscribes.copy()
            u["unsubscribed_at"] = pd.to_datetime(u["unsubscribed_at"], utc=True)
            u["channel"] = u["channel"].astype(str)
            first = u.groupby(["customer_id", "channel"])["unsubscribed_at"].min().rename("unsub_at").reset_index()
            m = s.merge(first, on=["customer_id", "channel"], how="left")
            res.add("consent_after_unsubscribe", m.loc[m["unsub_at"].notna() & (m["unsub_at"] <= m["decided_at"]),
                                                       "decision_id"])
    if config.require_reachable:
        res.add("reachability", s.loc[~reach, "decision_id"])

    # quiet hours: the local hour of the send must be an allowed hour of its channel
    tz = s["customer_id"].map(cust["timezone"]).fillna("UTC").astype(str)
    hours = np.zeros(len(s), dtype=np.int64)
    for zone, idx in pd.Series(np.arange(len(s))).groupby(tz.to_numpy()).groups.items():
        hours[np.asarray(idx)] = s["send_at"].iloc[np.asarray(idx)].dt.tz_convert(ZoneInfo(zone)).dt.hour
    ok = np.zeros(len(s), dtype=bool)
    for ch in s["channel"].unique():
        rows = (s["channel"] == ch).to_numpy()
        ok[rows] = np.isin(hours[rows], config.hours_for(Channel(ch)))
    res.add("quiet_hours", s.loc[~ok, "decision_id"])

    # offer eligibility: category offers only to customers interested in the category
    if config.require_category_interest:
        cat_of = {o.id: o.category for o in catalog.offers if o.category}
        for offer, cat in cat_of.items():
            rows = s[s["offer"] == offer]
            col = f"interest_{cat}"
            if cat not in CATEGORIES or col not in cust.columns:
                res.add("offer_eligibility", rows["decision_id"])
                continue
            interested = rows["customer_id"].map(cust[col]).fillna(False).astype(bool)
            res.add("offer_eligibility", rows.loc[~interested, "decision_id"])

    # frequency caps: every sliding window ending at a send, the send included
    allsends = s[["customer_id", "channel", "send_at", "decision_id"]]
    if prior_sends is not None and len(prior_sends):
        p = prior_sends[["customer_id", "channel", "send_at"]].copy()
        p["send_at"] = pd.to_datetime(p["send_at"], utc=True)
        p["channel"] = p["channel"].astype(str)
        p["decision_id"] = None
        allsends = pd.concat([allsends, p], ignore_index=True)
    for cap in config.frequency_caps:
        rows = allsends if cap.channel is None else allsends[allsends["channel"] == Channel(cap.channel).value]
        if rows.empty:
            continue
        window = int(round(cap.window_hours * 3600))
        r = rows.sort_values(["customer_id", "send_at"]).reset_index(drop=True)
        sec = r["send_at"].to_numpy(dtype="datetime64[s]").astype(np.int64)
        sec = sec - sec.min()
        code = pd.factorize(r["customer_id"], sort=True)[0].astype(np.int64)
        key = code * (np.int64(1) << np.int64(36)) + sec  # sorted: customers apart, then time
        # the window ending at a send is (t - window, t]; sends at the same instant all count
        start = np.searchsorted(key, key - window, side="right")
        end = np.searchsorted(key, key, side="right")
        count = end - start
        over = (count > cap.max_sends) & r["decision_id"].notna().to_numpy()
        res.add(f"{cap.name}:{cap.window_hours:g}h", r.loc[over, "decision_id"])

    # budgets
    if config.sms_daily_budget is not None:
        sms = s[s["channel"] == Channel.SMS.value]
        if len(sms):
            cost = float(reward_config.channel_cost.get(Channel.SMS, 0.0))
            per_day = sms.groupby(sms["decided_at"].dt.date)["decision_id"].agg(list)
            for _day, ids in per_day.items():
                if cost * len(ids) > config.sms_daily_budget + 1e-9:
                    allowed_n = int(config.sms_daily_budget / cost + 1e-9) if cost > 0 else len(ids)
                    res.add("sms_budget", ids[allowed_n:])
    for o in catalog.offers:
        limit = config.offer_inventory.get(o.id, o.inventory)
        if limit is None:
            continue
        ids = s.loc[s["offer"] == o.id].sort_values("decided_at")["decision_id"].tolist()
        if len(ids) > limit:
            res.add("coupon_inventory", ids[limit:])
    return res

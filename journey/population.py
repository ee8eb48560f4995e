"""Who the journey decides for: the workspace's customers (from profiles), their guardrail
attributes, and, for the simulator only, which world person each customer is.

The customer -> person map comes from the truth (``truth/record_owner.parquet``): a customer is
the person owning the majority of its CRM records (of all its records when it has no CRM record).
Only the journey uses it, to let the simulated world answer; no policy ever sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import WorkspaceError
from core.types import CATEGORIES, CHANNELS
from core.workspace import Workspace
from policies.guardrails import CHANNEL_SUFFIX, Audience


@dataclass(eq=False)
class Population:
    """The journey's customers, in a fixed order (n rows).

    frame: customer_id, person_id, timezone, consent_<x>, reachable_<x>, interest_<category>
    (x in sms, email, wechat, push); ``consent`` is updated as unsubscribes become known.
    """

    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def customer_id(self) -> np.ndarray:
        return self.frame["customer_id"].to_numpy(dtype=object)

    @property
    def person_id(self) -> np.ndarray:
        return self.frame["person_id"].to_numpy(dtype=np.int64)

    def audience(self, consent: np.ndarray | None = None) -> Audience:
        """The guardrails' view; ``consent`` (n, 4) overrides the profile consent (unsubscribes)."""
        aud = Audience.from_frame(self.frame)
        if consent is not None:
            aud = Audience(aud.customer_id, aud.timezone, consent, aud.reachable, aud.category_interest)
        return aud

    def consent_matrix(self) -> np.ndarray:
        return np.column_stack([self.frame[f"consent_{CHANNEL_SUFFIX[c]}"].to_numpy(bool) for c in CHANNELS])


def category_interest(customer_ids: pd.Series, orders: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """(n, 6) bool frame ``interest_<category>``: the customer ordered or viewed the category."""
    out = pd.DataFrame(index=pd.Index(customer_ids, name="customer_id"))
    seen = pd.concat([orders[["customer_id", "category"]], events[["customer_id", "category"]]], ignore_index=True)
    seen = seen.dropna()
    for cat in CATEGORIES:
        ids = set(seen.loc[seen["category"] == cat, "customer_id"])
        out[f"interest_{cat}"] = out.index.isin(ids)
    return out.reset_index(drop=True)


def person_map(workspace: Workspace) -> pd.Series:
    """customer_id -> person_id by majority vote of the customer's records (CRM records first)."""
    record_map = workspace.profiles / "record_map.parquet"
    owner = workspace.truth / "record_owner.parquet"
    if not record_map.is_file():
        raise WorkspaceError(f"no profiles in {workspace.root}: run `decisioning profiles` first")
    if not owner.is_file():
        raise WorkspaceError(f"no simulated world in {workspace.root} (missing truth/record_owner.parquet): "
                             "the journey needs `decisioning simulate`")
    rm = pd.read_parquet(record_map, columns=["source", "record_id", "customer_id"])
    ro = pd.read_parquet(owner, columns=["source", "record_id", "person_id"])
    m = rm.merge(ro, on=["source", "record_id"], how="inner")
    m["crm"] = m["source"] == "customers"
    votes = m.groupby(["customer_id", "crm", "person_id"]).size().rename("n").reset_index()
    votes = votes.sort_values(["customer_id", "crm", "n", "person_id"], ascending=[True, False, False, True])
    best = votes.drop_duplicates("customer_id")
    return best.set_index("customer_id")["person_id"].astype(np.int64)


def load_population(workspace: Workspace, profiles: pd.DataFrame, orders: pd.DataFrame, events: pd.DataFrame,
                    customers: int | None = None, seed: int = 0) -> Population:
    """The journey's population: profiles with a world person, optionally a seeded sample of
    ``customers`` of them, sorted by customer_id."""
    persons = person_map(workspace)
    p = profiles[profiles["customer_id"].isin(persons.index)].copy()
    if p.empty:
        raise WorkspaceError(f"no profile of {workspace.root} maps to a simulated person")
    p = p.sort_values("customer_id").reset_index(drop=True)
    if customers is not None and customers < len(p):
        keep = np.sort(np.random.default_rng(seed).choice(len(p), size=customers, replace=False))
        p = p.iloc[keep].reset_index(drop=True)
    frame = pd.DataFrame({"customer_id": p["customer_id"].astype(str).to_numpy(),
                          "person_id": persons.loc[p["customer_id"]].to_numpy(dtype=np.int64),
                          "timezone": p["timezone"].fillna("Asia/Shanghai").astype(str).to_numpy()})
    for c in CHANNELS:
        s = CHANNEL_SUFFIX[c]
        frame[f"consent_{s}"] = p[f"consent_{s}"].fillna(False).to_numpy(dtype=bool)
        frame[f"reachable_{s}"] = p[f"reachable_{s}"].fillna(False).to_numpy(dtype=bool)
    interest = category_interest(frame["customer_id"], orders, events)
    frame = pd.concat([frame, interest], axis=1)
    return Population(frame)

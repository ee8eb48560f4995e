"""A deliberately plain identity resolver used only to check that the simulated identity fragments
are resolvable (the product's resolver lives in features/). Normalise keys, link keys that share a
row, refuse devices seen with several distinct login identities, take connected components."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

KEYS = ("crm_id", "phone", "email", "wechat_unionid", "device_id")


def normalise(key: str, s: pd.Series) -> pd.Series:
    s = s.astype("string").str.strip()
    if key == "phone":
        d = s.str.replace(r"\D", "", regex=True)
        d = d.where(~((d.str.len() == 11) & d.str.startswith("1")), "86" + d)
        return d.where((d.str.len() == 13) & d.str.startswith("861"))
    if key == "email":
        s = s.str.lower()
        return s.where(s.str.contains("@", regex=False))
    return s


def resolve(frames: dict[str, pd.DataFrame], id_cols: dict[str, str]) -> pd.DataFrame:
    """frames: source -> raw table. Returns source, record_id, component for rows with a key."""
    rows = []
    for src, df in frames.items():
        rid = df[id_cols[src]].astype("string")
        k = pd.DataFrame({"source": src, "record_id": rid})
        for key in KEYS:
            if key in df.columns:
                v = normalise(key, df[key])
                k[key] = (key + ":" + v).where(v.notna())
            else:
                k[key] = pd.Series(pd.NA, index=k.index, dtype="string")
        if src == "customers":  # the member id of a CRM row is a key too
            k["crm_id"] = "crm_id:" + rid.str.strip()
        rows.append(k)
    rec = pd.concat(rows, ignore_index=True)
    # devices logged into by more than one member identity are shared: do not link through them
    dev = rec[["device_id", "crm_id", "phone", "email"]].dropna(subset=["device_id"])
    ident = dev["crm_id"].fillna(dev["phone"]).fillna(dev["email"])
    n_ident = ident.groupby(dev["device_id"]).nunique()
    shared = set(n_ident[n_ident > 1].index)
    rec.loc[rec["device_id"].isin(shared), "device_id"] = pd.NA
    long = rec[list(KEYS)].stack().reset_index(level=1, drop=True)
    rec = rec.loc[rec[list(KEYS)].notna().any(axis=1)].copy()
    long = long.loc[long.index.isin(rec.index)]
    codes, uniq = pd.factorize(long.to_numpy())
    r = np.searchsorted(rec.index.to_numpy(), long.index.to_numpy())
    n_rec = len(rec)
    m = coo_matrix((np.ones(len(r)), (r, n_rec + codes)), shape=(n_rec + len(uniq), n_rec + len(uniq)))
    _, labels = connected_components(m, directed=False)
    rec["component"] = labels[:n_rec]
    return rec[["source", "record_id", "component"]]


def pairwise(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering ``pred`` against ``true`` (same rows)."""
    def pairs(counts):
        c = counts.astype(np.float64)
        return float(np.sum(c * (c - 1) / 2))
    both = pd.DataFrame({"p": pred, "t": true})
    tp = pairs(both.groupby(["p", "t"]).size().to_numpy())
    pp = pairs(both.groupby("p").size().to_numpy())
    tt = pairs(both.groupby("t").size().to_numpy())
    return (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)

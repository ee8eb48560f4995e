"""Small hand-made raw sources, written as CSV or Parquet like a real user's exports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.schemas import SOURCES


def write_source(folder: Path, name: str, rows: list[dict], fmt: str = "csv", columns: list[str] | None = None) -> Path:
    """Write ``rows`` as source ``name`` with every schema column (or ``columns``); missing cells empty."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = columns or [c.name for c in SOURCES[name].columns]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    path = folder / f"{name}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def crm(crm_id: str, **kw) -> dict:
    row = {"crm_id": crm_id, "signup_at": "2025-01-01T00:00:00Z", "timezone": "Asia/Shanghai"}
    row.update(kw)
    return row


def order(order_id: str, **kw) -> dict:
    row = {"order_id": order_id, "ordered_at": "2025-06-01T10:00:00Z", "amount": 10.0, "quantity": 1}
    row.update(kw)
    return row


def event(event_id: str, **kw) -> dict:
    row = {"event_id": event_id, "event_type": "app_open", "occurred_at": "2025-06-01T10:00:00Z", "platform": "app"}
    row.update(kw)
    return row


def send(send_id: str, **kw) -> dict:
    row = {"send_id": send_id, "channel": "email", "sent_at": "2025-06-01T10:00:00Z", "propensity": 0.25}
    row.update(kw)
    return row

"""Budgets that hold under concurrent requests: a small SQLite ledger with atomic reserve/release.

A budget is a key (``"sms_spend:2026-07-01"``, ``"coupons:pct20"``) with a limit. Callers
reserve before deciding (so the guardrail knows whether an arm is affordable before sampling) and
release what they did not use afterwards. Amounts are stored as integer micro-units, so repeated
reserve/release never drifts. Each reservation is one ``BEGIN IMMEDIATE`` transaction: threads and
processes sharing the file can never overspend.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

_SCALE = 1_000_000  # micro-units


def _micro(amount: float) -> int:
    return int(round(float(amount) * _SCALE))


class BudgetLedger:
    """Spend per budget key, in a SQLite file (``":memory:"`` for a private in-process ledger).

    Safe for threads (one connection per thread) and processes (SQLite file locks).
    """

    def __init__(self, path: str | Path = ":memory:", timeout: float = 30.0):
        self.path = str(path)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()  # serialises a shared in-memory connection
        self._memory = self.path == ":memory:"
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._shared: sqlite3.Connection | None = None
        conn = self._conn()
        with self._guard():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS budget (key TEXT PRIMARY KEY, used INTEGER NOT NULL DEFAULT 0)"
            )
            conn.commit()

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._memory:
            if self._shared is None:
                self._shared = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def _guard(self):
        return self._lock if self._memory else _NullLock()

    # -- operations ----------------------------------------------------------------------------
    def reserve(self, key: str, limit: float, amount: float, count: int = 1) -> int:
        """Reserve up to ``count`` units of ``amount`` on ``key`` without passing ``limit``.

        Returns how many units were granted (0..count), atomically: concurrent callers together
        never reserve more than ``limit``.
        """
        if count <= 0:
            return 0
        unit, cap = _micro(amount), _micro(limit)
        conn = self._conn()
        with self._guard():
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT used FROM budget WHERE key = ?", (key,)).fetchone()
                used = row[0] if row else 0
                free = max(cap - used, 0)
                granted = count if unit == 0 else min(count, free // unit)
                if granted:
                    conn.execute(
                        "INSERT INTO budget(key, used) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET used = used + excluded.used",
                        (key, granted * unit),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return int(granted)

    def release(self, key: str, amount: float) -> None:
        """Give back ``amount`` previously reserved on ``key`` (never below zero)."""
        micro = _micro(amount)
        if micro <= 0:
            return
        conn = self._conn()
        with self._guard():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("UPDATE budget SET used = MAX(used - ?, 0) WHERE key = ?", (micro, key))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def used(self, key: str) -> float:
        """Amount currently reserved or spent on ``key``."""
        with self._guard():
            row = self._conn().execute("SELECT used FROM budget WHERE key = ?", (key,)).fetchone()
        return (row[0] if row else 0) / _SCALE

    def remaining(self, key: str, limit: float) -> float:
        return max(limit - self.used(key), 0.0)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def __getstate__(self):
        if self._memory:
            raise TypeError("an in-memory BudgetLedger cannot be shared with another process")
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["path"], state["timeout"])


class _NullLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

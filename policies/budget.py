"""Budgets that hold under concurrent requests: a small SQLite ledger with atomic reserve/release.

A budget is a key (``"sms_spend:2026-07-01"``, ``"coupons:pct20"``) with a limit. Callers
reserve before deciding (so the guardrail knows whether an arm is affordable before sampling) and
release what they did not use afterwards. Amounts are stored as integer micro-units, so repeated
reserve/release never drifts. Each reservation is one transaction (``BEGIN IMMEDIATE``, or for a
single unit one conditional upsert statement, atomic by itself): threads and processes sharing
the file can never overspend.

Threads of one process take a process-wide lock per ledger file before the transaction, so they
queue on a mutex instead of SQLite's busy handler (which sleeps 1, 2, 5, 10, ... ms between
retries: under concurrent requests that, not the work, was the cost). Processes still meet at the
SQLite lock.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

_SCALE = 1_000_000  # micro-units
_FILE_LOCKS: dict[str, threading.Lock] = {}  # one per ledger file in this process
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: str) -> threading.Lock:
    key = str(Path(path).resolve())
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.Lock())


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
        self._memory = self.path == ":memory:"
        # serialises the shared in-memory connection, or this process's threads on the file
        self._lock = threading.Lock() if self._memory else _file_lock(self.path)
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
        return self._lock

    # -- operations ----------------------------------------------------------------------------
    def reserve(self, key: str, limit: float, amount: float, count: int = 1) -> int:
        """Reserve up to ``count`` units of ``amount`` on ``key`` without passing ``limit``.

        Returns how many units were granted (0..count), atomically: concurrent callers together
        never reserve more than ``limit``.
        """
        if count <= 0:
            return 0
        unit, cap = _micro(amount), _micro(limit)
        if unit == 0:
            return int(count)  # free units: nothing to count
        conn = self._conn()
        if count == 1:  # one statement (its own atomic transaction): the single decision's case
            if unit > cap:
                return 0
            with self._guard():
                cur = conn.execute(
                    "INSERT INTO budget(key, used) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                    "SET used = used + excluded.used WHERE used + excluded.used <= ?",
                    (key, unit, cap),
                )
            return 1 if cur.rowcount == 1 else 0
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
        with self._guard():  # one statement: its own atomic transaction
            conn.execute("UPDATE budget SET used = MAX(used - ?, 0) WHERE key = ?", (micro, key))

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

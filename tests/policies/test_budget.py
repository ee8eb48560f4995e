"""The budget ledger holds under concurrent requests (threads and processes)."""

from __future__ import annotations

import multiprocessing as mp
import threading

from policies.budget import BudgetLedger


def test_reserve_grants_up_to_the_limit_and_release_gives_back():
    ledger = BudgetLedger()
    assert ledger.reserve("sms", limit=1.0, amount=0.3, count=5) == 3
    assert abs(ledger.used("sms") - 0.9) < 1e-12
    assert ledger.reserve("sms", limit=1.0, amount=0.3, count=1) == 0
    ledger.release("sms", 0.6)
    assert ledger.reserve("sms", limit=1.0, amount=0.3, count=5) == 2
    ledger.release("sms", 100.0)  # never below zero
    assert ledger.used("sms") == 0.0
    assert ledger.reserve("other", limit=0.0, amount=1.0) == 0


def test_threads_never_overspend(tmp_path):
    ledger = BudgetLedger(tmp_path / "budget.sqlite")
    granted = []
    lock = threading.Lock()

    def worker():
        mine = 0
        for _ in range(40):
            mine += ledger.reserve("coupons:pct20", limit=50, amount=1, count=1)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 50  # 240 requests for 50 units: exactly the limit, never more
    assert ledger.used("coupons:pct20") == 50


def _proc(path: str, q) -> None:
    ledger = BudgetLedger(path)
    got = 0
    for _ in range(30):
        got += ledger.reserve("sms_spend:2026-07-01", limit=1.0, amount=0.05, count=1)
        if got % 3 == 0:
            ledger.release("sms_spend:2026-07-01", 0.0)
    q.put(got)


def test_processes_never_overspend(tmp_path):
    path = str(tmp_path / "budget.sqlite")
    BudgetLedger(path)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc, args=(path, q)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(got) == 20  # 1.0 / 0.05
    assert abs(BudgetLedger(path).used("sms_spend:2026-07-01") - 1.0) < 1e-9

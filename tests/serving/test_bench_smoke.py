"""The benchmarks still run (they are not tests, but they reach into the engine and the log, and
a change there broke one silently once): each at a tiny size, on the prepared workspace."""

from __future__ import annotations

import pytest


@pytest.mark.integration
def test_serving_bench_runs_in_process_and_batch(ws_copy, customer_ids):
    from bench.serving import batch, in_process

    single = in_process(ws_copy, customer_ids, n_single=5, repeats=1)
    assert single["median"]["ratio_p50"] > 0 and single["median"]["decide_p50_ms"] > 0
    bulk = batch(ws_copy, customer_ids, 600, repeats=2, fresh_log=True)
    assert bulk["n"] == 600 and bulk["median"]["decisions_per_s"] > 0
    first, second = bulk["runs"]
    assert first["log_rows_added"] == second["log_rows_added"] == 600
    # every repeat is a first contact (its own log and ledger): the same audience gets the same sends,
    # (up to its seeded draws at another time), not the leftovers the previous repeat's caps and budgets leave
    assert first["sends"] > 0 and abs(second["sends"] - first["sends"]) <= 0.1 * first["sends"]


def test_log_bench_runs(tmp_path):
    from bench.log import run

    r = run(300, 10, "NORMAL", tmp_path)
    assert r["synchronous"] == "NORMAL" and all(v > 0 for k, v in r.items() if k.endswith("_s"))


def test_bench_runner_lists_and_skips_an_unprepared_workspace(tmp_path, capsys):
    from bench.__main__ import BENCHES, main

    assert main(["--list"]) == 0
    assert set(capsys.readouterr().out.split()) >= set(BENCHES)
    # serving needs a prepared workspace: skipped with the reason, not failed
    assert main(["serving", "--workspace", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["no-such-bench"])

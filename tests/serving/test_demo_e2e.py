"""`decisioning demo` end to end on a tiny world (the real subcommands, a real service over HTTP),
then the promotion path the gate rarely opens: refit on every served decision and swap it into a
running service."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from _server import free_port, kill_tree, wait_ready

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--customers", "1500", "--days", "150", "--journey-days", "4", "--trials", "1", "--ope-folds", "2",
        "--ope-bootstrap", "50", "--seed", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "ws"
    env = {k: v for k, v in os.environ.items() if k not in ("DECISIONING_HOME", "DECISIONING_SERVING_CONFIG")}
    proc = subprocess.run([sys.executable, "-m", "decisioning.cli", "demo", "--workspace", str(root), *ARGS,
                           "--json"], capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    return root, {s["command"]: s for s in out["steps"]}, out


def test_every_step_runs_and_the_service_is_stopped(demo_run):
    import psutil

    root, steps, out = demo_run
    assert all(s["status"] == "done" for s in steps.values()), {k: s["status"] for k, s in steps.items()}
    assert Path(out["report"]).is_file() and Path(out["report"]).stat().st_size > 10_000  # plots inlined
    j = steps["journey"]["result"]
    assert j["guardrail_violations"] == 0
    for lane in ("policy", "random", "rule", "oracle", "no_send"):
        assert j[lane]["value"] > 0
    assert j["oracle"]["value"] >= j["rule"]["value"]
    # every decision the journey got over HTTP is in the served log
    with sqlite3.connect(j["log"]) as db:
        logged = db.execute("SELECT COUNT(*) FROM decisions WHERE journey_id IS NOT NULL").fetchone()[0]
    assert logged >= steps["refit"]["result"]["log_rows"] > 0
    o = steps["ope"]["result"]
    assert {"ips", "snips", "dr", "lift_over_logged"} <= set(o) and o["n"] > 0
    p = steps["promotion"]["result"]
    assert p["served_before"] and p["served_after"]
    assert (p["served_after"] != p["served_before"]) == p["promoted"]
    assert steps["stop"]["result"]["stopped"]
    assert not psutil.pid_exists(steps["serve"]["result"]["pid"]) or \
        psutil.Process(steps["serve"]["result"]["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_promotion_deploys_the_refit_on_every_served_decision(demo_run):
    from core.workspace import Workspace
    from decisioning.commands.demo import CHALLENGER, Demo, _promotion
    from serving.engine import _policy_version
    from serving.policy_state import policy_dir

    root, steps, _ = demo_run
    ws = Workspace(root)
    config = root / "serving-demo.yaml"
    token = yaml.safe_load(config.read_text())["auth_token"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DECISIONING_HOME=str(root), DECISIONING_LEARN_SECONDS="0")
    env.pop("DECISIONING_SERVING_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "decisioning.cli", "serve", "--port", str(port), "--config",
                             str(config), "--workspace", str(root)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    try:
        wait_ready(url, proc)
        demo = Demo(ws, seed=1)
        demo.service, demo.url, demo.token = proc, url, token
        ope = dict(steps["ope"]["result"])
        ope["ess"] = float(ope["n"])  # force the gate open: a clear win with full overlap
        ope["lift_over_logged"] = {"value": 0.2, "ci_low": 0.1, "ci_high": 0.3}
        demo.done = {"journey": steps["journey"]["result"], "refit": steps["refit"]["result"], "ope": ope}
        won = _promotion(demo)
        assert won["promoted"], won["reason"]
        deployed = won["deployed_refit"]
        # the deployed policy learned from the held-out days too, not only the evaluated candidate's
        assert deployed["log_rows"] > steps["refit"]["result"]["log_rows"]
        final = pickle.loads((policy_dir(ws) / deployed["candidate"]).read_bytes())
        assert won["served_after"] == _policy_version(final) != won["served_before"]
        served = httpx.post(f"{url}/status", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert served.json()["policies"]["champion"]["version"] == _policy_version(final)
        assert (policy_dir(ws) / f"{CHALLENGER}.pkl").is_file()  # a restart serves it too
    finally:
        kill_tree(proc, wait=True)

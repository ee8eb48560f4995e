"""One small prepared workspace for the whole serving session (simulate -> profiles -> features
apply/materialize -> train the four models without tuning -> champions -> a warm-started policy),
built once: it is slow. Tests that break something get their own copy."""

from __future__ import annotations

import shutil
import socket

import pandas as pd
import pytest

from core.workspace import Workspace

CUSTOMERS, DAYS = 2000, 120


def _cli(*args: str) -> None:
    from decisioning.cli import cli

    cli.main(args=list(args), prog_name="decisioning", standalone_mode=False)


@pytest.fixture(scope="session")
def prepared_ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("serving") / "ws").ensure()
    w = str(ws.root)
    _cli("simulate", "--customers", str(CUSTOMERS), "--days", str(DAYS), "--seed", "0", "--workspace", w)
    _cli("profiles", "--workspace", w)
    _cli("features", "apply", "--workspace", w)
    _cli("features", "materialize", "--workspace", w)
    from training.pipeline import TrainConfig, train
    from training.tracking import CHALLENGER, CHAMPION, Tracker

    train(ws, ["propensity", "churn", "offer", "send-time"], TrainConfig(trials=0))
    tr = Tracker(ws)
    for name in ("propensity", "churn", "next_best_offer", "send_time"):
        tr.set_alias(name, CHAMPION, tr.version(name, CHALLENGER).version)
    # warm-start and save the policy once (every later engine loads the pickle)
    from serving.config import ServingConfig
    from serving.policy_state import load_or_warm_start

    cfg = ServingConfig()
    load_or_warm_start(ws, cfg.policy, cfg.policy_params, cfg.policy_layer, cfg.seed, cfg.warm_start_max_sends)
    load_or_warm_start(ws, "greedy", {}, cfg.policy_layer, cfg.seed, cfg.warm_start_max_sends, arm="challenger")
    return ws


@pytest.fixture(scope="session")
def customer_ids(prepared_ws) -> list[str]:
    return pd.read_parquet(prepared_ws.profiles / "profiles.parquet")["customer_id"].astype(str).tolist()


@pytest.fixture
def ws_copy(prepared_ws, tmp_path) -> Workspace:
    """A private copy of the prepared workspace (for tests that break or fill it)."""
    dst = tmp_path / "ws"
    shutil.copytree(prepared_ws.root, dst, ignore=shutil.ignore_patterns("decisions"))
    return Workspace(dst)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""`decisioning features apply | materialize | get` end to end on a small workspace."""

from __future__ import annotations

import json
import shutil

import pytest

from core.workspace import Workspace
from decisioning.cli import main

pytestmark = pytest.mark.integration


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_apply_materialize_get_through_the_cli(tmp_path, small_profiles, small_data, capsys):
    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    w = str(ws.root)
    code, out, _ = _run(capsys, "features", "apply", "--workspace", w, "--json")
    assert code == 0
    applied = json.loads(out)
    assert applied["rows"]["customer_profile"] == len(small_data.profiles)
    assert set(applied["services"]) >= {"propensity_v1", "churn_v1", "offer_v1", "send_time_v1"}

    code, out, _ = _run(capsys, "features", "materialize", "--workspace", w, "--json")
    assert code == 0 and json.loads(out)["online_store_bytes"] > 0  # stdout is only the JSON object

    cid = small_data.profiles.customer_id.iloc[3]
    code, out, _ = _run(capsys, "features", "get", cid, "--workspace", w, "--json", "--at", "2026-06-30T09:00")
    got = json.loads(out)
    assert code == 0 and got["known"] and not got["cold_start"]
    assert set(got["services"]) == set(applied["services"])
    assert got["services"]["send_time_v1"]["local_hour"] in range(24)

    code, out, _ = _run(capsys, "features", "get", "no-such-customer", "--workspace", w, "--json",
                        "--service", "churn_v1")
    got = json.loads(out)
    assert code == 0 and got["cold_start"] and "orders_30d" in got["defaults_used"]
    assert got["services"]["churn_v1"]["orders_30d"] == 0

    code, out, _ = _run(capsys, "features", "get", "no-such-customer", "--workspace", w, "--service", "churn_v1")
    assert code == 0 and "UNKNOWN" in out and "cold start" in out and "(default)" in out


def test_missing_profiles_and_unmaterialised_store_exit_2_with_one_line(tmp_path, small_profiles, capsys):
    code, _, err = _run(capsys, "features", "apply", "--workspace", str(tmp_path / "empty"))
    assert code == 2 and err.startswith("error: ") and "decisioning profiles" in err and "Traceback" not in err
    code, _, err = _run(capsys, "features", "get", "x", "--workspace", str(tmp_path / "empty"))
    assert code == 2 and "features apply" in err
    ws = Workspace(tmp_path / "ws2").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    assert _run(capsys, "features", "apply", "--workspace", str(ws.root), "--json")[0] == 0
    code, _, err = _run(capsys, "features", "get", "x", "--workspace", str(ws.root))
    assert code == 2 and "materialize" in err
    code, _, err = _run(capsys, "features", "get", "x", "--workspace", str(ws.root), "--service", "bogus_v1")
    assert code == 2 and "unknown feature service" in err
    code, _, err = _run(capsys, "features", "materialize", "--workspace", str(ws.root), "--start", "yesterday-ish")
    assert code == 2 and "start" in err


def test_apply_takes_a_config_file_and_remembers_it(tmp_path, small_profiles, capsys):
    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    cfg = tmp_path / "features.yaml"
    cfg.write_text("features:\n  windows_days: [7, 30]\n  heartbeat_days: 0\n")
    code, out, _ = _run(capsys, "features", "apply", "--workspace", str(ws.root), "--config", str(cfg), "--json")
    assert code == 0
    from features.store import FeatureStoreAdapter

    store = FeatureStoreAdapter.open(ws)
    assert store.config.windows_days == (7, 30) and "orders_90d" not in store.feature_names("propensity_v1")
    assert json.loads(out)["services"]["propensity_v1"] == len(store.feature_names("propensity_v1"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("online_store:\n  type: redis\n")
    code, _, err = _run(capsys, "features", "apply", "--workspace", str(ws.root), "--config", str(bad))
    assert code == 2 and "connection_string" in err

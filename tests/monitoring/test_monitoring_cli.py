"""The report and drift commands end to end: exit codes, JSON keys, files, status, MLflow."""

from __future__ import annotations

import json

import pytest

from decisioning.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("cmd", ["report", "drift"])
def test_no_log_is_a_clear_error(capsys, workspace, cmd):
    code, out, err = run(capsys, cmd, "--workspace", str(workspace.root))
    assert code == 2
    assert err.startswith("error: no decision log") and "Traceback" not in err


def test_bad_time_is_a_clear_error(capsys, quiet_log):
    ws, _ = quiet_log
    code, _, err = run(capsys, "report", "--workspace", str(ws.root), "--since", "yesterday-ish")
    assert code == 2 and "ISO 8601" in err


def _mlflow_run(ws, run_id):
    """The run, its artifact paths (recursively) from the workspace's real MLflow store."""
    from mlflow import MlflowClient
    from training.tracking import tracking_uri_for

    client = MlflowClient(tracking_uri=tracking_uri_for(ws))
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "monitoring"
    paths, todo = set(), [None]
    while todo:
        for f in client.list_artifacts(run_id, todo.pop()):
            (todo.append(f.path) if f.is_dir else paths.add(f.path))
    return run, paths


def test_report_json_and_mlflow_run(capsys, quiet_log):
    ws, sim = quiet_log
    code, out, _ = run(capsys, "report", "--workspace", str(ws.root), "--json")
    assert code == 0
    s = json.loads(out)
    assert {"totals", "by_channel", "by_offer", "by_policy", "holdout_lift", "ab_test", "daily"} <= set(s)
    lift = s["holdout_lift"]["reward"]
    assert lift["ci"][0] <= lift["lift"] <= lift["ci"][1]
    assert {r["channel"] for r in s["by_channel"]} >= {"email", "no_send"}
    assert set(s["ab_test"]["arms"]) == {"A", "B"} and 0 <= s["ab_test"]["comparisons"][0]["p_value"] <= 1
    assert (ws.reports / "report.html").is_file() and (ws.reports / "report_lift.png").is_file()
    assert json.loads((ws.reports / "report.json").read_text())["mlflow_run_id"] == s["mlflow_run_id"]
    mlrun, paths = _mlflow_run(ws, s["mlflow_run_id"])
    assert mlrun.info.run_name == "report" and mlrun.info.status == "FINISHED"
    m = mlrun.data.metrics
    assert m["totals.decisions"] == s["totals"]["decisions"]
    assert m["holdout_lift.reward.lift"] == pytest.approx(lift["lift"])
    assert m["holdout_lift.reward.ci.low"] == pytest.approx(lift["ci"][0])
    assert m["ab.B_vs_A.p_value"] == pytest.approx(s["ab_test"]["comparisons"][0]["p_value"])
    assert "channel.email.revenue" in m
    p = mlrun.data.params
    assert p["log"] == s["log"] and p["since"] == s["window"]["since"] and p["until"] == s["window"]["until"]
    assert {"report/report.html", "report/report.json", "report/report_lift.png"} <= paths


def test_drift_quiet_world_exit_0_with_evidently_and_mlflow(capsys, quiet_log):
    ws, _ = quiet_log
    code, out, _ = run(capsys, "drift", "--workspace", str(ws.root), "--json")
    s = json.loads(out)
    assert code == 0, s["alarms"]
    assert {"channel_share", "offer_share", "slot_share"} <= set(s["action_shares"])
    assert all("share" in k for k in s["action_shares"])
    assert s["reference"]["kind"] == "file"
    assert s["feature_drift"]["compared"] >= 5 and s["feature_drift"]["drifted_share"] < 0.5
    assert s["score_drift"]["columns"]
    e = s["exploration"]
    assert e["max_importance_weight"] >= 1 and 0 < e["ess_share"] <= 1
    assert len(s["daily"]) == 6 and {"reward_rate", "join_rate"} <= set(s["daily"][0])
    status = json.loads((ws.reports / "drift_status.json").read_text())
    assert status["retrain_due"] is False and status["mlflow_run_id"] == s["mlflow_run_id"]
    assert (ws.reports / "drift.html").is_file() and (ws.reports / "drift_evidently.html").is_file()
    assert status["drifted_features"] == s["feature_drift"]["drifted"]
    mlrun, paths = _mlflow_run(ws, s["mlflow_run_id"])
    assert mlrun.info.run_name == "drift" and mlrun.data.tags["retrain_due"] == "False"
    m = mlrun.data.metrics
    assert m["alarms"] == 0 and m["decisions.current"] == s["decisions"]["current"]
    assert m["feature_drift.compared"] == s["feature_drift"]["compared"]
    assert m["exploration.ess_share"] == pytest.approx(e["ess_share"])
    assert m["action_tvd.channel_share"] == pytest.approx(s["action_shares"]["channel_share"]["tvd"])
    assert mlrun.data.params["since"] == s["window"]["since"] and mlrun.data.params["log"] == s["log"]
    assert {"report/drift.html", "report/drift.json", "report/drift_shares.png", "report/drift_evidently.html",
            "report/drift_evidently_scores.html"} <= paths


def test_drift_shifted_world_exit_1(capsys, shifted_log):
    ws, _ = shifted_log
    code, out, _ = run(capsys, "drift", "--workspace", str(ws.root), "--json", "--no-mlflow", "--no-evidently")
    s = json.loads(out)
    assert code == 1
    assert any(a["kind"] == "outcome_drift" for a in s["alarms"])
    status = json.loads((ws.reports / "drift_status.json").read_text())
    assert status["retrain_due"] is True and "outcome_drift" in status["alarms"]


def test_drift_threshold_from_config(capsys, quiet_log, tmp_path):
    ws, _ = quiet_log
    cfg = tmp_path / "m.yaml"
    cfg.write_text("drift:\n  thresholds:\n    max_importance_weight: 2.0\n")
    code, out, _ = run(capsys, "drift", "--workspace", str(ws.root), "--json", "--no-mlflow", "--no-evidently",
                       "--config", str(cfg))
    assert code == 1
    assert [a["kind"] for a in json.loads(out)["alarms"]] == ["importance_weight"]
    cfg.write_text("drift:\n  thresholds:\n    no_such_threshold: 1\n")
    code, _, err = run(capsys, "drift", "--workspace", str(ws.root), "--config", str(cfg))
    assert code == 2 and "no_such_threshold" in err


def test_report_no_mlflow(capsys, shifted_log):
    ws, _ = shifted_log
    code, out, _ = run(capsys, "report", "--workspace", str(ws.root), "--json", "--no-mlflow")
    s = json.loads(out)
    assert code == 0 and s["mlflow_run_id"] is None and not (ws.mlflow / "mlflow.db").exists()
    assert set(s["stage_seconds"]) == {"read", "figures", "html"}

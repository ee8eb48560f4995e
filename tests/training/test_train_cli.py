"""End to end through the CLI against a real MLflow SQLite store in tmp: JSON keys, the run's
params/metrics/artifacts, the challenger alias, promotion rules, orders-only sources."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from decisioning.cli import cli


def _run(args, ws):
    res = CliRunner().invoke(cli, [*args, "--workspace", str(ws.root)], catch_exceptions=False)
    return res


@pytest.fixture(scope="module")
def trained(synthetic_ws):
    res = _run(["train", "all", "--trials", "2", "--timeout", "20", "--json"], synthetic_ws)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_train_json_has_metrics_and_baselines_for_every_model(trained):
    assert {"propensity", "churn", "offer", "send_time", "split", "seconds"} <= set(trained)
    for fam in ("propensity", "churn"):
        r = trained[fam]
        assert r["status"] == "trained"
        assert 0.5 < r["auc"] <= 1.0 and "ece" in r and "lift_at_10" in r and "log_loss" in r
        assert set(r["baselines"]) == {"rfm", "bgnbd"}
        assert r["baselines"]["rfm"]["n"] == r["n_test"]  # same test rows
    assert trained["offer"]["baselines"]["best_single_offer"]["offer"]
    assert "heldout_value" in trained["offer"]
    assert trained["send_time"]["baselines"]["fixed_10"]["hour"] == 10
    assert "oracle_auc" not in trained["propensity"]  # no truth in this workspace


def test_mlflow_run_has_params_metrics_artifacts_and_challenger_alias(trained, synthetic_ws):
    from training.tracking import Tracker

    tr = Tracker(synthetic_ws)
    v = tr.version("propensity", "challenger")
    assert v is not None and v.run_id == trained["propensity"]["run_id"]
    assert v.params["feature_service"] == "propensity_v1"
    assert v.params["data_fingerprint"] == trained["propensity"]["data_fingerprint"]
    assert v.metrics["test_auc"] == pytest.approx(trained["propensity"]["auc"])
    assert "baseline_bgnbd_auc" in v.metrics and "tuning_trials" in v.metrics
    arts = {a.path for a in tr.client.list_artifacts(v.run_id, "plots")}
    assert {"plots/roc.png", "plots/calibration.png", "plots/lift_gain.png",
            "plots/feature_importance.png"} <= arts
    st = tr.version("send_time", "challenger")
    assert "plots/local_hour_heatmap.png" in {a.path for a in tr.client.list_artifacts(st.run_id, "plots")}
    model = tr.load_model("propensity", "challenger")
    assert hasattr(model, "booster_")
    from mlflow.models import get_model_info

    info = get_model_info("models:/propensity@challenger")
    assert info.signature is not None


def test_promote_first_then_refuses_a_worse_challenger(trained, synthetic_ws):
    res = _run(["promote", "churn", "--json"], synthetic_ws)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["promoted"] and "no champion" in out["reason"]
    # a deliberately worse challenger: one tree, tiny learning rate -> near-constant scores
    import models.gbm as gbm
    from training.pipeline import TrainConfig, train
    from training.tracking import Tracker

    orig = gbm.ChurnModel.__init__.__defaults__
    try:
        d = list(orig)
        d[0], d[1], d[2] = 1, 0.001, 2  # n_estimators, learning_rate, num_leaves
        gbm.ChurnModel.__init__.__defaults__ = tuple(d)
        train(synthetic_ws, ["churn"], TrainConfig(trials=0))
    finally:
        gbm.ChurnModel.__init__.__defaults__ = orig
    res = _run(["promote", "churn", "--json"], synthetic_ws)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert not out["promoted"]
    assert "does not beat" in out["reason"]
    assert out["challenger"]["auc"] <= out["champion"]["auc"]
    tr = Tracker(synthetic_ws)
    assert tr.version("churn", "champion").version != tr.version("churn", "challenger").version


def test_compare_writes_table_png_and_html(trained, synthetic_ws):
    res = _run(["compare", "--json"], synthetic_ws)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    whos = {(r["family"], r["who"].split(" v")[0]) for r in out["rows"]}
    assert ("propensity", "baseline: bgnbd") in whos and ("offer", "baseline: best_single_offer") in whos
    from pathlib import Path

    assert Path(out["html"]).is_file() and Path(out["csv"]).is_file()
    assert len(out["png"]) == 4 and all(Path(p).stat().st_size > 1000 for p in out["png"])


def test_orders_only_sources_train_binary_models_and_say_which_lack_data(orders_only_ws):
    res = _run(["train", "all", "--trials", "0", "--no-register", "--json"], orders_only_ws)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["propensity"]["status"] == "trained" and out["churn"]["status"] == "trained"
    for fam in ("offer", "send_time"):
        assert out[fam]["status"] == "skipped"
        assert "no campaign history" in out[fam]["reason"]
    human = _run(["train", "offer", "--trials", "0", "--no-register"], orders_only_ws)
    assert "SKIPPED: no campaign history" in human.output


def test_bad_input_is_one_clear_message(orders_only_ws, tmp_path):
    from decisioning.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "propensity", "--cutoff", "2030-01-01", "--workspace", str(orders_only_ws.root)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["train", "propensity", "--workspace", str(tmp_path / "empty")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["promote", "churn", "--workspace", str(tmp_path / "empty2")])
    assert e.value.code == 2

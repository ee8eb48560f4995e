"""Truth-based ceilings (training.diagnostics): point-in-time history features, and on a small
simulated world, ceilings that find the signal when the truth is handed to them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.diagnostics import offer_history_features


def _sends(rows):
    return pd.DataFrame(rows, columns=["customer_id", "sent_at", "offer", "opened", "clicked", "converted"]).assign(
        sent_at=lambda d: pd.to_datetime(d["sent_at"], utc=True))


def test_offer_history_counts_only_sends_before_the_cutoff_by_offer_and_kind():
    s = _sends([
        (1, "2024-01-01", 0, 1, 1, 1),  # pct10, clicked and converted
        (1, "2024-01-02", 1, 1, 0, 0),  # pct20, opened
        (1, "2024-01-03", 4, 0, 0, 0),  # new_arrivals
        (1, "2024-02-01", 0, 1, 1, 0),  # after the cutoff: not counted
        (2, "2024-01-05", -1, 1, 1, 0),  # no offer: not counted
        (2, "2024-01-06", 2, 1, 0, 0),  # free_shipping, opened
        (2, "2024-01-07", 3, 1, 0, 0),  # points_2x, opened
    ])
    f = offer_history_features(s, np.array([1, 2, 3]), pd.Timestamp("2024-01-10", tz="UTC"))
    assert f["offer_pct10_sends"].tolist() == [1, 0, 0]
    assert f["offer_pct10_caused"].tolist() == [1, 0, 0]
    assert f["kind_pct_sends"].tolist() == [2, 0, 0]
    assert f["kind_pct_opens"].tolist() == [2, 0, 0]
    assert f["kind_pct_clicks"].tolist() == [1, 0, 0]
    assert f["kind_content_sends"].tolist() == [1, 0, 0]
    # smoothed: a customer never sent to sits at the population rate, with no lift
    base = 1 / 4  # one click in four opens (of offers) before the cutoff
    assert f["click_per_open"].iloc[2] == pytest.approx(base)
    assert f["kind_pct_click_lift"].iloc[2] == pytest.approx(0.0)
    assert f["click_per_open"].iloc[0] == pytest.approx((1 + 2 * base) / (2 + 2))
    assert f["kind_pct_click_rate"].iloc[0] > f["kind_content_click_rate"].iloc[0]
    assert f["kind_ship_click_lift"].iloc[1] < 0  # opened free shipping, did not click


@pytest.mark.slow
def test_ceilings_rise_when_the_truth_is_handed_to_the_model(small_world, capsys):
    from training.diagnostics import main

    main(["--workspace", str(small_world.root), "--models", "churn,offer", "--json"])
    res = json.loads(capsys.readouterr().out)
    c, o = res["churn"], res["offer"]
    assert 0.5 < c["features_auc"] <= 1.0
    # knowing whether the person has churned is what the oracle knows: the gap nearly vanishes
    assert c["features_latent_rates_churned_gap"] < c["features_gap"] - 0.02
    # the Bayes posterior under the world's own model: visits and opens add to what orders say
    assert 0.5 < c["posterior_orders_auc"] <= c["posterior_all_auc"] + 0.01
    assert c["posterior_all_gap"] == pytest.approx(c["oracle_auc"] - c["posterior_all_auc"])
    assert c["posterior_active_auc_for_true_state"] > 0.7
    tenure = c["gap_by"]["tenure_days"]
    assert tenure and 0.5 < sum(b["share"] for b in tenure.values()) <= 1.0 + 1e-9
    assert all({"oracle_auc", "posterior_auc", "model_auc"} <= set(b) for b in tenure.values())
    # the noise-free offer values are learnable from the true sensitivities, not from the features
    assert o["features_offer_history_true_sensitivities_gap_closed"] > 0.4
    assert o["features_offer_history_true_sensitivities_gap_closed"] > o["features_gap_closed"] + 0.2


def test_no_truth_is_one_clear_error(tmp_path, capsys):
    from training.diagnostics import main

    with pytest.raises(SystemExit) as e:
        main(["--workspace", str(tmp_path / "empty"), "--models", "churn"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")

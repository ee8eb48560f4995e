"""features.compute: values on a hand-made case, point-in-time exactness, local time, defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError, WorkspaceError
from features.compute import (
    TIMESTAMP,
    FeatureConfig,
    ProfileData,
    compute_feature_tables,
    feature_defs,
    features_as_of,
    stored_groups,
    write_feature_tables,
)
from tests.features.conftest import T, hand_frames, write_profiles


def _row(data: ProfileData, cid: str, at: str, **kw) -> pd.Series:
    return features_as_of(data, at, [cid], **kw).iloc[0]


def test_rfm_windows_recency_and_offers_on_a_hand_made_case(hand):
    a = _row(hand, "a", "2026-03-11 04:00")
    assert (a.orders_7d, a.orders_30d, a.orders_total) == (0, 1, 1)  # 03-01 order is 9.75 days old
    assert a.revenue_30d == 100.0 and a.revenue_7d == 0.0
    assert a.days_since_last_order == pytest.approx(9.75)
    assert a.offer_order_share == 1.0 and a.redeemed_pct10 == 1 and a.redeemed_pct20 == 0
    assert a.order_share_beauty == pytest.approx(2 / 7)  # (1 + 1) / (1 + 6): smoothed share
    a2 = _row(hand, "a", "2026-03-21 00:00")
    assert (a2.orders_total, a2.revenue_total, a2.avg_order_value) == (2, 150.0, 75.0)
    assert a2.orders_7d == 1 and a2.revenue_7d == 50.0


def test_window_exit_is_exact_at_the_boundary(hand):
    # b ordered at 03-05 00:00: inside [S - 7 d, S) for S = 03-12, outside for S = 03-13
    assert _row(hand, "b", "2026-03-12 00:00").orders_7d == 1
    assert _row(hand, "b", "2026-03-12 23:59").orders_7d == 1  # served from the 03-12 snapshot
    assert _row(hand, "b", "2026-03-13 00:00").orders_7d == 0
    tables = compute_feature_tables(hand).tables["rfm"]
    b = tables[tables.customer_id == "b"].set_index(TIMESTAMP)
    assert b.loc[T("2026-03-13"), "orders_7d"] == 0 and b.loc[T("2026-03-06"), "orders_7d"] == 1


def test_engagement_counts_each_outcome_at_its_own_time(hand):
    # the e-mail was sent 03-10 02:00 and opened 03-11 05:00
    before = _row(hand, "a", "2026-03-11 04:00")
    assert before.sends_email == 1
    assert before.open_rate_email == pytest.approx((0 + 0.2 * 2) / (1 + 2))
    assert before.days_since_contact_email == pytest.approx(1 + 2 / 24)
    assert before.sends_1d == 1 and before.sends_7d_email == 1
    after = _row(hand, "a", "2026-03-12 00:00")
    assert after.open_rate_email == pytest.approx((1 + 0.4) / 3)
    assert after.opens_total == 1
    assert _row(hand, "a", "2026-03-26 00:00").unsubscribed_sms == 0  # at 03-26 00:00 exactly: not before
    assert _row(hand, "a", "2026-03-27 00:00").unsubscribed_sms == 1


def test_local_hours_across_time_zones_and_dst(hand):
    a = _row(hand, "a", "2026-03-11 04:00")
    c = _row(hand, "c", "2026-03-11 04:00")
    b = _row(hand, "b", "2026-03-11 04:00")
    # a's events at 12:30 UTC = 20:30 Shanghai; c's at 03:00 UTC = 19:00 the day before in LA
    assert (a.act_peak_hour, a.act_hour_mean) == (20, 20.5)
    assert (c.act_peak_hour, c.act_hour_mean) == (19, 19.5)
    assert a.act_weekend_share == pytest.approx((2 + 2 / 7) / 3)  # 2026-03-01 was a Sunday
    # request time 04:00 UTC: 12:00 Shanghai, 04:00 London (GMT), 21:00 the day before in LA (PDT)
    assert (a.local_hour, b.local_hour, c.local_hour) == (12, 4, 21)
    assert (a.utc_offset_hours, b.utc_offset_hours, c.utc_offset_hours) == (8.0, 0.0, -7.0)
    assert (a.local_weekday, c.local_weekday) == (2, 1)  # Wednesday in Shanghai, Tuesday in LA
    assert _row(hand, "c", "2026-01-15 04:00").utc_offset_hours == -8.0  # PST before DST


def test_planted_future_rows_are_never_seen(hand):
    """Orders, sends, opens and events after the cutoff change nothing at the cutoff."""
    frames = hand_frames()
    cutoff = "2026-03-11 04:00"
    future = T("2026-03-11 00:00:01")  # after the snapshot the cutoff is served from
    frames["orders"] = pd.concat([frames["orders"], pd.DataFrame({
        "customer_id": ["a", "c"], "order_id": ["f1", "f2"], "ordered_at": [future, T("2026-05-01")],
        "amount": [99999.0, 5.0], "quantity": [1, 1], "category": ["home", "home"], "offer": ["pct20", None]})])
    frames["engagements"] = pd.concat([frames["engagements"], pd.DataFrame({
        "customer_id": ["c"], "send_id": ["f3"], "channel": ["wechat"], "offer": ["pct10"],
        "sent_at": [future], "delivered_at": [future], "opened_at": [future], "clicked_at": [future],
        "converted_at": [future], "conversion_value": [500.0], "unsubscribed_at": [future],
        "propensity": [0.5], "campaign_id": ["z"]})])
    frames["events"] = pd.concat([frames["events"], pd.DataFrame({
        "customer_id": ["b"], "event_id": ["f4"], "event_type": ["app_open"], "occurred_at": [future],
        "platform": ["app"], "category": ["sports"]})])
    planted = ProfileData.from_frames(**frames)
    ids = ["a", "b", "c"]
    pd.testing.assert_frame_equal(features_as_of(planted, cutoff, ids), features_as_of(hand, cutoff, ids))
    # unsnapped (exact up to the cutoff) sees the 00:00:01 order: the planting did take
    assert _row(planted, "a", cutoff, snapped=False).revenue_total == 100.0 + 99999.0


def test_tables_follow_feasts_point_in_time_rule_exactly(small_data):
    """For random (customer, time): the latest table row at or before the time (what Feast's
    point-in-time join and online store serve), or the default when there is none, equals
    features_as_of for that time."""
    rng = np.random.default_rng(3)
    ids = small_data.profiles.customer_id.to_numpy()
    n = 400
    q = pd.DataFrame({
        "customer_id": ids[rng.integers(0, len(ids), n)],
        TIMESTAMP: T("2026-02-15") + pd.to_timedelta(rng.integers(0, 160 * 86400, n), unit="s"),
    })
    tables = compute_feature_tables(small_data).tables
    # plus times exactly at change points (a row at T is visible at T) and one second before
    at_rows = tables["rfm"].sample(100, random_state=1)[["customer_id", TIMESTAMP]]
    # and just after each customer's first appearance (its profile row must not show up before
    # the snapshot grid says so)
    prof = small_data.profiles
    born = pd.DataFrame({"customer_id": prof.customer_id,
                         TIMESTAMP: prof[["signup_at", "first_seen_at"]].min(axis=1) + pd.Timedelta(minutes=1)})
    q = pd.concat([q, at_rows, at_rows.assign(**{TIMESTAMP: at_rows[TIMESTAMP] - pd.Timedelta(seconds=1)}), born],
                  ignore_index=True)
    q[TIMESTAMP] = q[TIMESTAMP].astype("datetime64[ns, UTC]")
    expected = features_as_of(small_data, q[TIMESTAMP], q.customer_id.to_numpy())
    defs = feature_defs()
    order = q.sort_values(TIMESTAMP).index
    checked = 0
    for g in stored_groups():
        t = tables[g.name].sort_values(TIMESTAMP)
        got = pd.merge_asof(q.loc[order], t, on=TIMESTAMP, by="customer_id", direction="backward",
                            allow_exact_matches=True).set_index(order).sort_index()
        for f in g.features:
            col = got[f.name].fillna(defs[f.name].default)  # no row yet: the empty-history value
            want = expected[f.name]
            if f.dtype == "str":
                assert (col.to_numpy() == want.to_numpy()).all(), f.name
            else:
                np.testing.assert_allclose(col.to_numpy(dtype=float), want.to_numpy(dtype=float),
                                           rtol=0, atol=0, equal_nan=True, err_msg=f.name)
            checked += 1
    assert checked > 80


def test_chunking_and_files_give_the_same_tables(small_data, tmp_path):
    whole = compute_feature_tables(small_data).tables
    chunked = compute_feature_tables(small_data, FeatureConfig(chunk_customers=37)).tables
    files = write_feature_tables(small_data, tmp_path / "t", FeatureConfig(chunk_customers=50))
    for name, frame in whole.items():
        key = ["customer_id", TIMESTAMP]
        a = frame.sort_values(key).reset_index(drop=True)
        b = chunked[name].sort_values(key).reset_index(drop=True)
        c = pd.read_parquet(files.paths[name]).sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        pd.testing.assert_frame_equal(a, c, check_dtype=False)
        assert files.rows[name] == len(a) > 0


def test_heartbeats_bound_the_gap_between_rows_and_reach_past_the_end(small_data):
    """Every customer's rows are at most heartbeat_days apart and reach the view's last change
    (what lets Feast's join look back only that far), and a heartbeat row repeats the values."""
    config = FeatureConfig()
    ft = compute_feature_tables(small_data, config)
    beat = pd.Timedelta(days=config.heartbeat_days)
    for name, t in ft.tables.items():
        if name == "customer_profile":
            continue
        t = t.sort_values(["customer_id", TIMESTAMP])
        gaps = t.groupby("customer_id")[TIMESTAMP].diff().dropna()
        assert gaps.max() <= beat, name
        assert (t.groupby("customer_id")[TIMESTAMP].max() >= ft.end).all(), name
    off = compute_feature_tables(small_data, FeatureConfig(heartbeat_days=0)).tables
    for name, t in off.items():
        key = ["customer_id", TIMESTAMP]
        merged = ft.tables[name].merge(t, on=key, how="left", suffixes=("", "_raw"), indicator=True)
        assert (merged["_merge"] == "both").sum() == len(t), name  # every change point is kept
        assert len(ft.tables[name]) >= len(t)


def test_same_input_same_tables(small_data):
    a = compute_feature_tables(small_data).tables
    b = compute_feature_tables(small_data).tables
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])


def test_tables_are_sparse_change_points_not_dense_days(small_data):
    tables = compute_feature_tables(small_data).tables
    n = len(small_data.profiles)
    assert len(tables["customer_profile"]) == n
    for name, t in tables.items():
        assert not t.duplicated(["customer_id", TIMESTAMP]).any(), name
        assert len(t) < n * 120, name  # fewer rows than one per customer per day


def test_empty_history_and_unknown_customers_get_the_documented_defaults(hand):
    out = features_as_of(hand, "2026-03-11 04:00", ["c", "nobody"])
    defs = feature_defs()
    nobody = out.iloc[1]
    assert not nobody.known and out.iloc[0].known
    for g in stored_groups():
        for f in g.features:
            want = defs[f.name].default
            if isinstance(want, float) and np.isnan(want):
                assert np.isnan(nobody[f.name]), f.name
            else:
                assert nobody[f.name] == want, f.name
    # c never ordered: empty-history values, which equal the defaults
    assert out.iloc[0].orders_total == 0 and out.iloc[0].days_since_last_order == FeatureConfig().never_days
    assert out.iloc[0].order_share_home == pytest.approx(1 / 6)


def test_missing_profiles_and_bad_frames_raise_clear_errors(tmp_path, hand):
    with pytest.raises(WorkspaceError, match="decisioning profiles"):
        ProfileData.load(tmp_path / "nothing")
    frames = hand_frames()
    with pytest.raises(InputError, match="orders: missing column"):
        ProfileData.from_frames(frames["profiles"], frames["orders"].drop(columns=["ordered_at"]))
    dup = pd.concat([frames["profiles"], frames["profiles"].iloc[:1]])
    with pytest.raises(InputError, match="more than once"):
        ProfileData.from_frames(dup)
    with pytest.raises(InputError, match="one time or one per customer"):
        features_as_of(hand, ["2026-03-01", "2026-03-02"], ["a", "b", "c"])


def test_load_reads_a_profiles_folder_with_missing_history_files(tmp_path):
    frames = hand_frames()
    write_profiles(tmp_path / "p", {"profiles": frames["profiles"], "orders": frames["orders"]})
    data = ProfileData.load(tmp_path / "p")
    assert len(data.events) == 0 and len(data.engagements) == 0
    assert _row(data, "a", "2026-03-21").orders_total == 2

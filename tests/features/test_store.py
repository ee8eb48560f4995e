"""The Feast adapter against a real Feast repo (DuckDB offline store, SQLite online store)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from core.errors import InputError, NotFoundError, WorkspaceError
from core.workspace import Workspace
from features.compute import TIMESTAMP, FeatureConfig, features_as_of
from features.services import SERVICES, service_features
from features.store import FeatureStoreAdapter
from tests.features.conftest import T

pytestmark = pytest.mark.integration


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, names) -> None:
    for n in names:
        a, b = got[n].to_numpy(), want[n].to_numpy()
        if a.dtype == object or b.dtype == object:
            assert (a == b).all(), n
        else:
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-12, atol=1e-9, err_msg=n)


def test_apply_writes_an_absolute_repo_with_every_service(feast_store):
    cfg = yaml.safe_load((feast_store.repo / "feature_store.yaml").read_text())
    assert cfg["entity_key_serialization_version"] == 3
    assert cfg["offline_store"]["type"] == "duckdb" and cfg["online_store"]["type"] == "sqlite"
    assert cfg["online_store"]["path"].startswith("/") and cfg["registry"].startswith("/")
    fs = feast_store.feast()
    assert {s.name for s in fs.list_feature_services()} == set(SERVICES)
    for view in fs.list_feature_views():
        assert view.batch_source.path.startswith("/")
    # the Feast service holds exactly the names training and serving are told about
    for name in SERVICES:
        feast_names = [f.name for proj in fs.get_feature_service(name).feature_view_projections for f in proj.features]
        assert sorted(feast_names) == sorted(service_features(name))


def test_training_set_keeps_rows_order_index_and_extra_columns(feast_store, small_data):
    ids = small_data.profiles.customer_id.to_numpy()
    rng = np.random.default_rng(0)
    n = 300
    edf = pd.DataFrame({
        "customer_id": ids[rng.integers(0, len(ids), n)],
        "event_timestamp": T("2026-03-01") + pd.to_timedelta(rng.integers(0, 125 * 86400, n), unit="s"),
        "label": rng.integers(0, 2, n),
    }, index=pd.RangeIndex(1000, 1000 + n))
    for service in ("propensity_v1", "send_time_v1"):
        out = feast_store.training_set(service, edf)
        assert list(out.index) == list(edf.index)
        pd.testing.assert_frame_equal(out[edf.columns.tolist()], edf)
        names = feast_store.feature_names(service)
        assert list(out.columns) == [*edf.columns, *names]
        want = features_as_of(small_data, edf.event_timestamp, edf.customer_id.to_numpy())
        _assert_same(out, want, names)


def test_training_rows_never_see_planted_future_values(tmp_path, feast_store):
    """Orders and sends planted after a cutoff are invisible to the row at that cutoff and
    visible to a row after them."""
    from tests.features.conftest import hand_frames, write_profiles

    frames = hand_frames()
    planted = pd.DataFrame({"customer_id": ["a"], "order_id": ["big"], "ordered_at": [T("2026-03-15 08:00")],
                            "amount": [99999.0], "quantity": [1], "category": ["sports"], "offer": ["pct20"]})
    frames["orders"] = pd.concat([frames["orders"], planted], ignore_index=True)
    ws = Workspace(tmp_path / "ws").ensure()
    write_profiles(ws.profiles, frames)
    store = FeatureStoreAdapter.open(ws)
    store.apply()
    edf = pd.DataFrame({"customer_id": ["a", "a", "a", "a"],
                        "event_timestamp": [T("2026-03-14 23:59:59"), T("2026-03-15 09:00"),
                                            T("2026-03-16 00:00"), T("2026-03-16 00:00")]})
    out = store.training_set("offer_v1", edf)
    assert out.revenue_total.tolist() == [100.0, 100.0, 100.0 + 99999.0, 100.0 + 99999.0]
    assert out.redeemed_pct20.tolist() == [0, 0, 1, 1]
    assert out.order_share_sports.iloc[0] == pytest.approx(1 / 7)
    # the send of 03-25 and its unsubscribe of 03-26 are invisible before them
    dec = store.training_set("decision_v1", pd.DataFrame({"customer_id": ["a", "a"],
                                                           "event_timestamp": [T("2026-03-25"), T("2026-03-27")]}))
    assert dec.sends_sms.tolist() == [0, 1] and dec.unsubscribed_sms.tolist() == [0, 1]


def test_online_equals_offline_at_the_same_time(feast_store, small_data):
    _, end = feast_store.table_range()
    at = end + pd.Timedelta(hours=5)
    ids = list(small_data.profiles.customer_id.iloc[:60])
    for service in SERVICES:
        online = feast_store.online(service, ids, request_time=at)
        assert online.known.all()
        offline = feast_store.training_set(service, pd.DataFrame({"customer_id": ids, "event_timestamp": [at] * len(ids)}))
        names = feast_store.feature_names(service)
        assert list(online.frame.columns) == ["customer_id", "known", *names]
        _assert_same(online.frame, offline, names)


def test_unknown_customer_is_flagged_cold_start_with_defaults(feast_store, small_data):
    known_id = small_data.profiles.customer_id.iloc[0]
    res = feast_store.online("decision_v1", ["nobody-1", known_id, "nobody-2"], request_time="2026-06-30 02:00")
    assert res.known.tolist() == [False, True, False]
    row = res.frame.iloc[0]
    for name, default in res.defaults.items():
        if isinstance(default, float) and np.isnan(default):
            continue
        assert row[name] == default, name
    assert row.timezone == FeatureConfig().default_timezone and row.consent_email == 0
    assert row.days_since_last_order == FeatureConfig().never_days
    assert row.local_hour == 10  # 02:00 UTC in the default time zone (Asia/Shanghai)
    assert res.frame.customer_id.tolist() == ["nobody-1", known_id, "nobody-2"]
    assert not res.frame.isna().any().any()


def test_bad_requests_get_clear_errors(feast_store, tmp_path):
    with pytest.raises(NotFoundError, match="known"):
        feast_store.training_set("nope_v1", pd.DataFrame({"customer_id": ["a"], "event_timestamp": [T("2026-03-01")]}))
    with pytest.raises(InputError, match="event_timestamp"):
        feast_store.training_set("churn_v1", pd.DataFrame({"customer_id": ["a"]}))
    with pytest.raises(InputError, match="unparseable"):
        feast_store.training_set("churn_v1", pd.DataFrame({"customer_id": ["a"], "event_timestamp": ["soon"]}))
    _, end = feast_store.table_range()
    with pytest.raises(InputError, match="heartbeat_days"):  # beyond what the tables can answer exactly
        feast_store.training_set("churn_v1", pd.DataFrame({"customer_id": ["a"],
                                                           "event_timestamp": [end + pd.Timedelta(days=15)]}))
    with pytest.raises(InputError, match="materialize"):
        feast_store.materialize(start="2026-03-01", end="2026-02-01")
    empty = FeatureStoreAdapter.open(Workspace(tmp_path / "empty").ensure())
    with pytest.raises(WorkspaceError, match="features apply"):
        empty.online("churn_v1", ["a"])
    with pytest.raises(WorkspaceError, match="decisioning profiles"):
        empty.apply()


def test_naive_cutoffs_are_read_as_utc(feast_store, small_data):
    ids = small_data.profiles.customer_id.iloc[:5].tolist()
    aware = pd.DataFrame({"customer_id": ids, "event_timestamp": [T("2026-05-01 12:00")] * 5})
    naive = aware.assign(event_timestamp=aware.event_timestamp.dt.tz_localize(None))
    a = feast_store.training_set("churn_v1", aware)
    b = feast_store.training_set("churn_v1", naive)
    names = feast_store.feature_names("churn_v1")
    pd.testing.assert_frame_equal(a[names], b[names])
    assert TIMESTAMP in b


def _dump_sqlite(store: FeatureStoreAdapter) -> list[tuple]:
    import sqlite3

    path = store.settings.online_store.feast_yaml(store.repo)["path"]
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = []
        for t in tables:
            rows += [(t, *r) for r in con.execute(
                f'SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts, '
                f'typeof(event_ts) FROM "{t}" ORDER BY entity_key, feature_name')]
        return rows
    finally:
        con.close()


def test_fast_materialisation_writes_exactly_what_feast_writes(tmp_path, small_profiles, small_data, feast_store):
    import shutil

    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    slow = FeatureStoreAdapter.open(ws)
    slow.apply()
    _, end = slow.table_range()
    mid = end - pd.Timedelta(days=30)  # a partial range too: rows after it must not be loaded
    slow.materialize(end=mid, method="feast")
    by_feast = _dump_sqlite(slow)
    assert len(by_feast) > 1000
    # the session's store was materialised with the fast path; rebuild its rows for the same range
    ws2 = Workspace(tmp_path / "ws2").ensure()
    shutil.copytree(small_profiles, ws2.profiles)
    fast = FeatureStoreAdapter.open(ws2)
    fast.apply()
    fast.materialize(end=mid, method="fast")
    assert _dump_sqlite(fast) == by_feast
    fs_slow, fs_fast = slow.feast(), fast.feast()
    for a, b in zip(fs_slow.list_feature_views(), fs_fast.list_feature_views(), strict=True):
        assert [(i[0], i[1]) for i in a.materialization_intervals] == [(i[0], i[1]) for i in b.materialization_intervals]
    ids = [*small_data.profiles.customer_id.iloc[:50], "nobody"]
    for service in SERVICES:
        pd.testing.assert_frame_equal(slow.online(service, ids, request_time=mid).frame,
                                      fast.online(service, ids, request_time=mid).frame, check_exact=True)
    # incremental: the rest of the range on top gives the full state
    fast.materialize(start=mid, end=end + pd.Timedelta(seconds=1))
    full = fast.online("decision_v1", ids, request_time=end)
    pd.testing.assert_frame_equal(full.frame, feast_store.online("decision_v1", ids, request_time=end).frame,
                                  check_exact=True)

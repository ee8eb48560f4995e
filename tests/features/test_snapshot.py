"""The columnar snapshot the fast materialiser writes beside the SQLite online store: bulk reads
and single reads (its row index) from it equal Feast's own read and the SQLite read, and it is
never used once the store has moved on without it (from the very next read)."""

from __future__ import annotations

import dataclasses
import shutil

import pandas as pd
import pytest

from core.workspace import Workspace
from features.online import FastOnlineReader, OnlineSnapshot, snapshot_path, write_sqlite
from features.services import SERVICES
from features.store import FeatureStoreAdapter

pytestmark = pytest.mark.integration


def _store_path(store: FeatureStoreAdapter) -> str:
    return store.settings.online_store.feast_yaml(store.repo)["path"]


def _reader(store: FeatureStoreAdapter) -> FastOnlineReader:
    reader = FastOnlineReader.open(store.workspace)
    reader.snapshot_min_ids = 1  # every read may use the snapshot
    return reader


def _ids(small_data) -> list[str]:
    ids = small_data.profiles.customer_id.astype(str).tolist()
    return [*ids[:120], "unknown-1", ids[5], "x", *ids[-30:]]


def _assert_same(fast, slow) -> None:
    pd.testing.assert_frame_equal(fast.frame, slow.frame, check_exact=True)
    assert fast.missing_filled == slow.missing_filled and fast.defaults == slow.defaults
    assert fast.known.tolist() == slow.known.tolist()


def test_snapshot_read_equals_feast_for_every_service(feast_store, small_data):
    path = snapshot_path(_store_path(feast_store))
    assert path.is_file() and feast_store.snapshot_status == "written"
    reader = _reader(feast_store)
    ids = _ids(small_data)
    _, end = feast_store.table_range()
    for at in (end + pd.Timedelta(hours=3), pd.Timestamp("2026-01-10 23:30", tz="UTC")):
        for service in SERVICES:
            fast = reader.read(service, ids, request_time=at)
            assert reader.last_source == "snapshot"
            _assert_same(fast, feast_store.online(service, ids, request_time=at))
    # small reads use the snapshot's row index by default, and give the same
    reader.snapshot_min_ids = 64
    few = reader.read("decision_v1", ids[:3], request_time=end)
    assert reader.last_source == "snapshot_rows"
    _assert_same(few, feast_store.online("decision_v1", ids[:3], request_time=end))


def _assert_identical(fast, slow) -> None:
    """Same OnlineFeatures, column by column: names, order, dtypes, values, flags, fill counts."""
    _assert_same(fast, slow)
    assert list(fast.columns) == list(slow.columns) and fast.customer_ids == slow.customer_ids
    for name, col in fast.columns.items():
        assert col.dtype == slow.columns[name].dtype and col.shape == slow.columns[name].shape, name


def test_single_reads_from_the_snapshot_rows_equal_sqlite_for_every_service(feast_store, small_data):
    snap_reader = FastOnlineReader.open(feast_store.workspace)
    sql_reader = FastOnlineReader.open(feast_store.workspace)
    sql_reader.use_snapshot = False
    profiles = small_data.profiles.customer_id.astype(str).tolist()
    _, end = feast_store.table_range()
    singles = [[c] for c in profiles[::7]] + [["unknown-1"]]
    smalls = [[profiles[3], "unknown-2", profiles[3]], profiles[:63], [profiles[-1], profiles[0]],
              ["unknown-3", "unknown-4"], []]
    # the row plans gather every column of a row from the mapped file at once; a snapshot whose
    # columns are not slices of one file (words=None) reads them column by column: same values
    snap = snap_reader.snapshot()
    col_reader = FastOnlineReader.open(feast_store.workspace)
    col_reader._snap = dataclasses.replace(snap, words=None, cache={})
    for at in (end + pd.Timedelta(hours=3), pd.Timestamp("2026-01-10 23:30", tz="UTC")):
        for service in SERVICES:
            need, demand = snap_reader._plan(service)
            assert snap.row_plan(service, need, demand, snap_reader.config).words is not None
            assert col_reader.snapshot().row_plan(service, need, demand, snap_reader.config).words is None
            for ids in singles + smalls:
                fast = snap_reader.read(service, ids, request_time=at)
                assert snap_reader.last_source == ("snapshot_rows" if ids else "sqlite")
                slow = sql_reader.read(service, ids, request_time=at)
                assert sql_reader.last_source == "sqlite"
                _assert_identical(fast, slow)
                _assert_identical(col_reader.read(service, ids, request_time=at), slow)
            # the SQLite decoder itself still equals Feast's own read
            _assert_same(sql_reader.read(service, smalls[0], request_time=at),
                         feast_store.online(service, smalls[0], request_time=at))
    assert snap_reader.read("decision_v1", ["unknown-1"], request_time=end).known.tolist() == [False]


def test_a_write_after_the_snapshot_sends_the_next_single_read_back_to_sqlite(tmp_path, small_profiles, small_data):
    store = _fresh(tmp_path, small_profiles, "ws")
    store.materialize()
    path = _store_path(store)
    reader = FastOnlineReader.open(store.workspace)
    _, end = store.table_range()
    cid = str(small_data.profiles.customer_id.iloc[0])
    before = reader.read("decision_v1", [cid], request_time=end)
    assert reader.last_source == "snapshot_rows"
    # an unreadable snapshot: the store answers (and the file is not re-parsed at every read);
    # the good file renamed back in is picked up again
    snap = snapshot_path(path)
    good = snap.read_bytes()
    snap.write_bytes(b"not arrow")
    _assert_identical(reader.read("decision_v1", [cid], request_time=end), before)
    assert reader.last_source == "sqlite"
    tmp = snap.with_name("restore.tmp")
    tmp.write_bytes(good)
    tmp.replace(snap)
    _assert_identical(reader.read("decision_v1", [cid], request_time=end), before)
    assert reader.last_source == "snapshot_rows"
    # a write the snapshot does not follow: the very next single read goes to SQLite and sees it
    row = store._latest_rows(next(v for v in store.feast().list_feature_views() if v.name == "fatigue"),
                             *store.table_range())
    row = row[row["customer_id"] == cid].assign(sends_7d=77, sends_1d=33)
    kinds = {f: "int" for f in ("sends_1d", "sends_7d", "sends_7d_sms", "sends_7d_email", "sends_7d_wechat",
                                "sends_7d_app_push")}
    write_sqlite(path, "fatigue", row, kinds)
    after = reader.read("decision_v1", [cid], request_time=end)
    assert reader.last_source == "sqlite"
    assert after.columns["sends_7d"].tolist() == [77] and before.columns["sends_7d"].tolist() != [77]
    _assert_same(after, store.online("decision_v1", [cid], request_time=end))


def _fresh(tmp_path, small_profiles, name: str) -> FeatureStoreAdapter:
    ws = Workspace(tmp_path / name).ensure()
    shutil.copytree(small_profiles, ws.profiles)
    store = FeatureStoreAdapter.open(ws)
    store.apply()
    return store


def test_incremental_materialisation_merges_and_a_foreign_write_invalidates(tmp_path, small_profiles, small_data):
    store = _fresh(tmp_path, small_profiles, "ws")
    _, end = store.table_range()
    mid = end - pd.Timedelta(days=30)
    store.materialize(end=mid)
    assert store.snapshot_status == "written"
    reader = _reader(store)
    ids = _ids(small_data)
    _assert_same(reader.read("decision_v1", ids, request_time=mid), store.online("decision_v1", ids, request_time=mid))
    first = reader.snapshot()
    # the rest of the range on top: the snapshot is the old one with the new rows merged in
    store.materialize(start=mid, end=end + pd.Timedelta(seconds=1))
    assert store.snapshot_status == "merged"
    for service in SERVICES:
        fast = reader.read(service, ids, request_time=end)
        assert reader.last_source == "snapshot"
        _assert_same(fast, store.online(service, ids, request_time=end))
    assert reader.snapshot() is not first  # reloaded after the rename
    before = reader.read("decision_v1", ids, request_time=end)
    # a write to the store the snapshot does not follow (say an incremental push): it is not used
    path = _store_path(store)
    cid = str(small_data.profiles.customer_id.iloc[0])
    row = store._latest_rows(next(v for v in store.feast().list_feature_views() if v.name == "fatigue"),
                             *store.table_range())
    row = row[row["customer_id"] == cid].assign(sends_7d=99, sends_1d=42)
    kinds = {f: "int" for f in ("sends_1d", "sends_7d", "sends_7d_sms", "sends_7d_email", "sends_7d_wechat",
                                "sends_7d_app_push")}
    write_sqlite(path, "fatigue", row, kinds)
    after = reader.read("decision_v1", ids, request_time=end)
    assert reader.last_source == "sqlite" and reader.snapshot() is None
    assert after.frame.loc[0, "sends_7d"] == 99 and before.frame.loc[0, "sends_7d"] != 99
    _assert_same(after, store.online("decision_v1", ids, request_time=end))
    # the next fast materialisation cannot know the store's state: no snapshot, the store answers
    store.materialize()
    assert store.snapshot_status.startswith("skipped") and not snapshot_path(path).exists()
    reader.read("decision_v1", ids, request_time=end)
    assert reader.last_source == "sqlite"


def test_feast_materialisation_removes_the_snapshot_and_a_missing_one_is_no_error(tmp_path, small_profiles,
                                                                                   small_data):
    store = _fresh(tmp_path, small_profiles, "ws")
    store.materialize()
    path = snapshot_path(_store_path(store))
    snap = OnlineSnapshot.load(path)
    assert len(snap.index) == small_data.profiles.customer_id.nunique() and snap.index.is_monotonic_increasing
    store.materialize(method="feast")
    assert not path.exists()
    reader = _reader(store)
    ids = _ids(small_data)
    _, end = store.table_range()
    _assert_same(reader.read("decision_v1", ids, request_time=end),
                 store.online("decision_v1", ids, request_time=end))
    assert reader.last_source == "sqlite"

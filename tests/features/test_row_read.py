"""A single read from the snapshot's row index (a single decide) gives exactly what the bulk
read of the same customers gives: values, dtypes, known flags, defaults and fill counts in the
service's order, for customers missing some or every feature, their time zone, or unknown."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd

from features.compute import stored_groups
from features.online import FastOnlineReader, SnapshotWriter
from features.services import SERVICES
from features.store import StoreSettings


def _reader(tmp_path) -> FastOnlineReader:
    settings = StoreSettings()
    store = tmp_path / "online_store.db"
    sqlite3.connect(store).close()  # an empty store: the snapshot below is all it holds
    groups = stored_groups(settings.features)
    kinds = {g.name: {f.name: f.dtype for f in g.features} for g in groups}
    rng = np.random.default_rng(4)
    ids = [f"c{i}" for i in range(60)]
    writer = SnapshotWriter.begin(str(store), kinds)
    for g in groups:
        frame = {"customer_id": ids}
        for name, kind in kinds[g.name].items():
            if kind == "str":
                v = rng.choice(np.array(["Asia/Shanghai", "Europe/London", "Not/AZone", None], dtype=object), 60)
            elif kind == "int":
                v = rng.integers(0, 9, 60).astype(np.float64)
            else:
                v = rng.normal(0, 50, 60)
            if name.endswith("_ts"):  # stored times: whole epoch seconds, some after the request
                v = 1_767_225_600 + rng.integers(-400 * 86_400, 86_400, 60).astype(np.float64)
            if kind != "str":
                v[rng.random(60) < 0.15] = np.nan  # the store holds no value
            frame[name] = v
        frame = pd.DataFrame(frame)
        if g.name == "customer_profile":
            frame.loc[3, list(kinds[g.name])] = None  # a customer without any profile value
            frame.loc[4, [n for n, k in kinds[g.name].items() if k != "str"]] = np.nan  # only its zone
            frame.loc[4, "timezone"] = "Europe/London"
            frame.loc[5, "timezone"] = None  # a known customer without a zone: filled, and counted
        writer.add(g.name, frame.drop(index=[7, 8]) if g.name == "rfm" else frame)  # 7, 8: no rfm row
    writer.commit()
    return FastOnlineReader(settings, tmp_path)


def test_single_reads_equal_the_bulk_read_for_every_service(tmp_path):
    reader = _reader(tmp_path)
    ids = [f"c{i}" for i in range(60)] + ["unknown"]
    at = pd.Timestamp("2026-01-01 10:30", tz="UTC")
    for service in SERVICES:
        reader.snapshot_min_ids = 1
        bulk = reader.read(service, ids, request_time=at)
        assert reader.last_source == "snapshot"
        reader.snapshot_min_ids = 64
        for i, c in enumerate(ids):
            one = reader.read(service, [c], request_time=at)
            assert reader.last_source == "snapshot_rows"
            assert list(one.columns) == list(bulk.columns)
            for name, col in one.columns.items():
                want = bulk.columns[name][i:i + 1]
                assert col.dtype == want.dtype and col.shape == (1,), (service, c, name)
                assert (col.view(np.uint64) == want.view(np.uint64)).all() if col.dtype == np.float64 else \
                    col.tolist() == want.tolist(), (service, c, name)
            assert one.known.tolist() == bulk.known[i:i + 1].tolist()
            assert one.defaults == bulk.defaults
            # fill counts: one customer's, in the service's order
            want_filled = {name: 1 for name in bulk.columns if name in bulk.defaults and bulk.known[i]
                           and _missing(reader, c, name)}
            assert one.missing_filled == want_filled and list(one.missing_filled) == list(want_filled), (service, c)
        assert reader.read(service, ["c3"], request_time=at).known.tolist() == [False]
        # c4 has only its zone: known where the service's profile reads it
        assert reader.read(service, ["c4"], request_time=at).known.tolist() == [service == "decision_v1"]
    assert "timezone" in reader.read("decision_v1", ["c5"], request_time=at).missing_filled


def _missing(reader: FastOnlineReader, c: str, name: str) -> bool:
    snap = reader.snapshot()
    if c not in snap.rows():
        return True
    r = snap.rows()[c]
    return bool(np.isnan(snap.numeric[name][r])) if name in snap.numeric else snap.strings[name][r] is None

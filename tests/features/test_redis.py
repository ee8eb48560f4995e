"""Redis as Feast's online store, by configuration, against a real redis-server on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from core.workspace import Workspace
from features.services import SERVICES
from features.store import FeatureStoreAdapter, OnlineStoreConfig

pytestmark = pytest.mark.integration

REDIS = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if REDIS is None:
        if os.environ.get("CI"):  # CI installs it; a skip there would hide a broken install step
            pytest.fail("redis-server is not installed although CI should have installed it")
        pytest.skip("redis-server is not installed (.ci/run installs it: apt-get install -y redis-server)")
    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    pidfile = folder / "redis.pid"
    subprocess.run([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
                    "--pidfile", str(pidfile), "--dir", str(folder), "--save", "", "--appendonly", "no"],
                   check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG") and pidfile.is_file():
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    pid = int(pidfile.read_text().strip())
    yield f"127.0.0.1:{port}"
    os.kill(pid, signal.SIGTERM)


def test_redis_online_store_serves_what_sqlite_serves(tmp_path, redis_url, small_profiles, small_data, feast_store):
    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    store = FeatureStoreAdapter.open(ws, online=OnlineStoreConfig(type="redis", connection_string=redis_url))
    store.apply()
    assert "redis" in (ws.feature_repo / "feature_store.yaml").read_text()
    summary = store.materialize()
    assert summary.online_store == "redis" and summary.online_store_bytes is None
    reopened = FeatureStoreAdapter.open(ws)  # the applied settings are remembered
    assert reopened.settings.online_store.type == "redis"
    ids = [*small_data.profiles.customer_id.iloc[:40], "stranger"]
    _, end = store.table_range()
    for service in SERVICES:
        got = reopened.online(service, ids, request_time=end)
        want = feast_store.online(service, ids, request_time=end)
        assert got.known.tolist() == [True] * 40 + [False]
        for name in store.feature_names(service):
            a, b = got.frame[name].to_numpy(), want.frame[name].to_numpy()
            if a.dtype == object:
                assert (a == b).all(), name
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)


def test_fast_materialisation_and_fast_read_on_redis_match_feast(tmp_path, redis_url, small_profiles, small_data):
    import redis

    from features.online import FastOnlineReader

    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    ws = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(small_profiles, ws.profiles)
    store = FeatureStoreAdapter.open(ws, online=OnlineStoreConfig(type="redis", connection_string=redis_url))
    store.apply()

    def dump() -> dict:
        return {k: client.hgetall(k) for k in sorted(client.keys("*"))}

    client.flushall()
    store.materialize(method="feast")
    by_feast = dump()
    assert len(by_feast) == len(small_data.profiles)
    client.flushall()
    store.materialize(method="fast")
    assert dump() == by_feast
    store.materialize(method="fast")  # again: rows are not newer, nothing changes
    assert dump() == by_feast

    reader = FastOnlineReader.open(ws)
    ids = [*small_data.profiles.customer_id.iloc[:30], "stranger", small_data.profiles.customer_id.iloc[0]]
    _, end = store.table_range()
    for service in SERVICES:
        pd.testing.assert_frame_equal(reader.read(service, ids, request_time=end).frame,
                                      store.online(service, ids, request_time=end).frame, check_exact=True)

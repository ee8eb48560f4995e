"""The fast online reader returns exactly what Feast's online read returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import WorkspaceError
from core.workspace import Workspace
from features.online import FastOnlineReader, decode_value, entity_key_bytes
from features.services import SERVICES

pytestmark = pytest.mark.integration


def test_entity_keys_and_values_are_encoded_like_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    for cid in ["c1", "顾客-42", ""]:
        key = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=cid)])
        assert entity_key_bytes(cid) == serialize_entity_key(key, entity_key_serialization_version=3)
    for v in [Value(int64_val=0), Value(int64_val=-5), Value(int64_val=2**40), Value(double_val=0.1),
              Value(double_val=-3.5), Value(string_val="Asia/Shanghai"), Value(int32_val=-1), Value(bool_val=True)]:
        field = v.WhichOneof("val")
        assert decode_value(v.SerializeToString()) == getattr(v, field)
    assert decode_value(b"") is None and np.isnan(decode_value(Value(double_val=float("nan")).SerializeToString()))


def test_fast_read_equals_feast_for_every_service(feast_store, small_data):
    reader = FastOnlineReader.open(feast_store.workspace)
    ids = [*small_data.profiles.customer_id.iloc[:80], "unknown-1", small_data.profiles.customer_id.iloc[5], "x"]
    _, end = feast_store.table_range()
    for at in (end + pd.Timedelta(hours=3), pd.Timestamp("2026-01-10 23:30", tz="UTC")):
        for service in SERVICES:
            fast = reader.read(service, ids, request_time=at)
            slow = feast_store.online(service, ids, request_time=at)
            pd.testing.assert_frame_equal(fast.frame, slow.frame, check_exact=True)
            assert fast.missing_filled == slow.missing_filled and fast.defaults == slow.defaults
            assert fast.known.tolist() == slow.known.tolist()
    one = reader.read("decision_v1", [ids[0]])
    assert one.known.tolist() == [True] and one.matrix().shape[0] == 1


def test_fast_reader_needs_a_materialised_repo(tmp_path):
    with pytest.raises(WorkspaceError, match="features apply"):
        FastOnlineReader.open(Workspace(tmp_path / "w").ensure())

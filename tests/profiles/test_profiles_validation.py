"""Row validation: every reject reason lands in rejects.csv with the right file, row and column."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _rawdata import crm, order, send, write_source

from core.errors import SourceError
from features.profiles import build_profiles
from features.sources import read_sources


def _rejects(out) -> pd.DataFrame:
    return pd.read_csv(out / "rejects.csv", dtype={"row": int})


def _reasons(df: pd.DataFrame) -> set[tuple[str, str, int, str, str]]:
    return {tuple(r) for r in df[["source", "file", "row", "column", "reason"]].itertuples(index=False)}


def test_every_reject_reason_names_file_row_column(raw, workspace):
    write_source(raw, "customers", [
        crm("C1", phone="13800138000"),                       # 1 ok
        crm("C2", signup_at=None),                            # 2 missing value
        crm("C3", signup_at="01/02/2025"),                    # 3 bad timestamp
        crm("C4", signup_at="1850-01-01T00:00:00Z"),          # 4 timestamp out of range
        crm("C5", consent_sms="maybe"),                       # 5 not a boolean
        crm("C1"),                                            # 6 duplicate crm_id
        crm("C7"),                                            # 7 ok
    ])
    write_source(raw, "orders", [
        order("O1", crm_id="C1"),                             # 1 ok
        order("O2", crm_id="C1", amount=-1),                  # 2 negative amount
        order("O3", crm_id="C1", quantity=0),                 # 3 quantity below 1
        order("O4", crm_id="C1", quantity="2.5"),             # 4 not an integer
        order("O5", crm_id="C1", amount="ten"),               # 5 not a number
        order("O6"),                                          # 6 no identity key
        order("O7", phone="12345", email="nobody"),           # 7 no valid identity key (both invalid)
        order("O1", crm_id="C7"),                             # 8 duplicate order_id
        order("O9", crm_id="C7", ordered_at=None),            # 9 missing value
        order("O10", crm_id="C7", amount="7"),                # 10 ok
    ])
    write_source(raw, "engagements", [
        send("S1", email="a@b.com", channel="fax"),           # 1 unknown channel
        send("S2", email="a@b.com", propensity=0),            # 2 propensity
        send("S3", email="a@b.com", propensity=1.5),          # 3 propensity
        send("S4", email="a@b.com", channel=" SMS "),         # 4 ok (channel normalised)
        send("S5", email="a@b.com", conversion_value=-3),     # 5 negative amount
        send("S6", email="a@b.com", channel=None),            # 6 missing value
    ])
    summary = build_profiles(raw, workspace.profiles)
    got = _reasons(_rejects(workspace.profiles))
    expected = {
        ("customers", "customers.csv", 2, "signup_at", "missing value"),
        ("customers", "customers.csv", 3, "signup_at", "bad timestamp"),
        ("customers", "customers.csv", 4, "signup_at", "timestamp out of range"),
        ("customers", "customers.csv", 5, "consent_sms", "not a boolean"),
        ("customers", "customers.csv", 6, "crm_id", "duplicate crm_id"),
        ("orders", "orders.csv", 2, "amount", "negative amount"),
        ("orders", "orders.csv", 3, "quantity", "quantity below 1"),
        ("orders", "orders.csv", 4, "quantity", "not an integer"),
        ("orders", "orders.csv", 5, "amount", "not a number"),
        ("orders", "orders.csv", 6, "crm_id|phone|email|wechat_unionid|device_id", "no identity key"),
        ("orders", "orders.csv", 7, "phone", "no valid identity key"),
        ("orders", "orders.csv", 7, "email", "no valid identity key"),
        ("orders", "orders.csv", 8, "order_id", "duplicate order_id"),
        ("orders", "orders.csv", 9, "ordered_at", "missing value"),
        ("engagements", "engagements.csv", 1, "channel", "unknown channel"),
        ("engagements", "engagements.csv", 2, "propensity", "propensity not in (0, 1]"),
        ("engagements", "engagements.csv", 3, "propensity", "propensity not in (0, 1]"),
        ("engagements", "engagements.csv", 5, "conversion_value", "negative amount"),
        ("engagements", "engagements.csv", 6, "channel", "missing value"),
    }
    assert got == expected
    c = summary.sources
    assert (c["customers"].rows_read, c["customers"].rows_accepted, c["customers"].rows_rejected) == (7, 2, 5)
    assert (c["orders"].rows_read, c["orders"].rows_accepted, c["orders"].rows_rejected) == (10, 2, 8)
    assert (c["engagements"].rows_accepted, c["engagements"].rows_rejected) == (1, 5)
    # counted per row and reason: order 7 has two invalid keys but is one row
    assert c["orders"].rejects_by_reason["no valid identity key"] == 1
    assert summary.rejects_by_reason["propensity not in (0, 1]"] == 2
    assert summary.rejects_by_reason["negative amount"] == 2
    assert summary.rows_rejected == 5 + 8 + 5
    accepted = pd.read_parquet(workspace.profiles / "orders.parquet")
    assert sorted(accepted["order_id"]) == ["O1", "O10"]
    assert accepted.set_index("order_id").loc["O10", "amount"] == 7.0
    sends = pd.read_parquet(workspace.profiles / "engagements.parquet")
    assert sends["channel"].tolist() == ["sms"]


def test_malformed_csv_line_is_rejected_with_its_row(raw, workspace):
    (raw / "orders.csv").write_text(
        "order_id,crm_id,ordered_at,amount\n"
        "O1,C1,2025-01-01,1\n"
        "O2,C1,2025-01-01\n"            # row 2: a field short
        "O3,C1,2025-01-01,3,surplus\n"  # row 3: a field too many
        "O4,C1,2025-01-01,4\n"
    )
    summary = build_profiles(raw, workspace.profiles)
    rej = _rejects(workspace.profiles)
    assert rej["row"].tolist() == [2, 3]
    assert set(rej["reason"]) == {"wrong number of fields"}
    assert summary.sources["orders"].rows_read == 4
    assert summary.sources["orders"].rows_accepted == 2
    rmap = pd.read_parquet(workspace.profiles / "record_map.parquet")
    assert sorted(rmap["record_id"]) == ["O1", "O4"]


def test_warnings_keep_the_row_and_drop_the_bad_key(raw, workspace):
    write_source(raw, "customers", [
        crm("C1", email="not-an-email", phone="+86 138 0013 8000", timezone="Mars/Olympus"),
    ])
    write_source(raw, "orders", [order("O1", crm_id="C1", email="not-an-email")])
    summary = build_profiles(raw, workspace.profiles)
    assert summary.rows_rejected == 0
    assert summary.warnings_by_reason == {"invalid email": 2, "invalid timezone": 1}
    assert summary.invalid_keys == {"email": 2}
    warn = pd.read_csv(workspace.profiles / "warnings.csv")
    assert set(zip(warn["file"], warn["row"], warn["reason"], strict=True)) == {
        ("customers.csv", 1, "invalid email"), ("customers.csv", 1, "invalid timezone"),
        ("orders.csv", 1, "invalid email"),
    }
    prof = pd.read_parquet(workspace.profiles / "profiles.parquet")
    assert prof["timezone"].tolist() == ["Asia/Shanghai"]  # invalid -> default
    assert not prof["reachable_email"].iloc[0]
    assert prof["reachable_sms"].iloc[0]
    imap = pd.read_parquet(workspace.profiles / "identity_map.parquet")
    assert "not-an-email" not in set(imap["key_value"])


def test_parquet_with_typed_columns_and_dirty_strings(raw, workspace):
    ts = pd.to_datetime(["2025-01-01T00:00:00", "2025-01-02T00:00:00", "2025-01-03T00:00:00"]).tz_localize("UTC")
    pq.write_table(
        pa.table({
            "order_id": pa.array([1, 2, 3], pa.int64()),          # integer ids are read as text
            "phone": pa.array([13800138000, 13800138000, 13900139000], pa.int64()),
            "ordered_at": pa.array(ts),
            "amount": pa.array([1.5, float("nan"), 2.0]),          # NaN is a missing value
            "quantity": pa.array([1, 2, None], pa.int32()),        # empty -> default 1
        }),
        raw / "orders.parquet",
    )
    pq.write_table(
        pa.table({
            "event_id": ["E1", "E2", "E3"],
            "device_id": ["D1", "D1", "D2"],
            "event_type": ["app_open"] * 3,
            "occurred_at": ["2025-01-01T08:00:00+08:00", "not a time", "2025-01-01 00:00:00"],
        }),
        raw / "events.parquet",
    )
    summary = build_profiles(raw, workspace.profiles)
    rej = _reasons(_rejects(workspace.profiles))
    assert rej == {
        ("orders", "orders.parquet", 2, "amount", "missing value"),
        ("events", "events.parquet", 2, "occurred_at", "bad timestamp"),
    }
    orders = pd.read_parquet(workspace.profiles / "orders.parquet")
    assert orders["order_id"].tolist() == ["1", "3"]
    assert orders["quantity"].tolist() == [1, 1]
    assert str(orders["ordered_at"].dt.tz) == "UTC"
    events = pd.read_parquet(workspace.profiles / "events.parquet")
    assert events["occurred_at"].tolist() == [pd.Timestamp("2025-01-01T00:00:00Z")] * 2
    assert summary.customers == 4  # two phones, two anonymous devices


def test_folder_of_part_files_numbers_rows_per_file(raw, workspace):
    part = raw / "orders"
    part.mkdir()
    write_source(part, "orders", [order("O1", crm_id="C1"), order("O2", crm_id="C1")]).rename(part / "part-0.csv")
    write_source(part, "orders", [order("O3", crm_id="C2", amount=-1), order("O1", crm_id="C2")]).rename(
        part / "part-1.csv"
    )
    (part / "_SUCCESS").write_text("")
    summary = build_profiles(raw, workspace.profiles)
    assert summary.sources["orders"].files == ["orders/part-0.csv", "orders/part-1.csv"]
    assert _reasons(_rejects(workspace.profiles)) == {
        ("orders", "orders/part-1.csv", 1, "amount", "negative amount"),
        ("orders", "orders/part-1.csv", 2, "order_id", "duplicate order_id"),
    }


def test_a_folder_with_only_orders_works(raw, workspace):
    write_source(raw, "orders", [
        order("O1", phone="138 0013 8000"), order("O2", phone="+8613800138000"), order("O3", crm_id="C9"),
    ], columns=["order_id", "phone", "crm_id", "ordered_at", "amount", "store_code"])
    summary = build_profiles(raw, workspace.profiles)
    assert list(summary.sources) == ["orders"]
    assert summary.sources["orders"].ignored_columns == ["store_code"]  # said, not silently dropped
    assert summary.customers == 2
    prof = pd.read_parquet(workspace.profiles / "profiles.parquet")
    assert sorted(prof["n_orders"]) == [1, 2]
    assert (prof["n_crm_records"] == 0).all() and not prof["consent_sms"].any()
    assert prof["timezone"].eq("Asia/Shanghai").all()
    for name in ("events", "engagements"):  # absent sources still give readable, empty tables
        t = pd.read_parquet(workspace.profiles / f"{name}.parquet")
        assert len(t) == 0 and t.columns[0] == "customer_id"


def test_mostly_unreadable_column_is_a_wrong_type_not_a_pile_of_rejects(raw):
    write_source(raw, "orders", [order(f"O{i}", crm_id="C1", ordered_at=f"0{i}/02/2025") for i in range(1, 7)])
    with pytest.raises(SourceError, match=r"ordered_at.*ISO 8601.*6 of 6"):
        read_sources(raw)

"""Key normalisation, identity resolution and its guards, stable customer ids, pairwise metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _rawdata import crm, event, order, send, write_source
from hypothesis import given, settings
from hypothesis import strategies as st

from features.identity import (
    ResolverConfig,
    customer_id_for,
    normalise_email,
    normalise_phone,
    pairwise_precision_recall,
    resolve,
)
from features.profiles import build_profiles


def _customer_of(out, source: str) -> dict[str, str]:
    rmap = pd.read_parquet(out / "record_map.parquet")
    rmap = rmap[rmap["source"] == source]
    return dict(zip(rmap["record_id"], rmap["customer_id"], strict=True))


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("+86 138 0013 8000", "8613800138000"),
        ("13800138000", "8613800138000"),
        ("86-13800138000", "8613800138000"),
        ("138-0013-8000", "8613800138000"),
        ("0086 138 0013 8000", "8613800138000"),
        ("(+86) 138.0013.8000", "8613800138000"),
        ("+1 415 555 0100", "14155550100"),
        ("+44 20 7946 0958", "442079460958"),
        (" 8613800138000 ", "8613800138000"),
    ],
)
def test_phone_variants_normalise_to_digits_with_country_code(written, expected):
    values, invalid = normalise_phone(pa.array([written]))
    assert values.to_pylist() == [expected]
    assert not invalid.any()


@pytest.mark.parametrize("written", ["1380013800", "138001380001", "861380013800", "12345", "0138 0013 8000",
                                     "138-0013-80OO", "+86 1380013800"])
def test_phones_with_the_wrong_digit_count_or_letters_are_invalid(written):
    values, invalid = normalise_phone(pa.array([written]))
    assert values.to_pylist() == [None]
    assert invalid.tolist() == [True]


def test_email_is_trimmed_lower_case_and_needs_an_at():
    values, invalid = normalise_email(pa.array(["  Alice.Li@Example.COM ", "no-at.example.com", "a@b", None, " "]))
    assert values.to_pylist() == ["alice.li@example.com", None, None, None, None]
    assert invalid.tolist() == [False, True, True, False, False]


def test_duplicate_crm_records_merge_through_a_shared_phone_and_the_newest_wins(raw, workspace):
    write_source(raw, "customers", [
        crm("C1", phone="+86 138 0013 8000", email="old@x.com", city="Shanghai", timezone="Asia/Shanghai",
            consent_sms=True, signup_at="2024-01-01T00:00:00Z", updated_at="2024-02-01T00:00:00Z"),
        crm("C2", phone="86-13800138000", city="Beijing", timezone=None, consent_sms=False,
            signup_at="2025-01-01T00:00:00Z", updated_at="2025-03-01T00:00:00Z"),
        crm("C3", phone="13900139000", city="Tokyo", timezone="Asia/Tokyo"),
    ])
    write_source(raw, "orders", [order("O1", phone="13800138000"), order("O2", email="OLD@x.com")])
    summary = build_profiles(raw, workspace.profiles)
    assert summary.customers == 2 and summary.merges == 1
    prof = pd.read_parquet(workspace.profiles / "profiles.parquet").set_index("crm_id")
    merged = prof.loc["C2"]  # the newest record is the primary one
    assert merged["n_crm_records"] == 2
    assert merged["city"] == "Beijing" and not merged["consent_sms"]
    assert merged["timezone"] == "Asia/Shanghai"  # newest record has none: next newest that has one
    assert merged["signup_at"] == pd.Timestamp("2024-01-01T00:00:00Z")
    assert merged["updated_at"] == pd.Timestamp("2025-03-01T00:00:00Z")
    assert merged["n_orders"] == 2 and merged["reachable_sms"] and merged["reachable_email"]
    assert not merged["reachable_push"]
    owner = _customer_of(workspace.profiles, "customers")
    assert owner["C1"] == owner["C2"] != owner["C3"]
    assert set(_customer_of(workspace.profiles, "orders").values()) == {owner["C1"]}
    report = (workspace.profiles / "merge_report.json").read_text()
    assert '"city": 1' in report and '"consent_sms": 1' in report


def test_device_links_to_the_person_who_logs_in_on_it(raw, workspace):
    write_source(raw, "customers", [crm("C1", email="a@x.com", consent_push=True)])
    write_source(raw, "events", [
        event("E1", device_id="D1"),                                   # anonymous before login
        event("E2", device_id="D1", crm_id="C1", event_type="login"),  # the link
        event("E3", device_id="D1", event_type="view_item"),
        event("E4", device_id="D2"),                                   # never logs in
    ])
    write_source(raw, "engagements", [send("S1", device_id="D1", channel="app_push")])
    build_profiles(raw, workspace.profiles)
    events = _customer_of(workspace.profiles, "events")
    person = _customer_of(workspace.profiles, "customers")["C1"]
    assert events["E1"] == events["E2"] == events["E3"] == person != events["E4"]
    assert _customer_of(workspace.profiles, "engagements")["S1"] == person
    prof = pd.read_parquet(workspace.profiles / "profiles.parquet").set_index("customer_id")
    assert prof.loc[person, "reachable_push"] and prof.loc[person, "n_events"] == 3
    assert prof.loc[person, "n_sends"] == 1


def test_a_shared_family_tablet_does_not_merge_two_people(raw, workspace):
    write_source(raw, "customers", [crm("MUM", phone="13800138000"), crm("SON", phone="13900139000")])
    write_source(raw, "events", [
        event("E1", device_id="TABLET", crm_id="MUM", event_type="login"),
        event("E2", device_id="TABLET", phone="139 0013 9000", event_type="login"),
        event("E3", device_id="TABLET", event_type="app_open"),
        event("E4", device_id="PHONE_OF_SON", crm_id="SON", event_type="login"),
    ])
    summary = build_profiles(raw, workspace.profiles)
    owner = _customer_of(workspace.profiles, "customers")
    events = _customer_of(workspace.profiles, "events")
    assert owner["MUM"] != owner["SON"]
    assert events["E1"] == owner["MUM"] and events["E2"] == owner["SON"] == events["E4"]
    assert events["E3"] not in (owner["MUM"], owner["SON"])  # the tablet's anonymous activity stays apart
    assert summary.conflicts.keys_refused_by_reason == {"device shared by several persons": 1}
    imap = pd.read_parquet(workspace.profiles / "identity_map.parquet")
    tablet = imap[imap["key_value"] == "TABLET"]
    assert not tablet["linked"].any()
    assert set(tablet["customer_id"]) == {owner["MUM"], owner["SON"], events["E3"]}
    prof = pd.read_parquet(workspace.profiles / "profiles.parquet").set_index("customer_id")
    assert not prof.loc[owner["MUM"], "reachable_push"] and prof.loc[owner["SON"], "reachable_push"]


def test_a_phone_on_too_many_crm_records_links_none_of_them(raw, workspace):
    shop_phone = "13000000000"  # typed at the till for walk-in customers
    write_source(raw, "customers", [crm(f"C{i}", phone=shop_phone, email=f"p{i}@x.com") for i in range(5)])
    write_source(raw, "orders", [order("O1", phone=shop_phone), order("O2", email="p1@x.com")])
    summary = build_profiles(raw, workspace.profiles, config=ResolverConfig(max_crm_records_per_key=3))
    owner = _customer_of(workspace.profiles, "customers")
    assert len(set(owner.values())) == 5
    assert summary.conflicts.keys_refused_by_reason == {"key on too many CRM records": 1}
    orders = _customer_of(workspace.profiles, "orders")
    assert orders["O2"] == owner["C1"] and orders["O1"] not in owner.values()
    # the same data under a looser guard merges everyone
    summary = build_profiles(raw, workspace.profiles, config=ResolverConfig(max_crm_records_per_key=5))
    assert summary.customers == 1


def _world(rng: np.random.Generator) -> tuple[list[dict], list[dict], list[dict]]:
    customers = [crm(f"C{i}", phone=f"138{i:08d}", email=f"u{i}@x.com") for i in range(30)]
    orders = [order(f"O{j}", phone=f"+86 138{int(rng.integers(30)):08d}") for j in range(60)]
    orders += [order(f"O{j}", email=f"U{int(rng.integers(40))}@X.com ") for j in range(60, 90)]
    events = [event(f"E{k}", device_id=f"D{k % 25}", crm_id=f"C{k % 20}" if k < 25 else None) for k in range(80)]
    return customers, orders, events


def test_customer_ids_are_stable_across_runs_row_orders_and_formats(tmp_path):
    rng = np.random.default_rng(7)
    customers, orders, events = _world(rng)
    results = []
    for variant, (fmt, seed) in enumerate([("csv", None), ("csv", None), ("parquet", 1), ("csv", 2)]):
        raw = tmp_path / f"raw{variant}"
        shuffle = (lambda rows: rows) if seed is None else (
            lambda rows, s=seed: [rows[i] for i in np.random.default_rng(s).permutation(len(rows))]
        )
        write_source(raw, "customers", shuffle(customers), fmt)
        write_source(raw, "orders", shuffle(orders), fmt)
        write_source(raw, "events", shuffle(events), fmt)
        out = tmp_path / f"out{variant}"
        build_profiles(raw, out)
        rmap = pd.read_parquet(out / "record_map.parquet").sort_values(["source", "record_id"]).reset_index(drop=True)
        prof = pd.read_parquet(out / "profiles.parquet")
        results.append((rmap, prof))
    base_map, base_prof = results[0]
    for rmap, prof in results[1:]:
        pd.testing.assert_frame_equal(rmap, base_map)
        pd.testing.assert_frame_equal(prof, base_prof)
    assert base_prof["customer_id"].is_monotonic_increasing
    assert base_prof["customer_id"].str.fullmatch(r"c_[0-9a-f]{16}").all()
    c0 = base_map[(base_map.source == "customers") & (base_map.record_id == "C0")]["customer_id"].item()
    assert c0 == customer_id_for("crm_id", "C0")  # the smallest key names the customer


def test_resolve_links_every_key_a_record_carries():
    keys = {
        "orders": {"phone": pa.array(["p1", "p2", None, "p3"]), "email": pa.array([None, "e1", "e1", "e2"])},
        "customers": {"crm_id": pa.array(["c1", "c2"]), "phone": pa.array(["p1", "p3"])},
    }
    res = resolve(keys)
    o, c = res.record_customer["orders"], res.record_customer["customers"]
    assert o[1] == o[2]            # p2 ~ e1
    assert o[0] == c[0]            # p1 ~ c1
    assert o[3] == c[1] != c[0]    # p3 ~ e2 ~ c2
    assert len(res.customer_ids) == 3


def test_precision_recall_on_a_tiny_known_case():
    # truth: records 0-3 are person A, 4-5 person B. predicted: {0,1}, {2,3,4}, {5}
    truth = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([7, 7, 8, 8, 8, 9])
    precision, recall = pairwise_precision_recall(pred, truth)
    # predicted pairs: C(2,2) + C(3,2) = 4, of which true: (0,1), (2,3) = 2
    # true pairs: C(4,2) + C(2,2) = 7, of which found: 2
    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 7)
    assert pairwise_precision_recall(truth, truth) == (1.0, 1.0)
    assert pairwise_precision_recall(np.arange(6), truth) == (1.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=60))
def test_precision_recall_matches_counting_pairs(labels):
    pred = np.array([a for a, _ in labels])
    truth = np.array([b for _, b in labels])
    same_pred = pred[:, None] == pred[None, :]
    same_true = truth[:, None] == truth[None, :]
    off = ~np.eye(len(pred), dtype=bool)
    tp = (same_pred & same_true & off).sum()
    p, r = pairwise_precision_recall(pred, truth)
    assert p == pytest.approx(tp / (same_pred & off).sum() if (same_pred & off).any() else 1.0)
    assert r == pytest.approx(tp / (same_true & off).sum() if (same_true & off).any() else 1.0)


_KEY_POOL = {"crm_id": "C", "phone": "86138000000", "email": "e@x.co", "device_id": "D"}


@st.composite
def _records(draw):
    n = draw(st.integers(1, 25))
    rows = []
    for _ in range(n):
        row = {t: draw(st.one_of(st.none(), st.integers(0, 4).map(lambda i, p=p: f"{p}{i}")))
               for t, p in _KEY_POOL.items()}
        if all(v is None for v in row.values()):
            row["device_id"] = "D0"
        rows.append(row)
    return rows


@settings(max_examples=80, deadline=None)
@given(_records(), st.randoms(use_true_random=False))
def test_resolution_is_consistent_and_ignores_row_order(rows, rnd):
    def run(rs):
        keys = {"events": {t: pa.array([r[t] for r in rs], pa.string()) for t in _KEY_POOL}}
        res = resolve(keys)
        return res, [res.customer_ids[i] for i in res.record_customer["events"]]

    res, owners = run(rows)
    linked = res.identity_map.filter(res.identity_map["linked"]).to_pylist()
    key_owner = {(r["key_type"], r["key_value"]): r["customer_id"] for r in linked}
    assert len(key_owner) == len(linked)  # a linked key belongs to exactly one customer
    for row, owner in zip(rows, owners, strict=True):
        for t, v in row.items():
            if (t, v) in key_owner:  # every linked key of a record points at the record's customer
                assert key_owner[(t, v)] == owner
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    _, shuffled = run([rows[i] for i in perm])
    assert [shuffled[perm.index(i)] for i in range(len(rows))] == owners


def test_push_needs_the_app_not_just_a_device(raw, workspace):
    write_source(raw, "customers", [crm("APP", email="a@x.com"), crm("WEB", email="w@x.com")])
    write_source(raw, "events", [
        event("E1", device_id="PHONE", crm_id="APP", event_type="login"),
        event("E2", device_id="COOKIE", crm_id="WEB", event_type="login", platform="web"),
        event("E3", device_id="COOKIE", event_type="view_item", platform="web"),
    ])
    build_profiles(raw, workspace.profiles)
    owner = _customer_of(workspace.profiles, "customers")
    prof = pd.read_parquet(workspace.profiles / "profiles.parquet").set_index("customer_id")
    assert prof.loc[owner["APP"], "reachable_push"]
    assert not prof.loc[owner["WEB"], "reachable_push"]  # a web cookie is a device id, not an installed app

"""The decision log's binary distribution (schema 3): an exact round trip of every probability,
the same dicts and the same JSON text as the JSON writer gave, JSON rows still read beside
binary ones, every reader through one decode, damage named."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.errors import InputError
from policies.log import (
    DecisionLog,
    _dumps,
    decode_distributions,
    distribution_texts,
    encode_distribution,
    encode_distribution_matrix,
    layout_id,
)
from policies.records import DecisionRecord
from policies.reward import RewardConfig

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def arms_of(k: int) -> tuple[str, ...]:
    return ("no_send", *(f"email|o{j}|{8 + j % 12}" for j in range(k - 1)))


def nonzero(row: np.ndarray, arms) -> dict:
    return {arms[j]: row[j] for j in np.flatnonzero(row)}


def random_rows(rng, n: int, k: int) -> np.ndarray:
    # probabilities as policies give them (a few arms, a floor, exact ones), and awkward floats
    pool = np.array([0.0, 0.0, 0.0, -0.0, 1.0, 0.25, 1 / 3, 1e-300, 5e-324, 0.1 + 0.2, 0.000909090909090909])
    return rng.choice(pool, size=(n, k))


def test_the_matrix_encoding_round_trips_every_row_exactly():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n, k = int(rng.integers(0, 50)), int(rng.integers(1, 40))  # widths across byte boundaries
        arms = arms_of(k)
        dist = random_rows(rng, n, k)
        blobs, layouts = encode_distribution_matrix(dist, arms)
        assert layouts == {layout_id(arms): arms}
        got = decode_distributions(blobs, layouts)
        want = [nonzero(row, arms) for row in dist]
        assert got == want, trial
        for d, w in zip(got, want, strict=True):  # bit for bit, key order too
            assert list(d) == list(w)
            assert [v.hex() for v in d.values()] == [float(v).hex() for v in w.values()]
        # the same text the JSON writer gave
        assert distribution_texts(blobs, layouts) == [_dumps(w) for w in want]


def test_a_dict_encodes_as_its_matrix_row_or_falls_back_to_json():
    arms = arms_of(20)
    rng = np.random.default_rng(5)
    for _ in range(40):
        row = random_rows(rng, 1, 20)[0]
        d = {arms[j]: float(row[j]) for j in np.flatnonzero(row)}
        if not d:
            continue
        blob, lid = encode_distribution(d, arms)
        assert lid == layout_id(arms)
        assert blob == encode_distribution_matrix(row[None, :], arms)[0][0]
    assert encode_distribution({"no_send": 1.0, "sms|x|9": 0.0}, arms) is None  # not one of the arms
    assert encode_distribution({arms[3]: 0.5, arms[1]: 0.5}, arms) is None  # not in arm order
    assert encode_distribution({arms[0]: 1}, arms) is None  # an int is written as JSON writes it
    assert encode_distribution({arms[0]: float("nan")}, arms) is None  # JSON refuses it, as before
    with pytest.raises(ValueError):
        encode_distribution_matrix(np.array([[np.nan, 1.0]]), arms[:2])
    with pytest.raises(ValueError):
        encode_distribution_matrix(np.ones((2, 3)), arms[:2])


def decision(i: int, dist: dict) -> DecisionRecord:
    action = max(dist, key=dist.get)
    channel = None if action == "no_send" else "email"
    return DecisionRecord(
        decision_id=f"d{i}", customer_id=f"c{i % 7}", decided_at=T0 + timedelta(minutes=i), action=action,
        channel=channel, offer=None if channel is None else action.split("|")[1],
        send_slot=None if channel is None else int(action.split("|")[2]),
        send_at=None if channel is None else T0 + timedelta(hours=3), timezone="UTC",
        propensity=dist[action], distribution=dist, context={"x": float(i)}, policy="thompson")


def test_the_log_stores_binary_with_the_arm_list_and_every_reader_gets_the_dicts(tmp_path):
    from monitoring.logdata import sample_json

    arms = arms_of(30)
    dists = [{"no_send": 1.0}, {arms[1]: 0.75, arms[7]: 0.25}, {arms[j]: 1 / 29 for j in range(1, 30)},
             {arms[2]: 0.5, arms[9]: 0.5}]
    dists[2][arms[29]] = 1.0 - sum(list(dists[2].values())[:-1])  # sums to 1 exactly
    path = tmp_path / "d.sqlite"
    log = DecisionLog(path)
    log.append([decision(i, d) for i, d in enumerate(dists[:2])])  # no arm list: JSON text, as before
    log.append([decision(2 + i, d) for i, d in enumerate(dists)], arms=arms)
    log.append([decision(6, {"sms|z|9": 1.0})], arms=arms)  # an arm the list lacks: JSON text
    with sqlite3.connect(path) as conn:
        kinds = [r[0] for r in conn.execute("SELECT typeof(distribution) FROM decisions ORDER BY seq")]
        stored = conn.execute("SELECT distribution FROM decisions WHERE seq = 5").fetchone()[0]
    assert kinds == ["text", "text", "blob", "blob", "blob", "blob", "text"]
    assert len(stored) < len(_dumps(dists[2])) / 2  # 29 arms: ~4x smaller
    want = dists[:2] + dists + [{"sms|z|9": 1.0}]
    assert log.decisions()["distribution"].tolist() == want
    assert log.decisions(parse_json=False)["distribution"].tolist() == [_dumps(d) for d in want]
    assert log.decisions(columns=["distribution"])["distribution"].tolist() == want
    joined = log.joined(RewardConfig(), now=T0 + timedelta(days=3), parse_json=["distribution"])
    assert joined["distribution"].tolist() == want
    sample = sample_json(path, None, None, 100, 0, ("distribution",))
    assert sample["distribution"].tolist() == want
    log.close()
    # reopened by another object (which has not written the layout itself): the same
    assert DecisionLog(path).decisions()["distribution"].tolist() == want


def test_damage_is_named(tmp_path):
    arms = arms_of(9)
    blobs, layouts = encode_distribution_matrix(np.eye(9)[:2], arms)
    with pytest.raises(InputError, match="arm layout"):
        decode_distributions(blobs, {})
    with pytest.raises(InputError, match="no known encoding"):
        decode_distributions([b"\x07" + blobs[0][1:]], layouts)
    with pytest.raises(InputError, match="values for"):
        decode_distributions([blobs[0][:-8]], layouts)
    assert decode_distributions(['{"a":1.0}'], {}) == [json.loads('{"a":1.0}')]

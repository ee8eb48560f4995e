"""DecisionEngine._refresh_contacts of one customer (a single decide: Python numbers) gives the
same contact features, unsubscribe flags and consent, value and dtype, as the same customer's row
of the many-customer path (ContactFeatures' vector code), at the window edges, with sends after
the decision time, on unknown channels, reported unsubscribes and signed zeros."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from policies.context import CH, CONTACT_FEATURES
from serving.engine import DecisionEngine, _Sends

T = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # a DST night in Europe: no effect, as it should be
DAY = timedelta(days=1)


def _cols(rng, n: int) -> dict[str, np.ndarray]:
    cols = {}
    for name in CONTACT_FEATURES:
        if name.startswith("days_"):
            cols[name] = rng.choice([0.0, -0.0, 0.5, 1.0, 6.99, 7.0, 30.0, 999.0], n)
        else:
            cols[name] = rng.integers(0, 4, n)  # int64, as the online read gives counts
    for c in CH:
        cols[f"unsubscribed_{c}"] = rng.choice([0.0, 1.0], n, p=[0.8, 0.2])
        cols[f"consent_{c}"] = rng.integers(0, 2, n)
    cols["orders_90d"] = rng.integers(0, 3, n)  # not a contact feature: untouched
    return cols


def _refresh(cols: dict, ids: list[str], logged: _Sends) -> dict:
    out = dict(cols)
    DecisionEngine._refresh_contacts(None, out, ids, T, logged)  # it needs nothing of the engine
    return out


def test_one_customer_equals_its_row_of_the_many_customer_path():
    rng = np.random.default_rng(12)
    offsets = [timedelta(0), timedelta(microseconds=1), DAY - timedelta(microseconds=1), DAY, 7 * DAY,
               7 * DAY + timedelta(microseconds=1), 3 * DAY, 20 * DAY, -DAY, -timedelta(hours=3)]
    checked = 0
    for trial in range(60):
        n = 6
        ids = [f"c{trial}-{i}" for i in range(n)]
        cols = _cols(rng, n)
        k = int(rng.integers(0, 12))
        who = rng.integers(0, n, k)
        when = [T - offsets[int(i)] for i in rng.integers(0, len(offsets), k)]
        chan = rng.choice(np.array([*CH, "fax"], dtype=object), k, p=[0.24, 0.24, 0.24, 0.24, 0.04])
        us = np.array([int((w - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) for w in when],
                      dtype=np.int64) * 1000
        unsub = tuple((ids[int(i)], str(rng.choice(np.array([*CH, "fax"], dtype=object))))
                      for i in rng.integers(0, n, int(rng.integers(0, 3))))
        many = _refresh(cols, ids, _Sends(np.array([ids[i] for i in who], dtype=object), chan, us, unsub))
        for i, c in enumerate(ids):
            mine = who == i
            logged = _Sends(np.array([c] * int(mine.sum()), dtype=object), chan[mine], us[mine],
                            tuple(u for u in unsub if u[0] == c))
            one = _refresh({k: v[i:i + 1] for k, v in cols.items()}, [c], logged)
            untouched = not logged.unsubscribed and not (us[mine] < int(T.timestamp() * 1e6) * 1000).any()
            assert set(one) == set(many)
            for name, col in one.items():
                want = many[name][i:i + 1]
                assert col.shape == (1,), name
                if untouched:  # the single path returns at once with the store's own arrays (the
                    # many-customer path also re-derives consent from the store's unsubscribe flags)
                    assert col.base is cols[name], name
                    assert name.startswith("consent_") or np.array_equal(col, want), (trial, c, name)
                    continue
                assert col.dtype == want.dtype, (trial, c, name)
                assert col.astype(np.float64).view(np.uint64).tolist() == \
                    want.astype(np.float64).view(np.uint64).tolist(), (trial, c, name, col, want)
            checked += not untouched
    assert checked > 100  # most customers had something to refresh


def test_nothing_logged_leaves_the_features_as_they_are():
    rng = np.random.default_rng(1)
    cols = _cols(rng, 1)
    empty = _Sends(np.zeros(0, dtype=object), np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64))
    out = _refresh(cols, ["a"], empty)
    assert all(out[k] is cols[k] for k in cols)
    later = _Sends(np.array(["a"], dtype=object), np.array(["sms"], dtype=object),
                   np.array([int((T + DAY).timestamp()) * 10**9], dtype=np.int64))  # scheduled after t
    out = _refresh(cols, ["a"], later)
    assert all(out[k] is cols[k] for k in cols)

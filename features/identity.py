"""Identity keys and deterministic identity resolution.

Normalisation (``normalise_keys``), vectorised with pyarrow:

* ``phone``: separators (spaces, dashes, dots, brackets) removed; a leading ``+`` or ``00`` marks an
  explicit country code; an 11-digit number starting with 1 written without one is a Chinese mobile
  and gets ``86``. Valid results: ``86`` + an 11-digit mobile starting with 1 (13 digits),
  ``1`` + 10 digits (North America), or 8 to 15 digits for any other country code. Anything else
  (wrong digit count, letters, a national number starting with 0) is an invalid key.
* ``email``: trimmed, lower case; valid when it is ``local@domain.tld`` without spaces.
* ``crm_id``, ``wechat_unionid``, ``device_id``: trimmed (case kept: these ids are case-sensitive).

Invalid keys are dropped as keys (the caller counts them); they never link records.

Resolution (``resolve``) is a connected-components computation over a graph whose nodes are the
distinct (key type, normalised value) pairs and whose edges join the keys that one record carries
together. Two guards keep keys that real data shares from merging different people:

1. a phone, e-mail or WeChat unionid that appears with more than ``max_crm_records_per_key`` CRM ids
   (a shop's default phone typed at the till, a shared family mailbox) is refused for linking;
2. a device is a weak key: it joins a person only when the records that carry it together with a
   strong key (crm_id, phone, email, unionid; after guard 1) point at no more than
   ``max_persons_per_device`` otherwise unconnected persons (default 1). A shared family tablet
   that two people log into links to neither.

A refused key still identifies the records that carry nothing else: those form one profile per
refused key (say, the anonymous app activity of a shared tablet). Refused keys are reported.

``customer_id`` is ``'c_'`` + 16 hex digits of the SHA-1 of the component's smallest key, where
keys are ordered by type (``core.types.IDENTITY_KEYS`` order: crm_id first) and then by value. It
depends only on the set of keys in the component, never on row order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from core.types import IDENTITY_KEYS
from features._columns import clean_text, mask_np

STRONG_KEYS: tuple[str, ...] = ("crm_id", "phone", "email", "wechat_unionid")
SHAREABLE_KEYS: tuple[str, ...] = ("phone", "email", "wechat_unionid")

REFUSED_CRM = "key on too many CRM records"
REFUSED_DEVICE = "device shared by several persons"

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"


# --------------------------------------------------------------------------- normalisation


def normalise_phone(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Phones -> digits with country code. Returns (normalised (n,), invalid mask (n,)), where the
    normalised value is null for a missing or invalid phone."""
    text = clean_text(values)
    present = mask_np(pc.is_valid(text))
    s = pc.replace_substring_regex(text, r"[\s\-().]", "")
    chars_ok = mask_np(pc.match_substring_regex(s, r"^(?:\+|00)?\d+$"))
    explicit = mask_np(pc.match_substring_regex(s, r"^(?:\+|00)"))
    d = pc.replace_substring_regex(s, r"^(?:\+|00)", "")
    cn_local = ~explicit & mask_np(pc.match_substring_regex(d, r"^1\d{10}$"))
    d = pc.if_else(pa.array(cn_local), pc.binary_join_element_wise("86", d, ""), d)
    cn = mask_np(pc.match_substring_regex(d, r"^861\d{10}$"))
    nanp = mask_np(pc.match_substring_regex(d, r"^1\d{10}$"))
    other = mask_np(pc.match_substring_regex(d, r"^[2-9]\d{7,14}$")) & ~mask_np(
        pc.match_substring_regex(d, r"^86")
    )
    valid = present & chars_ok & (cn | nanp | other)
    out = pc.if_else(pa.array(valid), d, pa.nulls(len(d), pa.string()))
    return out, present & ~valid


def normalise_email(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """E-mails -> trimmed lower case. Returns (normalised (n,), invalid mask (n,))."""
    text = pc.utf8_lower(clean_text(values))
    present = mask_np(pc.is_valid(text))
    valid = present & mask_np(pc.match_substring_regex(text, _EMAIL))
    out = pc.if_else(pa.array(valid), text, pa.nulls(len(text), pa.string()))
    return out, present & ~valid


def normalise_id(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Opaque ids -> trimmed. Never invalid once present."""
    text = clean_text(values)
    return text, np.zeros(len(text), dtype=bool)


NORMALISERS = {
    "crm_id": normalise_id,
    "phone": normalise_phone,
    "email": normalise_email,
    "wechat_unionid": normalise_id,
    "device_id": normalise_id,
}


def normalise_key(key_type: str, values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Normalise one identity column. Returns (normalised values (n,), invalid mask (n,))."""
    normalise = NORMALISERS[key_type]
    n = len(values)
    if values.null_count * 2 < n:
        return normalise(values)
    # mostly empty (a phone column of app events): normalise the present values only
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    present = pc.is_valid(values)
    out, invalid = normalise(values.filter(present))
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    full = pc.replace_with_mask(pa.nulls(n, pa.string()), present, out.cast(pa.string()))
    full_invalid = np.zeros(n, dtype=bool)
    full_invalid[mask_np(present)] = invalid
    return full, full_invalid


# --------------------------------------------------------------------------- resolution


class ResolverConfig(BaseModel):
    """Guards against over-merging (see the module docstring). Loadable with core.config.load_config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_crm_records_per_key: int = Field(
        3, ge=1, description="a phone, e-mail or unionid seen with more CRM ids than this links none of them"
    )
    max_persons_per_device: int = Field(
        1, ge=1, description="a device pointing at more otherwise unconnected persons than this links none"
    )


@dataclass
class Resolution:
    """The result of ``resolve``.

    ``customer_ids``: (n_customers,) str, sorted. ``record_customer[source]``: (n_rows,) int32
    index into ``customer_ids`` for every row of that source. ``identity_map``: key_type,
    key_value, customer_id, linked (False for a refused key: one row per customer it was seen
    with). ``refused``: key_type, key_value, reason, n_linked (CRM ids or persons it touched).
    """

    customer_ids: np.ndarray
    record_customer: dict[str, np.ndarray]
    identity_map: pa.Table
    refused: pa.Table
    seconds: dict[str, float] = field(default_factory=dict)


def customer_id_for(key_type: str, key_value: str) -> str:
    """The customer_id of a component whose smallest key is (key_type, key_value)."""
    return "c_" + hashlib.sha1(f"{key_type}:{key_value}".encode()).hexdigest()[:16]


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label (n_nodes,) of an undirected graph with edges a[i]-b[i]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes)).tocsr()
    _, labels = connected_components(g, directed=False)
    return labels.astype(np.int32)


Columns = dict[str, np.ndarray]  # key type -> (n_rows,) int32 node id, -1 = no key


def _star_edges(cols: Columns, allowed: dict[str, np.ndarray], n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges joining each row's allowed keys to its first allowed key (in ``cols`` order).

    Returns (a, b, first): edge ends (m,) and the first allowed node of each row (n_rows,), -1 if
    none."""
    first = np.full(n_rows, -1, dtype=np.int32)
    for t, col in cols.items():
        m = allowed[t] & (first < 0)
        first[m] = col[m]
    a_parts, b_parts = [], []
    for t, col in cols.items():
        m = allowed[t] & (col != first)
        if m.any():
            a_parts.append(first[m])
            b_parts.append(col[m])
    empty = np.empty(0, dtype=np.int32)
    a = np.concatenate(a_parts) if a_parts else empty
    b = np.concatenate(b_parts) if b_parts else empty
    return a, b, first


def _count_distinct_pairs(x: np.ndarray, y: np.ndarray, n_x: int) -> np.ndarray:
    """For each x in 0..n_x-1, the number of distinct y it is paired with. x, y: (m,) ints >= 0."""
    if len(x) == 0:
        return np.zeros(n_x, dtype=np.int64)
    span = int(y.max()) + 1
    codes = np.unique(x.astype(np.int64) * span + y)
    return np.bincount(codes // span, minlength=n_x)


def resolve(
    keys: Mapping[str, Mapping[str, pa.Array]],
    config: ResolverConfig | None = None,
) -> Resolution:
    """Resolve records into customers.

    ``keys[source][key_type]``: the NORMALISED key column of that source (null = no key), every
    column of a source of the same length n_rows(source). Every row must carry at least one key.
    """
    import time

    config = config or ResolverConfig()
    t0 = time.perf_counter()
    sources = list(keys)
    n_rows = {s: (len(next(iter(keys[s].values()))) if keys[s] else 0) for s in sources}
    n_all = sum(n_rows.values())
    starts = np.cumsum([0, *n_rows.values()])
    types = IDENTITY_KEYS

    # 1. nodes: the distinct values of each key type, numbered type after type (int32 ids); all
    #    sources' rows stacked in ``sources`` order, one column per key type
    dictionaries: dict[str, pa.Array] = {}
    base: dict[str, int] = {}
    rank_parts = []
    cols: Columns = {}
    offset = 0
    for t in types:
        base[t] = offset
        chunks = []
        for s in sources:
            col = keys[s].get(t)
            if col is None:
                col = pa.nulls(n_rows[s], pa.string())
            chunks.extend(col.chunks if isinstance(col, pa.ChunkedArray) else [col])
        encoded = pa.chunked_array(chunks, type=pa.string()).dictionary_encode()
        dictionary = encoded.chunks[-1].dictionary if encoded.num_chunks else pa.array([], pa.string())
        dictionaries[t] = dictionary
        if len(dictionary) == 0:
            continue
        idx = np.concatenate(
            [np.asarray(ch.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32) for ch in encoded.chunks]
        )
        cols[t] = np.where(idx >= 0, idx + np.int32(offset), np.int32(-1)).astype(np.int32)
        order = np.asarray(pc.sort_indices(dictionary).to_numpy(zero_copy_only=False), dtype=np.int64)
        rank = np.empty(len(dictionary), dtype=np.int64)
        rank[order] = np.arange(len(dictionary))
        rank_parts.append(rank + offset)
        offset += len(dictionary)
    n_nodes = offset
    if n_nodes >= 2**31 - 1:
        raise ValueError("too many distinct keys for int32 node ids")
    rank_of = np.concatenate(rank_parts) if rank_parts else np.empty(0, dtype=np.int64)
    node_type = np.empty(n_nodes, dtype=np.int8)
    for ti, t in enumerate(types):
        node_type[base[t] : base[t] + len(dictionaries[t])] = ti
    present = {t: c >= 0 for t, c in cols.items()}
    t1 = time.perf_counter()

    # 2. guard 1: shareable strong keys seen with too many CRM ids
    refused = np.zeros(n_nodes, dtype=bool)
    n_linked = np.zeros(n_nodes, dtype=np.int64)
    reason = np.zeros(n_nodes, dtype=np.int8)  # 1 = too many CRM records, 2 = shared device
    if "crm_id" in cols:
        crm = cols["crm_id"]
        for t in SHAREABLE_KEYS:
            if t not in cols:
                continue
            m = present["crm_id"] & present[t]
            counts = _count_distinct_pairs(cols[t][m], crm[m], n_nodes)
            bad = counts > config.max_crm_records_per_key
            refused |= bad
            reason[bad] = 1
            n_linked[bad] = counts[bad]

    def allowed_of(t: str) -> np.ndarray:
        return present[t] & ~refused[np.maximum(cols[t], 0)]

    # 3. base components over the allowed strong keys; guard 2 on devices
    strong = {t: cols[t] for t in STRONG_KEYS if t in cols}
    a, b, first_strong = _star_edges(strong, {t: allowed_of(t) for t in strong}, n_all)
    if "device_id" in cols:
        base_label = _components(n_nodes, a, b)
        m = present["device_id"] & (first_strong >= 0)
        persons = _count_distinct_pairs(cols["device_id"][m], base_label[first_strong[m]], n_nodes)
        bad = persons > config.max_persons_per_device
        refused |= bad
        reason[bad] = 2
        n_linked[bad] = persons[bad]
        del base_label
    del a, b, first_strong
    t2 = time.perf_counter()

    # 4. final components over all allowed keys; a row with only refused keys joins its first one
    allowed = {t: allowed_of(t) for t in cols}
    a, b, first_allowed = _star_edges(cols, allowed, n_all)
    label = _components(n_nodes, a, b)
    del a, b
    row_node = first_allowed
    for col in cols.values():  # rows without an allowed key: their first (refused) key
        m = row_node < 0
        if not m.any():
            break
        row_node[m] = col[m]
    if n_all and (row_node < 0).any():
        raise ValueError("every record must carry at least one identity key")
    row_comp = label[row_node]

    # 5. customers: components that hold records; id from the smallest key
    n_comp = int(label.max()) + 1 if n_nodes else 0
    comps = np.flatnonzero(np.bincount(row_comp, minlength=n_comp))
    smallest = np.full(n_comp, np.iinfo(np.int64).max, dtype=np.int64)
    allowed_node = ~refused
    member = allowed_node.copy()
    member[row_node] = True  # the refused key of an island names it
    np.minimum.at(smallest, label[member], rank_of[member])
    node_by_rank = np.empty(n_nodes, dtype=np.int64)
    node_by_rank[rank_of] = np.arange(n_nodes)
    comp_node = node_by_rank[smallest[comps]]
    key_types, key_values = _node_keys(comp_node, node_type, types, dictionaries, base)
    ids = np.array([customer_id_for(t, v) for t, v in zip(key_types, key_values, strict=True)])
    order = np.argsort(ids, kind="stable")
    customer_ids = ids[order].astype(object)
    if len(customer_ids) > 1 and (ids[order][1:] == ids[order][:-1]).any():
        raise RuntimeError("customer_id hash collision; widen the id")
    comp_to_customer = np.full(n_comp, -1, dtype=np.int32)
    comp_to_customer[comps[order]] = np.arange(len(comps))
    row_customer = comp_to_customer[row_comp]
    record_customer = {s: row_customer[starts[i] : starts[i + 1]] for i, s in enumerate(sources)}
    t3 = time.perf_counter()

    # 6. identity map: allowed keys -> their customer; refused keys -> every customer they were seen with
    id_arr = pa.array(customer_ids.astype(str), pa.string())
    parts = []
    for t in types:
        d = dictionaries[t]
        if len(d) == 0:
            continue
        nd = np.arange(base[t], base[t] + len(d))
        ok = allowed_node[nd]
        cust = comp_to_customer[label[nd[ok]]]
        parts.append(_map_part(t, d.filter(pa.array(ok)), id_arr.take(pa.array(cust)), True))
    n_cust = max(len(customer_ids), 1)
    for t in types:
        if t not in cols or not refused[base[t] : base[t] + len(dictionaries[t])].any():
            continue
        m = present[t] & refused[np.maximum(cols[t], 0)]
        codes = np.unique(cols[t][m].astype(np.int64) * n_cust + row_customer[m].astype(np.int64))
        nodes_, custs = codes // n_cust, codes % n_cust
        vals = dictionaries[t].take(pa.array(nodes_ - base[t]))
        parts.append(_map_part(t, vals, id_arr.take(pa.array(custs)), False))
    identity_map = (
        pa.concat_tables(parts)
        if parts
        else _map_part("crm_id", pa.array([], pa.string()), pa.array([], pa.string()), True)
    )
    rnodes = np.flatnonzero(refused)
    r_types, r_values = _node_keys(rnodes, node_type, types, dictionaries, base)
    refused_tbl = pa.table(
        {
            "key_type": pa.array(r_types, pa.string()),
            "key_value": pa.array(r_values, pa.string()),
            "reason": pa.array([REFUSED_CRM if reason[n] == 1 else REFUSED_DEVICE for n in rnodes], pa.string()),
            "n_linked": pa.array(n_linked[rnodes], pa.int64()),
        }
    )
    t4 = time.perf_counter()
    return Resolution(
        customer_ids=customer_ids,
        record_customer=record_customer,
        identity_map=identity_map,
        refused=refused_tbl,
        seconds={"nodes": t1 - t0, "guards": t2 - t1, "components": t3 - t2, "identity_map": t4 - t3},
    )


def _node_keys(
    node: np.ndarray, node_type: np.ndarray, types: tuple[str, ...], dictionaries: dict[str, pa.Array],
    base: dict[str, int],
) -> tuple[list[str], list[str]]:
    """(key types, key values) of the given nodes, in their order."""
    out_t: list[str | None] = [None] * len(node)
    out_v: list[str | None] = [None] * len(node)
    for ti, t in enumerate(types):
        sel = np.flatnonzero(node_type[node] == ti)
        if len(sel) == 0:
            continue
        vals = dictionaries[t].take(pa.array(node[sel] - base[t])).to_pylist()
        for i, v in zip(sel.tolist(), vals, strict=True):
            out_t[i] = t
            out_v[i] = v
    return out_t, out_v  # type: ignore[return-value]


def _map_part(key_type: str, values: pa.Array, customers: pa.Array, linked: bool) -> pa.Table:
    n = len(values)
    return pa.table(
        {
            "key_type": pa.repeat(pa.scalar(key_type, pa.string()), n),
            "key_value": values.cast(pa.string()),
            "customer_id": customers.cast(pa.string()),
            "linked": pa.repeat(pa.scalar(linked, pa.bool_()), n),
        }
    )


# --------------------------------------------------------------------------- evaluation


def _dense(labels: np.ndarray) -> np.ndarray:
    """Labels as small non-negative ints (n,) int64: as they are when already so, else their rank."""
    if labels.min() >= 0 and labels.max() < 4 * len(labels):
        return labels
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def pairwise_precision_recall(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering against the truth.

    predicted, truth: (n,) integer cluster labels of the same n records. A pair of records is
    predicted-positive when both are in one predicted cluster and truly positive when both belong
    to one true cluster. Computed from the contingency table: TP = sum_ij C(n_ij, 2), predicted
    pairs = sum_i C(a_i, 2), true pairs = sum_j C(b_j, 2). With no predicted (or true) pairs the
    precision (recall) is 1.0: nothing was wrongly merged (split).
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    if predicted.shape != truth.shape:
        raise ValueError("predicted and truth must have the same shape")
    if len(predicted) == 0:
        return 1.0, 1.0
    p, t = _dense(predicted), _dense(truth)
    codes = p * (int(t.max()) + 1) + t
    _, n_ij = np.unique(codes, return_counts=True)

    def pairs(counts: np.ndarray) -> float:
        c = counts.astype(np.float64)
        return float(np.sum(c * (c - 1) / 2))

    tp = pairs(n_ij)
    pred = pairs(np.bincount(p))
    true = pairs(np.bincount(t))
    precision = tp / pred if pred else 1.0
    recall = tp / true if true else 1.0
    return precision, recall

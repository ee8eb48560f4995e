"""Reading one raw column as its documented kind, vectorised with pyarrow.

Each ``read_*`` function takes whatever a CSV or Parquet export holds for a column (strings from
CSV; typed or string columns from Parquet) and returns the typed values plus boolean masks of the
values that were present but could not be read, by reject reason. A column whose physical type
cannot hold the kind at all (say, a boolean Parquet column for a timestamp) raises ``WrongType``;
the caller turns that into a ``SourceError`` naming the file.

Rules (documented in the README's raw-source section):

* strings are trimmed; an empty string is a missing value;
* timestamps: Parquet timestamp or date columns (naive = UTC), or ISO 8601 text
  (``2026-03-01``, ``2026-03-01T08:30:00``, ``2026-03-01 08:30:00.123``, with an optional ``Z`` or
  ``+08:00`` offset; naive = UTC). Values outside [1970-01-01, 2100-01-01) are "out of range";
* numbers: numeric columns, or decimal text (``12``, ``-3.5``, ``1e3``); NaN is a missing value,
  infinities are not numbers;
* integers: integer columns, integral floats, or integer text (``3``, ``3.0``);
* booleans: boolean columns, 0/1 integers, or text true/false, t/f, yes/no, y/n, 1/0 (any case).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TIMESTAMP = pa.timestamp("ns", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "timestamp": TIMESTAMP,
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}

#: Plausible range of any timestamp in a CDP export, as ns since the epoch (UTC).
TS_MIN_NS = int(np.datetime64("1970-01-01T00:00:00", "ns").astype(np.int64))
TS_MAX_NS = int(np.datetime64("2100-01-01T00:00:00", "ns").astype(np.int64))

_ISO = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"
_ZONED = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_FLOAT = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?$"
_INT = r"^[+-]?\d{1,18}(?:\.0*)?$"
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]

Masks = dict[str, np.ndarray]


class WrongType(Exception):
    """The column's physical type cannot hold the documented kind."""


def mask_np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean arrow mask as numpy, null = False. Shape (n,)."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _single(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def _null_where(values: pa.Array, mask: pa.Array | np.ndarray) -> pa.Array:
    mask = pa.array(mask) if isinstance(mask, np.ndarray) else mask
    return pc.if_else(mask, pa.nulls(len(values), values.type), values)


def clean_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Trimmed strings; empty -> null. Integer or dictionary columns become their text."""
    values = _single(values)
    t = values.type
    if pa.types.is_dictionary(t):
        values = values.cast(t.value_type)
        t = values.type
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_integer(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        values = values.cast(pa.string())
    elif not pa.types.is_string(t):
        raise WrongType(f"expected text; got {t}")
    s = pc.utf8_trim_whitespace(values)
    return _null_where(s, pc.equal(pc.utf8_length(s), 0))


def read_text(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Masks]:
    return clean_text(values), {}


def _ts_from_ints(raw: np.ndarray, valid: np.ndarray, unit_ns: int) -> tuple[pa.Array, Masks]:
    """int64 counts of ``unit_ns`` since the epoch -> timestamp[ns, UTC], range-checked first so
    that nothing overflows."""
    lo, hi = TS_MIN_NS // unit_ns, TS_MAX_NS // unit_ns
    out_of_range = valid & ((raw < lo) | (raw >= hi))
    ok = valid & ~out_of_range
    ns = np.where(ok, raw, 0).astype(np.int64) * unit_ns
    arr = pa.array(ns, type=pa.int64(), mask=~ok).cast(TIMESTAMP)
    return arr, {"timestamp out of range": out_of_range}


_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def read_timestamp(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Masks]:
    """Timestamps as timestamp[ns, UTC]; masks 'bad timestamp' and 'timestamp out of range'."""
    values = _single(values)
    t = values.type
    if pa.types.is_dictionary(t):
        values = values.cast(t.value_type)
        t = values.type
    n = len(values)
    if pa.types.is_null(t):
        return pa.nulls(n, TIMESTAMP), {}
    if pa.types.is_date(t):
        values = values.cast(pa.timestamp("s"))
        t = values.type
    if pa.types.is_timestamp(t):
        # tz-aware values are stored as UTC instants; naive values are read as UTC: either way the
        # stored integer is the UTC count of the unit.
        raw = values.cast(pa.int64())
        valid = mask_np(pc.is_valid(raw))
        ints = raw.fill_null(0).to_numpy(zero_copy_only=False)
        return _ts_from_ints(ints, valid, _UNIT_NS[t.unit])
    text = clean_text(values)  # raises WrongType for non-text
    present = mask_np(pc.is_valid(text))
    iso = mask_np(pc.match_substring_regex(text, _ISO))
    zoned = iso & mask_np(pc.match_substring_regex(text, r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?" + _ZONED))
    naive = iso & ~zoned
    try:
        ns = np.zeros(n, dtype=np.int64)
        if naive.any():
            part = pc.cast(_null_where(text, ~naive), pa.timestamp("ns"))
            ns[naive] = part.cast(pa.int64()).to_numpy(zero_copy_only=False)[naive]
        if zoned.any():
            part = pc.cast(_null_where(text, ~zoned), TIMESTAMP)
            ns[zoned] = part.cast(pa.int64()).to_numpy(zero_copy_only=False)[zoned]
        parsed = iso
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # ISO-shaped but impossible values (2026-02-30, hour 25): rare; let pandas find them.
        import pandas as pd

        idx = np.flatnonzero(iso)
        sub = pd.to_datetime(
            pd.Series(text.take(pa.array(idx)).to_pylist()), format="ISO8601", utc=True, errors="coerce"
        )
        good = sub.notna().to_numpy()
        parsed = np.zeros(n, dtype=bool)
        parsed[idx[good]] = True
        ns = np.zeros(n, dtype=np.int64)
        ns[idx[good]] = sub[good].astype("int64").to_numpy()
    arr, masks = _ts_from_ints(ns, parsed, 1)
    masks["bad timestamp"] = present & ~parsed
    return arr, masks


def read_float(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Masks]:
    """float64; mask 'not a number' (unreadable text or an infinity). NaN is missing."""
    values = _single(values)
    t = values.type
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.float64()), {}
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        arr = values.cast(pa.float64())
        bad = np.zeros(len(arr), dtype=bool)
    else:
        text = clean_text(values)
        num = mask_np(pc.match_substring_regex(text, _FLOAT))
        bad = mask_np(pc.is_valid(text)) & ~num
        arr = pc.cast(_null_where(text, ~num), pa.float64())
    nan = mask_np(pc.is_nan(arr))
    inf = mask_np(pc.is_inf(arr))
    arr = _null_where(arr, nan | inf)
    return arr, {"not a number": bad | inf}


def read_int(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Masks]:
    """int64; mask 'not an integer'."""
    values = _single(values)
    t = values.type
    n = len(values)
    if pa.types.is_null(t):
        return pa.nulls(n, pa.int64()), {}
    if pa.types.is_integer(t):
        return values.cast(pa.int64()), {}
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        f = values.cast(pa.float64())
        fv = f.fill_null(0.0).to_numpy(zero_copy_only=False)
        present = mask_np(pc.is_valid(f)) & ~np.isnan(fv)
        ok = present & np.isfinite(fv) & (np.floor(fv) == fv) & (np.abs(fv) < 2**62)
        ints = np.where(ok, fv, 0).astype(np.int64)
        return pa.array(ints, mask=~ok), {"not an integer": present & ~ok}
    text = clean_text(values)
    ok = mask_np(pc.match_substring_regex(text, _INT))
    bad = mask_np(pc.is_valid(text)) & ~ok
    digits = pc.replace_substring_regex(_null_where(text, ~ok), r"\.0*$", "")
    return pc.cast(digits, pa.int64()), {"not an integer": bad}


def read_bool(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Masks]:
    """bool; mask 'not a boolean'."""
    values = _single(values)
    t = values.type
    n = len(values)
    if pa.types.is_null(t):
        return pa.nulls(n, pa.bool_()), {}
    if pa.types.is_boolean(t):
        return values, {}
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        is1 = pc.equal(values, 1)
        is0 = pc.equal(values, 0)
        present = mask_np(pc.is_valid(values))
        ok = mask_np(pc.or_(is1, is0))
        return _null_where(is1, ~ok), {"not a boolean": present & ~ok}
    text = pc.utf8_lower(clean_text(values))
    yes = mask_np(pc.is_in(text, value_set=pa.array(_TRUE)))
    no = mask_np(pc.is_in(text, value_set=pa.array(_FALSE)))
    ok = yes | no
    arr = pa.array(yes, mask=~ok)
    return arr, {"not a boolean": mask_np(pc.is_valid(text)) & ~ok}


READERS = {
    "str": read_text,
    "timestamp": read_timestamp,
    "float": read_float,
    "int": read_int,
    "bool": read_bool,
}

KIND_WORDS = {
    "str": "text",
    "timestamp": "ISO 8601 timestamps",
    "float": "numbers",
    "int": "integers",
    "bool": "booleans (true/false)",
}

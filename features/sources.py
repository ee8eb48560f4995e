"""Finding, reading and validating raw sources (DESIGN section 3; columns in features/schemas.py).

A sources folder holds, for any of the names ``customers``, ``orders``, ``events`` and
``engagements``, either ``<name>.parquet``, ``<name>.csv`` or a folder ``<name>/`` of ``.parquet`` /
``.csv`` part files (read in name order; names starting with ``.`` or ``_`` are ignored, as Spark
and Hadoop write them). At least one source must exist; each is optional.

Whole-file problems raise ``SourceError`` (one clear message): a missing folder, no recognised
source, a source given twice, an empty file, a missing required column, a column whose type cannot
hold its kind (a boolean Parquet column for a timestamp, or a text column in which most values,
and at least 5, are unreadable: dates in a non-ISO format, swapped columns).

Row problems reject the row (listed in ``rejects.csv`` with source, file, row, column, reason;
``row`` is the 1-based data row in that file, header excluded):

=========================== ====================================================================
reason                      when
=========================== ====================================================================
missing value               a required value is empty (ids, timestamps, amount, channel, ...)
bad timestamp               a timestamp is not ISO 8601 (or an impossible date)
timestamp out of range      a timestamp before 1970-01-01 or from 2100-01-01
not a number                a number column holds text that is not a number, or an infinity
not an integer              ``quantity`` is not a whole number
not a boolean               a consent value is not true/false, yes/no, 1/0, t/f, y/n
negative amount             ``amount`` or ``conversion_value`` below 0
quantity below 1            ``quantity`` < 1
unknown channel             ``channel`` is not one of core.types.Channel (compared trimmed, lower case)
propensity not in (0, 1]    a logged propensity <= 0 or > 1
no identity key             an order/event/send without any identity key
no valid identity key       its only identity keys are invalid (see below)
wrong number of fields      a CSV line with more or fewer fields than the header
duplicate <id column>       an id already seen in an earlier accepted row of the same source
                            (the first is kept)
=========================== ====================================================================

Row warnings keep the row (``warnings.csv``, same columns): ``invalid phone`` / ``invalid email``
(the key is dropped and never links; see features/identity.py) and ``invalid timezone`` (not an
IANA name: the record's time zone is treated as unknown, so the profile takes the time zone of the
customer's next newest record, else the default ``Asia/Shanghai``).

Empty cells are missing values. Columns the schema does not know are ignored and listed in the
summary (``ignored_columns``). Optional columns that are absent or empty take their documented
default where they have one (``quantity`` 1, consents False).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import available_timezones

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import SourceError
from core.types import Channel
from features._columns import ARROW_TYPES, KIND_WORDS, READERS, WrongType, mask_np
from features.identity import normalise_key
from features.schemas import SOURCES, SourceSchema

SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)
PART_SUFFIXES = (".parquet", ".csv")

PROBLEM_SCHEMA = pa.schema(
    [("source", pa.string()), ("file", pa.string()), ("row", pa.int64()), ("column", pa.string()),
     ("reason", pa.string())]
)

#: A typed column in which more than this share of the non-empty values, and at least
#: WRONG_TYPE_MIN of them, cannot be read is a wrong-typed column: the file is refused with one
#: message instead of a reject per row (dates in a non-ISO format, swapped columns).
WRONG_TYPE_SHARE = 0.5
WRONG_TYPE_MIN = 5

_TIMEZONES = pa.array(sorted(available_timezones()), pa.string())
_CHANNELS = pa.array([c.value for c in Channel], pa.string())


@dataclass(frozen=True)
class ImportedSource:
    """One source after validation.

    ``table``: the accepted rows, one column per schema column (typed: text, timestamp[ns, UTC],
    float64, int64, bool; identity keys normalised, null where missing or invalid).
    ``rejects`` / ``warnings``: tables of PROBLEM_SCHEMA.
    """

    name: str
    files: tuple[str, ...]
    table: pa.Table
    rows_read: int
    rows_rejected: int
    rejects: pa.Table
    warnings: pa.Table
    ignored_columns: tuple[str, ...] = ()  # columns of the files that the schema does not know

    @property
    def schema(self) -> SourceSchema:
        return SOURCES[self.name]

    @property
    def rows_accepted(self) -> int:
        return self.table.num_rows

    def key_columns(self) -> dict[str, pa.ChunkedArray]:
        """The normalised identity columns of the accepted rows (all rows, nulls where absent)."""
        return {c: self.table[c] for c in self.schema.identity_columns}

    def without_keys(self) -> ImportedSource:
        """The same source without its identity-key columns (the id column stays): once
        identities are resolved, raw identifiers are no longer needed and their memory goes."""
        drop = [c for c in self.schema.identity_columns if c != self.schema.id_column]
        return replace(self, table=self.table.drop_columns(drop))


# --------------------------------------------------------------------------- discovery


def find_sources(sources_dir: str | Path) -> dict[str, list[Path]]:
    """The files of each source present in ``sources_dir``, in the order they are read.

    Raises SourceError when the folder is missing, holds no recognised source, or names a
    source twice (say ``orders.csv`` and ``orders.parquet``)."""
    root = Path(sources_dir)
    if not root.exists():
        raise SourceError(str(root), "sources folder does not exist")
    if not root.is_dir():
        raise SourceError(str(root), "is not a folder; --sources takes a folder of source files")
    found: dict[str, list[Path]] = {}
    for name in SOURCE_NAMES:
        candidates = [p for p in (root / f"{name}.parquet", root / f"{name}.csv", root / name) if p.exists()]
        if len(candidates) > 1:
            listed = ", ".join(p.name + ("/" if p.is_dir() else "") for p in candidates)
            raise SourceError(str(root), f"source '{name}' is given more than once ({listed}); keep one")
        if not candidates:
            continue
        p = candidates[0]
        if p.is_dir():
            parts = sorted(
                q for q in p.iterdir()
                if q.is_file() and q.suffix in PART_SUFFIXES and not q.name.startswith((".", "_"))
            )
            if not parts:
                raise SourceError(str(p), "folder holds no .parquet or .csv part files")
            found[name] = parts
        else:
            found[name] = [p]
    if not found:
        raise SourceError(
            str(root),
            "no source file found; expected customers, orders, events or engagements as "
            "<name>.parquet, <name>.csv or a folder <name>/ of part files",
        )
    return found


# --------------------------------------------------------------------------- reading


def _check_columns(schema: SourceSchema, names: list[str], label: str) -> None:
    seen = set()
    for n in names:
        if n in seen and n in {c.name for c in schema.columns}:
            raise SourceError(label, f"column '{n}' appears twice in the header")
        seen.add(n)
    missing = [c for c in schema.required if c not in seen]
    if missing:
        hint = ""
        if len(names) == 1 and any(sep in names[0] for sep in ";\t|"):
            hint = " (the header is one column: is the file comma-separated?)"
        raise SourceError(
            label,
            f"missing required column(s) {', '.join(missing)} for source '{schema.name}'; "
            f"found {', '.join(names) or 'no columns'}{hint}",
        )


def _read_csv(path: Path, schema: SourceSchema, label: str) -> tuple[pa.Table, np.ndarray, list[int], list[str]]:
    """(table of raw text columns, 1-based data row numbers (n,), data rows of malformed lines,
    names of the columns the schema does not know)."""
    import pyarrow.csv as pcsv

    if path.stat().st_size == 0:
        raise SourceError(label, "empty file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise SourceError(label, "not UTF-8 text; export the CSV as UTF-8") from None
    if not header:
        raise SourceError(label, "empty file (no header line)")
    raw_names = {h.strip(): h for h in header}
    _check_columns(schema, [h.strip() for h in header], label)
    known = [c.name for c in schema.columns if c.name in raw_names]

    def read(threads: bool) -> tuple[pa.Table, list[int]]:
        bad: list[int] = []

        def on_invalid(row) -> str:
            bad.append(row.number)
            return "skip"

        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(use_threads=threads, block_size=1 << 24),
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                include_columns=[raw_names[n] for n in known],
                column_types={raw_names[n]: pa.string() for n in known},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
        return table, bad

    try:
        table, bad = read(True)
        if any(b is None or b < 0 for b in bad):
            table, bad = read(False)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise SourceError(label, f"cannot be read as CSV: {str(exc).splitlines()[0]}") from None
    table = table.rename_columns([n.strip() for n in table.column_names])
    skipped = sorted(b - 1 for b in bad)  # line number -> data row (header is line 1)
    total = table.num_rows + len(skipped)
    rows = np.setdiff1d(np.arange(1, total + 1, dtype=np.int64), np.asarray(skipped, dtype=np.int64))
    if len(rows) != table.num_rows:  # multi-line quoted values shift line numbers: number in order
        rows = np.arange(1, table.num_rows + 1, dtype=np.int64)
    return table, rows, skipped, [n for n in raw_names if n not in known]


def _read_parquet(
    path: Path, schema: SourceSchema, label: str
) -> tuple[pa.Table, np.ndarray, list[int], list[str]]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise SourceError(label, "empty file")
    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
        _check_columns(schema, names, label)
        known = [c.name for c in schema.columns if c.name in names]
        table = pf.read(columns=known)
    except SourceError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise SourceError(label, f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    ignored = [n for n in names if n not in known]
    return table, np.arange(1, table.num_rows + 1, dtype=np.int64), [], ignored


# --------------------------------------------------------------------------- validation


class _Findings:
    """Row problems of one source, collected as (file index, row) arrays per column and reason."""

    def __init__(self, source: str, files: list[str]):
        self.source = source
        self.files = pa.array(files, pa.string())
        self.parts: list[pa.Table] = []

    def add(self, file_idx: np.ndarray, rows: np.ndarray, column: str, reason: str) -> None:
        k = len(rows)
        if k == 0:
            return
        self.parts.append(
            pa.table(
                {
                    "source": pa.repeat(pa.scalar(self.source, pa.string()), k),
                    "file": self.files.take(pa.array(file_idx, pa.int32())),
                    "row": pa.array(rows, pa.int64()),
                    "column": pa.repeat(pa.scalar(column, pa.string()), k),
                    "reason": pa.repeat(pa.scalar(reason, pa.string()), k),
                },
                schema=PROBLEM_SCHEMA,
            )
        )

    def table(self) -> pa.Table:
        if not self.parts:
            return PROBLEM_SCHEMA.empty_table()
        t = pa.concat_tables(self.parts)
        order = pc.sort_indices(t, sort_keys=[("file", "ascending"), ("row", "ascending")])
        return t.take(order)


def _validate_file(
    schema: SourceSchema, raw: dict[str, pa.ChunkedArray], n: int, label: str
) -> tuple[dict[str, pa.Array], list[tuple[str, str, np.ndarray]], list[tuple[str, str, np.ndarray]]]:
    """Typed columns of one file of n rows, with its rejects and warnings as (column, reason,
    mask (n,)). Pops each raw column from ``raw`` once read, so that its memory goes early."""
    cols: dict[str, pa.Array] = {}
    rejects: list[tuple[str, str, np.ndarray]] = []
    warnings: list[tuple[str, str, np.ndarray]] = []
    invalid_keys: dict[str, np.ndarray] = {}
    present = set(raw)
    for col in schema.columns:
        typ = ARROW_TYPES[col.kind]
        if col.name not in present:
            fill = col.default if col.kind in ("bool", "int") else None
            cols[col.name] = pa.array([fill] * n, typ) if fill is not None else pa.nulls(n, typ)
            continue
        values = raw.pop(col.name)
        unreadable = np.zeros(n, dtype=bool)
        if col.name in schema.identity_columns:
            try:
                arr, invalid = normalise_key(col.name, values)
            except WrongType as exc:
                raise SourceError(label, f"column '{col.name}' must hold text; its type is {exc}") from None
            invalid_keys[col.name] = invalid
            unreadable = invalid
        else:
            try:
                arr, masks = READERS[col.kind](values)
            except WrongType as exc:
                raise SourceError(
                    label, f"column '{col.name}' must hold {KIND_WORDS[col.kind]}; its type is {exc}"
                ) from None
            n_present = n - values.null_count
            for reason, mask in masks.items():
                k = int(mask.sum())
                if reason != "timestamp out of range" and k >= WRONG_TYPE_MIN and k > WRONG_TYPE_SHARE * n_present:
                    example = values.filter(pa.array(mask))[0].as_py()
                    raise SourceError(
                        label,
                        f"column '{col.name}' must hold {KIND_WORDS[col.kind]}: {k} of {n_present} "
                        f"values cannot be read (e.g. {example!r})",
                    )
                if k:
                    rejects.append((col.name, reason, mask))
                    unreadable |= mask
            if col.kind in ("bool", "int") and col.default is not None:
                arr = arr.fill_null(col.default)
        if not col.nullable:
            missing = mask_np(pc.is_null(arr)) & ~unreadable
            if missing.any():
                rejects.append((col.name, "missing value", missing))
        cols[col.name] = arr

    def check(name: str, mask: pa.Array, reason: str) -> None:
        if name in present:
            m = mask_np(mask)
            if m.any():
                rejects.append((name, reason, m))

    if "amount" in present:
        check("amount", pc.less(cols["amount"], 0.0), "negative amount")
    if "conversion_value" in present:
        check("conversion_value", pc.less(cols["conversion_value"], 0.0), "negative amount")
    if "quantity" in present:
        check("quantity", pc.less(cols["quantity"], 1), "quantity below 1")
    if "propensity" in present:
        p = cols["propensity"]
        check("propensity", pc.or_(pc.less_equal(p, 0.0), pc.greater(p, 1.0)), "propensity not in (0, 1]")
    if "channel" in present:
        ch = pc.utf8_lower(cols["channel"])
        cols["channel"] = ch
        check("channel", pc.and_(pc.is_valid(ch), pc.invert(pc.is_in(ch, value_set=_CHANNELS))),
              "unknown channel")
    if "timezone" in present:
        tz = cols["timezone"]
        m = mask_np(pc.and_(pc.is_valid(tz), pc.invert(pc.is_in(tz, value_set=_TIMEZONES))))
        if m.any():
            warnings.append(("timezone", "invalid timezone", m))
            cols["timezone"] = pc.if_else(pa.array(m), pa.nulls(n, pa.string()), tz)
    for c, invalid in invalid_keys.items():
        if invalid.any():
            warnings.append((c, f"invalid {c}", invalid))
    if schema.id_column not in schema.identity_columns:  # CRM rows are keyed by their crm_id
        keys = [c for c in schema.identity_columns if c in present]
        has_key = np.zeros(n, dtype=bool)
        for c in keys:
            has_key |= mask_np(pc.is_valid(cols[c]))
        had_key = has_key.copy()
        for c in keys:
            had_key |= invalid_keys[c]
        if (~had_key).any():
            rejects.append(("|".join(keys), "no identity key", ~had_key))
        for c in keys:
            m = ~has_key & invalid_keys[c]
            if m.any():
                rejects.append((c, "no valid identity key", m))
    return cols, rejects, warnings


def import_source(name: str, paths: list[Path], root: Path) -> ImportedSource:
    """Read and validate every file of one source. Raises SourceError for whole-file problems."""
    schema = SOURCES[name]
    labels = [_label(p, root) for p in paths]
    findings = _Findings(name, labels)
    warn_findings = _Findings(name, labels)
    parts: list[dict[str, pa.Array]] = []
    row_numbers: list[np.ndarray] = []
    reject_masks: list[np.ndarray] = []
    warn_lists: list[list[tuple[str, str, np.ndarray]]] = []
    rows_read = 0
    ignored: list[str] = []
    for fi, (path, label) in enumerate(zip(paths, labels, strict=True)):
        reader = _read_csv if path.suffix == ".csv" else _read_parquet
        raw, rows, skipped, unknown = reader(path, schema, label)
        ignored += [c for c in unknown if c not in ignored]
        rows_read += raw.num_rows + len(skipped)
        if raw.num_rows == 0 and not skipped and len(paths) == 1:
            raise SourceError(label, "empty file (no data rows)")
        findings.add(np.full(len(skipped), fi), np.asarray(skipped, np.int64), "", "wrong number of fields")
        raw_cols = dict(zip(raw.column_names, raw.columns, strict=True))
        n_raw = raw.num_rows
        del raw
        cols, rejects, warnings = _validate_file(schema, raw_cols, n_raw, label)
        del raw_cols
        rejected = np.zeros(len(rows), dtype=bool)
        file_idx = np.full(len(rows), fi, dtype=np.int32)
        for column, reason, mask in rejects:
            rejected |= mask
            findings.add(file_idx[mask], rows[mask], column, reason)
        parts.append(cols)
        row_numbers.append(rows)
        reject_masks.append(rejected)
        warn_lists.append(warnings)
        _release_memory()
    if rows_read == 0:
        raise SourceError(labels[0] if len(labels) == 1 else str(paths[0].parent), "empty source (no data rows)")

    rejected = np.concatenate(reject_masks)
    file_of = np.concatenate([np.full(len(r), fi, dtype=np.int32) for fi, r in enumerate(row_numbers)])
    row_of = np.concatenate(row_numbers)
    ids = pa.chunked_array([p[schema.id_column] for p in parts], pa.string())
    dup = _duplicates(ids, rejected)
    del ids
    if dup.any():
        findings.add(file_of[dup], row_of[dup], schema.id_column, f"duplicate {schema.id_column}")
    accepted = ~rejected & ~dup
    for fi, warnings in enumerate(warn_lists):
        sel = file_of == fi
        keep = accepted[sel]
        rows = row_of[sel]
        for column, reason, mask in warnings:
            m = mask & keep
            warn_findings.add(np.full(int(m.sum()), fi), rows[m], column, reason)
    # the accepted rows, column by column so that at most one column is held twice
    keep = pa.array(accepted)
    columns: dict[str, pa.ChunkedArray] = {}
    for col in schema.columns:
        chunked = pa.chunked_array([p.pop(col.name) for p in parts], ARROW_TYPES[col.kind])
        columns[col.name] = chunked if accepted.all() else chunked.filter(keep)
        del chunked
    _release_memory()
    return ImportedSource(
        name=name,
        files=tuple(labels),
        table=pa.table(columns),
        rows_read=rows_read,
        rows_rejected=rows_read - int(accepted.sum()),
        rejects=findings.table(),
        warnings=warn_findings.table(),
        ignored_columns=tuple(ignored),
    )


def _release_memory() -> None:
    """Give memory that Arrow's allocator keeps cached back to the system (peak RSS at 1M rows)."""
    pa.default_memory_pool().release_unused()


def _duplicates(ids: pa.ChunkedArray, rejected: np.ndarray) -> np.ndarray:
    """Rows (n,) whose id already appeared in an earlier row that is not rejected."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    candidate = pc.if_else(pa.array(rejected), pa.nulls(len(ids), ids.type), ids)
    codes = candidate.dictionary_encode().indices.fill_null(-1).to_numpy(zero_copy_only=False)
    codes = np.asarray(codes, dtype=np.int64)
    # dictionary codes are numbered in order of first appearance: a row repeats an earlier id
    # exactly when its code is not above the running maximum of the codes before it
    running = np.maximum.accumulate(np.concatenate([[-1], codes[:-1]])) if len(codes) else codes
    return (codes >= 0) & (codes <= running)


def _label(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_sources(sources_dir: str | Path) -> dict[str, ImportedSource]:
    """Find, read and validate every source in ``sources_dir`` (see the module docstring)."""
    root = Path(sources_dir)
    found = find_sources(root)
    return {name: import_source(name, paths, root) for name, paths in found.items()}

"""The ONE module that talks to Feast.

    store = FeatureStoreAdapter.open(workspace, online=OnlineStoreConfig | None)
    store.apply()                                   # compute feature tables, write the repo, apply
    store.materialize(start=None, end=None)         # latest rows into the online store
    store.training_set(service, entity_df)          # point-in-time correct, same rows, same order
    store.online(service, customer_ids, request_time=None) -> OnlineFeatures
    store.feature_names(service)

Layout under ``<workspace>/feature_repo/``: ``feature_store.yaml`` (generated, absolute paths),
``features.yaml`` (the FeatureConfig and online-store config that were applied), ``data/*.parquet``
(feature tables), ``registry.db`` and ``online_store.db`` (SQLite online store by default).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import InputError, UnavailableError, WorkspaceError
from core.workspace import Workspace
from features.compute import (
    ENTITY,
    REQUEST_TIME,
    TIMESTAMP,
    FeatureConfig,
    FeatureFiles,
    ProfileData,
    feature_defs,
    stored_groups,
    write_feature_tables,
)
from features.services import check_service, service_features, service_groups

PROJECT = "cdp_decisioning"
_ROW = "__row__"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Feast prints progress on stdout (which must stay clean for ``--json``) and warns that
    on-demand views are experimental; send the former to stderr, drop the known warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.filterwarnings("ignore", message=".*On demand feature view is an experimental feature.*")
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ibis.*")
        yield


class OnlineStoreConfig(BaseModel):
    """Where online features live. ``sqlite`` (default): a file in the workspace. ``redis``:
    ``connection_string`` like ``localhost:6379`` (Feast's format, options after commas)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["sqlite", "redis"] = "sqlite"
    path: str | None = Field(None, description="SQLite file (default <repo>/online_store.db)")
    connection_string: str | None = Field(None, description="Redis 'host:port[,options]'")

    @model_validator(mode="after")
    def _redis_needs_an_address(self) -> OnlineStoreConfig:
        if self.type == "redis" and not self.connection_string:
            raise ValueError("online_store type redis needs a connection_string, e.g. localhost:6379")
        return self

    def feast_yaml(self, repo: Path) -> dict:
        if self.type == "sqlite":
            return {"type": "sqlite", "path": str(Path(self.path or repo / "online_store.db").resolve())}
        if not self.connection_string:
            raise InputError("online_store type redis needs a connection_string, e.g. localhost:6379")
        return {"type": "redis", "connection_string": self.connection_string}


class StoreSettings(BaseModel):
    """What ``apply`` used, stored beside the repo so every later open serves the same features."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    online_store: OnlineStoreConfig = OnlineStoreConfig()
    features: FeatureConfig = FeatureConfig()


@dataclass(frozen=True)
class OnlineFeatures:
    """Online features of some customers at a request time, one row per requested id, in order.

    ``columns``: feature name -> (n,) array (int64, float64, or object for strings), in the
    service's order. ``known`` (n,) bool: False for a customer the store has never seen (cold
    start): its stored features take ``defaults`` (the values of an empty history) and its request
    features are computed with the default time zone. ``missing_filled``: per stored feature, how
    many KNOWN customers had no row for it and got the default (say, never ordered).
    ``frame`` is the same as a DataFrame: ``customer_id``, ``known``, then the features.
    """

    service: str
    request_time: pd.Timestamp
    customer_ids: tuple[str, ...]
    known: np.ndarray
    columns: dict[str, np.ndarray]
    defaults: dict[str, object]
    missing_filled: dict[str, int] = field(default_factory=dict)

    @cached_property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({ENTITY: list(self.customer_ids), "known": self.known, **self.columns})

    def features(self) -> pd.DataFrame:
        """The feature columns only, one row per customer."""
        return pd.DataFrame(self.columns)

    def matrix(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Numeric features as a float64 matrix (n, k), columns ``names`` (default: every numeric one)."""
        names = [n for n in self.columns if self.columns[n].dtype != object] if names is None else list(names)
        return np.column_stack([self.columns[n].astype(np.float64) for n in names]) if names else \
            np.zeros((len(self.known), 0))


@dataclass(frozen=True)
class _Assembly:
    """Per (service, config): what assemble_online needs, computed once."""

    names: tuple[str, ...]
    numeric: tuple[str, ...]
    numeric_defaults: np.ndarray  # (k,)
    ints: frozenset[str]
    strings: tuple[str, ...]
    string_defaults: tuple[object, ...]
    profile: tuple[str, ...]
    stored_defaults: tuple[tuple[str, object], ...]


@lru_cache(maxsize=64)
def _assembly(service: str, config: FeatureConfig) -> _Assembly:
    names = service_features(service, config)
    defs = feature_defs(config)
    profile = tuple(service_groups(service, config).get("customer_profile", []))
    if not profile:
        raise InputError("a feature service must read at least one customer_profile feature")
    numeric = tuple(n for n in names if defs[n].dtype != "str")
    strings = tuple(n for n in names if defs[n].dtype == "str")
    stored = {f.name: f.default for g in stored_groups(config) for f in g.features}
    return _Assembly(
        names=names, numeric=numeric, numeric_defaults=np.array([defs[n].default for n in numeric], dtype=np.float64),
        ints=frozenset(n for n in names if defs[n].dtype == "int"), strings=strings,
        string_defaults=tuple(defs[n].default for n in strings), profile=profile,
        stored_defaults=tuple((n, stored[n]) for n in names if n in stored),
    )


def fill_numeric_defaults(mat: np.ndarray, known: np.ndarray, plan: _Assembly) -> tuple[np.ndarray, dict[str, int]]:
    """(k, n) numeric matrix of ``plan.numeric`` with NaN -> the feature's default, and per feature
    how many KNOWN customers (``known``, (n,)) got a default (unknown ones are cold starts)."""
    return _fill_defaults(mat, known, plan.numeric, plan.numeric_defaults)


def _fill_defaults(mat: np.ndarray, known: np.ndarray, names: Sequence[str], defaults: np.ndarray,
                   na: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """:func:`fill_numeric_defaults` for rows ``names`` with ``defaults`` (k,) (any row order);
    ``na``: ``np.isnan(mat)`` if the caller has it already."""
    if na is None:
        na = np.isnan(mat)
    if not na.any():
        return mat, {}
    rows = np.flatnonzero(na.any(axis=1))
    counts = (na[rows] & known).sum(axis=1)
    filled = {names[r]: int(c) for r, c in zip(rows.tolist(), counts.tolist(), strict=True) if c}
    return np.where(na, defaults[:, None], mat), filled


def assemble_online(service: str, ids: Sequence[str], request_time: pd.Timestamp, raw: dict[str, Sequence],
                    config: FeatureConfig) -> OnlineFeatures:
    """Turn raw online values (feature name -> one value per id, None where the store has none)
    into OnlineFeatures: flag unknown customers, fill documented defaults, fix dtypes. Every online
    path (Feast's and the fast reader) ends here, so they cannot differ in this step."""
    plan = _assembly(service, config)
    n = len(ids)
    known = np.zeros(n, dtype=bool)
    for name in plan.profile:
        known |= np.fromiter((v is not None for v in raw[name]), dtype=bool, count=n)
    # numeric features as one (k, n) matrix: None -> NaN -> the feature's default
    mat = np.array([[np.nan if v is None else v for v in raw[name]] for name in plan.numeric],
                   dtype=np.float64).reshape(len(plan.numeric), n)
    mat, filled = fill_numeric_defaults(mat, known, plan)
    numeric = {name: (mat[i].astype(np.int64) if name in plan.ints else mat[i]) for i, name in enumerate(plan.numeric)}
    columns: dict[str, np.ndarray] = {}
    for name, default in zip(plan.strings, plan.string_defaults, strict=True):
        values = raw[name]
        col = np.array([default if v is None else v for v in values], dtype=object)
        k = sum(1 for v, kn in zip(values, known, strict=True) if v is None and kn)
        if k:
            filled[name] = k
        columns[name] = col
    columns = {name: numeric[name] if name in numeric else columns[name] for name in plan.names}
    return OnlineFeatures(service=service, request_time=request_time, customer_ids=tuple(ids), known=known,
                          columns=columns, defaults=dict(plan.stored_defaults),
                          missing_filled={name: filled[name] for name in plan.names if name in filled})


@dataclass(frozen=True)
class MaterializeSummary:
    start: pd.Timestamp
    end: pd.Timestamp
    seconds: float
    views: list[str]
    online_store: str
    online_store_bytes: int | None


class FeatureStoreAdapter:
    """Feast, reached through one object. Open it with :meth:`open`."""

    def __init__(self, workspace: Workspace, settings: StoreSettings):
        self.workspace = workspace
        self.settings = settings
        self.repo = workspace.feature_repo
        self.data_dir = self.repo / "data"
        self._store = None
        self._services: dict[str, object] = {}
        #: what the last fast materialisation did with the columnar snapshot (features.online)
        self.snapshot_status: str | None = None

    # -- opening and applying ---------------------------------------------------------------
    @classmethod
    def open(cls, workspace: Workspace, online: OnlineStoreConfig | None = None,
             features: FeatureConfig | None = None) -> FeatureStoreAdapter:
        """An adapter for the workspace's repo. Without arguments, the settings of the last
        ``apply`` (else the defaults: SQLite online store, default FeatureConfig)."""
        saved = workspace.feature_repo / "features.yaml"
        settings = StoreSettings()
        if saved.is_file():
            settings = StoreSettings.model_validate(yaml.safe_load(saved.read_text()) or {})
        if online is not None or features is not None:
            settings = StoreSettings(online_store=online or settings.online_store,
                                     features=features or settings.features)
        return cls(workspace, settings)

    @property
    def config(self) -> FeatureConfig:
        return self.settings.features

    def _write_repo_files(self) -> None:
        self.repo.mkdir(parents=True, exist_ok=True)
        feast_yaml = {
            "project": PROJECT,
            "registry": str((self.repo / "registry.db").resolve()),
            "provider": "local",
            "offline_store": {"type": "duckdb"},
            "online_store": self.settings.online_store.feast_yaml(self.repo),
            "entity_key_serialization_version": 3,
        }
        (self.repo / "feature_store.yaml").write_text(
            "# Generated by `decisioning features apply`; paths are absolute on purpose.\n"
            + yaml.safe_dump(feast_yaml, sort_keys=False)
        )
        (self.repo / "features.yaml").write_text(yaml.safe_dump(self.settings.model_dump(mode="json"), sort_keys=False))

    def compute(self, data: ProfileData | None = None) -> FeatureFiles:
        """Compute the feature tables from the workspace's profiles into ``<repo>/data``."""
        if data is None:
            data = ProfileData.load(self.workspace.profiles)
        files = write_feature_tables(data, self.data_dir, self.config)
        meta = {"start": files.start.isoformat(), "end": files.end.isoformat(), "rows": files.rows,
                "valid_until": files.valid_until.isoformat() if files.valid_until is not None else None}
        (self.data_dir / "tables.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        return files

    def apply(self, data: ProfileData | None = None) -> FeatureFiles:
        """Compute the feature tables, generate ``feature_store.yaml`` and apply the definitions
        to the registry (and create the online store's tables)."""
        from features.repo.definitions import build_definitions

        files = self.compute(data)
        self._write_repo_files()
        self._store = None
        self._services = {}
        with _quiet():
            store = self.feast()
            store.apply(build_definitions(self.data_dir, self.config))
        return files

    def feast(self):
        """The underlying ``feast.FeatureStore`` (created on first use)."""
        if self._store is None:
            if not (self.repo / "feature_store.yaml").is_file():
                raise WorkspaceError(
                    f"no feature repo in {self.repo}: run `decisioning features apply` first"
                )
            with _quiet():
                from feast import FeatureStore

                self._store = FeatureStore(repo_path=str(self.repo))
        return self._store

    def table_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last snapshot time of the applied feature tables."""
        meta_path = self.data_dir / "tables.yaml"
        if not meta_path.is_file():
            raise WorkspaceError(f"no feature tables in {self.data_dir}: run `decisioning features apply`")
        meta = yaml.safe_load(meta_path.read_text())
        return pd.Timestamp(meta["start"]), pd.Timestamp(meta["end"])

    def _valid_until(self) -> pd.Timestamp | None:
        meta_path = self.data_dir / "tables.yaml"
        meta = yaml.safe_load(meta_path.read_text()) if meta_path.is_file() else {}
        return pd.Timestamp(meta["valid_until"]) if meta.get("valid_until") else None

    # -- materialisation -----------------------------------------------------------------------
    def materialize(self, start=None, end=None, method: Literal["fast", "feast"] = "fast") -> MaterializeSummary:
        """Load the latest row per customer and view with ``start <= ts <= end`` into the online
        store. Default range: the tables' own (first row .. snapshot after the last data), not
        Feast's ``now - ttl``.

        ``method="feast"``: ``FeatureStore.materialize`` (one Python upsert per value).
        ``method="fast"`` (default): the same selection (DuckDB over the same Parquet), the same
        bytes written in bulk (``features.online.write_sqlite`` / ``write_redis``), and the same
        materialisation interval recorded in the registry; tests check that Feast then reads
        exactly what its own materialisation gives.
        """
        t0, t1 = self.table_range()
        start = _utc_ts(start, "start") if start is not None else t0
        end = _utc_ts(end, "end") if end is not None else t1 + pd.Timedelta(seconds=1)
        if end <= start:
            raise InputError(f"materialize: end {end} must be after start {start}")
        if method not in ("fast", "feast"):
            raise InputError(f"materialize: method must be 'fast' or 'feast'; got {method!r}")
        store = self.feast()
        with _quiet():
            views = store.list_feature_views()
        tic = time.perf_counter()
        if method == "feast":
            if self.settings.online_store.type == "sqlite":  # Feast's own writes: no columnar snapshot follows them
                from features.online import discard_snapshot

                discard_snapshot(self.settings.online_store.feast_yaml(self.repo)["path"])
            with _quiet():
                store.materialize(start_date=start.to_pydatetime(), end_date=end.to_pydatetime(),
                                  feature_views=[v.name for v in views])
        else:
            self._materialize_fast(store, views, start, end)
        return MaterializeSummary(start=start, end=end, seconds=time.perf_counter() - tic,
                                  views=[v.name for v in views], online_store=self.settings.online_store.type,
                                  online_store_bytes=self.online_store_bytes())

    def _latest_rows(self, view, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Feast's materialisation query: per customer the latest row with start <= ts <= end."""
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            frame = con.execute(
                f"SELECT * FROM read_parquet(?) WHERE {TIMESTAMP} >= ? AND {TIMESTAMP} <= ? "
                f"QUALIFY row_number() OVER (PARTITION BY {ENTITY} ORDER BY {TIMESTAMP} DESC) = 1 "
                f"ORDER BY {ENTITY}",
                [view.batch_source.path, start.to_pydatetime(), end.to_pydatetime()],
            ).df()
        finally:
            con.close()
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame

    def _materialize_fast(self, store, views, start: pd.Timestamp, end: pd.Timestamp) -> None:
        from features import online

        kinds = {g.name: {f.name: f.dtype for f in g.features} for g in stored_groups(self.config)}
        cfg = self.settings.online_store
        client = online._redis_client(cfg.connection_string or "") if cfg.type == "redis" else None
        path = cfg.feast_yaml(self.repo).get("path")
        if client is not None:  # all views at once: one round trip per customer, not per view
            frames = {view.name: self._latest_rows(view, start, end) for view in views}
            online.write_redis(client, frames, {v: kinds[v] for v in frames})
            del frames
        # SQLite: the same rows also go to a columnar snapshot beside the store (bulk reads),
        # renamed into place after the last write (features.online.SnapshotWriter)
        snapshot = online.SnapshotWriter.begin(path, {v.name: kinds[v.name] for v in views}) if client is None else None
        for view in views:
            if client is None:
                rows = self._latest_rows(view, start, end)
                online.write_sqlite(path, view.name, rows, kinds[view.name])
                snapshot.add(view.name, rows)
                del rows
            with _quiet():
                store.registry.apply_materialization(view, store.project, start.to_pydatetime(), end.to_pydatetime())
        if snapshot is not None:
            snapshot.commit()
            self.snapshot_status = snapshot.status

    def is_materialized(self) -> bool:
        """Whether every feature view has been materialised at least once."""
        with _quiet():
            views = self.feast().list_feature_views()
        return bool(views) and all(v.materialization_intervals for v in views)

    def online_store_bytes(self) -> int | None:
        """Size of the SQLite online store file (None for Redis)."""
        if self.settings.online_store.type != "sqlite":
            return None
        p = Path(self.settings.online_store.feast_yaml(self.repo)["path"])
        return p.stat().st_size if p.is_file() else 0

    # -- reading -------------------------------------------------------------------------------
    def feature_names(self, service: str) -> list[str]:
        """The service's feature names (plain, no view prefix), in a stable order."""
        return list(service_features(service, self.config))

    def training_set(self, service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
        """Point-in-time correct training rows via Feast's ``get_historical_features``.

        ``entity_df``: ``customer_id`` (str), ``event_timestamp`` (the cutoff; UTC, naive read as
        UTC) and any extra columns. Returns the same rows, same order and index, with the service's
        features added. A row sees only snapshots at or before its cutoff, i.e. data strictly
        before ``floor(cutoff)`` (daily grid); request features use the cutoff as request time.
        Features with no row before the cutoff (nothing happened yet) get their defaults.
        """
        spec = check_service(service)
        edf = _check_entity_df(entity_df)
        valid = self._valid_until()
        if valid is not None and len(edf) and edf[TIMESTAMP].max() > valid:
            raise InputError(
                f"entity_df has cutoffs up to {edf[TIMESTAMP].max()}, after {valid} (the feature tables' "
                f"end plus heartbeat_days): re-run `decisioning features apply` on newer profiles"
            )
        clash = [n for n in self.feature_names(service) if n in entity_df.columns]
        if clash:
            raise InputError(f"entity_df already has feature column(s) {clash[:5]}")
        query = edf.assign(**{REQUEST_TIME: edf[TIMESTAMP].array.asi8 / 1e9, _ROW: np.arange(len(edf))})
        store = self.feast()
        fs = store.get_feature_service(spec.name)
        with _quiet():
            out = store.get_historical_features(entity_df=query, features=fs, full_feature_names=False).to_df()
        rows = out[_ROW].to_numpy()
        order = np.argsort(rows, kind="stable")  # the offline store may return rows in any order
        if len(out) != len(query) or not np.array_equal(rows[order], query[_ROW].to_numpy()):
            raise UnavailableError("feature store returned a different set of rows than requested")
        names = self.feature_names(service)
        defs = feature_defs(self.config)
        cols = {}
        for n in names:  # reorder, fill the empty-history defaults, fix dtypes: one pass per column
            d = defs[n]
            if d.dtype == "str":
                col = out[n].to_numpy()[order]
                col = np.where(pd.isna(col), d.default, col).astype(object)
            else:
                col = out[n].to_numpy(dtype=np.float64, na_value=np.nan)[order]
                na = np.isnan(col)
                if na.any():
                    col = np.where(na, d.default, col)
                if d.dtype == "int":
                    col = col.astype(np.int64)
            cols[n] = col
        del out
        return pd.concat([entity_df, pd.DataFrame(cols, index=entity_df.index)], axis=1)

    def online(self, service: str, customer_ids: Sequence[str], request_time=None) -> OnlineFeatures:
        """Online features of ``customer_ids`` (one row each, in order) at ``request_time``
        (default now, UTC). Unknown customers are flagged ``known=False`` and get the defaults."""
        spec = check_service(service)
        ids = [str(c) for c in customer_ids]
        req = _utc_ts(request_time, "request_time") if request_time is not None else pd.Timestamp.now(tz="UTC")
        store = self.feast()
        fs = self._services.get(spec.name)
        if fs is None:  # Feast rebuilds it from the registry proto on every lookup (~50 ms)
            fs = self._services[spec.name] = store.get_feature_service(spec.name)
        epoch = req.value / 1e9
        # no _quiet() here: it swaps sys.stdout, which is not thread-safe, and Feast's online
        # read prints nothing
        resp = store.get_online_features(
            features=fs, entity_rows=[{ENTITY: c, REQUEST_TIME: epoch} for c in ids], full_feature_names=False
        ).to_dict()
        return self._online_result(service, ids, req, resp)

    def _online_result(self, service: str, ids: list[str], req: pd.Timestamp, resp: dict) -> OnlineFeatures:
        return assemble_online(service, ids, req, resp, self.config)


def _utc_ts(value, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what}: not a time: {value!r} ({exc})") from None
    if ts.tzinfo is UTC:  # already UTC (the decision path's case; NaT has no tzinfo): as tz_convert gives
        return ts
    if pd.isna(ts):
        raise InputError(f"{what}: missing time")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_entity_df(entity_df: pd.DataFrame) -> pd.DataFrame:
    """customer_id as str, event_timestamp as datetime64[ns, UTC]; InputError otherwise."""
    if not isinstance(entity_df, pd.DataFrame):
        raise InputError(f"entity_df must be a pandas DataFrame; got {type(entity_df).__name__}")
    missing = [c for c in (ENTITY, TIMESTAMP) if c not in entity_df.columns]
    if missing:
        raise InputError(f"entity_df needs columns customer_id and event_timestamp; missing {missing}")
    ids = entity_df[ENTITY]
    if ids.isna().any():
        raise InputError("entity_df: customer_id has missing values")
    ts = entity_df[TIMESTAMP]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(ts.dtype):
            ts = ts.dt.tz_localize("UTC")
        else:
            ts = pd.to_datetime(ts, utc=True, errors="coerce")
    ts = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if ts.isna().any():
        raise InputError("entity_df: event_timestamp has missing or unparseable values")
    return pd.DataFrame({ENTITY: ids.astype(str).to_numpy(), TIMESTAMP: ts.reset_index(drop=True)})

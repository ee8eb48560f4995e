"""``decisioning features apply | materialize | get``: the Feast feature store of the workspace."""

from __future__ import annotations

import time
from pathlib import Path

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


def _online_config(config_file: Path | None, redis: str | None):
    """OnlineStoreConfig from ``--config`` (YAML with ``online_store:`` and ``features:``) and
    ``--redis``; None when neither is given (keep what the repo has)."""
    from core.config import load_config
    from features.store import OnlineStoreConfig, StoreSettings

    settings = load_config(StoreSettings, config_file) if config_file is not None else None
    online = settings.online_store if settings is not None else None
    if redis:
        online = OnlineStoreConfig(type="redis", connection_string=redis)
    return online, (settings.features if settings is not None else None)


@click.group(name="features")
def command() -> None:
    """Feast feature store: compute and apply the feature repo, materialise the online store,
    and show what a model sees for one customer.

    Run in this order after `decisioning profiles`: `features apply`, `features materialize`,
    then `features get CUSTOMER_ID`. Training reads point-in-time training sets from the same
    repo; serving reads the online store.
    """


@command.command(name="apply")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML with `online_store: {type: sqlite|redis, path|connection_string}` and/or "
                   "`features:` (FeatureConfig: windows, cadence, priors).")
@click.option("--redis", "redis", default=None, metavar="HOST:PORT",
              help="Use Redis as the online store (shortcut for online_store type redis).")
@workspace_option
@json_option
def apply_cmd(config_file: Path | None, redis: str | None, workspace, as_json: bool) -> None:
    """Compute the feature tables from <workspace>/profiles, generate feature_store.yaml (absolute
    paths; DuckDB offline store, SQLite online store unless configured) and apply the entity,
    feature views, on-demand view and feature services to the registry.

    The settings used (online store, feature config) are saved in <repo>/features.yaml and reused
    by later commands and by `apply` without --config/--redis."""
    from features.compute import ProfileData
    from features.store import FeatureStoreAdapter

    online, feats = _online_config(config_file, redis)
    tic = time.perf_counter()
    data = ProfileData.load(workspace.profiles)  # a clear error first when profiles are missing
    store = FeatureStoreAdapter.open(workspace, online=online, features=feats)
    if not as_json:
        progress(f"computing feature tables for {len(data.profiles):,} customers ...")
    files = store.apply(data)
    secs = time.perf_counter() - tic
    out = {
        "repo": str(store.repo),
        "online_store": store.settings.online_store.type,
        "rows": files.rows,
        "start": files.start.isoformat(),
        "end": files.end.isoformat(),
        "services": {s: len(store.feature_names(s)) for s in _services()},
        "seconds": round(secs, 2),
    }
    if as_json:
        emit_json(out)
        return
    click.echo(f"applied feature repo {store.repo} ({store.settings.online_store.type} online store) in {secs:.1f} s")
    for name, n in files.rows.items():
        click.echo(f"  {name:<18} {n:>12,} rows")
    click.echo(f"snapshots {files.start:%Y-%m-%d} .. {files.end:%Y-%m-%d %H:%M} UTC")
    click.echo("services: " + ", ".join(f"{s} ({n} features)" for s, n in out["services"].items()))
    click.echo("next: decisioning features materialize")


def _services() -> list[str]:
    from features.services import SERVICES

    return list(SERVICES)


@command.command(name="materialize")
@click.option("--start", default=None, help="First snapshot time to load (UTC) [default: the data's start].")
@click.option("--end", default=None, help="Last snapshot time to load (UTC) [default: the data's end].")
@click.option("--method", type=click.Choice(["fast", "feast"]), default="fast", show_default=True,
              help="fast: bulk-write the exact rows Feast would write; feast: FeatureStore.materialize.")
@workspace_option
@json_option
def materialize_cmd(start: str | None, end: str | None, method: str, workspace, as_json: bool) -> None:
    """Load the latest feature rows per customer (between --start and --end) into the online store."""
    from features.store import FeatureStoreAdapter

    store = FeatureStoreAdapter.open(workspace)
    summary = store.materialize(start=start, end=end, method=method)
    out = {
        "start": summary.start.isoformat(),
        "end": summary.end.isoformat(),
        "views": summary.views,
        "online_store": summary.online_store,
        "online_store_bytes": summary.online_store_bytes,
        "method": method,
        "seconds": round(summary.seconds, 2),
    }
    if as_json:
        emit_json(out)
        return
    size = f", {summary.online_store_bytes / 1e6:.1f} MB" if summary.online_store_bytes is not None else ""
    click.echo(f"materialised {len(summary.views)} views from {summary.start:%Y-%m-%d} to {summary.end:%Y-%m-%d %H:%M} "
               f"into the {summary.online_store} online store in {summary.seconds:.1f} s{size}")


@command.command(name="get")
@click.argument("customer_id")
@click.option("--service", "services", multiple=True,
              help="Feature service(s) to show [default: every service].")
@click.option("--at", "at", default=None, help="Request time (UTC) for request features [default: now].")
@workspace_option
@json_option
def get_cmd(customer_id: str, services: tuple[str, ...], at: str | None, workspace, as_json: bool) -> None:
    """Show what a model sees for CUSTOMER_ID, per feature service, from the online store. An unknown
    customer is reported as unknown (cold start), with the default values it gets."""
    from core.errors import WorkspaceError
    from features.services import check_service
    from features.store import FeatureStoreAdapter

    store = FeatureStoreAdapter.open(workspace)
    names = list(services) or _services()
    for s in names:
        check_service(s)
    if not store.is_materialized():
        raise WorkspaceError("the online store is empty: run `decisioning features materialize` first")
    results = {s: store.online(s, [customer_id], request_time=at) for s in names}
    first = next(iter(results.values()))
    known = bool(first.known[0])
    out = {
        "customer_id": customer_id,
        "known": known,
        "cold_start": not known,
        "request_time": first.request_time.isoformat(),
        "services": {s: r.features().to_dict(orient="records")[0] for s, r in results.items()},
        "defaults_used": sorted({n for r in results.values() for n in (r.defaults if not known else r.missing_filled)}),
    }
    if as_json:
        emit_json(out)
        return
    if known:
        click.echo(f"customer {customer_id} at {first.request_time:%Y-%m-%d %H:%M} UTC")
    else:
        click.echo(f"customer {customer_id} is UNKNOWN to the feature store (cold start): stored features "
                   f"take their defaults (an empty history); request features use the default time zone")
    for s, r in results.items():
        row = r.features().to_dict(orient="records")[0]
        click.echo(f"\n[{s}] {len(row)} features")
        filled = set(r.defaults) if not known else set(r.missing_filled)
        for name, value in row.items():
            mark = "  (default)" if name in filled else ""
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            click.echo(f"  {name:<28} {shown}{mark}")

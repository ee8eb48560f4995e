"""``decisioning simulate``: a seeded customer world, its raw sources and its ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command("simulate")
@click.option("--customers", type=int, default=None, help="Number of persons [default 10000, or the config's].")
@click.option("--days", type=int, default=None, help="Days of history [default 180, or the config's].")
@click.option("--seed", type=int, default=None, help="Seed of every random draw [default 0, or the config's].")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True,
              help="File format of the raw sources.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file with WorldConfig parameters (see world/README.md); options override it.")
@workspace_option
@json_option
def command(customers, days, seed, fmt, config_path, workspace, as_json):
    """Simulate a customer world and write it into the workspace.

    \b
    raw/customers|orders|events|engagements.<format>   the raw sources (features/schemas.py)
    truth/persons.parquet        every person's latent traits
    truth/record_owner.parquet   which person each raw row belongs to
    truth/contact_state.parquet  fatigue and unsubscribes at the end of the history
    truth/world.yaml             the full WorldConfig, so World.load() rebuilds the same world

    Same config and seed, same files, byte for byte.
    """
    from core.config import load_config
    from world import World, WorldConfig

    config = load_config(WorldConfig, config_path, customers=customers, days=days, seed=seed)
    progress(f"simulating {config.customers:,} customers x {config.days} days (seed {config.seed}) "
             f"into {workspace.root}")
    world = World.generate(config)
    summary = world.write(workspace, fmt=fmt, progress=progress)
    if as_json:
        emit_json({
            "rows": summary.rows, "malformed": summary.malformed, "seconds": summary.seconds,
            "peak_memory_mb": summary.peak_memory_mb, "customers": summary.customers, "days": summary.days,
            "seed": summary.seed, "format": summary.format, "history_start": summary.history_start,
            "history_end": summary.history_end, "workspace": summary.workspace,
        })
        return
    total = sum(summary.rows.values())
    click.echo(f"wrote {total:,} raw rows to {workspace.raw} in {summary.seconds:.1f} s "
               f"(peak memory {summary.peak_memory_mb:,.0f} MB)")
    for source, n in summary.rows.items():
        click.echo(f"  {source:12s} {n:>12,} rows  {summary.malformed[source]:>8,} malformed")
    click.echo(f"truth in {workspace.truth}; history {summary.history_start} .. {summary.history_end}")

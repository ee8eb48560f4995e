"""``decisioning profiles``: import raw sources, validate every row, resolve identities."""

from __future__ import annotations

from pathlib import Path

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command(name="profiles")
@click.option(
    "--sources",
    "sources",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of raw sources (customers, orders, events, engagements as .parquet, .csv or a folder "
    "of part files; any subset) [default: <workspace>/raw].",
)
@workspace_option
@json_option
def command(sources: Path | None, workspace, as_json: bool) -> None:
    """Import raw sources, validate every row, resolve identities into unified profiles.

    Writes <workspace>/profiles/: profiles.parquet (one row per customer_id), identity_map.parquet,
    record_map.parquet, orders/events/engagements.parquet (accepted rows with customer_id),
    rejects.csv and warnings.csv (source, file, row, column, reason), merge_report.json and
    summary.json. When the workspace holds the simulator's truth, the summary includes pairwise
    precision and recall of the identity resolution.
    """
    from features.profiles import build_profiles

    src = sources if sources is not None else workspace.raw
    summary = build_profiles(
        src,
        workspace.profiles,
        truth_dir=workspace.truth,
        progress=None if as_json else progress,
    )
    if as_json:
        emit_json(summary.model_dump(mode="json"))
        return
    click.echo(f"imported {len(summary.sources)} source(s) from {summary.sources_dir} in {summary.seconds:.1f} s")
    for name, c in summary.sources.items():
        click.echo(
            f"  {name:<12} {c.rows_read:>11,} read {c.rows_accepted:>11,} accepted {c.rows_rejected:>9,} rejected"
        )
    if summary.rejects_by_reason:
        reasons = ", ".join(f"{v:,} {k}" for k, v in summary.rejects_by_reason.items())
        click.echo(f"rejects: {reasons} (see {Path(summary.out_dir) / 'rejects.csv'})")
    if summary.warnings_by_reason:
        reasons = ", ".join(f"{v:,} {k}" for k, v in summary.warnings_by_reason.items())
        click.echo(f"warnings: {reasons} (rows kept; see warnings.csv)")
    refused = summary.conflicts.keys_refused
    click.echo(
        f"customers: {summary.customers:,} ({summary.merges:,} merged from several CRM records; "
        f"{refused:,} key(s) refused for linking, see merge_report.json)"
    )
    if summary.precision is not None:
        click.echo(
            f"identity vs truth: precision {summary.precision:.4f}, recall {summary.recall:.4f} "
            f"over {summary.truth_records:,} records"
        )
    click.echo(f"profiles written to {summary.out_dir}")

"""`decisioning compare`: models vs baselines (and oracle) on the same test data: table, PNG, HTML."""

from __future__ import annotations

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command("compare")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the report [default <workspace>/reports/compare].")
@workspace_option
@json_option
def command(out_dir, workspace, as_json):
    """Compare every registered model (challenger, and the champion re-scored when it differs)
    with its baselines and the oracle on the same test data. Writes compare.csv, one PNG per model
    family and compare.html."""
    from training.registry import compare

    res = compare(workspace, out_dir, progress=progress)
    if as_json:
        emit_json(res)
        return
    import pandas as pd

    table = pd.DataFrame(res["rows"])
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(table) else "no models yet")
    if res["missing"]:
        click.echo(f"not trained yet: {', '.join(res['missing'])}")
    click.echo(f"report: {res['html']}")

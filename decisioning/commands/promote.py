"""`decisioning promote MODEL`: challenger -> champion, only if it wins on the same held-out data."""

from __future__ import annotations

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command("promote")
@click.argument("model", type=click.Choice(["propensity", "churn", "offer", "send-time"]))
@click.option("--min-delta", type=float, default=0.0, show_default=True,
              help="Margin by which the challenger must beat the champion's held-out metric.")
@workspace_option
@json_option
def command(model, min_delta, workspace, as_json):
    """Move the `champion` alias of MODEL to its `challenger` only if the challenger beats the
    champion on the same held-out data (both re-scored now: AUC for propensity and churn, the
    off-policy estimate of value per send or open rate for offer and send-time). Otherwise the
    champion stays and the command says why. Without a champion, the challenger becomes one.
    """
    from training.registry import promote

    res = promote(workspace, model, min_delta=min_delta, progress=progress)
    if as_json:
        emit_json(res)
    else:
        click.echo(("PROMOTED: " if res["promoted"] else "NOT PROMOTED: ") + res["reason"])

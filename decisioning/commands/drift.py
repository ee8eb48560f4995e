"""``decisioning drift``: Evidently data drift plus the policy's own health; exit 1 when drift is found."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command("drift", epilog="""Examples:

\b
  decisioning drift                      # the last window_days (config, default 3) of the log
  decisioning drift --since 2026-07-10 --json
  decisioning drift --reference snapshot.parquet --config monitoring.yaml

Exit code: 0 no threshold crossed, 1 drift found (retraining due), 2 error. The status for the
service's /metrics is written to <workspace>/reports/drift_status.json. Reference: --reference, else
<workspace>/reports/reference_features.parquet, else the artifact reference/features.parquet of a
champion model's MLflow run, else the previous window.""")
@click.option("--since", default=None, metavar="TIME", help="Start of the current window (ISO 8601 or a span "
              "like 3d before --until) [default: window_days before --until].")
@click.option("--until", default=None, metavar="TIME", help="End of the current window, exclusive [default: "
              "after the last decision].")
@click.option("--now", default=None, metavar="TIME", help="Outcomes as of this time [default: --until, else the "
              "last thing logged].")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Parquet snapshot of the training features (context keys as columns; score:<name> columns).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Decision log (SQLite) [default: the one under <workspace>/decisions/].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML MonitoringConfig: drift.window_days, drift.sample_rows, drift.thresholds.* ...")
@click.option("--no-mlflow", "no_mlflow", is_flag=True, help="Do not log the report to MLflow.")
@click.option("--no-evidently", "no_evidently", is_flag=True, help="Policy health only (skip Evidently).")
@workspace_option
@json_option
def command(since, until, now, reference, log_path, config_path, no_mlflow, no_evidently, workspace, as_json):
    """Drift and policy-health report of a window of the decision log: Evidently drift of the
    features and scores served against the champion's training snapshot; action shares per channel,
    offer and slot against the previous window; exploration health (effective sample size, largest
    importance weight); reward, open and join rates per day; outcome-rate drift tests per channel,
    segment and slot band. Writes reports/drift.html, drift.json, drift_status.json and an MLflow run."""
    from core.config import load_config
    from monitoring.config import MonitoringConfig
    from monitoring.drift import run_drift
    from monitoring.logdata import find_log, log_bounds, parse_time

    config = load_config(MonitoringConfig, config_path)
    if no_evidently:
        config = config.model_copy(update={"drift": config.drift.model_copy(update={"evidently": False})})
    path = find_log(workspace, log_path)
    bounds = log_bounds(path)
    until_t = parse_time(until, "until", end=bounds.last)
    since_t = parse_time(since, "since", end=until_t or bounds.last)
    now_t = parse_time(now, "now", end=bounds.as_of)
    result = run_drift(workspace, log_path=path, since=since_t, until=until_t, now=now_t, reference=reference,
                       config=config, mlflow=not no_mlflow, progress=progress)
    s = result.summary
    if as_json:
        emit_json(s)
    else:
        click.echo(f"window {s['window']['since']} .. {s['window']['until']}: {s['decisions']['current']:,} decisions")
        fd = s.get("feature_drift")
        if fd:
            click.echo(f"features: {fd['drifted']} of {fd['compared']} drifted (reference: {s['reference']['kind']})")
        for key, v in s["action_shares"].items():
            click.echo(f"{key}: TVD vs previous window {'-' if v['tvd'] is None else format(v['tvd'], '.3f')}")
        e = s["exploration"]
        click.echo(f"exploration: max importance weight {e.get('max_importance_weight', float('nan')):.1f}, "
                   f"ESS share {e.get('ess_share', float('nan')):.3f}")
        for a in s["alarms"]:
            click.echo(f"ALARM {a['kind']}: {a['detail']}")
        click.echo(("DRIFT FOUND: retraining due" if s["alarms"] else "no drift") + f"; report {s['report']['html']}")
    if result.exit_code:
        # SystemExit passes through the CLI's error mapping (click's Exit would be swallowed in
        # non-standalone mode): exit code 1 = drift found
        sys.exit(result.exit_code)

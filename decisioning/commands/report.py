"""``decisioning report``: the effect of the decisions (holdout lift, ROI, A/B results)."""

from __future__ import annotations

from pathlib import Path

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command("report", epilog="""Examples:

\b
  decisioning report
  decisioning report --since 2026-07-01 --until 2026-07-08 --json
  decisioning report --since 7d          # the last 7 days of the log

Figures use matured decisions only (attribution window closed). Lift: treated minus holdout mean per
customer-day, normal interval with customer-clustered (delta-method) standard errors. A/B: value per
customer per arm, Welch's t-test. ROI per channel is attributed (credits organic purchases too);
incremental_roi comes from the holdout.""")
@click.option("--since", default=None, metavar="TIME", help="Start of the window (ISO 8601, or a span like 7d "
              "before --until / the end of the log) [default: the first decision].")
@click.option("--until", default=None, metavar="TIME", help="End of the window, exclusive [default: after the last decision].")
@click.option("--now", default=None, metavar="TIME", help="Outcomes as of this time [default: --until, else the last "
              "thing logged].")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Decision log (SQLite) [default: the one under <workspace>/decisions/].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML MonitoringConfig (reward, report level, A/B control arm).")
@click.option("--no-mlflow", "no_mlflow", is_flag=True, help="Do not log the report to MLflow.")
@workspace_option
@json_option
def command(since, until, now, log_path, config_path, no_mlflow, workspace, as_json):
    """Effect of the decisions in a window of the decision log: conversions, revenue, channel cost
    and ROI per channel, offer and policy; incremental lift against the never-contacted holdout with
    a confidence interval; the policy A/B split. Writes <workspace>/reports/report.html (+ PNGs) and
    report.json, and logs both with the key figures to MLflow (experiment `monitoring`)."""
    from core.config import load_config
    from monitoring.config import MonitoringConfig
    from monitoring.logdata import find_log, log_bounds, parse_time
    from monitoring.report import run_report

    config = load_config(MonitoringConfig, config_path)
    path = find_log(workspace, log_path)
    bounds = log_bounds(path)
    until_t = parse_time(until, "until", end=bounds.last)
    since_t = parse_time(since, "since", end=until_t or bounds.last)
    now_t = parse_time(now, "now", end=bounds.as_of)
    progress(f"report: {path}")
    s = run_report(workspace, log_path=path, since=since_t, until=until_t, now=now_t, config=config,
                   mlflow=not no_mlflow)
    if as_json:
        emit_json(s)
        return
    t = s["totals"]
    lift = s["holdout_lift"]["reward"]
    click.echo(f"{t['matured']:,} matured decisions ({t['unmatured_excluded']:,} not yet matured), {t['sends']:,} sends, "
               f"{t['conversions']:,} conversions, revenue {t['revenue']:,.2f}, channel cost {t['channel_cost']:,.2f}")
    click.echo(f"holdout lift of reward per customer-day: {lift['lift']:+.4f} "
               f"[{lift['ci'][0]:+.4f}, {lift['ci'][1]:+.4f}] (p = {lift['p_value']:.3g})")
    for r in s["by_channel"]:
        roi = "-" if r["roi"] is None else f"{r['roi']:.1f}"
        click.echo(f"  {r['channel']:9s} sends {r['sends']:>8,}  conversions {r['conversions']:>6,}  "
                   f"revenue {r['revenue']:>12,.2f}  cost {r['channel_cost']:>9,.2f}  ROI {roi}")
    if s["ab_test"]:
        for c in s["ab_test"]["comparisons"]:
            click.echo(f"A/B {c['arm']} vs {c['control']}: {c['difference']:+.4f} per customer "
                       f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], p = {c['p_value']:.3g}")
    click.echo(f"report: {s['report']['html']}"
               + (f" (MLflow run {s['mlflow_run_id']})" if s["mlflow_run_id"] else ""))

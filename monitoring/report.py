"""The engine of ``decisioning report``: the effect of the decisions in a window of the log.

Only matured decisions (attribution window closed by ``now``) enter the figures: an unmatured
decision's outcomes may still arrive. See ``monitoring.effect`` for every definition.
Writes ``<workspace>/reports/report.html`` (plots embedded, PNGs beside it) and ``report.json``,
and logs them with the key figures to an MLflow run (experiment ``monitoring``, run name
``report``; see ``monitoring.tracking``).
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.workspace import Workspace
from monitoring import effect, health
from monitoring.config import MonitoringConfig
from monitoring.logdata import check_window, end_of_day, find_log, log_bounds, open_log, read_window
from monitoring.render import Stages, fmt, image, page, plt, save_figure, table, warm_imports


def summarise(frame: pd.DataFrame, config: MonitoringConfig) -> dict:
    """Every figure of the report from a joined window (matured rows are used)."""
    rc, level = config.reward, config.report.level
    mat = frame[frame["matured"].to_numpy(bool)]
    cost = float(effect.channel_cost(mat, rc).sum())
    revenue = float(mat["value"].sum())
    lift = effect.holdout_lifts(mat, effect.LIFT_METRICS, level)
    treated_days = lift["value"]["treated"]["customer_days"]
    inc_value = lift["value"]["lift"] * treated_days if math.isfinite(lift["value"]["lift"]) else math.nan
    totals = {
        "decisions": int(len(frame)), "matured": int(len(mat)), "unmatured_excluded": int(len(frame) - len(mat)),
        "customers": int(len(np.unique(mat["customer_code"]))) if "customer_code" in mat
        else int(mat["customer_id"].nunique()), "sends": int(mat["sent"].sum()),
        "conversions": int(mat["converted"].sum()), "revenue": revenue, "channel_cost": cost,
        "unsubscribes": int(mat["unsubscribed"].sum()), "reward": float(mat["reward"].sum()),
        "roi": (revenue - cost) / cost if cost > 0 else None,
        "incremental_value": inc_value,
        "incremental_roi": (inc_value - cost) / cost if cost > 0 and math.isfinite(inc_value) else None,
        "join_rate": health.join_rate(mat),
    }
    return {
        "totals": totals,
        "by_channel": effect.money_by(mat, "channel", rc),
        "by_offer": effect.money_by(mat, "offer", rc),
        "by_policy": effect.money_by(mat, "policy", rc),
        "holdout_lift": lift,
        "ab_test": effect.ab_test(mat, level, config.report.ab_control),
        "daily": effect.daily_lift(mat),
    }


def _plots(s: dict, out: Path) -> dict[str, str]:
    p = plt()
    uris = {}
    ch = [r for r in s["by_channel"] if r["channel"] != "no_send"]
    if ch:
        fig, axes = p.subplots(1, 2, figsize=(11, 3.2))
        names = [r["channel"] for r in ch]
        x = np.arange(len(names))
        axes[0].bar(x - 0.2, [r["revenue"] for r in ch], 0.4, label="attributed revenue")
        axes[0].bar(x + 0.2, [r["channel_cost"] for r in ch], 0.4, label="channel cost")
        axes[0].set_xticks(x, names)
        axes[0].set_yscale("symlog")
        axes[0].legend(fontsize=8)
        axes[0].set_title("revenue and cost per channel")
        axes[1].bar(names, [r["roi"] or 0 for r in ch])
        axes[1].set_title("attributed ROI per channel")
        uris["channels"] = save_figure(fig, out / "report_channels.png")
    lift = s["holdout_lift"]["reward"]
    fig, axes = p.subplots(1, 2, figsize=(11, 3.2))
    for i, g in enumerate(("treated", "holdout")):
        m, (lo, hi) = lift[g]["mean"], lift[g]["ci"]
        if math.isfinite(m):
            axes[0].errorbar([i], [m], yerr=[[m - lo], [hi - m]] if math.isfinite(lo) else None, fmt="o", capsize=6)
    axes[0].set_xticks([0, 1], ["treated", "holdout"])
    axes[0].set_title(f"reward per customer-day; lift {fmt(lift['lift'])} CI {fmt(lift['ci'])}", fontsize=9)
    daily = pd.DataFrame(s["daily"])
    if len(daily):
        for g in ("treated", "holdout"):
            axes[1].plot(pd.to_datetime(daily["day"]), daily[g], marker="o", label=g)
        axes[1].legend(fontsize=8)
        axes[1].tick_params(axis="x", rotation=45)
        axes[1].set_title("reward per customer-day, per day")
    uris["lift"] = save_figure(fig, out / "report_lift.png")
    ab = s["ab_test"]
    if ab:
        fig, ax = p.subplots(figsize=(6, 3.2))
        arms = list(ab["arms"])
        for i, a in enumerate(arms):
            v = ab["arms"][a]
            lo, hi = v["ci"]
            ax.errorbar([i], [v["value_per_customer"]], yerr=[[v["value_per_customer"] - lo], [hi - v["value_per_customer"]]]
                        if math.isfinite(lo) else None, fmt="o", capsize=6)
        ax.set_xticks(range(len(arms)), arms)
        ax.set_title("A/B: reward per customer over the window")
        uris["ab"] = save_figure(fig, out / "report_ab.png")
    return uris


def _html(s: dict, uris: dict[str, str]) -> str:
    w = s["window"]
    intro = (f"<p>Decision log {s['log']}; decisions {w['since']} .. {w['until']}; outcomes as of {w['now']} "
             f"(matured decisions only).</p>")
    t = s["totals"]
    sections = [("Totals", table([t]))]
    cols = ["decisions", "sends", "conversions", "revenue", "channel_cost", "unsubscribes", "reward",
            "conversion_rate", "roi"]
    sections.append(("Per channel", (image(uris["channels"], "channels") if "channels" in uris else "")
                     + table(s["by_channel"], ["channel", *cols])))
    sections.append(("Per offer", table(s["by_offer"], ["offer", *cols])))
    sections.append(("Per policy", table(s["by_policy"], ["policy", *cols])))
    rows = [{"metric": m, "treated": v["treated"]["mean"], "holdout": v["holdout"]["mean"], "lift": v["lift"],
             "ci": v["ci"], "p_value": v["p_value"], "treated customers": v["treated"]["customers"],
             "holdout customers": v["holdout"]["customers"]} for m, v in s["holdout_lift"].items()]
    sections.append(("Incremental lift against the holdout", image(uris["lift"], "lift") + table(rows)
                     + f"<p>{s['holdout_lift']['reward']['method']}.</p>"))
    ab = s["ab_test"]
    if ab:
        arms = [{"arm": a, **v} for a, v in ab["arms"].items()]
        body = (image(uris["ab"], "ab") if "ab" in uris else "") + table(arms) + table(ab["comparisons"]) \
            + f"<p>{ab['method']}; value = {ab['metric']} per {ab['unit']}.</p>"
        sections.append(("A/B test", body))
    return page("Effect of the decisions", sections, intro)


def key_metrics(s: dict) -> dict:
    """The figures of a report summary logged as MLflow metrics (nested; flattened by the logger)."""
    lift = {m: {k: v[k] for k in ("lift", "ci", "p_value", "relative_lift")}
            | {"treated": v["treated"]["mean"], "holdout": v["holdout"]["mean"]}
            for m, v in s["holdout_lift"].items()}
    out = {"totals": s["totals"], "holdout_lift": lift,
           "channel": {r["channel"]: {k: r[k] for k in ("sends", "conversions", "revenue", "channel_cost", "roi")}
                       for r in s["by_channel"]}}
    if s["ab_test"]:
        out["ab"] = {f"{c['arm']}_vs_{c['control']}": {k: c[k] for k in ("difference", "ci", "p_value")}
                     for c in s["ab_test"]["comparisons"]}
    return out


def run_report(workspace: Workspace, *, log_path: str | Path | None = None, since: datetime | None = None,
               until: datetime | None = None, now: datetime | None = None,
               config: MonitoringConfig | None = None, mlflow: bool = True) -> dict:
    """Compute the report of ``[since, until)`` and write its HTML, PNGs and JSON under
    ``<workspace>/reports/``; with ``mlflow``, log them and the key figures to an MLflow run
    (its id in the summary's ``mlflow_run_id``, else null). Returns the JSON summary."""
    t0 = time.perf_counter()
    clock = Stages()
    config = config or MonitoringConfig()
    check_window(since, until)
    path = find_log(workspace, log_path)
    bounds = log_bounds(path)
    now = now or (until if until is not None else bounds.as_of)
    warm = warm_imports("matplotlib.pyplot")
    log = open_log(path)
    try:
        frame = read_window(log, since, until, now, config.reward)
    finally:
        log.close()
    if frame.empty:
        raise InputError(f"no decision in the window {fmt(since)} .. {fmt(until)} of {path}")
    clock.lap("read")
    s = {"log": str(path), "window": {"since": (since or bounds.first).isoformat(),
                                      "until": (until or end_of_day(bounds.last)).isoformat(), "now": now.isoformat()},
         **summarise(frame, config)}
    clock.lap("figures")
    out = workspace.reports
    out.mkdir(parents=True, exist_ok=True)
    warm.join()
    uris = _plots(s, out)
    (out / "report.html").write_text(_html(s, uris))
    html_path, json_path = out / "report.html", out / "report.json"
    s["report"] = {"html": str(html_path), "json": str(json_path)}
    s["mlflow_run_id"] = None
    clock.lap("html")
    s["seconds"], s["stage_seconds"] = round(time.perf_counter() - t0, 2), clock.laps
    json_path.write_text(json.dumps(s, default=str, indent=1))
    if mlflow:
        from monitoring.tracking import log_report

        files = [html_path, json_path, *(out / f"report_{k}.png" for k in uris)]
        s["mlflow_run_id"] = log_report(workspace, "report", files, key_metrics(s),
                                        params={"log": s["log"], **s["window"]})
        clock.lap("mlflow")
        s["seconds"] = round(time.perf_counter() - t0, 2)
        json_path.write_text(json.dumps(s, default=str, indent=1))
    return s

"""The engine of ``decisioning drift``: Evidently feature and score drift plus the policy's health,
thresholds from ``MonitoringConfig.drift``, an HTML report with plots, a JSON summary, a status
file for the service, and an MLflow run.

Windows: the current window is ``[since, until)`` (default: the last ``window_days`` before the
last logged decision); the previous window is the span of the same length just before it. Outcome
figures use only matured decisions (attribution window closed by ``now``: ``until`` when given,
else the last time anything was logged).

Alarms (each crossing of an enabled threshold; any alarm -> retraining due, exit code 1):
``feature_drift`` (share of drifted features >= feature_drift_share), ``score_drift`` (a score
column drifted), ``outcome_drift`` (a corrected outcome-rate test, see monitoring.health),
``action_share`` (TVD of channel/offer/slot shares >= action_share_tvd), ``join_rate``,
``exploration_ess``, ``importance_weight``.

Status file ``<workspace>/reports/drift_status.json`` (read by the service for ``/metrics``; a
stable format, keys are only ever added): one JSON object with

* ``retrain_due`` (bool): any alarm was raised; ``drift_found`` (bool): the same;
* ``alarms`` (list of str): the distinct alarm kinds above, sorted; ``n_alarms`` (int): alarms raised
  (one kind may raise several);
* ``drifted_features`` (int, present only when Evidently compared features): features that drifted;
* ``checked_at`` (ISO 8601 UTC): when the check ran; ``window`` ({``since``, ``until``}, ISO 8601):
  the current window;
* ``report`` (str): path of drift.html; ``mlflow_run_id`` (str or null): the run holding the report.

MLflow: one run named ``drift`` in the experiment ``monitoring`` (see ``monitoring.tracking``):
params = window and log path (plus reference kind, evidently, sample_rows), metrics = alarms,
decisions, exploration, join and reward rates, feature/score drift counts, action-share TVDs;
artifacts = drift.html, drift.json, the PNG plots and Evidently pages.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.workspace import Workspace
from monitoring import health
from monitoring.config import DriftConfig, MonitoringConfig
from monitoring.features import SCORE_PREFIX, evidently_drift, find_reference, sample_frame
from monitoring.logdata import (
    HEALTH_COLUMNS,
    check_window,
    end_of_day,
    find_log,
    log_bounds,
    open_log,
    read_window,
    sample_json,
)
from monitoring.render import Stages, fmt, image, page, plt, save_figure, table, warm_imports

STATUS_FILE = "drift_status.json"


@dataclass(frozen=True)
class DriftResult:
    summary: dict
    alarms: list[dict]

    @property
    def exit_code(self) -> int:
        return 1 if self.alarms else 0


def _iso(ts) -> str | None:
    return None if ts is None else pd.Timestamp(ts).isoformat()


def _alarms(cfg: DriftConfig, features: dict | None, scores: dict | None, shares: dict, outcome: dict,
            join_cur: float, explo: dict) -> list[dict]:
    th = cfg.thresholds
    out = []
    if features and th.feature_drift_share is not None and features.get("drifted_share") is not None \
            and features["drifted_share"] >= th.feature_drift_share and features["drifted"] > 0:
        out.append({"kind": "feature_drift", "value": features["drifted_share"], "threshold": th.feature_drift_share,
                    "detail": sorted(c for c, v in features["columns"].items() if v["drifted"])})
    if scores and th.score_drift:
        drifted = sorted(c for c, v in scores["columns"].items() if v["drifted"])
        if drifted:
            out.append({"kind": "score_drift", "value": len(drifted), "threshold": 1, "detail": drifted})
    for t in outcome["alarms"]:
        out.append({"kind": "outcome_drift", "value": t["relative_change"], "threshold": th.outcome_min_relative_change,
                    "detail": f"{t['metric']} {fmt(t['group'])}: {t['previous']:.4g} -> {t['current']:.4g} "
                              f"(p adjusted {t['p_adjusted']:.2g})"})
    if th.action_share_tvd is not None:
        for key, s in shares.items():
            if s["tvd"] is not None and s["tvd"] >= th.action_share_tvd:
                out.append({"kind": "action_share", "value": s["tvd"], "threshold": th.action_share_tvd, "detail": key})
    if th.min_join_rate is not None and math.isfinite(join_cur) and join_cur < th.min_join_rate:
        out.append({"kind": "join_rate", "value": join_cur, "threshold": th.min_join_rate, "detail": "matured sends"})
    if th.min_ess_share is not None and explo.get("ess_share") is not None and explo["ess_share"] < th.min_ess_share:
        out.append({"kind": "exploration_ess", "value": explo["ess_share"], "threshold": th.min_ess_share, "detail": ""})
    if th.max_importance_weight is not None and explo.get("max_importance_weight", 0) > th.max_importance_weight:
        out.append({"kind": "importance_weight", "value": explo["max_importance_weight"],
                    "threshold": th.max_importance_weight, "detail": ""})
    return out


def analyse(frame: pd.DataFrame, since: datetime, until: datetime, cfg: DriftConfig,
            distributions: pd.DataFrame | None = None) -> dict:
    """Policy health of ``frame`` (a joined window from ``prev_since`` to ``until``, matured as of
    the analysis time): current = decided in [since, until), previous = the rest before ``since``.
    Pure pandas; no Evidently. Returns shares, exploration, join rates, outcome tests, daily rows."""
    t = frame["decided_at"]
    cur = frame[(t >= pd.Timestamp(since)) & (t < pd.Timestamp(until))]
    prev = frame[t < pd.Timestamp(since)]
    return {
        "decisions": {"current": int(len(cur)), "previous": int(len(prev))},
        "action_shares": health.action_shares(cur, prev),
        "exploration": health.exploration(cur, distributions),
        "join_rate": {"current": health.join_rate(cur), "previous": health.join_rate(prev)},
        "reward_rate": {
            "current": float(cur.loc[cur["matured"], "reward"].mean()) if cur["matured"].any() else math.nan,
            "previous": float(prev.loc[prev["matured"], "reward"].mean()) if prev["matured"].any() else math.nan},
        "outcome_drift": health.outcome_drift(cur, prev, cfg.thresholds, cfg.slot_bands),
        "daily": health.daily(frame),
    }


def policy_alarms(analysis: dict, cfg: DriftConfig) -> list[dict]:
    """The alarms of a policy-health analysis alone (no Evidently part)."""
    return _alarms(cfg, None, None, analysis["action_shares"], analysis["outcome_drift"],
                   analysis["join_rate"]["current"], analysis["exploration"])


def _plots(analysis: dict, out: Path) -> dict[str, str]:
    p = plt()
    uris = {}
    daily = pd.DataFrame(analysis["daily"])
    if len(daily):
        fig, axes = p.subplots(1, 3, figsize=(14, 3.2))
        for ax, col in zip(axes, ("reward_rate", "open_rate", "join_rate"), strict=True):
            ax.plot(pd.to_datetime(daily["day"]), daily[col], marker="o")
            ax.set_title(col.replace("_", " ") + " per day (matured)")
            ax.tick_params(axis="x", rotation=45)
        uris["daily"] = save_figure(fig, out / "drift_daily.png")
    fig, axes = p.subplots(1, 3, figsize=(14, 3.2))
    for ax, (key, s) in zip(axes, analysis["action_shares"].items(), strict=True):
        labels = list(s["current"])
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [s["current"][k] for k in labels], 0.4, label="current")
        if s["previous"]:
            ax.bar(x + 0.2, [s["previous"].get(k, 0) for k in labels], 0.4, label="previous")
        ax.set_xticks(x, labels, rotation=60, fontsize=7)
        ax.set_title(f"{key} (TVD {fmt(s['tvd'])})")
        ax.legend(fontsize=7)
    uris["shares"] = save_figure(fig, out / "drift_shares.png")
    tests = [t for t in analysis["outcome_drift"]["tests"] if t["metric"] == "open_rate"]
    if tests:
        tests = sorted(tests, key=lambda t: t["p_value"])[:20]
        fig, ax = p.subplots(figsize=(8, 0.3 * len(tests) + 1))
        ax.barh([fmt(t["group"]) for t in tests], [t["relative_change"] for t in tests],
                color=["#b00" if t["alarm"] else "#888" for t in tests])
        ax.set_xlabel("relative change of the open rate, current vs previous window")
        ax.invert_yaxis()
        uris["outcomes"] = save_figure(fig, out / "drift_outcomes.png")
    return uris


def _html(summary: dict, uris: dict[str, str], evidently_html: str | None) -> str:
    a = summary
    status = (f"<p class='alarm'>DRIFT: {len(a['alarms'])} alarm(s); retraining is due</p>" if a["alarms"]
              else "<p class='ok'>No threshold crossed.</p>")
    intro = (f"<p>Decision log {a['log']}<br>current window {a['window']['since']} .. {a['window']['until']}, "
             f"previous {a['window']['previous_since']} .. {a['window']['since']}; outcomes as of "
             f"{a['window']['now']} (matured decisions only)</p>{status}")
    sections = [("Alarms", table(a["alarms"], ["kind", "value", "threshold", "detail"]))]
    fd, sd = a.get("feature_drift"), a.get("score_drift")
    ev = f"<p><a href='{Path(evidently_html).name}'>Evidently report</a></p>" if evidently_html else ""
    if fd is not None:
        rows = [{"column": c, **v} for c, v in fd["columns"].items()]
        sections.append(("Feature drift (Evidently)", f"<p>reference: {fmt(a['reference'])}; {fd['drifted']} of "
                         f"{fd['compared']} features drifted</p>{ev}" + table(rows)))
    if sd is not None:
        sections.append(("Score drift (Evidently)", table([{"score": c, **v} for c, v in sd["columns"].items()])))
    sh = a["action_shares"]
    sections.append(("Action shares", image(uris["shares"], "shares") + table(
        [{"dimension": k, "tvd": v["tvd"], "chi2 p-value": v["p_value"]} for k, v in sh.items()])))
    sections.append(("Exploration", table([a["exploration"]])))
    od = a["outcome_drift"]
    sections.append(("Outcome rates, current vs previous window",
                     f"<p>{od['n_tests']} tests, Bonferroni, family-wise alpha {fmt(od['alpha'])}, minimum relative "
                     f"change {fmt(od['min_relative_change'])}</p>"
                     + (image(uris["outcomes"], "outcomes") if "outcomes" in uris else "")
                     + table(sorted(od["tests"], key=lambda t: t["p_value"])[:30],
                             ["metric", "group", "previous", "current", "n_previous", "n_current", "relative_change",
                              "p_adjusted", "alarm"])))
    if "daily" in uris:
        sections.append(("Over time", image(uris["daily"], "daily") + table(a["daily"])))
    return page("Drift and policy health", sections, intro)


def run_drift(workspace: Workspace, *, log_path: str | Path | None = None, since: datetime | None = None,
              until: datetime | None = None, now: datetime | None = None, reference: str | Path | None = None,
              config: MonitoringConfig | None = None, mlflow: bool = True,
              progress: Callable[[str], None] = lambda m: None) -> DriftResult:
    """Run the drift report; writes ``<workspace>/reports/drift.{html,json}``, PNGs, the Evidently
    HTML, the status file, and (``mlflow``) an MLflow run. Returns the summary and the alarms."""
    t0 = time.perf_counter()
    clock = Stages()
    config = config or MonitoringConfig()
    cfg = config.drift
    path = find_log(workspace, log_path)
    bounds = log_bounds(path)
    check_window(since, until)
    until_given = until is not None
    until = until or end_of_day(bounds.last)
    since = since or until - timedelta(days=cfg.window_days)
    check_window(since, until)
    prev_since = since - (timedelta(days=cfg.previous_days) if cfg.previous_days else until - since)
    now = now or (until if until_given else bounds.as_of)
    warm = warm_imports(*(("evidently", "evidently.presets") if cfg.evidently else ()), "matplotlib.pyplot")
    log = open_log(path)
    try:
        progress(f"drift: reading {path} from {prev_since.isoformat()} to {until.isoformat()}")
        frame = read_window(log, prev_since, until, now, config.reward, HEALTH_COLUMNS)
    finally:
        log.close()
    clock.lap("read")
    cur_n = int((frame["decided_at"] >= pd.Timestamp(since)).sum())
    if cur_n == 0:
        from core.errors import InputError

        raise InputError(f"no decision in the window {since.isoformat()} .. {until.isoformat()} of {path}")
    dist = sample_json(path, since, until, min(cfg.sample_rows, 2000), cfg.seed, ("distribution",))
    if not any(dist["distribution"]):
        dist = None
    analysis = analyse(frame, since, until, cfg, dist)
    clock.lap("policy_health")
    out = workspace.reports
    out.mkdir(parents=True, exist_ok=True)
    features = scores = None
    ref_info: dict = {"kind": "none", "source": None}
    evidently_html = None
    if cfg.evidently:
        progress("drift: sampling contexts and scores; running Evidently")
        warm.join()
        cur_s = sample_frame(sample_json(path, since, until, cfg.sample_rows, cfg.seed))
        prev_s = sample_frame(sample_json(path, prev_since, since, cfg.sample_rows, cfg.seed + 1))
        ref, ref_info = find_reference(workspace, reference)
        feat_cols = [c for c in cur_s.columns if not c.startswith(SCORE_PREFIX)]
        score_cols = [c for c in cur_s.columns if c.startswith(SCORE_PREFIX)]
        ref_feat = ref if ref is not None else prev_s
        evidently_html = out / "drift_evidently.html"
        if feat_cols and len(ref_feat):
            features = evidently_drift(ref_feat.drop(columns=[c for c in ref_feat.columns if c.startswith(SCORE_PREFIX)]),
                                       cur_s[feat_cols], max_rows=cfg.sample_rows, max_columns=cfg.max_features,
                                       seed=cfg.seed, html_path=evidently_html)
        ref_scores = ref if ref is not None and any(c in ref.columns for c in score_cols) else prev_s
        scores_ref_kind = ref_info["kind"] if ref_scores is ref else "previous_window"
        if score_cols and len(ref_scores):
            scores = evidently_drift(ref_scores, cur_s[score_cols], max_rows=cfg.sample_rows,
                                     max_columns=len(score_cols), seed=cfg.seed,
                                     html_path=out / "drift_evidently_scores.html")
            scores["reference"] = scores_ref_kind
        if features is None or not features["columns"]:
            evidently_html = None
    clock.lap("evidently")
    alarms = _alarms(cfg, features, scores, analysis["action_shares"], analysis["outcome_drift"],
                     analysis["join_rate"]["current"], analysis["exploration"])
    summary = {
        "drift_found": bool(alarms), "retrain_due": bool(alarms), "alarms": alarms, "log": str(path),
        "window": {"since": _iso(since), "until": _iso(until), "previous_since": _iso(prev_since), "now": _iso(now)},
        "reference": ref_info, "feature_drift": features, "score_drift": scores, **analysis,
        "config": cfg.model_dump(mode="json"),
    }
    warm.join()
    uris = _plots(analysis, out)
    html_path = out / "drift.html"
    html_path.write_text(_html(summary, uris, str(evidently_html) if evidently_html else None))
    json_path = out / "drift.json"
    files = [html_path, json_path, *(out / f"drift_{k}.png" for k in uris)]
    if evidently_html is not None:
        files.append(out / "drift_evidently.html")
    if scores is not None and scores["columns"]:
        files.append(out / "drift_evidently_scores.html")
    summary["report"] = {"html": str(html_path), "json": str(json_path)}
    summary["mlflow_run_id"] = None
    clock.lap("html")
    summary["seconds"], summary["stage_seconds"] = round(time.perf_counter() - t0, 2), clock.laps
    json_path.write_text(json.dumps(summary, default=str, indent=1))
    run_id = None
    if mlflow:
        progress("drift: logging to MLflow")
        from monitoring.tracking import log_report

        metrics = {"alarms": len(alarms), "retrain_due": bool(alarms),
                   "decisions": analysis["decisions"], "exploration": analysis["exploration"],
                   "join_rate": analysis["join_rate"], "reward_rate": analysis["reward_rate"],
                   "feature_drift": {k: (features or {}).get(k) for k in ("drifted", "compared", "drifted_share")},
                   "score_drift": {"drifted": sum(v["drifted"] for v in (scores or {}).get("columns", {}).values())},
                   "outcome_drift": {"tests": analysis["outcome_drift"]["n_tests"],
                                     "alarms": len(analysis["outcome_drift"]["alarms"])},
                   "action_tvd": {k: v["tvd"] for k, v in analysis["action_shares"].items()}}
        params = {"log": str(path), **summary["window"], "reference": ref_info["kind"],
                  "evidently": cfg.evidently, "sample_rows": cfg.sample_rows}
        run_id = log_report(workspace, "drift", files, metrics, params=params,
                            tags={"retrain_due": str(bool(alarms))})
    summary["mlflow_run_id"] = run_id
    clock.lap("mlflow")
    status = {"retrain_due": bool(alarms), "drift_found": bool(alarms), "alarms": sorted({a["kind"] for a in alarms}),
              "n_alarms": len(alarms), "checked_at": datetime.now(UTC).isoformat(),
              "window": {"since": _iso(since), "until": _iso(until)}, "report": str(html_path),
              "mlflow_run_id": run_id}
    if features is not None:
        status["drifted_features"] = int(features["drifted"])
    tmp = out / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(status, indent=1))
    tmp.replace(out / STATUS_FILE)  # atomic: the service never reads half a file
    summary["status_file"] = str(out / STATUS_FILE)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    json_path.write_text(json.dumps(summary, default=str, indent=1))
    return DriftResult(summary, alarms)

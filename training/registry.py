"""Champion / challenger: re-score both on the same held-out data, promote only a winner, and the
comparison report (table + PNG + HTML) of models vs baselines on the same test data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError, NotFoundError
from core.workspace import Workspace
from training.pipeline import BINARY, FAMILIES, TrainConfig, build_binary, build_sends, open_context, snips

#: The held-out metric that decides promotion, per family (higher is better).
PRIMARY = {"propensity": "auc", "churn": "auc", "offer": "heldout_value", "send-time": "heldout_open_rate"}


def _family(model: str) -> str:
    key = model.replace("_", "-")
    for fam, (name, _) in FAMILIES.items():
        if key == fam or model == name:
            return fam
    raise InputError(f"unknown model {model!r}; choose from {list(FAMILIES)}")


def _config_from_run(params: dict[str, str]) -> TrainConfig:
    return TrainConfig(cutoff=datetime.fromisoformat(params["cutoff"]), horizon_days=int(params["horizon_days"]),
                       trials=0, track=False)


def heldout_score(ctx, family: str, estimator) -> tuple[float, int]:
    """The family's primary metric of ``estimator`` on the held-out data of ``ctx.split``."""
    from models.metrics import auc

    names = list(getattr(estimator, "feature_names_in_", []))
    if family in BINARY:
        key = ("binary", family)
        data = ctx.cache.get(key) or build_binary(ctx, family)
        ctx.cache[key] = data
        X = data.X["test"]
        missing = [c for c in names if c not in X]
        if missing:
            raise InputError(f"the held-out data lacks features the model needs: {missing[:5]}")
        return auc(data.y["test"], estimator.predict_proba(X[names])[:, 1]), len(X)
    key = ("sends", family)
    data = ctx.cache.get(key) or build_sends(ctx, family)
    ctx.cache[key] = data
    test = data.sends["test"]
    X = data.X["test"]
    missing = [c for c in names if c not in X]
    if missing:
        raise InputError(f"the held-out data lacks features the model needs: {missing[:5]}")
    from training.pipeline import _send_reward

    reward = _send_reward(test, family)
    action = "offer" if family == "offer" else "send_hour"
    logged = test[action].to_numpy()
    w = 1.0 / np.maximum(data.action_marginal[test["channel"].to_numpy(), logged], 1e-6)
    return snips(reward, estimator.predict(X[names]) == logged, w), len(X)


def promote(workspace: Workspace, model: str, min_delta: float = 0.0, progress=lambda m: None) -> dict:
    """Move ``champion`` to the challenger only if it beats the champion on the same held-out data."""
    from training.tracking import CHALLENGER, CHAMPION, Tracker

    family = _family(model)
    name = FAMILIES[family][0]
    tr = Tracker(workspace)
    chal = tr.version(name, CHALLENGER)
    if chal is None:
        raise NotFoundError(f"no challenger for {family}: run `decisioning train {family}` first")
    champ = tr.version(name, CHAMPION)
    metric = PRIMARY[family]
    out = {"model": family, "registered_name": name, "metric": metric,
           "challenger": {"version": chal.version}, "champion": None if champ is None else {"version": champ.version}}
    if champ is None:
        tr.set_alias(name, CHAMPION, chal.version)
        return {**out, "promoted": True, "reason": f"no champion yet: version {chal.version} becomes champion"}
    if champ.version == chal.version:
        return {**out, "promoted": False, "reason": f"version {chal.version} is already the champion"}
    cfg = _config_from_run(chal.params)
    progress(f"re-scoring champion v{champ.version} and challenger v{chal.version} on the held-out data "
             f"after {cfg.cutoff.date()} ({cfg.horizon_days} days)")
    ctx = open_context(workspace, cfg, progress)
    s_chal, n = heldout_score(ctx, family, tr.load_model(name, CHALLENGER))
    s_champ, _ = heldout_score(ctx, family, tr.load_model(name, CHAMPION))
    out["challenger"][metric] = s_chal
    out["champion"][metric] = s_champ
    out["heldout"] = {"cutoff": ctx.split.test.isoformat(), "horizon_days": ctx.split.horizon_days, "rows": n}
    if not np.isfinite(s_chal) or not s_chal > s_champ + min_delta:
        why = (f"challenger v{chal.version} {metric} {s_chal:.4f} does not beat champion v{champ.version} "
               f"{s_champ:.4f}" + (f" by more than {min_delta}" if min_delta else "")
               + f" on the same held-out data ({n} rows after {ctx.split.test.date()}): champion stays")
        return {**out, "promoted": False, "reason": why}
    tr.set_alias(name, CHAMPION, chal.version)
    return {**out, "promoted": True,
            "reason": f"challenger v{chal.version} {metric} {s_chal:.4f} beats champion v{champ.version} "
                      f"{s_champ:.4f} on the same held-out data ({n} rows): promoted"}


# ---------------------------------------------------------------------------------------------
# Comparison report
# ---------------------------------------------------------------------------------------------


def _rows_for(family: str, ev: dict, version: str) -> list[dict]:
    """Table rows (model, baselines, oracle) from a run's evaluation.json."""
    rows = []
    if family in BINARY:
        def row(who, m):
            return {"family": family, "who": who, "auc": m.get("auc"), "log_loss": m.get("log_loss"),
                    "ece": m.get("ece"), "lift_at_10": m.get("lift_at_10"), "n_test": m.get("n")}
        rows.append(row(f"challenger v{version}", ev))
        for b, m in ev.get("baselines", {}).items():
            rows.append(row(f"baseline: {b}", m))
        if "oracle" in ev:
            rows.append(row("oracle (truth)", ev["oracle"]))
        return rows
    key = "value" if family == "offer" else "open_rate"
    true_key = "true_value" if family == "offer" else "true_open_rate"
    rows.append({"family": family, "who": f"challenger v{version}", f"heldout_{key}": ev.get(f"heldout_{key}"),
                 f"true_{key}": ev.get(true_key), "n_test": ev.get("n_test")})
    for b, m in ev.get("baselines", {}).items():
        base_true = ev.get("true_best_single_value") if family == "offer" else ev.get("true_fixed_10_open_rate")
        rows.append({"family": family, "who": f"baseline: {b}", f"heldout_{key}": m.get(f"heldout_{key}"),
                     f"true_{key}": base_true, "n_test": ev.get("n_test")})
    if "oracle_value" in ev or "oracle_open_rate" in ev:
        rows.append({"family": family, "who": "oracle (truth)",
                     f"true_{key}": ev.get("oracle_value", ev.get("oracle_open_rate"))})
    return rows


def compare(workspace: Workspace, out_dir: Path | None = None, progress=lambda m: None) -> dict:
    """Table and plots of every registered model (challenger, and champion when it differs)
    beside its baselines and the oracle, on the challenger's test data. Writes CSV, PNG, HTML."""
    import matplotlib.pyplot as plt

    from training.plots import bar_figure
    from training.tracking import CHALLENGER, CHAMPION, Tracker

    tr = Tracker(workspace)
    out_dir = Path(out_dir or workspace.reports / "compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, images, missing = [], [], []
    for family, (name, _) in FAMILIES.items():
        chal = tr.version(name, CHALLENGER)
        if chal is None:
            missing.append(family)
            continue
        ev = tr.load_artifact_json(chal.run_id, "evaluation.json")
        fam_rows = _rows_for(family, ev, chal.version)
        champ = tr.version(name, CHAMPION)
        if champ is not None and champ.version != chal.version:
            try:
                ctx = open_context(workspace, _config_from_run(chal.params), progress)
                s, _ = heldout_score(ctx, family, tr.load_model(name, CHAMPION))
                metric = PRIMARY[family]
                fam_rows.insert(1, {"family": family, "who": f"champion v{champ.version}", metric: s})
            except InputError as exc:
                progress(f"{family}: champion v{champ.version} not re-scored: {exc}")
        rows += fam_rows
        metric = "auc" if family in BINARY else ("true_value" if family == "offer" else "true_open_rate")
        if not any(r.get(metric) is not None for r in fam_rows):
            metric = PRIMARY[family]
        pts = [(r["who"], r[metric]) for r in fam_rows if r.get(metric) is not None]
        if pts:
            fig = bar_figure([p[0] for p in pts], [float(p[1]) for p in pts],
                             f"{family}: {metric} on the same test data", metric)
            path = out_dir / f"{family}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            images.append(path.name)
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "compare.csv", index=False)
    html = ["<html><head><meta charset='utf-8'><title>Models vs baselines</title>",
            "<style>body{font-family:sans-serif} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
            "padding:3px 8px;text-align:right}</style></head><body>",
            "<h1>Models vs baselines on the same test data</h1>",
            table.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="") if len(table) else "<p>none</p>"]
    if missing:
        html.append(f"<p>Not trained yet: {', '.join(missing)}</p>")
    for img in images:
        html.append(f"<h2>{img[:-4]}</h2><img src='{img}'>")
    html.append("</body></html>")
    (out_dir / "compare.html").write_text("\n".join(html))
    return {"rows": table.replace({np.nan: None}).to_dict(orient="records"), "missing": missing,
            "html": str(out_dir / "compare.html"), "csv": str(out_dir / "compare.csv"),
            "png": [str(out_dir / i) for i in images]}

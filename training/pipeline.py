"""Training jobs: build the time-split data, tune, refit, evaluate against baselines (and the
oracle when the simulator's truth is present), log to MLflow and register the challenger.

Library entry: ``train(workspace, models, config)`` returns one result dict per model (what
``decisioning train --json`` prints). Each model family has a ``Family`` entry below.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.catalog import DEFAULT_CATALOG
from core.errors import InputError
from core.types import CHANNELS, SEND_HOURS
from core.workspace import Workspace
from training.data import (
    FeatureSource,
    History,
    TimeSplit,
    logged_sends,
    model_columns,
    open_feature_source,
    order_summary,
    plan_split,
    purchase_label,
)

#: Model family -> (registered model name, FeatureService name).
FAMILIES: dict[str, tuple[str, str]] = {
    "propensity": ("propensity", "propensity_v1"),
    "churn": ("churn", "churn_v1"),
    "offer": ("next_best_offer", "offer_v1"),
    "send-time": ("send_time", "send_time_v1"),
}
BINARY = ("propensity", "churn")
POLICY = ("offer", "send-time")
FIXED_HOUR = 10
#: Activity-share columns the send-time model may compare hours by (off by default: with the combined
#: active-hour estimate below they added nothing measurable and cost time).
HOUR_PROFILE = tuple(f"act_share_h{b:02d}" for b in range(0, 24, 4))
USE_HOUR_PROFILE = False
#: Typical-hour columns the send-time model measures each candidate hour's distance from (monotone:
#: farther is never better). One combined estimate (events and orders) beat several noisier ones
#: (3 seeds x 20k: gap closed 0.65-0.67 with peak/mean/open hours, see the session-2 report).
REFERENCE_HOURS = ("act_order_hour_mean",)
#: Whether the send-time model also sees the raw candidate hour (beside its distance from the
#: reference hours). Off: the raw hour let a population hour effect override the customer's own
#: hours (seed 1 x 20k, no tuning: gap closed 0.70 with it, 0.74 without).
HOUR_AS_FEATURE = False


class TrainConfig(BaseModel):
    """Settings of a training job (defaults suit the simulated world: 180 days of history)."""

    model_config = ConfigDict(frozen=True)

    cutoff: datetime | None = Field(None, description="last moment the test may see (UTC); default: "
                                    "history end minus the horizon")
    horizon_days: int = Field(30, ge=1, description="label window after each cutoff, days")
    trials: int = Field(10, ge=0, description="Optuna trials per model (0: default hyperparameters)")
    timeout_seconds: float | None = Field(20.0, gt=0, description="tuning time budget per model, seconds")
    seed: int = Field(0, ge=0, description="seed of sampling, tuning and models")
    n_train_cutoffs: int = Field(4, ge=1, description="training cutoffs before the validation cutoff")
    step_days: int = Field(14, ge=1, description="days between training cutoffs")
    min_history_days: int = Field(28, ge=1, description="history needed before a training cutoff")
    churn_active_days: int = Field(90, ge=1, description="active = ordered within this many days "
                                   "before the cutoff (the churn model's population)")
    max_train_rows: int = Field(200_000, ge=1000, description="cap on training rows per model (most recent)")
    oracle_customers: int = Field(20_000, ge=100, description="test customers scored against the truth "
                                  "for offer and send-time")
    latent_state: bool = Field(False, description="propensity/churn also see the empirical-Bayes latent-state "
                               "posterior (models.latent); small AUC gain, ~0.3 ms more per single-row score")
    track: bool = Field(True, description="log to MLflow and register the challenger")
    storage: str | None = Field(None, description="Optuna storage URL (default in memory)")


@dataclass
class Context:
    workspace: Workspace
    history: History
    source: FeatureSource
    source_kind: str
    split: TimeSplit
    config: TrainConfig
    progress: Callable[[str], None]
    tracker: object | None = None
    truth: object | None = None  # training.oracle.Truth when the simulator's truth is present
    cache: dict = field(default_factory=dict)


def fingerprint(*frames) -> str:
    """A short content hash of the training data (features and labels)."""
    h = hashlib.sha256()
    for f in frames:
        if isinstance(f, pd.DataFrame | pd.Series):
            h.update(pd.util.hash_pandas_object(f, index=False).to_numpy().tobytes())
        else:
            h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Binary models: propensity and churn
# ---------------------------------------------------------------------------------------------


@dataclass
class BinaryData:
    family: str
    service: str
    features: list[str]
    X: dict[str, pd.DataFrame]  # part -> features; parts: train, valid, test
    y: dict[str, np.ndarray]
    summary: dict[str, pd.DataFrame]  # part -> order summary (BG/NBD, RFM inputs)
    ids: dict[str, np.ndarray]
    cutoffs: dict[str, np.ndarray]


def _population(ctx: Context, family: str, cutoff: pd.Timestamp) -> np.ndarray:
    ids = ctx.history.customers_at(cutoff)
    if family == "churn":
        o = ctx.history.orders
        recent = o[(o["ordered_at"] < cutoff)
                   & (o["ordered_at"] >= cutoff - pd.Timedelta(days=ctx.config.churn_active_days))]
        ids = ids[pd.Index(ids).isin(recent["customer_id"].unique())]
    return ids


def build_binary(ctx: Context, family: str) -> BinaryData:
    """Rows: (customer, cutoff) for the train cutoffs, the valid cutoff and the test cutoff."""
    _, service = FAMILIES[family]
    split, h = ctx.split, ctx.split.horizon
    parts = {"train": list(split.train), "valid": [split.valid], "test": [split.test]}
    born = ctx.history.profiles.set_index("customer_id")["born_at"]
    entity, meta = [], []
    for part, cutoffs in parts.items():
        for c in cutoffs:
            ids = _population(ctx, family, c)
            if not len(ids):
                continue
            entity.append(pd.DataFrame({"customer_id": ids, "event_timestamp": c}))
            y = purchase_label(ctx.history.orders, ids, c, h)
            if family == "churn":
                y = 1 - y
            s = order_summary(ctx.history.orders, ids, born, c, lookback_days=max(180, ctx.config.churn_active_days))
            meta.append((part, c, ids, y, s))
    if not entity:
        raise InputError(f"no customers to train {family} on")
    ent = pd.concat(entity, ignore_index=True)
    # cap training rows (most recent cutoffs first) so that big workspaces stay in budget
    frame = ctx.source.training_set(service, ent)
    names = model_columns(frame, ctx.source.feature_names(service))
    X, y, summ, ids, cut = {}, {}, {}, {}, {}
    start = 0
    pieces: dict[str, list] = {p: [] for p in parts}
    for part, c, i, lab, s in meta:
        n = len(i)
        pieces[part].append((frame.iloc[start:start + n][names].reset_index(drop=True), lab, s, i, c))
        start += n
    for part, rows in pieces.items():
        if not rows:
            raise InputError(f"{family}: no {part} rows at the planned cutoffs")
        X[part] = pd.concat([r[0] for r in rows], ignore_index=True)
        y[part] = np.concatenate([r[1] for r in rows])
        summ[part] = pd.concat([r[2] for r in rows], ignore_index=True)
        ids[part] = np.concatenate([r[3] for r in rows])
        cut[part] = np.concatenate([np.full(len(r[3]), r[4].value) for r in rows])
    cap = ctx.config.max_train_rows
    if len(y["train"]) > cap:
        keep = np.sort(np.argsort(-cut["train"], kind="stable")[:cap])
        for d in (X, summ):
            d["train"] = d["train"].iloc[keep].reset_index(drop=True)
        for d in (y, ids, cut):
            d["train"] = d["train"][keep]
    for part in parts:
        if np.unique(y[part]).size < 2:
            raise InputError(f"{family}: the {part} labels hold one class only "
                             f"({int(y[part].sum())} of {len(y[part])} positive); choose another cutoff/horizon")
    return BinaryData(family, service, names, X, y, summ, ids, cut)


def _fit_binary_baselines(data: BinaryData, horizon_days: int, family: str) -> dict[str, np.ndarray]:
    from models.btyd import BGNBDClassifier
    from models.rfm import RFMClassifier

    fit_summary = pd.concat([data.summary["train"], data.summary["valid"]], ignore_index=True)
    fit_y = np.concatenate([data.y["train"], data.y["valid"]])
    rfm = RFMClassifier().fit(fit_summary[["recency", "frequency", "monetary"]].to_numpy(), fit_y)
    test = data.summary["test"]
    # BG/NBD is fitted on the purchase history before the test cutoff alone (no labels needed)
    bg = BGNBDClassifier(horizon_days=horizon_days).fit(test[["x", "t_x", "T"]].to_numpy())
    p_buy = bg.predict_purchase_probability(test[["x", "t_x", "T"]].to_numpy())
    return {
        "rfm": rfm.predict_proba(test[["recency", "frequency", "monetary"]].to_numpy())[:, 1],
        "bgnbd": p_buy if family == "propensity" else 1.0 - p_buy,
        "_params": {"bgnbd": bg.params_},
    }


def _tune_and_refit(ctx: Context, make: Callable[..., object], fit_kwargs: Callable[[str], dict],
                    X: dict, y: dict, label: str):
    """Tune on (train, valid), refit the best on train + valid. Returns (estimator, tuning)."""
    from training.tuning import refit_rounds, tune

    cfg = ctx.config

    def fit_and_score(params: dict, callbacks: list) -> tuple[float, int]:
        est = make(**params, n_estimators=400, early_stopping_rounds=20)
        est.fit(X["train"], y["train"], eval_set=fit_kwargs("eval"), callbacks=callbacks, **fit_kwargs("train"))
        score = est.booster_.best_score["valid"]["binary_logloss"]
        return float(score), est.best_iteration_

    tuning = None
    if cfg.trials > 0:
        def on_trial(number, value, state):
            v = "-" if value is None else f"{value:.5f}"
            ctx.progress(f"  {label}: trial {number} {state} (valid log-loss {v})")

        defaults = make().get_params()
        tuning = tune(fit_and_score, n_trials=cfg.trials, timeout=cfg.timeout_seconds, seed=cfg.seed,
                      storage=cfg.storage, study_name=f"{label}-{int(time.time())}" if cfg.storage else None,
                      on_trial=on_trial, first_params=defaults)
        params, best_it = tuning.best_params, tuning.best_iteration
    else:
        params = {}
        _, best_it = fit_and_score({}, [])
    n_tr = len(y["train"])
    rounds = refit_rounds(best_it, n_tr, n_tr + len(y["valid"]))
    Xall = pd.concat([X["train"], X["valid"]], ignore_index=True)
    yall = np.concatenate([y["train"], y["valid"]])
    est = make(**params, n_estimators=rounds, early_stopping_rounds=None)
    est.fit(Xall, yall, **fit_kwargs("all"))
    return est, tuning, params, rounds


def train_binary(ctx: Context, family: str) -> dict:
    from models.gbm import ChurnModel, PropensityModel
    from models.metrics import binary_report

    t0 = time.perf_counter()
    cfg = ctx.config
    ctx.progress(f"{family}: building the time-split training set ({ctx.source_kind} features)")
    data = build_binary(ctx, family)
    ctx.progress(f"{family}: {len(data.y['train'])} train / {len(data.y['valid'])} valid / "
                 f"{len(data.y['test'])} test rows, {len(data.features)} features")
    cls = PropensityModel if family == "propensity" else ChurnModel

    def make(**p):
        return cls(random_state=cfg.seed, latent_state=cfg.latent_state, **p)

    def fk(part):
        if part == "eval":
            return (data.X["valid"], data.y["valid"])
        return {}

    est, tuning, params, rounds = _tune_and_refit(ctx, make, fk, data.X, data.y, family)
    p_test = est.predict_proba(data.X["test"])[:, 1]
    y_test = data.y["test"]
    base = _fit_binary_baselines(data, cfg.horizon_days, family)
    result = {"model": family, "status": "trained", **binary_report(y_test, p_test)}
    result["baselines"] = {k: binary_report(y_test, v) for k, v in base.items() if not k.startswith("_")}
    scores = {"model": p_test, "rfm": base["rfm"], "bgnbd": base["bgnbd"]}
    if ctx.truth is not None:
        from training.oracle import oracle_binary

        p_or = oracle_binary(ctx.truth, data.ids["test"], ctx.split.test, ctx.split.horizon, family)
        if p_or is not None:
            result["oracle_auc"] = binary_report(y_test, p_or)["auc"]
            result["oracle"] = binary_report(y_test, p_or)
            result["auc_gap_to_oracle"] = result["oracle_auc"] - result["auc"]
            scores["oracle"] = p_or
    result.update({
        "n_train": int(len(data.y["train"]) + len(data.y["valid"])),
        "n_test": int(len(y_test)),
        "feature_service": data.service,
        "feature_source": ctx.source_kind,
        "n_features": len(data.features),
        "params": {**params, "n_estimators": rounds},
        "tuning": _tuning_summary(tuning),
        "data_fingerprint": fingerprint(data.X["train"], data.y["train"], data.X["valid"], data.y["valid"]),
    })
    if cfg.track:
        _log_binary(ctx, family, est, data, scores, result, tuning)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _tuning_summary(tuning) -> dict | None:
    if tuning is None:
        return None
    return {"trials": tuning.n_trials, "complete": tuning.n_complete, "pruned": tuning.n_pruned,
            "best_valid_log_loss": tuning.best_value, "seconds": round(tuning.seconds, 2)}


# ---------------------------------------------------------------------------------------------
# Policy models: next-best-offer and send-time, from logged sends
# ---------------------------------------------------------------------------------------------


@dataclass
class SendData:
    family: str
    service: str
    features: list[str]
    X: dict[str, pd.DataFrame]  # part -> context features + action columns
    sends: dict[str, pd.DataFrame]  # part -> logged_sends rows (outcomes, propensity)
    action_marginal: np.ndarray  # (n_channels, K or H) empirical logging frequency of the action


def missing_campaign_data(history: History) -> str | None:
    """Why the off-policy models cannot train on this history (None when they can)."""
    if not history.has_campaigns:
        return "no campaign history: the sources hold no engagements (logged sends)"
    p = pd.to_numeric(history.engagements.get("propensity"), errors="coerce") \
        if "propensity" in history.engagements else None
    if p is None or p.isna().all():
        return ("the engagements carry no logged 'propensity': off-policy learning needs the probability "
                "with which each send was chosen")
    if p.isna().mean() > 0.05:
        return f"{p.isna().mean():.0%} of the engagements lack a logged 'propensity'"
    return None


def build_sends(ctx: Context, family: str) -> SendData:
    _, service = FAMILIES[family]
    split = ctx.split
    s = ctx.cache.get("sends")
    if s is None:
        s = logged_sends(ctx.history, DEFAULT_CATALOG)
        s = s[s["propensity"].notna() & (s["propensity"] > 0)].reset_index(drop=True)
        ctx.cache["sends"] = s
    day = pd.Timedelta(days=1)
    # the same rows (and so one feature computation) for both families; offer keeps those with an offer
    parts = {
        "train": s[s["sent_at"] + day <= split.valid],
        "valid": s[(s["sent_at"] > split.valid) & (s["sent_at"] + day <= split.test)],
        "test": s[(s["sent_at"] > split.test) & (s["sent_at"] <= split.test + split.horizon)],
    }
    cap = ctx.config.max_train_rows
    if len(parts["train"]) > cap:
        parts["train"] = parts["train"].sort_values("sent_at", kind="stable").iloc[-cap:]
    allp = pd.concat(list(parts.values()))
    if family == "offer":
        parts = {k: v[v["offer"] >= 0] for k, v in parts.items()}
    for k, v in parts.items():
        if len(v) < 50:
            raise InputError(f"{family}: only {len(v)} logged sends in the {k} period; choose another cutoff")
    key = ("send_features", service)
    frame = ctx.cache.get(key)
    if frame is None:
        ent = pd.DataFrame({"customer_id": allp["customer_id"].to_numpy(),
                            "event_timestamp": allp["sent_at"].to_numpy()}, index=allp.index)
        ent["event_timestamp"] = pd.to_datetime(ent["event_timestamp"], utc=True)
        frame = ctx.source.training_set(service, ent.reset_index(drop=True))
        frame.index = allp.index
        ctx.cache[key] = frame
    names = [c for c in model_columns(frame, ctx.source.feature_names(service))
             if c not in ("channel", "offer", "send_hour")]
    X = {}
    for k, v in parts.items():
        f = frame.loc[v.index, names].reset_index(drop=True)
        f["channel"] = v["channel"].to_numpy()
        f["send_hour"] = v["send_hour"].to_numpy()
        f["offer"] = v["offer"].to_numpy()
        X[k] = f
    fit = pd.concat([parts["train"], parts["valid"]])
    action = "offer" if family == "offer" else "send_hour"
    levels = len(DEFAULT_CATALOG.offers) if family == "offer" else 24
    marg = np.zeros((len(CHANNELS), levels))
    np.add.at(marg, (fit["channel"].to_numpy(), fit[action].to_numpy()), 1.0)
    marg = marg / np.maximum(marg.sum(axis=1, keepdims=True), 1.0)
    return SendData(family, service, names, X, {k: v.reset_index(drop=True) for k, v in parts.items()}, marg)


def snips(reward: np.ndarray, match: np.ndarray, weight: np.ndarray) -> float:
    """Self-normalised IPS value of a deterministic target policy: match (n,) bool (the target
    picks the logged action), weight (n,) 1 / logging probability of that action."""
    w = match * weight
    return float(np.sum(w * reward) / np.sum(w)) if w.sum() > 0 else float("nan")


def _send_reward(sends: pd.DataFrame, family: str) -> np.ndarray:
    """Per logged send: net conversion value (offer) or opened (send-time)."""
    if family == "send-time":
        return sends["opened"].to_numpy(dtype=np.float64)
    # the logged conversion value is already net of the offer's cost where it was redeemed
    return np.where(sends["converted"].to_numpy() > 0, sends["value"].to_numpy(dtype=np.float64), 0.0)


def train_policy(ctx: Context, family: str) -> dict:
    from models.metrics import binary_report
    from models.offpolicy import BestSingleOfferBaseline, NextBestOfferModel, SendTimeModel

    t0 = time.perf_counter()
    cfg = ctx.config
    reason = missing_campaign_data(ctx.history)
    if reason:
        return {"model": family, "status": "skipped", "reason": reason}
    ctx.progress(f"{family}: building logged-send training set ({ctx.source_kind} features)")
    data = build_sends(ctx, family)
    # offer: the conversion the message caused (clicked, then converted); organic purchases in
    # the window happen whatever the offer and would only add noise to the offer's effect
    if family == "offer":
        y = {k: (v["converted"] & v["clicked"]).to_numpy() for k, v in data.sends.items()}
        clicked = {k: v["clicked"].to_numpy() for k, v in data.sends.items()}
    else:
        y = {k: v["opened"].to_numpy() for k, v in data.sends.items()}
    prop = {k: v["propensity"].to_numpy() for k, v in data.sends.items()}
    ctx.progress(f"{family}: {len(y['train'])} train / {len(y['valid'])} valid / {len(y['test'])} test sends")
    value = {k: v["value"].to_numpy() for k, v in data.sends.items()}
    if family == "offer":
        def make(**p):
            return NextBestOfferModel(value_column="avg_order_value" if "avg_order_value" in data.features
                                      else None, random_state=cfg.seed, **p)
    else:
        profile = HOUR_PROFILE if USE_HOUR_PROFILE and all(c in data.features for c in HOUR_PROFILE) else None
        refs = tuple(c for c in REFERENCE_HOURS if c in data.features) or None

        def make(**p):
            return SendTimeModel(hour_profile=profile, reference_hours=refs, hour_as_feature=HOUR_AS_FEATURE,
                                 random_state=cfg.seed, **p)

    def fk(part):
        if part == "eval":  # offer: the first stage (click) is tuned and early-stopped
            return (data.X["valid"], clicked["valid"] if family == "offer" else y["valid"], prop["valid"])
        if part == "train":
            extra = {"value": value["train"], "clicked": clicked["train"]} if family == "offer" else {}
            return {"propensity": prop["train"], **extra}
        extra = {"value": np.concatenate([value["train"], value["valid"]]),
                 "clicked": np.concatenate([clicked["train"], clicked["valid"]])} if family == "offer" else {}
        return {"propensity": np.concatenate([prop["train"], prop["valid"]]), **extra}

    est, tuning, params, rounds = _tune_and_refit(ctx, make, fk, data.X, y, family)
    test = data.sends["test"]
    Xt = data.X["test"]
    reward = _send_reward(test, family)
    ch = test["channel"].to_numpy()
    # held-out, off-policy: SNIPS with the logging policy's empirical action frequency per channel
    result: dict = {"model": family, "status": "trained"}
    fit_sends = pd.concat([data.sends["train"], data.sends["valid"]])
    if family == "offer":
        base = BestSingleOfferBaseline(n_offers=len(DEFAULT_CATALOG.offers)).fit(
            fit_sends["offer"], _send_reward(fit_sends, family), fit_sends["propensity"])
        logged = test["offer"].to_numpy()
        w = 1.0 / np.maximum(data.action_marginal[ch, logged], 1e-6)
        choice = est.predict(Xt)
        result["heldout_value"] = snips(reward, choice == logged, w)
        result["baselines"] = {"best_single_offer": {
            "offer": DEFAULT_CATALOG.ids[base.offer_],
            "heldout_value": snips(reward, logged == base.offer_, w)}}
        result["heldout_logged_value"] = float(reward.mean())
        result["conversion"] = binary_report(y["test"], est.predict_proba(Xt)[:, 1])
    else:
        logged = test["send_hour"].to_numpy()
        w = 1.0 / np.maximum(data.action_marginal[ch, logged], 1e-6)
        choice = est.predict(Xt)
        result["heldout_open_rate"] = snips(reward, choice == logged, w)
        result["baselines"] = {"fixed_10": {"hour": FIXED_HOUR,
                                            "heldout_open_rate": snips(reward, logged == FIXED_HOUR, w)}}
        result["heldout_logged_open_rate"] = float(reward.mean())
        result["open"] = binary_report(y["test"], est.predict_proba(Xt)[:, 1])
    if ctx.truth is not None:
        from training.oracle import oracle_policy

        result.update(oracle_policy(ctx, family, est, base if family == "offer" else None))
    result.update({
        "n_train": int(len(y["train"]) + len(y["valid"])),
        "n_test": int(len(y["test"])),
        "feature_service": data.service,
        "feature_source": ctx.source_kind,
        "n_features": len(data.features),
        "weighting": "ipw",
        "params": {**params, "n_estimators": rounds},
        "tuning": _tuning_summary(tuning),
        "data_fingerprint": fingerprint(data.X["train"], y["train"], prop["train"]),
    })
    if cfg.track:
        _log_policy(ctx, family, est, data, result, tuning)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


# ---------------------------------------------------------------------------------------------
# MLflow logging
# ---------------------------------------------------------------------------------------------


def _common_log(ctx: Context, family: str, est, result: dict, tuning, input_example: pd.DataFrame,
                predict_fn: str = "predict_proba"):
    from training.plots import importance_figure, tuning_figure

    tr = ctx.tracker
    name, service = FAMILIES[family]
    tr.log_params({
        "family": family, "feature_service": service, "feature_source": ctx.source_kind,
        "data_fingerprint": result["data_fingerprint"], "n_train": result["n_train"],
        "n_test": result["n_test"], "seed": ctx.config.seed, "trials": ctx.config.trials,
        **ctx.split.as_params(),
        **{f"model.{k}": v for k, v in est.get_params().items() if k != "catalog"},
    })
    tr.set_tags({"family": family, "feature_service": service})
    metrics = {}
    for k, v in result.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("n_train", "n_test"):
            metrics[f"test_{k}"] = v
        elif isinstance(v, dict) and k in ("conversion", "open", "oracle"):
            metrics.update({f"{k}_{kk}": vv for kk, vv in v.items() if isinstance(vv, int | float)})
    for bname, b in (result.get("baselines") or {}).items():
        metrics.update({f"baseline_{bname}_{kk}": vv for kk, vv in b.items()
                        if isinstance(vv, int | float) and not isinstance(vv, bool)})
    tr.log_metrics(metrics)
    tr.log_dict(result, "evaluation.json")
    tr.log_figure(importance_figure(est.model_feature_names_, est.feature_importances_,
                                    f"{family}: feature importance"), "plots/feature_importance.png")
    if tuning is not None:
        tr.log_table(tuning.trials, "tuning/trials.csv")
        tr.log_dict({"best_params": tuning.best_params, "best_valid_log_loss": tuning.best_value,
                     "best_iteration": tuning.best_iteration, "trials": tuning.n_trials,
                     "pruned": tuning.n_pruned, "complete": tuning.n_complete, "seconds": tuning.seconds,
                     "sampler": "TPE", "pruner": "median"}, "tuning/summary.json")
        tr.log_metrics({"tuning_best_valid_log_loss": tuning.best_value, "tuning_trials": tuning.n_trials,
                        "tuning_pruned": tuning.n_pruned})
        tr.log_figure(tuning_figure(tuning.trials, tuning.history, f"{family}: Optuna study"),
                      "plots/tuning_history.png")
    info = tr.log_model(est, name, input_example, predict_fn=predict_fn)
    result["registered"] = {"name": info.name, "version": info.version, "alias": "challenger"}
    return info


def _log_binary(ctx, family, est, data: BinaryData, scores, result, tuning):
    import matplotlib.pyplot as plt

    from training.plots import calibration_figure, gain_figure, roc_figure

    tr = ctx.tracker
    with tr.run(f"train-{family}") as run_id:
        result["run_id"] = run_id
        y = data.y["test"]
        for fig, path in (
            (roc_figure(y, scores, f"{family}: ROC (test)"), "plots/roc.png"),
            (calibration_figure(y, {k: v for k, v in scores.items()}, f"{family}: calibration (test)"),
             "plots/calibration.png"),
            (gain_figure(y, scores, family), "plots/lift_gain.png"),
        ):
            tr.log_figure(fig, path)
            plt.close(fig)
        _common_log(ctx, family, est, result, tuning, data.X["test"].head(5))
        plt.close("all")


def _log_policy(ctx, family, est, data: SendData, result, tuning):
    import matplotlib.pyplot as plt

    from training.plots import hour_heatmap_figure

    tr = ctx.tracker
    with tr.run(f"train-{family}") as run_id:
        result["run_id"] = run_id
        if family == "send-time":
            sample = data.X["test"].head(3000)
            scores = est.hour_scores(sample)
            ch = sample["channel"].to_numpy()
            rows, labels = [], []
            for i, c in enumerate(CHANNELS):
                if (ch == i).any():
                    rows.append(scores[ch == i].mean(axis=0))
                    labels.append(c.value)
            if rows:
                fig = hour_heatmap_figure(SEND_HOURS, np.vstack(rows), labels,
                                          "send-time: mean predicted open rate by local hour")
                tr.log_figure(fig, "plots/local_hour_heatmap.png")
        _common_log(ctx, family, est, result, tuning, data.X["test"].head(5))
        plt.close("all")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def open_context(workspace: Workspace, config: TrainConfig, progress: Callable[[str], None],
                 source: FeatureSource | None = None, source_kind: str = "given") -> Context:
    history = History.load(workspace)
    split = plan_split(history.start, history.end, config.cutoff, config.horizon_days,
                       config.n_train_cutoffs, config.step_days, config.min_history_days)
    if source is None:
        source, source_kind = open_feature_source(workspace)
    truth = None
    if workspace.has_truth():
        from training.oracle import Truth

        truth = Truth.load(workspace, history)
    return Context(workspace, history, source, source_kind, split, config, progress, truth=truth)


def train(workspace: Workspace, models: list[str], config: TrainConfig | None = None,
          progress: Callable[[str], None] = lambda m: None, source: FeatureSource | None = None) -> dict:
    """Train the given model families. Returns {family: result} plus 'split' and 'seconds'."""
    config = config or TrainConfig()
    t0 = time.perf_counter()
    unknown = [m for m in models if m not in FAMILIES]
    if unknown:
        raise InputError(f"unknown model(s) {unknown}; choose from {list(FAMILIES)} or 'all'")
    ctx = open_context(workspace, config, progress, source=source,
                       source_kind="given" if source is not None else "")
    if config.track:
        from training.tracking import Tracker

        ctx.tracker = Tracker(workspace)
    out: dict = {"split": ctx.split.as_params()}
    for fam in models:
        res = train_binary(ctx, fam) if fam in BINARY else train_policy(ctx, fam)
        if res.get("status") == "skipped":
            progress(f"{fam}: skipped: {res['reason']}")
        out[fam.replace("-", "_")] = res
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out

"""Ceilings against the simulator's truth: how much of a model's gap to the oracle the data can close.

The oracle sees latent traits no model can observe. These diagnostics measure, on the same test rows
as ``train``, what a model would reach if it were given some of those traits, or a noise-free target:

* ``binary_ceiling(ctx, family)`` (propensity, churn): test AUC of the family's LightGBM on its
  features, on its features plus the truth's latent purchase rate and churn hazard (the person's
  *rates*, not when they churn), and on those plus whether the person had churned by the cutoff
  (what the oracle uses). If the second is itself more than the goal below the oracle, the goal
  needs information no model can have.
* ``bayes_ceiling`` (inside ``binary_ceiling``): the Bayes posterior of a purchase in the label
  window under the world's OWN generative model and priors (``training.bayes``), from the orders
  alone, from orders and visits (sessions), and from those plus message opens: the best any model
  can do with that data, whatever its features. Also the gap by tenure and by orders before the
  cutoff, for the oracle, the posterior and the features model.
* ``offer_ceiling(ctx)`` (next-best-offer): share of the gap between the best single offer and the
  oracle's per-customer choice closed by the argmax of LightGBM regressions fitted (k-fold, on the
  oracle's customers) to the NOISE-FREE true value of every offer, from (a) the offer service's
  features, (b) those plus each customer's campaign history by offer and offer kind (sends, opens,
  clicks, conversions, smoothed click rates and their lift over the customer's own rate), (c) those
  plus the truth's offer sensitivities (a check that the method finds a signal when there is one).
  With a noise-free target, (a) and (b) bound what any learner can get from those features.

Run: ``uv run python -m training.diagnostics --workspace DIR [--json]`` on a simulated workspace.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from core.catalog import DEFAULT_CATALOG, OfferKind
from core.errors import InputError

#: Truth columns behind the offers' appeal (world.traits.offer_appeal).
SENSITIVITIES = ("price_sensitivity", "shipping_sensitivity", "loyalty", "novelty")
_KIND_CODE = {OfferKind.PERCENT_OFF: 0, OfferKind.FREE_SHIPPING: 1, OfferKind.POINTS: 2, OfferKind.CONTENT: 3}


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _persons_table(ctx) -> pd.DataFrame:
    return ctx.truth.world.persons.set_index("person_id")


def binary_ceiling(ctx, family: str, posterior: bool = True) -> dict:
    """AUCs on the test rows of ``train``: oracle, features, features + latent rate and hazard,
    and + churned-by-cutoff; with ``posterior``, also ``bayes_ceiling``. Needs ``ctx.truth``."""
    from models.gbm import ChurnModel, PropensityModel
    from training.oracle import oracle_binary
    from training.pipeline import build_binary

    if ctx.truth is None:
        raise InputError("the diagnostics need the simulator's truth (<workspace>/truth/)")
    data = build_binary(ctx, family)
    persons = _persons_table(ctx)
    churn_ns = pd.to_datetime(persons["churn_at"], utc=True).astype("int64")

    def with_truth(part: str, churned: bool) -> pd.DataFrame:
        X = data.X[part].copy()
        per = ctx.truth.persons(data.ids[part])
        X["true_purchase_rate"] = persons["purchase_rate"].reindex(per).to_numpy()
        X["true_churn_hazard"] = persons["churn_hazard"].reindex(per).to_numpy()
        if churned:
            X["true_churned"] = (churn_ns.reindex(per).to_numpy() < data.cutoffs[part]).astype(np.float64)
        return X

    cls = PropensityModel if family == "propensity" else ChurnModel
    y = data.y
    p_or = oracle_binary(ctx.truth, data.ids["test"], ctx.split.test, ctx.split.horizon, family)
    if p_or is None:
        raise InputError("too few test customers map to a simulated person")
    out = {"family": family, "n_test": int(len(y["test"])), "oracle_auc": _auc(y["test"], p_or)}
    variants = {
        "features": data.X,
        "features_latent_rates": {p: with_truth(p, False) for p in data.X},
        "features_latent_rates_churned": {p: with_truth(p, True) for p in data.X},
    }
    scores = {}
    for name, X in variants.items():
        m = cls(random_state=ctx.config.seed).fit(X["train"], y["train"], eval_set=(X["valid"], y["valid"]))
        scores[name] = m.predict_proba(X["test"])[:, 1]
        auc = _auc(y["test"], scores[name])
        out[f"{name}_auc"] = auc
        out[f"{name}_gap"] = out["oracle_auc"] - auc
    if posterior:
        out.update(bayes_ceiling(ctx, family, data.ids["test"], y["test"], p_or, scores["features"]))
    return out


def bayes_ceiling(ctx, family: str, ids: np.ndarray, y: np.ndarray, p_oracle: np.ndarray,
                  model: np.ndarray | None = None) -> dict:
    """The Bayes posterior under the world's own generative model (``training.bayes``) on the test
    rows: AUC and gap to the oracle from orders alone, orders and visits, and those plus message
    opens; and the gap of the oracle, the posterior and ``model`` by tenure and by orders before
    the cutoff (AUC within each bucket; share of the excess log-loss over the oracle)."""
    from features.compute import ProfileData
    from training.bayes import posterior_scores

    data = ProfileData.load(ctx.workspace.profiles)
    cutoff, horizon = ctx.split.test, ctx.split.horizon
    post = posterior_scores(ctx.truth, data, ids, cutoff, horizon)
    sign = 1.0 if family == "propensity" else -1.0  # churn = no purchase
    out: dict = {}
    oracle_auc = _auc(y, p_oracle)
    for name in ("orders", "orders_visits", "all"):
        a = _auc(y, sign * post[name])
        out[f"posterior_{name}_auc"] = a
        out[f"posterior_{name}_gap"] = oracle_auc - a
    churned = ~_active_at(ctx, ids, cutoff)
    if 0 < churned.mean() < 1:
        out["posterior_active_auc_for_true_state"] = _auc(~churned, post["active"])
    p_post = post["all"] if family == "propensity" else 1.0 - post["all"]
    born = data.profiles.set_index("customer_id")
    born = born["signup_at"].reindex(ids).fillna(born["first_seen_at"].reindex(ids))
    tenure = ((cutoff - pd.to_datetime(born, utc=True)) / pd.Timedelta(days=1)).fillna(0).to_numpy()
    o = data.orders[data.orders["ordered_at"] < cutoff]
    n_orders = o.groupby("customer_id").size().reindex(pd.Index(ids)).fillna(0).to_numpy()
    buckets = {
        "tenure_days": (tenure, [-np.inf, 30, 90, 180, np.inf], ["<30", "30-90", "90-180", ">=180"]),
        "orders_before": (n_orders, [-np.inf, 0, 1, 3, np.inf], ["0", "1", "2-3", ">=4"]),
    }
    scored = {"oracle": p_oracle, "posterior": p_post, **({"model": model} if model is not None else {})}
    loss = {k: _log_loss_rows(y, v) for k, v in scored.items()}
    by: dict = {}
    for key, (v, edges, labels) in buckets.items():
        cut = pd.cut(v, edges, labels=labels, right=True)
        rows = {}
        for lab in labels:
            mk = np.asarray(cut == lab)
            if mk.sum() < 30 or y[mk].min() == y[mk].max():
                continue
            r = {"share": float(mk.mean()), "positive_rate": float(y[mk].mean())}
            for k, v2 in scored.items():
                r[f"{k}_auc"] = _auc(y[mk], v2[mk])
                if k != "oracle":
                    ex = loss[k] - loss["oracle"]
                    r[f"{k}_excess_log_loss_share"] = float(ex[mk].sum() / ex.sum()) if ex.sum() > 0 else float("nan")
            rows[lab] = r
        by[key] = rows
    out["gap_by"] = by
    return out


def _log_loss_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _active_at(ctx, ids: np.ndarray, cutoff: pd.Timestamp) -> np.ndarray:
    person = ctx.truth.persons(ids)
    churn = pd.to_datetime(_persons_table(ctx)["churn_at"], utc=True).reindex(person)
    return (churn > cutoff).fillna(True).to_numpy()


def offer_history_features(sends: pd.DataFrame, customer_ids: np.ndarray, before: pd.Timestamp,
                           catalog=DEFAULT_CATALOG, prior_strength: float = 2.0) -> pd.DataFrame:
    """Each customer's logged campaign response by offer and by offer kind, from the sends before
    ``before``: sends, opens, clicks, caused conversions (clicked and converted), the smoothed
    click rate per open and its lift over the customer's own click rate per open."""
    s = sends[sends["sent_at"] < before]
    s = s[s["offer"] >= 0]
    kinds = np.array([_KIND_CODE[o.kind] for o in catalog.offers])
    s = s.assign(kind=kinds[s["offer"].to_numpy()], caused=(s["clicked"] & s["converted"]).astype(np.int64))
    idx = pd.Index(customer_ids)
    opened_all = s.groupby("customer_id")["opened"].sum().reindex(idx).fillna(0).to_numpy()
    clicked_all = s.groupby("customer_id")["clicked"].sum().reindex(idx).fillna(0).to_numpy()
    base = float(s["clicked"].sum() / max(s["opened"].sum(), 1))
    own = (clicked_all + prior_strength * base) / (opened_all + prior_strength)
    cols: dict[str, np.ndarray] = {"click_per_open": own}
    for key, levels, prefix in (("offer", catalog.ids, "offer"), ("kind", ("pct", "ship", "points", "content"), "kind")):
        for code, name in enumerate(levels):
            g = s[s[key] == code].groupby("customer_id")
            agg = pd.DataFrame({"sends": g.size(), "opens": g["opened"].sum(), "clicks": g["clicked"].sum(),
                                "caused": g["caused"].sum()}).reindex(idx).fillna(0)
            for c in agg:
                cols[f"{prefix}_{name}_{c}"] = agg[c].to_numpy()
            rate = (agg["clicks"].to_numpy() + prior_strength * own) / (agg["opens"].to_numpy() + prior_strength)
            cols[f"{prefix}_{name}_click_rate"] = rate
            cols[f"{prefix}_{name}_click_lift"] = rate - own
    return pd.DataFrame(cols)


def _noise_free_gap_closed(F: pd.DataFrame, values: np.ndarray, seed: int, folds: int = 4) -> float:
    """Gap closed by the argmax of per-offer LightGBM regressions on the true values (k-fold)."""
    import lightgbm as lgb

    from models.metrics import gap_closed, value_of_choice

    Z = F.to_numpy(dtype=np.float64)
    rel = values - values.mean(axis=1, keepdims=True)
    pred = np.zeros_like(rel)
    fold = np.random.default_rng(seed).permutation(len(Z)) % folds
    params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50,
              "seed": seed, "deterministic": True, "num_threads": 1, "verbosity": -1}
    for f in range(folds):
        tr, te = fold != f, fold == f
        for j in range(values.shape[1]):
            b = lgb.train(params, lgb.Dataset(Z[tr], label=rel[tr, j]), num_boost_round=300)
            pred[te, j] = b.predict(Z[te])
    mean = values.mean(axis=0)
    return gap_closed(value_of_choice(values, pred.argmax(axis=1)), float(mean.max()),
                      float(values.max(axis=1).mean()))


def offer_ceiling(ctx) -> dict:
    """Noise-free-target ceilings of the next-best-offer gap closed (see the module doc)."""
    from training.data import logged_sends
    from training.oracle import _evaluation_set, true_offer_values

    if ctx.truth is None:
        raise InputError("the diagnostics need the simulator's truth (<workspace>/truth/)")
    if "sends" not in ctx.cache:
        s = logged_sends(ctx.history, DEFAULT_CATALOG)
        ctx.cache["sends"] = s[s["propensity"].notna() & (s["propensity"] > 0)].reset_index(drop=True)
    ids, person, _, _, day, X = _evaluation_set(ctx, "offer")
    values = true_offer_values(ctx)
    feats = X.select_dtypes(include="number").reset_index(drop=True)
    hist = offer_history_features(ctx.cache["sends"], ids, day)
    truth = _persons_table(ctx)[list(SENSITIVITIES)].reindex(person).reset_index(drop=True)
    seed = ctx.config.seed
    mean = values.mean(axis=0)
    return {
        "n_customers": int(len(ids)),
        "best_single_offer": DEFAULT_CATALOG.ids[int(np.argmax(mean))],
        "best_single_value": float(mean.max()),
        "oracle_value": float(values.max(axis=1).mean()),
        "features_gap_closed": _noise_free_gap_closed(feats, values, seed),
        "features_offer_history_gap_closed": _noise_free_gap_closed(pd.concat([feats, hist], axis=1), values, seed),
        "features_offer_history_true_sensitivities_gap_closed": _noise_free_gap_closed(
            pd.concat([feats, hist, truth], axis=1), values, seed),
    }


def diagnose(workspace, families=("propensity", "churn", "offer"), seed: int = 0, progress=lambda m: None) -> dict:
    """Every ceiling for a simulated workspace, on the default split of ``train``."""
    from training.pipeline import TrainConfig, open_context

    ctx = open_context(workspace, TrainConfig(track=False, seed=seed), progress)
    if ctx.truth is None:
        raise InputError(f"{workspace.root}: no simulator truth; the diagnostics compare with it")
    out: dict = {}
    for fam in families:
        t0 = time.perf_counter()
        progress(f"{fam}: ceilings")
        out[fam] = offer_ceiling(ctx) if fam == "offer" else binary_ceiling(ctx, fam)
        out[fam]["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> None:
    import argparse
    import sys
    from pathlib import Path

    from core.workspace import Workspace

    ap = argparse.ArgumentParser(prog="python -m training.diagnostics", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", required=True, type=Path)
    ap.add_argument("--models", default="propensity,churn,offer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        res = diagnose(Workspace(a.workspace), tuple(a.models.split(",")), a.seed,
                       progress=lambda m: print(m, file=sys.stderr))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if a.json:
        print(json.dumps(res, default=float))
    else:
        for fam, r in res.items():
            print(fam, " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()

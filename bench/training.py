"""Benchmark: the training pipeline's fit (no tuning) against a bare ``lightgbm.train`` on the
same arrays, with the same hyperparameters and rounds, measured in the same run.

    uv run python -m bench.training [--rows 100000] [--features 75] [--rounds 200] [--repeat 3] [--plain]

Prints absolute seconds and the ratio pipeline / bare (goal <= 1.5). The pipeline side is what
``decisioning train --trials 0`` does per model after the data is built: validate, fit the
estimator (early-stopping pass on train/valid), refit on train + valid, predict the test rows and
compute the metrics. By default the first columns carry the names of the order and event features,
so the propensity model also computes its derived buyer figures (BG/NBD fitted on the rows,
purchase and activity rhythm) as it does in production; ``--plain`` names every column f<i>.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=75)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="no feature names the model derives figures from")
    a = ap.parse_args(argv)
    import lightgbm as lgb

    from models.gbm import PropensityModel
    from models.metrics import binary_report

    rng = np.random.default_rng(0)
    n, d = a.rows, a.features
    X = pd.DataFrame(rng.normal(size=(n, d)), columns=[f"f{i}" for i in range(d)])
    logit = X["f0"] + 0.5 * X["f1"] * X["f2"] - 1.0
    if not a.plain:  # real input names on non-negative columns (after the ones the label uses)
        named = ("orders_total", "order_days_total", "order_span_days", "days_since_last_order", "orders_30d",
                 "orders_90d", "events_total", "event_span_days", "days_since_last_event", "events_30d", "events_90d")
        named = named[: max(0, d - 3)]
        ren = {f"f{3 + i}": c for i, c in enumerate(named)}
        X = X.rename(columns=ren)
        for c in ren.values():
            X[c] = np.round(np.abs(X[c]) * 10)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    tr, va, te = slice(0, int(0.6 * n)), slice(int(0.6 * n), int(0.8 * n)), slice(int(0.8 * n), n)
    est = PropensityModel(n_estimators=a.rounds, early_stopping_rounds=None)
    params = est._lgb_params(n_rows=int(0.8 * n))
    Xa = X.to_numpy()

    def bare():
        b = lgb.train(params, lgb.Dataset(Xa[: int(0.8 * n)], label=y[: int(0.8 * n)]), num_boost_round=a.rounds)
        return b.predict(Xa[te], num_threads=params["num_threads"])

    def pipeline():
        m = PropensityModel(n_estimators=a.rounds, early_stopping_rounds=None)
        m.fit(pd.concat([X.iloc[tr], X.iloc[va]]), np.concatenate([y[tr], y[va]]))
        p = m.predict_proba(X.iloc[te])[:, 1]
        binary_report(y[te], p)
        return p

    def best(f):
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_bare = best(bare)
    t_pipe = best(pipeline)
    derived = PropensityModel(n_estimators=2).fit(X.head(2000), y[:2000]).dynamics_
    print(f"rows {n}, features {d}, rounds {a.rounds}, threads {params['num_threads'] or 'all'} (best of {a.repeat}); "
          f"derived buyer figures: {derived.names() if derived is not None else 'none'}")
    print(f"bare lgb.train + predict:        {t_bare:8.3f} s")
    print(f"pipeline fit + predict + metrics: {t_pipe:8.3f} s")
    print(f"ratio pipeline / bare:           {t_pipe / t_bare:8.2f}x   (goal <= 1.5x)")


if __name__ == "__main__":
    main()

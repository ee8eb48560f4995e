"""Benchmark: the training pipeline's fit (no tuning) against a bare ``lightgbm.train`` on the
same arrays, with the same hyperparameters and rounds, measured in the same run.

    uv run python -m bench.training [--rows 100000] [--features 75] [--rounds 200] [--repeat 3]

Prints absolute seconds and the ratio pipeline / bare (goal <= 1.5). The pipeline side is what
``decisioning train --trials 0`` does per model after the data is built: validate, fit the
estimator (early-stopping pass on train/valid), refit on train + valid, predict the test rows and
compute the metrics.
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
    a = ap.parse_args(argv)
    import lightgbm as lgb

    from models.gbm import PropensityModel
    from models.metrics import binary_report

    rng = np.random.default_rng(0)
    n, d = a.rows, a.features
    X = pd.DataFrame(rng.normal(size=(n, d)), columns=[f"f{i}" for i in range(d)])
    logit = X["f0"] + 0.5 * X["f1"] * X["f2"] - 1.0
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
    print(f"rows {n}, features {d}, rounds {a.rounds}, threads {params['num_threads'] or 'all'} (best of {a.repeat})")
    print(f"bare lgb.train + predict:        {t_bare:8.3f} s")
    print(f"pipeline fit + predict + metrics: {t_pipe:8.3f} s")
    print(f"ratio pipeline / bare:           {t_pipe / t_bare:8.2f}x   (goal <= 1.5x)")


if __name__ == "__main__":
    main()

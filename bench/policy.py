"""Cost per decision of the policy layer, single and in a vectorised batch, against the bare
score computation measured in the same run.

    uv run python -m bench.policy [--batch 10000] [--repeats 5] [--policy thompson]

Steps timed, per decision (microseconds), for one customer and for a batch:

  bare_mean     the reward model's matrix products at the posterior mean (numpy only: context
                times the per-cell weights of the funnel GLMs), no validation, no policy
  bare_draws    the same products for every posterior draw Thompson sampling uses
  distribution  Policy.distribution: validation, scaling, draws, combining into uplifts, argmax
                frequencies, floor
  decide        Policy.decide: distribution + sampling
  guarded       Guardrails.apply + Policy.decide + Guardrails.settle: the whole decision path
                (consent, reachability, quiet hours, caps over recent sends, budgets in a
                SQLite ledger, holdout)

Figures are printed as ratios against bare_mean (and bare_draws) plus absolute numbers; nothing is
asserted (machines differ).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd


def _fitted_policy(name: str, n_features: int, n_train: int, seed: int):
    """A policy warm-started on synthetic funnel feedback (opens, clicks, conversions, values)."""
    from scipy.special import expit

    from policies.arms import ArmSpace
    from policies.bandits import make_policy
    from policies.funnel import Feedback

    rng = np.random.default_rng(seed)
    arms = ArmSpace.build()
    X = rng.normal(size=(n_train, n_features))
    a = rng.integers(0, arms.n_arms, n_train)
    send = arms.is_send[a]
    opened = send & (rng.random(n_train) < expit(-2.0 + 0.5 * X[:, 0]))
    clicked = opened & (rng.random(n_train) < 0.15)
    converted = clicked & (rng.random(n_train) < 0.2) | (rng.random(n_train) < 0.02)
    value = np.where(converted, np.exp(5.0 + 0.3 * X[:, 1]), 0.0)
    unsub = send & (rng.random(n_train) < 0.004)
    reward = value - 0.01 * send - 5.0 * unsub
    policy = make_policy(name, arms, seed=seed)
    policy.initialise(X)
    policy.update(X, a, reward, np.full(n_train, 1.0 / arms.n_arms),
                  feedback=Feedback(opened, clicked, converted, unsub, value) if policy.needs_feedback else None)
    return arms, policy


def _audience(n: int, seed: int):
    from core.types import CATEGORIES, CHANNELS
    from policies.guardrails import Audience

    rng = np.random.default_rng(seed)
    tzs = np.array(["Asia/Shanghai", "Asia/Tokyo", "Asia/Singapore", "Europe/London", "America/Los_Angeles"],
                   dtype=object)
    return Audience(
        customer_id=np.array([f"c{i:08d}" for i in range(n)], dtype=object),
        timezone=tzs[rng.integers(0, len(tzs), n)],
        consent=rng.random((n, len(CHANNELS))) < 0.6,
        reachable=rng.random((n, len(CHANNELS))) < 0.8,
        category_interest=rng.random((n, len(CATEGORIES))) < 0.4,
    )


def _time(fn, repeats: int) -> float:
    """Best of ``repeats`` wall times of fn(), seconds."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(batch: int = 10_000, repeats: int = 5, policy_name: str = "thompson", seed: int = 0) -> dict:
    from policies.budget import BudgetLedger
    from policies.config import GuardrailConfig
    from policies.context import CONTEXT_COLUMNS
    from policies.guardrails import Guardrails

    d = len(CONTEXT_COLUMNS)
    arms, policy = _fitted_policy(policy_name, d, 50_000, seed)
    model = policy.model_
    rng = np.random.default_rng(seed + 1)
    now = datetime(2026, 7, 1, tzinfo=UTC)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = BudgetLedger(Path(tmp) / "budget.sqlite")
        guard = Guardrails(arms, GuardrailConfig(offer_inventory={"pct20": 10**9}), ledger=ledger)
        for label, n in (("single", 1), ("batch", batch)):
            X = rng.normal(size=(n, d))
            aud = _audience(n, seed)
            k = min(3 * n, 30_000)
            recent = pd.DataFrame({
                "customer_id": aud.customer_id[rng.integers(0, n, k)],
                "channel": rng.choice(["sms", "email", "wechat", "app_push"], k),
                "send_at": pd.Timestamp(now) - pd.to_timedelta(rng.uniform(0, 160, k), unit="h"),
            })
            elig = guard.apply(aud, now, recent)
            guard.settle(elig, np.zeros(n, dtype=np.int64))
            E = elig.mask
            Z = np.clip((X - policy.center_) / policy.scale_, -8, 8)
            X1 = np.hstack([np.ones((n, 1)), Z])
            glms = [model.open, model.click, model.convert, model.unsubscribe] if hasattr(model, "open") else []
            weights = [g.cell_weights(g.mean) for g in glms]
            M = int(getattr(policy, "n_draws", 1))
            draws = [g.cell_weights(g.mean[None, :] + 0.01 * rng.standard_normal((M, g.p))) for g in glms]

            def bare_mean(X1=X1, weights=weights):
                for W in weights:
                    X1 @ W.T

            def bare_draws(X1=X1, draws=draws):
                for W in draws:
                    np.matmul(X1[None], np.swapaxes(W, 1, 2))

            def guarded(aud=aud, recent=recent, X=X):
                e = guard.apply(aud, now, recent)
                dec = policy.decide(X, e.mask)
                guard.settle(e, dec.arm)

            reps = repeats if n > 1 else repeats * 20
            t = {
                "bare_mean": _time(bare_mean, reps),
                "bare_draws": _time(bare_draws, reps),
                "distribution": _time(lambda X=X, E=E: policy.distribution(X, E), reps),
                "decide": _time(lambda X=X, E=E: policy.decide(X, E), reps),
                "guarded": _time(guarded, reps),
            }
            per = {k2: v / n * 1e6 for k2, v in t.items()}
            results[label] = {
                "n": n,
                "us_per_decision": {k2: round(v, 2) for k2, v in per.items()},
                "ratio_to_bare_mean": {k2: round(v / per["bare_mean"], 1) for k2, v in per.items()},
                "ratio_to_bare_draws": {k2: round(v / per["bare_draws"], 2) for k2, v in per.items()},
            }
        ledger.close()
    return {"policy": policy_name, "arms": arms.n_arms, "features": d, "draws": int(getattr(policy, "n_draws", 0)),
            **results}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--policy", default="thompson")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.batch, args.repeats, args.policy)
    if args.json:
        print(json.dumps(res))
        return
    print(f"policy {res['policy']}: {res['arms']} arms, {res['features']} context features, "
          f"{res['draws']} posterior draws")
    for label in ("single", "batch"):
        r = res[label]
        print(f"\n{label} (n={r['n']:,}): microseconds per decision, ratio to bare_mean, ratio to bare_draws")
        for step, us in r["us_per_decision"].items():
            print(f"  {step:13s} {us:12.2f} us  {r['ratio_to_bare_mean'][step]:9.1f}x  "
                  f"{r['ratio_to_bare_draws'][step]:7.2f}x")


if __name__ == "__main__":
    main()

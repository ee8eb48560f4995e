"""``decisioning ope``: off-policy evaluation of a target policy on any logged-feedback table."""

from __future__ import annotations

from pathlib import Path

import click

from decisioning.options import emit_json, json_option, progress

TARGET_HELP = """Target policy: 'uniform' (uniform over the actions seen in the log), 'greedy' with
--score-prefix (all mass on the action with the highest score column), or one of our policies by
name (thompson, linucb, epsilon_greedy, softmax, greedy, random), cross-fitted on the log: for
each fold it learns from the other folds, then is evaluated on this one (needs arm-id actions)."""


@click.command("ope", epilog="""Examples:

\b
  decisioning ope --log sends.csv --target uniform --json
  decisioning ope --log other.parquet --target-column pi_new --action-col arm --propensity-col p
  decisioning ope --log workspace/decisions/decisions.sqlite --target thompson

A CSV/Parquet log needs one row per logged round with the action, the reward and the logging
policy's probability of that action; every other numeric column is context for the DR reward model
(unless --context-cols names them). A SQLite decision log is read as its matured decisions, with the
reward of policies.reward and the guardrails' eligible arms per decision.""")
@click.option("--log", "log_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Logged feedback: .csv, .parquet, or our SQLite decision log (.sqlite/.db).")
@click.option("--as-of", "as_of", default=None, metavar="TIME",
              help="Decision log only: use decisions whose attribution window closed by TIME (ISO 8601; "
                   "UTC if no zone) [default: now].")
@click.option("--target", default=None, metavar="POLICY", help=TARGET_HELP)
@click.option("--target-file", "target_file", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Decision log only: a FITTED policy, pickled by this project (e.g. a refitted challenger under "
                   "<workspace>/policies/), evaluated as it is (no cross-fitting: it must not have been fitted "
                   "on the evaluated rows; see --since). Only load pickles you wrote yourself.")
@click.option("--since", "since", default=None, metavar="TIME",
              help="Decision log only: evaluate only the decisions decided at or after TIME (ISO 8601; UTC if "
                   "no zone), e.g. the days a refitted challenger did not learn from.")
@click.option("--target-column", default=None, metavar="COL",
              help="Column holding the target's probability of each logged action (IPS and SNIPS only).")
@click.option("--action-col", default="action", show_default=True, help="Column of the logged action.")
@click.option("--reward-col", default="reward", show_default=True, help="Column of the observed reward.")
@click.option("--propensity-col", default="propensity", show_default=True,
              help="Column of the logging policy's probability of the logged action, in (0, 1].")
@click.option("--context-cols", default=None, metavar="A,B,...",
              help="Context columns for the DR reward model [default: every other numeric column].")
@click.option("--score-prefix", default=None, metavar="PREFIX",
              help="With --target greedy: score columns are PREFIX<action>, one per action.")
@click.option("--reward-model", type=click.Choice(["ridge", "lightgbm", "mean"]), default="ridge",
              show_default=True, help="DR reward model, cross-fitted.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Cross-fitting folds (reward model, and our policies as targets).")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Bootstrap resamples for the confidence intervals.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Confidence level of the intervals.")
@click.option("--ci", "ci", type=click.Choice(["studentized", "percentile"]), default="studentized",
              show_default=True, help="Bootstrap interval: studentized (bootstrap-t; copes with skewed rewards) "
                                      "or percentile.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds folds and bootstrap.")
@json_option
def command(log_path, as_of, target, target_file, since, target_column, action_col, reward_col, propensity_col, context_cols, score_prefix,
            reward_model, folds, n_bootstrap, level, ci, seed, as_json):
    """Estimate a target policy's value (mean reward per logged round) from logged data: IPS,
    self-normalised IPS and doubly robust, with bootstrap confidence intervals, the effective
    sample size and the largest importance weight; for a target given as a policy, the paired
    doubly-robust lift over the logged value on the same rows (``lift_over_logged``: the gate of
    a challenger). Rows are put in a canonical order first: the same rows in any order and the
    same seed give the same figures."""
    import numpy as np

    from core.errors import InputError
    from policies.ope import (
        LoggedFeedback,
        eligibility_matrix,
        evaluate,
        greedy_target,
        policy_target,
        read_logged_table,
        uniform_target,
    )
    from policies.validation import check_columns, check_target_probabilities

    if sum(x is not None for x in (target, target_column, target_file)) != 1:
        raise InputError("give exactly one of --target POLICY, --target-file PATH or --target-column COL")
    if score_prefix is not None and target != "greedy":
        raise InputError("--score-prefix goes with --target greedy")
    if target is not None and target not in ("uniform", "greedy"):
        from policies.bandits import POLICIES

        if target not in POLICIES:
            raise InputError(f"unknown target policy {target!r}; choose uniform, greedy --score-prefix P, "
                             f"or one of our policies: {', '.join(sorted(POLICIES))}")
    table = read_logged_table(log_path, as_of=_parse_time(as_of))
    if table.not_matured:
        progress(f"{table.not_matured} decisions left out: their attribution window is still open")
    if (since is not None or target_file is not None) and table.source != "decision_log":
        raise InputError("--since and --target-file work on our SQLite decision log only")
    if since is not None:
        table = _since(table, _parse_time(since, "--since"))
        progress(f"{len(table.frame)} matured decisions decided at or after {since}")
    frame = table.frame
    check_columns(frame, [action_col, reward_col, propensity_col], what=str(log_path))
    exclude = [c for c in (target_column,) if c]
    score_cols: list[str] = []
    if score_prefix is not None:
        score_cols = [c for c in frame.columns if str(c).startswith(score_prefix)]
        exclude += score_cols
    if context_cols is not None:
        ctx: list[str] | str = [c.strip() for c in context_cols.split(",") if c.strip()]
    else:
        ctx = "auto"
    if target_column is not None:
        check_columns(frame, [target_column], what=str(log_path))

    def validated(frame):
        fb = LoggedFeedback.from_frame(frame, action_col=action_col, reward_col=reward_col,
                                       propensity_col=propensity_col, context_cols=ctx, exclude=exclude)
        target_prob = None
        if target_column is not None:
            target_prob = check_target_probabilities(frame[target_column], target_column)
        return fb, target_prob

    try:
        fb, target_prob = validated(frame)
    except InputError:
        if table.file_rows is not None:  # say the file's row, not the canonical order's
            validated(table.in_file_order())
        raise
    progress(f"{fb.n} logged rounds, {fb.n_actions} actions, {len(fb.context_names)} context columns")
    kwargs = dict(reward_model=reward_model, n_folds=folds, n_bootstrap=n_bootstrap, level=level, ci=ci, seed=seed)
    extra: dict = {}
    dist = None
    if target_file is not None:
        target_name = f"file:{target_file.name}"
        fb, dist = fitted_policy_target(target_file, table, fb)
        report = evaluate(fb, target_distribution=dist, **kwargs)
        extra["target_policy"] = {"policy": type(_load_fitted(target_file)).name,
                                  "version": _version(_load_fitted(target_file))}
    elif target_column is not None:
        target_name = f"column:{target_column}"
        report = evaluate(fb, target_prob=target_prob, **kwargs)
    elif target == "uniform":
        target_name = "uniform"
        report = evaluate(fb, target_distribution=uniform_target(fb.n, fb.n_actions), **kwargs)
    elif target == "greedy" and score_prefix is not None:
        target_name = f"greedy:{score_prefix}"
        wanted = [f"{score_prefix}{a}" for a in fb.actions]
        check_columns(frame, wanted, what=f"{log_path} (score columns for --target greedy)")
        scores = frame[wanted].apply(lambda s: s.astype(float)).to_numpy()
        report = evaluate(fb, target_distribution=greedy_target(scores), **kwargs)
    else:
        target_name = target
        eligible = None
        if table.eligible is not None:
            eligible = eligibility_matrix(table.eligible, fb.actions)
        progress(f"cross-fitting the policy {target!r} over {folds} folds")
        fb, dist = policy_target(target, fb, eligible=eligible, events=table.events, n_folds=folds, seed=seed)
        report = evaluate(fb, target_distribution=dist, **kwargs)
    if dist is not None:
        extra["lift_over_logged"] = dr_lift(fb, dist, reward_model=reward_model, n_folds=folds,
                                            n_bootstrap=n_bootstrap, level=level, seed=seed)
        if table.eligible is not None and target_file is None:
            # the logging policy's support is known: how much target mass falls outside it
            support = eligibility_matrix(table.eligible, fb.actions)
            extra["target_mass_off_support"] = float(np.mean(np.sum(np.where(support, 0.0, dist), axis=1)))
    if table.keys is not None and len(table.keys):
        extra["decided_from"] = table.keys["decided_at"].min().isoformat()
        extra["decided_to"] = table.keys["decided_at"].max().isoformat()
    out = report.as_dict() | {"target": target_name, "context_columns": list(fb.context_names)} | extra
    if as_json:
        emit_json(out)
        return
    _print_human(out, log_path)


def _parse_time(text: str | None, option: str = "--as-of"):
    if text is None:
        return None
    import pandas as pd

    from core.errors import InputError

    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise InputError(f"{option}: not a time: {text!r} (use ISO 8601, e.g. 2026-07-15T00:00Z)") from None
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts).to_pydatetime()


def _since(table, since):
    """The rows of a decision-log table decided at or after ``since``."""
    import dataclasses

    import numpy as np

    from core.errors import InputError

    keep = (table.keys["decided_at"] >= since).to_numpy(dtype=bool)
    if not keep.any():
        raise InputError(f"--since {since.isoformat()}: no matured decision was decided at or after it")
    idx = np.flatnonzero(keep)
    sub = lambda f: None if f is None else f.iloc[idx].reset_index(drop=True)  # noqa: E731
    return dataclasses.replace(table, frame=sub(table.frame), events=sub(table.events), keys=sub(table.keys),
                               eligible=None if table.eligible is None else [table.eligible[i] for i in idx])


_FITTED: dict = {}


def _load_fitted(path: Path):
    """The pickled fitted policy at ``path`` (our own pickle; loaded once)."""
    import pickle

    from core.errors import InputError
    from policies.base import Policy

    key = str(Path(path).resolve())
    if key not in _FITTED:
        try:
            with open(path, "rb") as f:
                policy = pickle.load(f)
        except Exception as exc:
            raise InputError(f"--target-file {path}: not a pickled policy ({type(exc).__name__}: {exc})") from None
        if not isinstance(policy, Policy) or not policy.is_initialised:
            raise InputError(f"--target-file {path}: not a fitted policy of this project")
        _FITTED[key] = policy
    return _FITTED[key]


def _version(policy) -> str:
    return f"{type(policy).name}-n{getattr(policy, 'n_seen_', 0)}-u{getattr(policy, 'n_updates_', 0)}"


def fitted_policy_target(path: Path, table, fb):
    """(feedback re-coded onto the fitted policy's arms, its (n, K) distribution on the logged
    contexts, restricted to the arms the guardrails allowed at each decision)."""
    import numpy as np

    from core.errors import InputError
    from policies.context import CONTEXT_COLUMNS
    from policies.ope import LoggedFeedback, eligibility_matrix

    policy = _load_fitted(path)
    missing = [c for c in CONTEXT_COLUMNS if c not in table.frame.columns]
    if missing:
        raise InputError(f"the decision log has no logged context {missing[:5]} for the policy of {path}")
    X = table.frame[list(CONTEXT_COLUMNS)].to_numpy(dtype=np.float64)
    ok = np.isfinite(X).all(axis=1)
    X = np.where(ok[:, None], X, 0.0)
    try:
        to_arm = np.asarray(policy.arms.index(list(np.asarray(fb.actions)[fb.action])), dtype=np.int64)
    except Exception as exc:
        raise InputError(f"the log's actions are not arms of the policy of {path}: {exc}") from None
    mask = eligibility_matrix(table.eligible, policy.arms.ids)
    mask[np.arange(fb.n), to_arm] = True  # the logged arm was eligible by definition
    dist = policy.distribution(X, mask)
    # a decision without logged context (a fallback): the target keeps the logged action
    dist[~ok] = 0.0
    dist[np.flatnonzero(~ok), to_arm[~ok]] = 1.0
    recoded = LoggedFeedback(to_arm, fb.reward, fb.propensity, tuple(policy.arms.ids), fb.context, fb.context_names)
    return recoded, dist


def dr_lift(fb, dist, *, reward_model="ridge", n_folds=5, n_bootstrap=1000, level=0.95, seed=0) -> dict:
    """The doubly-robust estimate of (target value - logged value) on the same rows, with a
    paired bootstrap interval: per row d_i = DR_i - r_i, so the noise the two share (organic
    purchases, the customers drawn) cancels. The gate of a challenger: a clear win is
    ``ci_low > 0``. Same cross-fitted reward model (seeded folds) as the DR estimate."""
    import numpy as np

    from policies.ope import cross_fit_rewards

    q = cross_fit_rewards(fb, reward_model, n_folds=n_folds, seed=seed)
    rows = np.arange(fb.n)
    w = dist[rows, fb.action] / fb.propensity
    dr = np.einsum("ij,ij->i", dist, q) + w * (fb.reward - q[rows, fb.action])
    d = dr - fb.reward
    n = len(d)
    value = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    rng = np.random.default_rng([seed, 4])
    boot = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // max(n, 1))
    for lo in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - lo)
        idx = rng.integers(0, n, size=(b, n))
        boot[lo:lo + b] = d[idx].mean(axis=1)
    a = (1 - level) / 2
    lo_q, hi_q = np.quantile(boot, [a, 1 - a]) if n > 1 else (float("nan"), float("nan"))
    return {"value": value, "ci_low": float(lo_q), "ci_high": float(hi_q), "se": se,
            "relative": value / abs(float(fb.reward.mean())) if fb.reward.mean() else None,
            "method": "paired percentile bootstrap of DR_i - r_i"}


def _print_human(out: dict, log_path: Path) -> None:
    pct = round(100 * out["level"])
    click.echo(f"off-policy value of {out['target']!r} on {out['n']} logged rounds of {log_path} "
               f"({out['n_actions']} actions; {pct}% {out['ci']} bootstrap intervals, {out['n_bootstrap']} resamples)")
    click.echo(f"  {'estimator':<10}{'value':>12}{'ci_low':>12}{'ci_high':>12}")
    for key in ("ips", "snips", "dr"):
        est = out[key]
        if est is None:
            click.echo(f"  {key.upper():<10}{'-':>12}   ({out['dr_reason']})")
        else:
            click.echo(f"  {key.upper():<10}{est['value']:>12.5g}{est['ci_low']:>12.5g}{est['ci_high']:>12.5g}")
    share = out["ess"] / out["n"] if out["n"] else 0.0
    click.echo(f"  effective sample size {out['ess']:.1f} ({share:.1%} of n); largest weight {out['max_weight']:.3g}")
    click.echo(f"  logging policy's own value (mean logged reward): {out['logged_value']:.5g}")
    lift = out.get("lift_over_logged")
    if lift:
        click.echo(f"  DR lift over the logged value (paired): {lift['value']:+.5g} "
                   f"[{lift['ci_low']:+.5g}, {lift['ci_high']:+.5g}]")
    if "target_mass_off_support" in out:
        click.echo(f"  target probability on arms the logging policy could not take: {out['target_mass_off_support']:.1%}")
    if share < 0.01:
        click.echo("  warning: fewer than 1% effective samples; the target is far from the logging policy", err=True)

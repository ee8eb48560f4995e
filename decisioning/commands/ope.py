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
def command(log_path, as_of, target, target_column, action_col, reward_col, propensity_col, context_cols, score_prefix,
            reward_model, folds, n_bootstrap, level, ci, seed, as_json):
    """Estimate a target policy's value (mean reward per logged round) from logged data: IPS,
    self-normalised IPS and doubly robust, with bootstrap confidence intervals, the effective
    sample size and the largest importance weight."""
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

    if (target is None) == (target_column is None):
        raise InputError("give exactly one of --target POLICY or --target-column COL")
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
    fb = LoggedFeedback.from_frame(frame, action_col=action_col, reward_col=reward_col,
                                   propensity_col=propensity_col, context_cols=ctx, exclude=exclude)
    target_prob = None
    if target_column is not None:
        target_prob = check_target_probabilities(frame[target_column], target_column)
    progress(f"{fb.n} logged rounds, {fb.n_actions} actions, {len(fb.context_names)} context columns")
    kwargs = dict(reward_model=reward_model, n_folds=folds, n_bootstrap=n_bootstrap, level=level, ci=ci, seed=seed)
    extra: dict = {}
    if target_column is not None:
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
        if table.eligible is not None:
            # the logging policy's support is known: how much target mass falls outside it
            support = eligibility_matrix(table.eligible, fb.actions)
            extra["target_mass_off_support"] = float(np.mean(np.sum(np.where(support, 0.0, dist), axis=1)))
    out = report.as_dict() | {"target": target_name, "context_columns": list(fb.context_names)} | extra
    if as_json:
        emit_json(out)
        return
    _print_human(out, log_path)


def _parse_time(text: str | None):
    if text is None:
        return None
    import pandas as pd

    from core.errors import InputError

    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise InputError(f"--as-of: not a time: {text!r} (use ISO 8601, e.g. 2026-07-15T00:00Z)") from None
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts).to_pydatetime()


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
    if "target_mass_off_support" in out:
        click.echo(f"  target probability on arms the logging policy could not take: {out['target_mass_off_support']:.1%}")
    if share < 0.01:
        click.echo("  warning: fewer than 1% effective samples; the target is far from the logging policy", err=True)

"""`decisioning train {propensity,churn,offer,send-time,all}`: time-split training, Optuna tuning,
MLflow tracking, registration as challenger."""

from __future__ import annotations

import click

from decisioning.options import emit_json, json_option, progress, workspace_option

CHOICES = ("propensity", "churn", "offer", "send-time", "all")


def _summary(res: dict) -> str:
    lines = [f"cutoff {res['split']['cutoff']}, horizon {res['split']['horizon_days']} days"]
    for r in res.values():
        if not isinstance(r, dict) or "model" not in r:
            continue
        name = r["model"]
        if r.get("status") == "skipped":
            lines.append(f"{name:<11} SKIPPED: {r['reason']}")
            continue
        if "auc" in r:
            b = r["baselines"]
            s = (f"{name:<11} AUC {r['auc']:.3f} (RFM {b['rfm']['auc']:.3f}, BG/NBD {b['bgnbd']['auc']:.3f}"
                 + (f", oracle {r['oracle_auc']:.3f}" if "oracle_auc" in r else "") + f"), ECE {r['ece']:.3f}")
        elif name == "offer":
            s = (f"{name:<11} held-out value/send {r['heldout_value']:.3f} (best single offer "
                 f"{r['baselines']['best_single_offer']['heldout_value']:.3f})")
            if "oracle_value" in r:
                s += (f"; true value {r['true_value']:.4f} vs best single {r['true_best_single_value']:.4f} "
                      f"vs oracle {r['oracle_value']:.4f}: gap closed {r['gap_closed']:.0%}")
        else:
            s = (f"{name:<11} held-out open rate {r['heldout_open_rate']:.3f} (10:00 "
                 f"{r['baselines']['fixed_10']['heldout_open_rate']:.3f})")
            if "oracle_open_rate" in r:
                s += (f"; true open rate {r['true_open_rate']:.4f} vs 10:00 {r['true_fixed_10_open_rate']:.4f} "
                      f"vs oracle {r['oracle_open_rate']:.4f}: gap closed {r['gap_closed']:.0%}")
        if "registered" in r:
            s += f"  [{r['registered']['name']} v{r['registered']['version']} @challenger]"
        lines.append(s)
    lines.append(f"{res['seconds']:.1f} s")
    return "\n".join(lines)


@click.command("train")
@click.argument("model", type=click.Choice(CHOICES))
@click.option("--cutoff", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Last moment the test may see (UTC) [default: history end minus the horizon].")
@click.option("--horizon-days", type=int, default=None, help="Label window after each cutoff [default 30].")
@click.option("--trials", type=int, default=None, help="Optuna trials per model; 0 = no tuning [default 10].")
@click.option("--timeout", "timeout_seconds", type=float, default=None,
              help="Tuning time budget per model, seconds [default 20].")
@click.option("--seed", type=int, default=None, help="Seed of tuning and models [default 0].")
@click.option("--storage", default=None,
              help="Optuna storage URL (e.g. sqlite:///optuna.db) [default: in memory].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file with TrainConfig fields (command-line options win).")
@click.option("--no-register", is_flag=True, help="Evaluate only: log nothing to MLflow.")
@workspace_option
@json_option
def command(model, cutoff, horizon_days, trials, timeout_seconds, seed, storage, config_path, no_register, workspace,
            as_json):
    """Train MODEL (or all four) with a time-based evaluation, tune with Optuna, log to MLflow and
    register the result as `challenger`.

    The test labels fall in (cutoff, cutoff + horizon]; validation and training use earlier
    cutoffs whose label windows end by the cutoff. Every model is reported beside its baselines
    (RFM rule and BG/NBD; best single offer; fixed 10:00 local) on the same test rows, and beside
    the oracle when the simulator's truth is in the workspace. Models whose data is missing (say,
    no campaign history) are skipped with the reason.
    """
    from core.config import load_config
    from training.pipeline import TrainConfig, train

    if trials is not None and trials < 0:
        raise click.BadParameter("must be >= 0", param_hint="--trials")
    config = load_config(TrainConfig, config_path, cutoff=cutoff, horizon_days=horizon_days, trials=trials,
                         timeout_seconds=timeout_seconds, seed=seed, storage=storage,
                         track=False if no_register else None)
    if config.cutoff is not None and config.cutoff.tzinfo is None:
        from datetime import UTC

        config = config.model_copy(update={"cutoff": config.cutoff.replace(tzinfo=UTC)})
    models = ["propensity", "churn", "offer", "send-time"] if model == "all" else [model]
    res = train(workspace, models, config, progress=progress)
    if as_json:
        emit_json(res)
    else:
        click.echo(_summary(res))

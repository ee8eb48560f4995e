"""``decisioning journey``: run a simulated journey against a policy, in process."""

from __future__ import annotations

import click

from decisioning.options import emit_json, json_option, progress, workspace_option


@click.command("journey")
@click.option("--days", type=click.IntRange(1, 365), default=14, show_default=True, help="Days to simulate.")
@click.option("--policy", "policy_name", default=None,
              help="Policy to run (thompson, linucb, epsilon_greedy, softmax, greedy, random) "
                   "[default: the config's, thompson].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the policy, the random baseline and the world's answers.")
@click.option("--customers", type=click.IntRange(min=1), default=None,
              help="Decide for a seeded sample of this many customers [default: every profile].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Policy-layer YAML (arms, guardrails, policy); see policies/config.py.")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Customers decided at once; budgets settle between batches.")
@workspace_option
@json_option
def command(days, policy_name, seed, customers, config_path, batch_size, workspace, as_json):
    """Run the decision loop against the simulated world, day by day, starting at the end of
    its history: decide for the workspace's customers (guardrails before sampling), log every
    decision, let the world answer, join outcomes and update the policy.

    On the same world, days and seed it scores the policy against a random policy, the
    marketer's rule (e-mail at 10:00 local with the best-selling offer) and the oracle (the arm
    with the highest true expected reward), re-checks every send against the guardrails, and
    reports mean reward per customer-day. Needs `decisioning simulate` and `decisioning
    profiles` first.
    """
    from core.errors import WorkspaceError
    from journey.run import JourneySettings, run_journey
    from policies.config import PolicySpec, load_policy_config

    if not workspace.root.is_dir():
        raise WorkspaceError(f"workspace {workspace.root} does not exist: run `decisioning simulate` first")
    config = load_policy_config(config_path)
    if policy_name is not None:
        from policies.bandits import POLICIES

        if policy_name not in POLICIES:
            raise click.BadParameter(f"unknown policy {policy_name!r}; choose from {sorted(POLICIES)}",
                                     param_hint="--policy")
        same = policy_name == config.policy.name
        config = config.model_copy(update={"policy": PolicySpec(
            name=policy_name, params=config.policy.params if same else {}, warm_start=config.policy.warm_start)})
    settings = JourneySettings(days=days, customers=customers, seed=seed, batch_size=batch_size)
    result = run_journey(workspace, settings, config, progress=progress)
    if as_json:
        emit_json(result)
        return
    click.echo(f"journey of {result['customers']:,} customers x {result['days']} days "
               f"(policy {result['policy_name']}, seed {result['seed']}), mean reward per customer-day:")
    click.echo(f"  {'':10} {'value':>9} {'expected':>9} {'sends/day':>10} {'unsubs':>7}")
    for lane in ("policy", "random", "rule", "oracle", "no_send"):
        s = result[lane]
        click.echo(f"  {lane:10} {s['value']:9.3f} {s['expected_value']:9.3f} {s['sends_per_day']:10.0f} "
                   f"{s['unsubscribes']:7d}")
    c = result["comparison"]
    click.echo(f"  policy / rule {c['policy_over_rule']:.3f}, gap rule->oracle closed {c['gap_closed']:.1%}, "
               f"uplift over no-send vs rule's {c['uplift_over_rule']:.2f}x")
    click.echo(f"  guardrail violations: {result['guardrail_violations']}; decisions logged "
               f"{result['decisions_logged']:,} in {result['log']}; {result['seconds']:.0f}s")

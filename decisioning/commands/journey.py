"""``decisioning journey``: run a simulated journey against a policy, in process or, with ``--url``,
against the running decision service over HTTP (journey.remote)."""

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
@click.option("--url", default=None, metavar="URL",
              help="Decide the policy lane with the running decision service at URL (`decisioning serve`): "
                   "POST /decide/batch each simulated day, outcomes to POST /outcome, POST /learn at the end "
                   "of each day. The other lanes stay in process.")
@click.option("--token", default=None, envvar="DECISIONING_TOKEN", metavar="TOKEN",
              help="Bearer token of the service (when its config sets auth_token) [env DECISIONING_TOKEN].")
@click.option("--learn/--no-learn", default=True, show_default=True,
              help="With --url: ask the service to learn at the end of each simulated day.")
@workspace_option
@json_option
def command(days, policy_name, seed, customers, config_path, batch_size, url, token, learn, workspace, as_json):
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
    if url is None:
        result = run_journey(workspace, settings, config, progress=progress)
    else:
        result = _remote(workspace, settings, config, url, token, learn, policy_name)
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
    if "http" in result:
        h = result["http"]
        click.echo(f"  over HTTP ({h['url']}): {h['requests']:,} requests, {h['retries']} retries, "
                   f"{h['decisions_per_second'] or 0:,.0f} decisions/s, outcomes accepted "
                   f"{h['outcomes']['accepted']:,} (duplicates {h['outcomes']['duplicates']}), "
                   f"learned from {h['learned']:,}; policy {h['policy_version_first']} -> {h['policy_version_last']}")
    click.echo(f"  policy / rule {c['policy_over_rule']:.3f}, gap rule->oracle closed {c['gap_closed']:.1%}, "
               f"uplift over no-send vs rule's {c['uplift_over_rule']:.2f}x")
    click.echo(f"  guardrail violations: {result['guardrail_violations']}; decisions logged "
               f"{result['decisions_logged']:,} in {result['log']}; {result['seconds']:.0f}s")


def _remote(workspace, settings, config, url, token, learn, policy_name) -> dict:
    """The journey with the policy lane decided by the service at ``url``."""
    from core.errors import InputError
    from journey.remote import RemotePolicyLane
    from journey.run import run_journey
    from policies.config import PolicySpec

    lane = RemotePolicyLane(url, token=token, chunk=settings.batch_size, learn=learn,
                            journey_id=f"journey-http-s{settings.seed}", progress=progress)
    try:
        served = (lane.status.get("policies") or {}).get("champion", {}).get("policy")
        if policy_name is not None and served is not None and policy_name != served:
            raise InputError(f"--policy {policy_name}: the service at {url} serves {served}; the policy over "
                             "HTTP is the service's (leave --policy out)")
        if served:
            config = config.model_copy(update={"policy": PolicySpec(name=served, warm_start=False)})
        progress(f"journey over HTTP: the policy lane is decided by {lane.url} (policy {served})")
        return run_journey(workspace, settings, config, progress=progress, decider=lane)
    finally:
        lane.close()

"""Entry point of the ``decisioning`` command."""

from __future__ import annotations

import importlib
import sys

import click

from core.errors import DecisioningError

# name -> (module under decisioning.commands, one-line help). Order is the order of the loop.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "Simulate a customer world: raw sources and ground truth."),
    "profiles": ("profiles", "Import raw sources, validate rows, resolve identities into profiles."),
    "features": ("features", "Feast feature store: apply, materialize, get."),
    "train": ("train", "Train, tune and register the models."),
    "compare": ("compare", "Compare models and baselines on the same test data."),
    "promote": ("promote", "Promote a challenger to champion if it wins."),
    "serve": ("serve", "Run the BentoML decision service."),
    "journey": ("journey", "Run a simulated journey against a policy (in process or over HTTP)."),
    "ope": ("ope", "Off-policy evaluation of a target policy on any logged data."),
    "report": ("report", "Effect of the decisions: lift, ROI, A/B results."),
    "drift": ("drift", "Drift and policy-health report."),
    "demo": ("demo", "The whole loop, from nothing."),
}


def _available() -> dict[str, tuple[str, str]]:
    from importlib.util import find_spec

    return {n: v for n, v in COMMANDS.items() if find_spec(f"decisioning.commands.{v[0]}") is not None}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_available())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = _available().get(name)
        if entry is None:
            return None
        module = importlib.import_module(f"decisioning.commands.{entry[0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in _available().items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cdp-decisioning")
def cli() -> None:
    """Decisioning for a Customer Data Platform: whether to contact each customer, on which
    channel, with which offer and when, and learning from what happened.

    Run the loop step by step in this order, or all of it with `decisioning demo`. Every step
    reads and writes one workspace: --workspace DIR, else $DECISIONING_HOME, else ./workspace.
    """


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; domain errors become one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="decisioning", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except DecisioningError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    else:
        sys.exit(0)


if __name__ == "__main__":
    main()

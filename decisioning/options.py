"""Options and output helpers shared by every subcommand."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from core.workspace import ENV_VAR, Workspace


def workspace_option(f: Callable) -> Callable:
    """``--workspace DIR`` (default ``$DECISIONING_HOME``, else ``./workspace``), passed as
    ``workspace: Workspace``."""

    def to_workspace(ctx, param, value):
        return Workspace.resolve(value)

    return click.option(
        "--workspace",
        "workspace",
        type=click.Path(file_okay=False),
        envvar=ENV_VAR,
        callback=to_workspace,
        help=f"Workspace folder holding all state of a run [env {ENV_VAR}; default ./workspace].",
    )(f)


def json_option(f: Callable) -> Callable:
    """``--json``: print one JSON object on stdout instead of the human summary."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(f)


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def emit_json(obj: dict) -> None:
    """Print ``obj`` as one JSON object (NaN and infinities become null)."""
    plain = json.loads(json.dumps(obj, default=_default))
    sys.stdout.write(json.dumps(_finite(plain), allow_nan=False) + "\n")


def progress(message: str) -> None:
    """A progress line on stderr, so that stdout stays clean for ``--json``."""
    click.echo(message, err=True)

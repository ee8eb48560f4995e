"""``decisioning demo``: the whole loop, from nothing, on the embedded defaults.

Each step runs the public subcommand in its own process (exactly what a person would type), with
``--json`` so the demo can summarise the figures; progress of every step streams to stderr.
Steps whose subcommand does not exist in this version are reported as skipped.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from core.errors import DecisioningError
from decisioning.options import emit_json, json_option, progress, workspace_option


@dataclass
class Step:
    title: str
    argv: list[str]
    ok_codes: tuple[int, ...] = (0,)
    in_workspace: bool = True  # pass --workspace (ope reads any log file and has no workspace)
    result: dict | None = None
    seconds: float = 0.0
    status: str = "pending"
    message: str = ""
    extra: dict = field(default_factory=dict)


def _available(command: str) -> bool:
    from decisioning.cli import _available as available

    return command in available()


def _resolve(argv: list[str], done: dict[str, dict]) -> list[str]:
    """Fill ``{command.key}`` placeholders from the JSON of earlier steps."""
    out = []
    for a in argv:
        if a.startswith("{") and a.endswith("}"):
            command, key = a[1:-1].split(".", 1)
            value = (done.get(command) or {}).get(key)
            if value is None:
                raise DecisioningError(f"demo: step '{command}' did not report '{key}'")
            a = str(value)
        out.append(a)
    return out


def _run(step: Step, workspace: Path, done: dict[str, dict]) -> None:
    if not _available(step.argv[0]):
        step.status = "skipped"
        step.message = f"`decisioning {step.argv[0]}` does not exist in this version"
        progress(f"-- {step.title}: skipped ({step.message})")
        return
    step.argv = _resolve(step.argv, done)
    cmd = [sys.executable, "-m", "decisioning.cli", *step.argv]
    if step.in_workspace:
        cmd += ["--workspace", str(workspace)]
    progress(f"== {step.title}: decisioning {' '.join(step.argv)}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    step.seconds = time.perf_counter() - t0
    out = proc.stdout.strip().splitlines()
    if out:
        try:
            step.result = json.loads(out[-1])
        except json.JSONDecodeError:
            step.message = out[-1][:300]
    if proc.returncode not in step.ok_codes:
        step.status = "failed"
        raise DecisioningError(f"demo step '{step.title}' failed with exit code {proc.returncode}")
    step.status = "done"
    if step.result is not None:
        done[step.argv[0]] = step.result
    progress(f"   done in {step.seconds:.1f} s")


def _steps(customers: int, days: int, journey_days: int, seed: int, trials: int) -> list[Step]:
    return [
        Step("simulate a customer world",
             ["simulate", "--customers", str(customers), "--days", str(days), "--seed", str(seed), "--json"]),
        Step("import sources and resolve identities", ["profiles", "--json"]),
        Step("apply the Feast feature repo", ["features", "apply", "--json"]),
        Step("materialise features to the online store", ["features", "materialize", "--json"]),
        Step("train and register the four models", ["train", "all", "--trials", str(trials), "--json"]),
        Step("run a simulated journey", ["journey", "--days", str(journey_days), "--seed", str(seed), "--json"]),
        Step("evaluate a challenger policy off-policy",
             ["ope", "--log", "{journey.log}", "--target", "epsilon_greedy", "--json"], in_workspace=False),
        Step("measure the effect", ["report", "--json"]),
        Step("check drift and policy health", ["drift", "--json"], ok_codes=(0, 1)),
    ]


def _summary_lines(steps: list[Step]) -> list[str]:
    lines = []
    for s in steps:
        head = f"{s.title:45s} {s.status:8s} {s.seconds:7.1f} s"
        lines.append(head + (f"  ({s.message})" if s.message else ""))
    by = {s.argv[0]: s.result for s in steps if s.result}
    if "profiles" in by and "precision" in by["profiles"]:
        p = by["profiles"]
        lines.append(f"identity resolution vs truth: precision {p['precision']:.4f}, recall {p['recall']:.4f}")
    if "journey" in by:
        j = by["journey"]
        parts = [f"{k} {j[k]['value']:.3f}" for k in ("policy", "rule", "random", "oracle")
                 if isinstance(j.get(k), dict) and "value" in j[k]]
        if parts:
            lines.append("journey value per customer-day: " + ", ".join(parts))
        if "guardrail_violations" in j:
            lines.append(f"guardrail violations: {j['guardrail_violations']}")
    if "ope" in by:
        o = by["ope"]
        parts = [f"{k} {o[k]['value']:.3f} [{o[k]['ci_low']:.3f}, {o[k]['ci_high']:.3f}]"
                 for k in ("ips", "snips", "dr") if isinstance(o.get(k), dict) and o[k].get("value") is not None]
        if parts:
            lines.append("challenger (epsilon_greedy) off-policy value: " + ", ".join(parts))
    if "train" in by:
        for name, m in by["train"].items():
            if isinstance(m, dict) and "auc" in m and "oracle_auc" in m:
                lines.append(f"{name}: AUC {m['auc']:.3f} (oracle {m['oracle_auc']:.3f})")
            elif isinstance(m, dict) and "gap_closed" in m:
                lines.append(f"{name}: closes {m['gap_closed']:.0%} of the gap from baseline to oracle")
    return lines


def _write_html(steps: list[Step], path: Path) -> None:
    rows = "".join(
        f"<tr><td>{html.escape(s.title)}</td><td>{s.status}</td><td>{s.seconds:.1f}</td>"
        f"<td><pre>{html.escape(json.dumps(s.result, indent=1)[:4000]) if s.result else html.escape(s.message)}"
        f"</pre></td></tr>"
        for s in steps
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>cdp-decisioning demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;"
        "vertical-align:top}pre{margin:0;max-height:20em;overflow:auto}</style>"
        "<h1>cdp-decisioning demo</h1><table><tr><th>step</th><th>status</th><th>seconds</th>"
        f"<th>result</th></tr>{rows}</table>"
    )


@click.command("demo")
@click.option("--customers", type=int, default=20_000, show_default=True, help="Customers in the world.")
@click.option("--days", type=int, default=180, show_default=True, help="Days of simulated history.")
@click.option("--journey-days", type=int, default=14, show_default=True, help="Days of the simulated journey.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the whole demo.")
@click.option("--trials", type=int, default=10, show_default=True, help="Optuna trials per model.")
@workspace_option
@json_option
def command(customers, days, journey_days, seed, trials, workspace, as_json):
    """Run the whole loop from nothing: simulate, import, features, train, journey, measure.

    Every step is the public subcommand, run in the workspace; a summary and an HTML report
    (reports/demo.html) close it.
    """
    workspace.ensure()
    steps = _steps(customers, days, journey_days, seed, trials)
    t0 = time.perf_counter()
    done: dict[str, dict] = {}
    try:
        for step in steps:
            _run(step, workspace.root, done)
    finally:
        report = workspace.reports / "demo.html"
        _write_html(steps, report)
    total = time.perf_counter() - t0
    if as_json:
        emit_json({"seconds": total, "report": report,
                   "steps": [{"title": s.title, "command": s.argv[0], "status": s.status,
                              "seconds": s.seconds, "result": s.result} for s in steps]})
        return
    click.echo(f"\ncdp-decisioning demo in {workspace.root} ({total:.0f} s)")
    for line in _summary_lines(steps):
        click.echo("  " + line)
    click.echo(f"  report: {report}")

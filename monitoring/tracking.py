"""Logging a monitoring report to MLflow, through training.tracking (the one MLflow adapter)."""

from __future__ import annotations

from pathlib import Path

from core.workspace import Workspace

EXPERIMENT = "monitoring"


def _flat(obj, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float):  # bool included
        out[prefix.rstrip(".")] = float(obj)
    return out


def log_report(workspace: Workspace, name: str, summary: dict, files: list[Path], metrics: dict,
               tags: dict[str, str] | None = None) -> str:
    """One MLflow run (experiment ``monitoring`` in ``<workspace>/mlflow/``) holding the JSON
    summary, the HTML/PNG ``files`` and the numeric ``metrics`` (nested dicts flattened with dots).
    Returns the run id."""
    from training.tracking import Tracker

    tracker = Tracker(workspace, experiment=EXPERIMENT)
    with tracker.run(name, tags=tags or {}) as run_id:
        tracker.log_metrics({k.replace(":", "_"): v for k, v in _flat(metrics).items()})
        tracker.log_dict(summary, f"{name}.json")
        for f in files:
            if f.is_file():
                tracker.log_artifact(f, "report")
    return run_id

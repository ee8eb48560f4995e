"""Logging a monitoring report to MLflow, through training.tracking (the one MLflow adapter).

One run per report in the experiment ``monitoring`` of the workspace's store
(``<workspace>/mlflow/mlflow.db``), named after the report (``report`` or ``drift``):

* params: the window (``since``, ``until``, ``now``; drift also ``previous_since``) and ``log``
  (the decision log's path), plus whatever else the caller passes;
* metrics: the report's key figures (nested dicts flattened with dots, ``:`` -> ``_``; NaN,
  infinities and non-numbers left out);
* artifacts: the JSON summary and the HTML page (and its PNG plots, the Evidently pages) under
  ``report/``;
* tags: ``monitoring.kind`` (report / drift) and the caller's (drift: ``retrain_due``).
"""

from __future__ import annotations

import math
from pathlib import Path

from core.workspace import Workspace

EXPERIMENT = "monitoring"
ARTIFACT_FOLDER = "report"


def flat_metrics(obj, prefix: str = "") -> dict[str, float]:
    """Numbers of a nested dict as ``{"a.b.c": float}`` (bools as 0/1; lists of two numbers, such
    as intervals, as ``.low`` / ``.high``; NaN, infinities, None and strings left out)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat_metrics(v, f"{prefix}{k}."))
    elif isinstance(obj, list | tuple) and len(obj) == 2 and all(isinstance(x, int | float) for x in obj):
        out.update(flat_metrics({"low": obj[0], "high": obj[1]}, prefix))
    elif isinstance(obj, int | float) and math.isfinite(float(obj)):  # bool and numpy floats included
        out[prefix.rstrip(".").replace(":", "_")] = float(obj)
    return out


def log_report(workspace: Workspace, name: str, files: list[Path], metrics: dict,
               params: dict[str, object] | None = None, tags: dict[str, str] | None = None) -> str:
    """One MLflow run (experiment ``monitoring``) holding the numeric ``metrics`` (flattened, see
    :func:`flat_metrics`), the ``params`` and the existing ``files`` as artifacts under
    ``report/``. Returns the run id."""
    from training.tracking import Tracker

    tracker = Tracker(workspace, experiment=EXPERIMENT)
    with tracker.run(name, tags={"monitoring.kind": name, **(tags or {})}) as run_id:
        if params:
            tracker.log_params(params)
        tracker.log_metrics(flat_metrics(metrics))
        for f in files:
            if f.is_file():
                tracker.log_artifact(f, ARTIFACT_FOLDER)
    return run_id

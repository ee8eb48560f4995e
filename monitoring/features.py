"""Feature and score drift with Evidently (new API, 0.7), on samples.

Reference: the champion's training snapshot. It is looked for, in order, at ``--reference FILE``
(Parquet), at ``<workspace>/reports/reference_features.parquet``, then as the artifact
``reference/features.parquet`` of the run of a registered model's ``champion`` version
(propensity, churn, next_best_offer, send_time) in the workspace's MLflow store. Its columns are
feature names as they appear as keys of the decisions' ``context``; columns named ``score:<name>``
hold model scores as they appear in the decisions' ``scores``. Without a reference, the previous
window's decisions serve as reference (and the summary says so).

Evidently's presets cost about 3 s per 5k x 20 here and grow with rows and columns, so both sides
are seeded random samples of at most ``DriftConfig.sample_rows`` rows and ``max_features`` columns.
Per column Evidently picks its test (K-S / chi-square p-value for small samples, normed
Wasserstein / Jensen-Shannon distance above 1000 rows) and its threshold; a column drifted when the
test says so.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.workspace import Workspace

REFERENCE_FILE = "reference_features.parquet"
REFERENCE_ARTIFACT = "reference/features.parquet"
CHAMPION_MODELS: tuple[str, ...] = ("propensity", "churn", "next_best_offer", "send_time")
SCORE_PREFIX = "score:"


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"reference {path} is not a readable Parquet file: {exc}") from None


def find_reference(workspace: Workspace, path: str | Path | None = None) -> tuple[pd.DataFrame | None, dict]:
    """The reference snapshot and where it came from (``{"kind": ..., "source": ...}``)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"reference file {p} does not exist")
        return _read_parquet(p), {"kind": "file", "source": str(p)}
    local = workspace.reports / REFERENCE_FILE
    if local.is_file():
        return _read_parquet(local), {"kind": "file", "source": str(local)}
    if (workspace.mlflow / "mlflow.db").is_file():
        found = _champion_reference(workspace)
        if found is not None:
            return found
    return None, {"kind": "previous_window", "source": None}


def _champion_reference(workspace: Workspace) -> tuple[pd.DataFrame, dict] | None:
    try:
        from training.tracking import Tracker

        tracker = Tracker(workspace)
        for name in CHAMPION_MODELS:
            info = tracker.version(name, "champion")
            if info is None:
                continue
            with tempfile.TemporaryDirectory() as d:
                try:
                    local = tracker._mlflow.artifacts.download_artifacts(
                        run_id=info.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=d)
                except Exception:  # the run has no snapshot
                    continue
                frame = pd.read_parquet(local)
            return frame, {"kind": "champion_run", "source": f"models:/{name}@champion",
                           "run_id": info.run_id, "version": info.version}
    except Exception as exc:  # a broken store must not stop the health report
        logging.getLogger(__name__).warning("cannot read the champion's reference: %s", exc)
    return None


def sample_frame(sample: pd.DataFrame) -> pd.DataFrame:
    """Sampled decisions (``context``/``scores`` dicts) -> numeric frame: context keys as columns,
    scores as ``score:<name>`` columns. Non-numeric values become NaN."""
    parts = []
    if "context" in sample:
        parts.append(pd.DataFrame.from_records(list(sample["context"])))
    if "scores" in sample:
        s = pd.DataFrame.from_records(list(sample["scores"]))
        parts.append(s.add_prefix(SCORE_PREFIX))
    if not parts:
        return pd.DataFrame(index=range(len(sample)))
    frame = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
    return frame.apply(pd.to_numeric, errors="coerce")


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.select_dtypes(include=["number", "bool"]).astype(np.float64)
    return out.loc[:, out.notna().any()]


def evidently_drift(reference: pd.DataFrame, current: pd.DataFrame, *, max_rows: int, max_columns: int,
                    seed: int, html_path: Path | None = None) -> dict:
    """Evidently DataDriftPreset on the numeric columns the two frames share (sampled).

    Returns ``{columns: {name: {method, value, threshold, drifted}}, compared, drifted,
    drifted_share, rows_reference, rows_current}``.
    """
    ref, cur = _numeric(reference), _numeric(current)
    cols = [c for c in ref.columns if c in cur.columns][:max_columns]
    out = {"columns": {}, "compared": len(cols), "drifted": 0, "drifted_share": None,
           "rows_reference": 0, "rows_current": 0}
    if not cols or len(ref) < 2 or len(cur) < 2:
        return out
    rng = np.random.default_rng(seed)
    if len(ref) > max_rows:
        ref = ref.iloc[np.sort(rng.choice(len(ref), max_rows, replace=False))]
    if len(cur) > max_rows:
        cur = cur.iloc[np.sort(rng.choice(len(cur), max_rows, replace=False))]
    ref, cur = ref[cols].reset_index(drop=True), cur[cols].reset_index(drop=True)
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=cols)
    snap = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition))
    for m in snap.dict()["metrics"]:
        conf = m.get("config", {})
        if not str(conf.get("type", "")).endswith("ValueDrift"):
            continue
        method = str(conf.get("method", ""))
        value, threshold = m.get("value"), conf.get("threshold")
        if value is None or threshold is None:
            continue
        p_value_test = bool(re.search(r"p_value|test", method, re.IGNORECASE))
        drifted = value < threshold if p_value_test else value >= threshold
        out["columns"][conf["column"]] = {"method": method, "value": float(value), "threshold": float(threshold),
                                          "drifted": bool(drifted)}
    out["drifted"] = sum(c["drifted"] for c in out["columns"].values())
    out["drifted_share"] = out["drifted"] / len(out["columns"]) if out["columns"] else None
    out["rows_reference"], out["rows_current"] = len(ref), len(cur)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snap.save_html(str(html_path))
    return out

"""The ONE module that talks to MLflow: experiment tracking and the model registry.

Store: SQLite at ``<workspace>/mlflow/mlflow.db`` (``make mlflow-ui`` opens it), artifacts under
``<workspace>/mlflow/artifacts``. A different tracking server (a SQL database, a remote server)
is chosen by passing ``tracking_uri``. Models are logged with the scikit-learn flavour (our
estimators, pickled, holding a native LightGBM Booster as ``booster_``), with a signature, an
input example and explicit pip requirements (inferring them costs ~12 s), then registered under
the family's name with the alias ``challenger``. ``champion`` moves only through ``promote``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from core.errors import NotFoundError, UnavailableError
from core.workspace import Workspace

EXPERIMENT = "decisioning"
CHALLENGER = "challenger"
CHAMPION = "champion"

#: pip requirements of a logged model (explicit: inference costs ~12 s and guesses).
_REQUIREMENTS = ("lightgbm", "scikit-learn", "numpy", "pandas", "scipy", "cloudpickle")


def pip_requirements() -> list[str]:
    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


def tracking_uri_for(workspace: Workspace) -> str:
    return f"sqlite:///{workspace.mlflow / 'mlflow.db'}"


class Tracker:
    """Tracking and registry for one workspace (or an explicit ``tracking_uri``)."""

    def __init__(self, workspace: Workspace, tracking_uri: str | None = None, experiment: str = EXPERIMENT):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        import logging

        import mlflow
        from mlflow import MlflowClient

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        self.workspace = workspace
        workspace.mlflow.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or tracking_uri_for(workspace)
        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifacts = (workspace.mlflow / "artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        else:
            self.experiment_id = exp.experiment_id

    # -- runs -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None, nested: bool = False) -> Iterator[str]:
        """Start a run (yields its id); everything logged inside goes to it."""
        mlflow = self._mlflow
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags or {},
                              nested=nested) as r:
            yield r.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        clean = {k: ("None" if v is None else str(v))[:6000] for k, v in params.items()}
        self._mlflow.log_params(clean)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import math

        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))}
        self._mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_figure(self, fig, path: str) -> None:
        self._mlflow.log_figure(fig, path)

    def log_dict(self, data: dict | list, path: str) -> None:
        self._mlflow.log_dict(data, path)

    def log_text(self, text: str, path: str) -> None:
        self._mlflow.log_text(text, path)

    def log_artifact(self, local: str | Path, folder: str | None = None) -> None:
        self._mlflow.log_artifact(str(local), folder)

    def log_table(self, df, path: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / Path(path).name
            df.to_csv(p, index=False)
            self._mlflow.log_artifact(str(p), str(Path(path).parent) if Path(path).parent != Path(".") else None)

    # -- models -----------------------------------------------------------------------------------
    def log_model(self, estimator, registered_name: str, input_example, *, alias: str = CHALLENGER,
                  predict_fn: str = "predict_proba") -> ModelVersionInfo:
        """Log ``estimator`` (scikit-learn flavour, pickled) with signature and input example,
        register it under ``registered_name`` and point ``alias`` at the new version."""
        import warnings

        import mlflow.sklearn
        from mlflow.models import infer_signature

        # integer features become doubles in the schema, so that a missing value is accepted
        input_example = input_example.astype("float64")
        output = getattr(estimator, predict_fn)(input_example)
        signature = infer_signature(input_example, output)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.sklearn.log_model(
                estimator, name="model", signature=signature, input_example=input_example,
                pip_requirements=pip_requirements(), serialization_format="cloudpickle",
                pyfunc_predict_fn=predict_fn,
            )
        run_id = self._mlflow.active_run().info.run_id
        mv = self._mlflow.register_model(info.model_uri, registered_name)
        self.client.set_model_version_tag(registered_name, mv.version, "run_id", run_id)
        self.client.set_registered_model_alias(registered_name, alias, mv.version)
        return self.version(registered_name, alias)

    def version(self, registered_name: str, alias: str) -> ModelVersionInfo | None:
        """The version an alias points at (None when the model or alias does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(registered_name, alias)
        except MlflowException:
            return None
        run_id = mv.tags.get("run_id") or mv.run_id
        run = self.client.get_run(run_id)
        return ModelVersionInfo(
            name=registered_name, version=str(mv.version), run_id=run_id,
            aliases=tuple(getattr(mv, "aliases", ()) or ()), params=dict(run.data.params),
            metrics=dict(run.data.metrics), tags=dict(run.data.tags),
        )

    def set_alias(self, registered_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(registered_name, alias, version)

    def load_model(self, registered_name: str, alias: str = CHAMPION):
        """The estimator an alias points at (our scikit-learn-style object, native Booster inside)."""
        import mlflow.sklearn
        from mlflow.exceptions import MlflowException

        if self.version(registered_name, alias) is None:
            raise NotFoundError(f"no model '{registered_name}' with alias '{alias}' in {self.tracking_uri}")
        try:
            return mlflow.sklearn.load_model(f"models:/{registered_name}@{alias}")
        except MlflowException as exc:
            raise UnavailableError(f"cannot load {registered_name}@{alias}: {exc}") from None

    def load_artifact_json(self, run_id: str, path: str) -> Any:
        with tempfile.TemporaryDirectory() as d:
            local = self._mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=d)
            return json.loads(Path(local).read_text())

    def runs(self, filter_string: str = "", max_results: int = 1000):
        """Runs of the experiment as a DataFrame (newest first)."""
        return self._mlflow.search_runs(experiment_ids=[self.experiment_id], filter_string=filter_string,
                                        max_results=max_results, order_by=["attributes.start_time DESC"])

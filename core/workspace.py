"""The workspace: one folder that holds all state of a run, so that two runs never interfere.

Layout (every path is derived here and nowhere else)::

    <root>/
      raw/          raw sources, one file per source (customers, orders, events, engagements)
      truth/        the simulator's ground truth (absent for real data)
      profiles/     imported, validated, identity-resolved data and the rejects
      feature_repo/ the Feast repo: feature_store.yaml, feature data, registry, online store
      mlflow/       MLflow tracking store (SQLite) and artifacts
      decisions/    the decision log and outcomes (decisions.sqlite), budget ledgers
      policies/     fitted policy state the service loads
      reports/      HTML, PNG and JSON reports
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "DECISIONING_HOME"
DEFAULT_DIR = "workspace"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None, environ: dict | None = None) -> Workspace:
        """The workspace named by ``path``, else ``$DECISIONING_HOME``, else ``./workspace``."""
        env = os.environ if environ is None else environ
        chosen = path or env.get(ENV_VAR) or DEFAULT_DIR
        return cls(Path(chosen).expanduser().resolve())

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def _sub(self, name: str) -> Path:
        return self.root / name

    @property
    def raw(self) -> Path:
        return self._sub("raw")

    @property
    def truth(self) -> Path:
        return self._sub("truth")

    @property
    def profiles(self) -> Path:
        return self._sub("profiles")

    @property
    def feature_repo(self) -> Path:
        return self._sub("feature_repo")

    @property
    def mlflow(self) -> Path:
        return self._sub("mlflow")

    @property
    def decisions(self) -> Path:
        return self._sub("decisions")

    @property
    def decision_log(self) -> Path:
        """The workspace's decision log: the service and the journey's policy write here."""
        return self.decisions / "decisions.sqlite"

    @property
    def journeys(self) -> Path:
        """Decision logs and budget ledgers of simulated journeys, one set per run."""
        return self.decisions / "journeys"

    @property
    def policies(self) -> Path:
        """Fitted policy state (pickles) that the service loads."""
        return self._sub("policies")

    @property
    def reports(self) -> Path:
        return self._sub("reports")

    def has_truth(self) -> bool:
        return (self.truth / "persons.parquet").is_file()

"""Configuration of the decision service (YAML -> pydantic), e.g.::

    auth_token: s3cret            # optional; when set, every endpoint but /healthz /readyz /livez
                                  # needs `Authorization: Bearer s3cret`
    policy: thompson              # the policy of the champion arm (policies.bandits.POLICIES)
    ab_test:                      # optional policy A/B test, split by a stable hash of customer_id
      challenger: greedy
      challenger_share: 0.2
      salt: ab-v1
    refresh_seconds: 30           # how often the registry is polled for a new champion
    seed: 0
    log_synchronous: NORMAL       # FULL: fsync the decision log at every commit (survives a power cut)
    workers: 2                    # BentoML worker processes (each with its own engine; see serving.service)

The service finds the file through ``$DECISIONING_SERVING_CONFIG`` (``decisioning serve --config``
sets it); without it every field takes its default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.config import PolicyLayerConfig

CONFIG_ENV = "DECISIONING_SERVING_CONFIG"

#: The model families whose champions the service loads: family -> registered model name.
MODEL_NAMES: dict[str, str] = {
    "propensity": "propensity",
    "churn": "churn",
    "offer": "next_best_offer",
    "send_time": "send_time",
}


class ABTest(BaseModel):
    """Split traffic between the champion policy and a challenger policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    challenger: str = Field(description="registered policy name of the challenger arm")
    challenger_params: dict[str, Any] = Field(default_factory=dict, description="its hyper-parameters")
    challenger_share: float = Field(0.5, gt=0.0, lt=1.0, description="share of customers in the challenger arm")
    salt: str = Field("ab-v1", min_length=1, description="salt of the assignment hash; change it to re-draw")


class ServingConfig(BaseModel):
    """Everything the decision service can be told."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auth_token: str | None = Field(None, min_length=8, description="bearer token; None: no authentication")
    policy: str = Field("thompson", description="policy of the champion arm")
    policy_params: dict[str, Any] = Field(default_factory=dict, description="its hyper-parameters")
    ab_test: ABTest | None = Field(None, description="optional policy A/B test")
    policy_layer: PolicyLayerConfig = Field(default_factory=PolicyLayerConfig,
                                            description="arms and guardrails (policies.config)")
    models: tuple[str, ...] = Field(tuple(MODEL_NAMES), description="model families whose champions are loaded")
    model_alias: str = Field("champion", description="registry alias the service serves")
    registry_uri: str | None = Field(None, description="MLflow tracking/registry URI (default: the workspace's store)")
    refresh_seconds: float = Field(30.0, ge=0.0, description="registry poll interval; 0: never")
    feature_service: str = Field("decision_v1", description="the FeatureService the decision reads")
    rule_offer: str | None = Field(None, description="offer of the safe rule (default: the catalog's first)")
    rule_channel: str = Field("email", description="channel of the safe rule")
    rule_hour: int = Field(10, ge=0, le=23, description="local hour of the safe rule")
    seed: int = Field(0, ge=0, description="seed of sampling (with the request, it fixes each decision)")
    warm_start_max_sends: int = Field(30_000, ge=100, description="logged sends the warm start reads at most")
    log_synchronous: Literal["FULL", "NORMAL"] = Field(
        "NORMAL", description="SQLite synchronous mode of the decision log. NORMAL (default): a decision is "
        "in the log's WAL before its response leaves, so it survives a kill -9 of the service (what issue 6 "
        "asks) but the last commits may be lost in a power cut or an OS crash. FULL: fsync at every commit, "
        "survives a power cut too; at concurrency 1 the fsync dominates the decide's wall time (see "
        "bench/serving.py, which measures both)")

    checkpoint_seconds: float = Field(
        1.0, ge=0.0, description="how often a background thread copies the decision log's WAL into its file. "
        "0: SQLite's own automatic checkpoint, inside the commit of whichever decision crosses 1000 WAL pages "
        "(that decision waits for the copy and its fsync: measured, 2x a commit's mean cost and a p99 of "
        "milliseconds)")
    checkpoint_restart_pages: int = Field(
        16_384, ge=0, description="once the decision log's WAL holds this many pages (4 KiB each; 16384 = 64 "
        "MiB), the background checkpoint finishes under the write lock, so the next commit starts the WAL "
        "afresh: under steady traffic every passive checkpoint overlaps a commit, SQLite never restarts the "
        "WAL, and it grows without bound (measured: ~5 pages per decision). Commits wait for that locked "
        "pass (measured here: 12-60 ms, mostly its fsync), once per this many pages. 0: never")
    workers: int = Field(
        2, ge=1, le=32, description="BentoML worker processes. Each runs its own engine (one Python interpreter "
        "and GIL each); they share the workspace's files: the decision log, the budget ledger and outcomes in "
        "SQLite, the served policies as files (a worker serves a policy another one learned or promoted before "
        "its next decide), learning under an inter-process lock. 2 on a 2-core machine (bench/serving.py)")

    @field_validator("models")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if m not in MODEL_NAMES]
        if bad:
            raise ValueError(f"unknown model families {bad}; choose from {list(MODEL_NAMES)}")
        return v


def load_serving_config(path: str | Path | None = None, environ: dict | None = None) -> ServingConfig:
    """The config from ``path``, else from ``$DECISIONING_SERVING_CONFIG``, else the defaults."""
    from core.config import load_config

    env = os.environ if environ is None else environ
    chosen = path or env.get(CONFIG_ENV) or None
    return load_config(ServingConfig, chosen)

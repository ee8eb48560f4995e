"""Monitoring configuration: data, YAML-loadable (``core.config.load_config(MonitoringConfig, path)``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from policies.reward import RewardConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportConfig(_Section):
    """``decisioning report``: interval level and the A/B control arm."""

    level: float = Field(0.95, gt=0, lt=1, description="confidence level of every interval.")
    ab_control: str | None = Field(None, description="A/B arm the others are compared with "
                                   "(default: the first arm in sort order).")


class DriftThresholds(_Section):
    """Crossing any enabled threshold raises an alarm: retraining is due (exit code 1).
    ``None`` disables a check (the figure is still reported)."""

    feature_drift_share: float | None = Field(0.5, ge=0, le=1, description="alarm when at least this share "
                                              "of the compared features drifted (Evidently's per-column tests).")
    score_drift: bool = Field(True, description="alarm when any model score drifted (Evidently).")
    outcome_alpha: float | None = Field(0.01, gt=0, lt=1, description="family-wise level of the outcome-rate "
                                        "tests (open rate per channel/segment/slot band, reward per send per "
                                        "channel), Bonferroni-corrected over the tests run.")
    outcome_min_relative_change: float = Field(0.15, ge=0, description="an outcome-rate change is an alarm "
                                               "only if it is also at least this large, relative.")
    outcome_min_sends: int = Field(300, ge=1, description="a group is tested only with at least this many "
                                   "matured sends in each window.")
    action_share_tvd: float | None = Field(0.3, ge=0, le=1, description="alarm when the action shares per "
                                           "channel, offer or slot moved by this total-variation distance.")
    min_join_rate: float | None = Field(None, ge=0, le=1, description="alarm when the join rate of matured "
                                        "sends in the window falls below this.")
    min_ess_share: float | None = Field(None, ge=0, le=1, description="alarm when the effective sample size "
                                        "of the greedy target's importance weights falls below this share.")
    max_importance_weight: float | None = Field(None, gt=0, description="alarm when 1/propensity exceeds this.")


class DriftConfig(_Section):
    """``decisioning drift``: windows, sampling and thresholds."""

    window_days: float = Field(3.0, gt=0, description="length of the current window (and of the previous "
                                                        "window it is compared with), days.")
    previous_days: float | None = Field(None, gt=0, description="length of the previous window the current "
                                        "one is compared with, days (default: window_days).")
    sample_rows: int = Field(5000, ge=100, description="rows sampled per side for Evidently (features, scores).")
    max_features: int = Field(100, ge=1, description="at most this many features go to Evidently.")
    seed: int = Field(0, ge=0, description="seed of the sampling.")
    evidently: bool = Field(True, description="run Evidently (feature and score drift); off: policy health only.")
    slot_bands: list[int] = Field(default_factory=lambda: [8, 11, 14, 17, 20], description="local-hour band "
                                  "starts used to group send slots in the outcome tests.")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)


class MonitoringConfig(_Section):
    """Everything ``report`` and ``drift`` need; the reward is ``policies.reward``'s definition."""

    reward: RewardConfig = Field(default_factory=RewardConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)

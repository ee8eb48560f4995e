"""Measurement and monitoring: the effect of the decisions (``decisioning report``) and drift plus
policy health (``decisioning drift``), both read from the decision log.

| module | job |
|---|---|
| ``monitoring.config`` | ``MonitoringConfig`` (pydantic, YAML-loadable): levels, windows, drift thresholds |
| ``monitoring.logdata`` | find the workspace's decision log, time windows, read a window (light columns joined with outcomes), sample the JSON columns |
| ``monitoring.effect`` | report arithmetic: per-group ROI, holdout lift (cluster-robust normal CI), A/B Welch test |
| ``monitoring.health`` | policy health: action shares vs the previous window, exploration (ESS, largest weight), per-day reward/join rates, outcome-rate drift tests |
| ``monitoring.features`` | the reference snapshot and Evidently data drift of features and scores (sampled) |
| ``monitoring.report`` / ``monitoring.drift`` | the two commands' engines: summary dict, HTML, PNG plots, status file |
| ``monitoring.simulate`` | cheap decision logs from the simulated world (randomised policy, holdout, truth) for tests and benches |

Nothing here imports Evidently or MLflow at module level.
"""

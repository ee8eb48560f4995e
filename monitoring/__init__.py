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
| ``monitoring.tracking`` | one MLflow run per report (experiment ``monitoring``): window and log as params, key figures as metrics, HTML/JSON/PNG as artifacts |
| ``monitoring.simulate`` | cheap decision logs from the simulated world (randomised policy, holdout, truth) for tests and benches |

Files under ``<workspace>/reports/``: ``report.{html,json}`` + ``report_*.png``; ``drift.{html,json}``
+ ``drift_*.png`` + ``drift_evidently*.html``; and ``drift_status.json``, the status the service's
``/metrics`` reads. Its format is stable (keys are only ever added; see ``monitoring.drift``):
``retrain_due`` (bool), ``drift_found`` (bool), ``alarms`` (sorted list of alarm kinds), ``n_alarms``
(int), ``drifted_features`` (int, only when Evidently compared features), ``checked_at`` (ISO UTC),
``window`` ({since, until} ISO UTC), ``report`` (path of drift.html), ``mlflow_run_id`` (str or null).
It is replaced atomically.

Speed: a window of a million decisions is read by ``logdata.read_window`` (only the light columns,
chunked fetch, outcomes aggregated in SQL), the JSON columns only for a seeded sample, and every
aggregate is vectorised (factorised customers, ``np.bincount``); ``bench/monitoring.py`` measures it.

Nothing here imports Evidently or MLflow at module level.
"""

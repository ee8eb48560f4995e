"""Training jobs (``training.pipeline.train``), time-based splits and labels (``training.data``),
Optuna tuning (``training.tuning``), the one MLflow adapter (``training.tracking``), promotion and
comparison (``training.registry``), the simulator oracle (``training.oracle``) and plots."""

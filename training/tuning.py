"""Optuna tuning of the LightGBM-based estimators: TPE sampler (seeded), median pruning on the
validation log-loss reported while trees are added, in-memory storage unless a storage URL is
given, budget by number of trials and/or seconds. The best trial is refit by the caller on
train + valid (``refit_params`` scales the tree count to the larger data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import InputError


@dataclass
class TuningResult:
    best_params: dict
    best_value: float
    best_iteration: int
    n_trials: int
    n_pruned: int
    n_complete: int
    seconds: float
    trials: pd.DataFrame = field(repr=False)
    history: list[tuple[int, float]] = field(default_factory=list, repr=False)


def search_space(trial) -> dict:
    """The hyperparameters tried for every LightGBM-based model."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.04, 0.25, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 20, 400, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
    }


#: Any point of the search space (to list its parameter names through a FixedTrial).
_SPACE_PROBE = {"learning_rate": 0.1, "num_leaves": 16, "min_child_samples": 50, "subsample": 0.8,
                "colsample_bytree": 0.8, "reg_lambda": 1.0}


def pruning_callback(trial, every: int = 10):
    """A LightGBM callback reporting the validation log-loss to ``trial`` and pruning it when
    Optuna's pruner says so."""
    import optuna

    def _callback(env) -> None:
        it = env.iteration + 1
        if it % every or not env.evaluation_result_list:
            return
        value = float(env.evaluation_result_list[0][2])
        trial.report(value, it)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {it} (valid log-loss {value:.5f})")

    _callback.order = 25  # after the evaluation, before early stopping
    return _callback


def tune(
    fit_and_score: Callable[[dict, list], tuple[float, int]],
    n_trials: int | None = 10,
    timeout: float | None = None,
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    on_trial: Callable[[int, float | None, str], None] | None = None,
    first_params: dict | None = None,
) -> TuningResult:
    """Minimise the validation loss returned by ``fit_and_score(params, callbacks)`` (which also
    returns the best iteration). ``callbacks`` holds the pruning callback for the fit.

    ``first_params`` (the estimator's own defaults, restricted to the search space) is tried
    first, so a short budget never ends below the untuned model on the validation loss: TPE's
    first trials are random, and with a handful of trials in the time budget (a loaded machine)
    random draws alone did worse than the defaults."""
    import time

    import optuna

    if n_trials is not None and n_trials < 1:
        raise InputError(f"--trials must be >= 1 to tune; got {n_trials}")
    if n_trials is None and timeout is None:
        raise InputError("a tuning budget needs a number of trials or a time limit")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, n_trials or 5)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30),
        storage=storage,
        study_name=study_name,
        load_if_exists=storage is not None,
    )

    if first_params:
        space = set(search_space(optuna.trial.FixedTrial({**_SPACE_PROBE})))
        study.enqueue_trial({k: v for k, v in first_params.items() if k in space}, skip_if_exists=True)

    def objective(trial):
        params = search_space(trial)
        value, best_it = fit_and_score(params, [pruning_callback(trial)])
        trial.set_user_attr("best_iteration", int(best_it))
        return value

    def report(study_, trial_):
        if on_trial is not None:
            on_trial(trial_.number, trial_.value, trial_.state.name.lower())

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[report],
                   catch=(), gc_after_trial=False)
    seconds = time.perf_counter() - t0
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise InputError("no tuning trial completed: raise --trials or the time budget")
    best = study.best_trial
    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    if "duration" in df:
        df["duration"] = df["duration"].dt.total_seconds()
    running_best, history = np.inf, []
    for t in complete:
        running_best = min(running_best, t.value)
        history.append((t.number, running_best))
    return TuningResult(
        best_params=dict(best.params),
        best_value=float(best.value),
        best_iteration=int(best.user_attrs.get("best_iteration", 0)),
        n_trials=len(study.trials),
        n_pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
        n_complete=len(complete),
        seconds=seconds,
        trials=df,
        history=history,
    )


def refit_rounds(best_iteration: int, n_train: int, n_total: int) -> int:
    """Trees for the refit on train + valid: the best iteration, scaled up gently with the data."""
    scale = (n_total / max(n_train, 1)) ** 0.5
    return max(10, int(round(best_iteration * scale)))

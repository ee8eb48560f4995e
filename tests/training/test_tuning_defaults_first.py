"""training.tuning.tune tries the estimator's own defaults first, so a short budget cannot end
below the untuned model on the validation loss."""

from __future__ import annotations

from models.gbm import PropensityModel
from training.tuning import tune


def test_the_defaults_are_the_first_trial_and_win_when_nothing_beats_them():
    seen = []

    def fit_and_score(params, callbacks):
        seen.append(params)
        return abs(params["learning_rate"] - 0.05) + abs(params["num_leaves"] - 31) / 100, 7

    defaults = PropensityModel().get_params()  # includes keys outside the search space
    r = tune(fit_and_score, n_trials=3, seed=0, first_params=defaults)
    assert seen[0] == {k: defaults[k] for k in seen[0]}
    assert set(seen[0]) == {"learning_rate", "num_leaves", "min_child_samples", "subsample",
                            "colsample_bytree", "reg_lambda"}
    assert r.best_params == seen[0] and r.n_complete == 3 and r.best_iteration == 7


def test_without_defaults_the_first_trial_is_a_draw_from_the_space():
    seen = []

    def fit_and_score(params, callbacks):
        seen.append(params)
        return params["learning_rate"], 1

    tune(fit_and_score, n_trials=2, seed=0)
    assert seen[0]["num_leaves"] != 31 or seen[0]["learning_rate"] != 0.05

"""Validators for off-policy evaluation input, one ``check_*`` helper per concept (obp-style).

Every public entry of :mod:`policies.ope` (and the ``decisioning ope`` command) runs its input
through these once; the estimators behind them trust what they get. Each helper either returns
the value as a clean numpy array or raises :class:`core.errors.InputError` with one message that
names the column or argument and says what is wrong, with the first offending row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from core.errors import InputError

#: tolerance on "each row of a distribution sums to one"
SUM_TOLERANCE = 1e-6


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_float_vector(values, name: str) -> np.ndarray:
    if isinstance(values, pd.Series) and not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    ):
        coerced = pd.to_numeric(values, errors="coerce")
        bad = coerced.isna() & values.notna()
        if bad.any():
            i = _first(bad.to_numpy())
            raise InputError(f"{name} must be numeric; got {values.iloc[i]!r} at row {i}")
        values = coerced
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (n,); got shape {arr.shape}")
    return arr


def check_columns(frame: pd.DataFrame, columns: Iterable[str], *, what: str = "the logged data") -> None:
    """Every name in ``columns`` is a column of ``frame``."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns[:20])) + (", ..." if len(frame.columns) > 20 else "")
        raise InputError(
            f"{what} has no column {', '.join(repr(c) for c in missing)} (columns: {have}); "
            "name the right one with the column options"
        )


def check_not_empty(n: int, *, what: str = "the logged data") -> None:
    if n == 0:
        raise InputError(f"{what} has no rows")


def check_lengths(**arrays) -> int:
    """All arrays have the same first dimension; returns it."""
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise InputError(f"inputs must have the same number of rows; got {described}")
    return next(iter(lengths.values()), 0)


def check_propensities(values, name: str = "propensity") -> np.ndarray:
    """(n,) logging probabilities of the logged actions: finite and in (0, 1]."""
    p = _as_float_vector(values, f"the '{name}' column")
    bad = ~np.isfinite(p)
    if bad.any():
        raise InputError(f"the '{name}' column has {int(bad.sum())} missing or non-finite values (first at row {_first(bad)})")
    bad = (p <= 0.0) | (p > 1.0)
    if bad.any():
        i = _first(bad)
        raise InputError(
            f"the '{name}' column must hold probabilities in (0, 1] (the logging policy's probability of "
            f"the logged action); {int(bad.sum())} rows are outside, first at row {i}: {float(p[i])!r}"
        )
    return p


def check_target_probabilities(values, name: str = "target probability") -> np.ndarray:
    """(n,) probabilities the target policy gives the logged actions: finite and in [0, 1]."""
    p = _as_float_vector(values, f"the '{name}' column")
    bad = ~np.isfinite(p)
    if bad.any():
        raise InputError(f"the '{name}' column has {int(bad.sum())} missing or non-finite values (first at row {_first(bad)})")
    bad = (p < 0.0) | (p > 1.0)
    if bad.any():
        i = _first(bad)
        raise InputError(
            f"the '{name}' column must hold probabilities in [0, 1]; {int(bad.sum())} rows are outside, "
            f"first at row {i}: {float(p[i])!r}"
        )
    return p


def check_rewards(values, name: str = "reward") -> np.ndarray:
    """(n,) observed rewards: finite numbers."""
    r = _as_float_vector(values, f"the '{name}' column")
    bad = ~np.isfinite(r)
    if bad.any():
        raise InputError(f"the '{name}' column has {int(bad.sum())} missing or non-finite values (first at row {_first(bad)})")
    return r


def check_action_list(actions: Sequence) -> tuple[str, ...]:
    """The K possible actions, as distinct strings."""
    out = tuple(str(a) for a in actions)
    if not out:
        raise InputError("the action list is empty")
    if len(set(out)) != len(out):
        dup = next(a for a in out if out.count(a) > 1)
        raise InputError(f"the action list names {dup!r} twice")
    return out


def check_actions(values, actions: Sequence[str] | None = None, name: str = "action") -> tuple[np.ndarray, tuple[str, ...]]:
    """Logged actions -> (codes (n,) int64 into the action list, the action list).

    Without ``actions`` the list is the sorted distinct logged actions; with it, a logged action
    not in the list is an error. Actions are compared as strings.
    """
    series = pd.Series(values)
    if series.isna().any():
        i = _first(series.isna().to_numpy())
        raise InputError(f"the '{name}' column has {int(series.isna().sum())} missing values (first at row {i})")
    labels = series.astype(str)
    action_list = tuple(sorted(labels.unique())) if actions is None else check_action_list(actions)
    codes = pd.Categorical(labels, categories=list(action_list)).codes.astype(np.int64)
    unknown = codes < 0
    if unknown.any():
        i = _first(unknown)
        shown = ", ".join(action_list[:10]) + (", ..." if len(action_list) > 10 else "")
        raise InputError(
            f"the '{name}' column has {int(unknown.sum())} rows with actions the target does not know, first at "
            f"row {i}: {labels.iloc[i]!r} (known actions: {shown})"
        )
    return codes, action_list


def check_action_distribution(dist, n: int, n_actions: int, name: str = "target distribution") -> np.ndarray:
    """(n, K) probabilities of every action per row: finite, in [0, 1], each row summing to 1."""
    try:
        d = np.asarray(dist, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"the {name} must be a numeric (n, K) array") from None
    if d.shape != (n, n_actions):
        raise InputError(f"the {name} must have shape (n, K) = ({n}, {n_actions}); got {d.shape}")
    bad = ~np.isfinite(d).all(axis=1)
    if bad.any():
        raise InputError(f"the {name} has non-finite values (first at row {_first(bad)})")
    bad = ((d < 0.0) | (d > 1.0)).any(axis=1)
    if bad.any():
        raise InputError(f"the {name} must hold probabilities in [0, 1]; row {_first(bad)} does not")
    sums = d.sum(axis=1)
    bad = np.abs(sums - 1.0) > SUM_TOLERANCE
    if bad.any():
        i = _first(bad)
        raise InputError(f"each row of the {name} must sum to 1; {int(bad.sum())} rows do not, first at row {i} (sum {sums[i]:.6g})")
    return d


def check_context(context, n: int, name: str = "context") -> np.ndarray:
    """(n, d) numeric context (d may be 0): finite. None -> (n, 0)."""
    if context is None:
        return np.zeros((n, 0))
    if isinstance(context, pd.DataFrame):
        non_numeric = [c for c in context.columns if not (
            pd.api.types.is_numeric_dtype(context[c]) or pd.api.types.is_bool_dtype(context[c]))]
        if non_numeric:
            raise InputError(f"{name} columns must be numeric; {non_numeric[:5]} are not")
    try:
        x = np.asarray(context, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != n:
        raise InputError(f"{name} must have shape (n, d) with n={n}; got {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(f"{name} has missing or non-finite values (first at row {_first(bad)})")
    return x


def check_bootstrap(n_bootstrap: int, level: float) -> None:
    if not isinstance(n_bootstrap, int | np.integer) or isinstance(n_bootstrap, bool) or n_bootstrap < 10:
        raise InputError(f"the number of bootstrap resamples must be an integer >= 10; got {n_bootstrap!r}")
    if not (isinstance(level, float | int) and 0.0 < float(level) < 1.0):
        raise InputError(f"the confidence level must be in (0, 1), e.g. 0.95; got {level!r}")


def check_folds(n_folds: int, n: int) -> None:
    if not isinstance(n_folds, int | np.integer) or isinstance(n_folds, bool) or n_folds < 2:
        raise InputError(f"the number of cross-fitting folds must be an integer >= 2; got {n_folds!r}")
    if n < 2 * n_folds:
        raise InputError(f"cross-fitting {n_folds} folds needs at least {2 * n_folds} rows; got {n}")

"""The check_* helpers that guard every public entry of the estimators (validate once, here).

Errors follow scikit-learn's wording: "The 'x' parameter of Y must be ...; got ... instead." and
are raised as ``core.errors.InputError`` (a ``ValueError`` too, so scikit-learn tools that catch
``ValueError`` keep working).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.errors import InputError


class EstimatorInputError(InputError, ValueError):
    """Bad parameter or bad data given to an estimator."""


class NotFittedError(EstimatorInputError, AttributeError):
    """An estimator was used before ``fit``."""


def param_error(name: str, owner: object, must: str, got: object) -> EstimatorInputError:
    cls = owner if isinstance(owner, str) else type(owner).__name__
    return EstimatorInputError(f"The '{name}' parameter of {cls} must be {must}; got {got!r} instead.")


def check_number(
    value: object,
    name: str,
    owner: object,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
) -> None:
    """Check one numeric hyperparameter against its type and interval."""
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        v = float(value)
        if not np.isfinite(v):
            ok = False
        if low is not None and (v < low or (v == low and not low_inclusive)):
            ok = False
        if high is not None and (v > high or (v == high and not high_inclusive)):
            ok = False
    if not ok:
        what = "an int" if integer else "a float"
        lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        interval = ""
        if low is not None and high is not None:
            interval = f" in the range {lo}, {hi}"
        elif low is not None:
            interval = f" {'>=' if low_inclusive else '>'} {low:g}"
        elif high is not None:
            interval = f" {'<=' if high_inclusive else '<'} {high:g}"
        none = " or None" if allow_none else ""
        raise param_error(name, owner, f"{what}{interval}{none}", value)


def check_choice(value: object, name: str, owner: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise param_error(name, owner, f"one of {list(choices)}", value)


def check_fitted(est: object, attribute: str) -> None:
    if not hasattr(est, attribute):
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet; call 'fit' before using it."
        )


def check_matrix(X: object, owner: object, *, name: str = "X") -> tuple[np.ndarray, list[str] | None]:
    """(n, d) float64 matrix from an array or DataFrame; NaN allowed (missing), infinities not.

    Returns the matrix and the column names (None for an array).
    """
    columns = None
    if isinstance(X, pd.DataFrame):
        columns = [str(c) for c in X.columns]
        try:
            arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise param_error(name, owner, "numeric", f"a DataFrame with non-numeric columns ({exc})") from None
    else:
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise param_error(name, owner, "a numeric 2-d array", type(X).__name__) from None
    if arr.ndim != 2:
        raise param_error(name, owner, "a 2-d array of shape (n_samples, n_features)", f"shape {arr.shape}")
    if arr.shape[0] == 0:
        raise param_error(name, owner, "non-empty", "0 rows")
    if np.isinf(arr).any():
        raise param_error(name, owner, "finite or NaN", "infinite values")
    return arr, columns


def check_columns(X: np.ndarray, columns: list[str] | None, est: object) -> np.ndarray:
    """Same features as at fit time (by name when both are named, else by count)."""
    names = getattr(est, "feature_names_in_", None)
    if names is not None and columns is not None and list(columns) != list(names):
        missing = [c for c in names if c not in columns]
        if missing:
            raise EstimatorInputError(
                f"X lacks {len(missing)} feature(s) seen in fit, e.g. {missing[:5]}"
            )
        raise EstimatorInputError("X has the fitted features in another order; pass them in fit order")
    if X.shape[1] != est.n_features_in_:
        raise EstimatorInputError(
            f"X has {X.shape[1]} features, but {type(est).__name__} was fitted with {est.n_features_in_}"
        )
    return X


def check_vector(v: object, n: int, owner: object, name: str, *, binary: bool = False,
                 positive: bool = False, unit: bool = False, nonnegative: bool = False) -> np.ndarray:
    """(n,) float64 vector with the given constraints."""
    try:
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise param_error(name, owner, "a numeric 1-d array", type(v).__name__) from None
    if arr.shape[0] != n:
        raise param_error(name, owner, f"of length {n} (one per row of X)", f"length {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise param_error(name, owner, "finite", "NaN or infinite values")
    if binary and not np.isin(arr, (0.0, 1.0)).all():
        raise param_error(name, owner, "binary (0/1)", f"values {np.unique(arr)[:5].tolist()}")
    if positive and (arr <= 0).any():
        raise param_error(name, owner, "> 0", f"min {arr.min():g}")
    if unit and ((arr <= 0) | (arr > 1)).any():
        raise param_error(name, owner, "in (0, 1]", f"values in [{arr.min():g}, {arr.max():g}]")
    if nonnegative and (arr < 0).any():
        raise param_error(name, owner, ">= 0", f"min {arr.min():g}")
    return arr


def check_binary_target(y: object, n: int, owner: object) -> np.ndarray:
    y = check_vector(y, n, owner, "y", binary=True)
    if np.unique(y).size < 2:
        raise param_error("y", owner, "two classes (both 0 and 1 present)", f"only class {y[0]:g}")
    return y

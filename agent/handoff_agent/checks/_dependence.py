"""Partial dependence of one feature with one stacked predict, as sklearn's brute method.

``sklearn.inspection.partial_dependence(method="brute")`` calls the model once per grid value;
a forest pays its per-call overhead (threads, validation) each time: 20 calls for a 20-point
grid. Here the grid's copies of the rows are stacked into one frame (in chunks of at most
``CHUNK_BYTES``) and the model is called once, then averaged per grid value as sklearn does:
the same grid (``grid``: the unique values for a categorical feature or one with fewer unique
values than the resolution, else ``grid_resolution`` points between the 5th and 95th
percentiles, rounded for an integer feature, which recent sklearn refuses) and the same
response (regressors: ``predict``; classifiers: ``predict_proba``, else
``decision_function``; a binary classifier's positive class only).

Only for models whose rows are predicted independently of each other (``stackable``) and which
sklearn would not send to its ``recursion`` method (gradient boosting, a regression tree or
forest: sklearn's default there, which reads the trees instead of predicting); everything else
goes to sklearn (``handled``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ._permutation import CHUNK_BYTES, predict_rows, stackable
from .loads import detect_task

PERCENTILES = (0.05, 0.95)  # sklearn's default


def _recursion(model) -> bool:
    """True when sklearn's ``method="auto"`` takes its recursion method for this model (the
    rule of ``partial_dependence`` in scikit-learn 1.3 to 1.9)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import (
        BaseHistGradientBoosting,
    )
    from sklearn.tree import DecisionTreeRegressor

    if isinstance(model, BaseGradientBoosting) and model.init is None:
        return True
    return isinstance(
        model, (BaseHistGradientBoosting, DecisionTreeRegressor, RandomForestRegressor)
    )


def _column(X, j: int):
    return X.iloc[:, j] if isinstance(X, pd.DataFrame) else X[:, j]


def handled(model, X, j: int, categorical: bool) -> bool:
    """True when ``partial_dependence`` below gives sklearn's default result for feature ``j``:
    a stackable classifier or regressor with a response to average. An integer feature is
    handled too (recent sklearn refuses it): its grid stays integer (``grid``)."""

    if not stackable(model) or _recursion(model):
        return False
    if detect_task(model) == "classification":
        classes = getattr(model, "classes_", None)
        if classes is None or isinstance(classes[0], np.ndarray):  # multiclass-multioutput
            return False
        if not (hasattr(model, "predict_proba") or hasattr(model, "decision_function")):
            return False
    elif detect_task(model) != "regression":
        return False
    return True


def grid(values, categorical: bool, grid_resolution: int, percentiles=PERCENTILES):
    """sklearn's grid for one feature (``_grid_from_X``, whose signature changed in 1.7); an
    integer feature's points rounded to its dtype, so a model sees the integers it was fitted
    on (sklearn 1.9 refuses integers rather than let a grid of floats be rounded silently).
    Missing values are left out: a category column with NaN beside its strings has a grid
    of its categories (sklearn cannot sort them)."""
    from scipy.stats.mstats import mquantiles

    if grid_resolution <= 1:
        raise ValueError("'grid_resolution' must be strictly greater than 1.")
    values = np.asarray(values)
    values = values[~pd.isna(values)]  # a missing value is no point of the grid
    if not len(values):
        raise ValueError("every value is missing: there is no grid to build.")
    try:
        uniques = np.unique(values)
    except TypeError as exc:  # sklearn's message: NaN beside strings cannot be sorted
        raise ValueError(
            "The column contains mixed data types (NaN beside strings?): its unique values "
            "cannot be sorted."
        ) from exc
    if categorical or uniques.shape[0] < grid_resolution:
        return uniques
    low, high = mquantiles(values, prob=percentiles, axis=0)
    if np.allclose(low, high):
        raise ValueError(
            "percentiles are too close to each other, unable to build the grid. Please "
            "choose percentiles that are further apart."
        )
    axis = np.linspace(low, high, num=grid_resolution, endpoint=True)
    if uniques.dtype.kind in "iu":
        return np.unique(np.round(axis)).astype(uniques.dtype)
    return axis


def _response(model):

    if detect_task(model) == "regression":
        return model.predict
    if hasattr(model, "predict_proba"):
        return model.predict_proba
    return model.decision_function


def _stack(X, j: int, values: np.ndarray):
    """len(values) copies of X, one after another, column j set to one value per copy."""
    column = np.repeat(values, len(X))
    if isinstance(X, pd.DataFrame):
        # set in place, as sklearn sets each value (silencing pandas' FutureWarning as it
        # does): the column keeps its dtype, a category too
        frame = pd.concat([X] * len(values), ignore_index=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            frame.iloc[:, j] = column
        return frame
    out = np.tile(X, (len(values), 1))
    out[:, j] = column
    return out


def partial_dependence(
    model,
    X,
    j: int,
    *,
    categorical: bool = False,
    grid_resolution: int = 20,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """``{"grid_values": [grid], "average": (n_outputs, len(grid)), "predict_calls"}`` for
    column ``j`` of X (a DataFrame or an array): sklearn's ``partial_dependence(model, X, [j],
    kind="average", method="brute")``, with one predict call per chunk of the grid."""

    axis = grid(_column(X, j), categorical, grid_resolution)
    n = len(X)
    if isinstance(X, pd.DataFrame):
        row_bytes = max(1.0, X.memory_usage(index=False).sum() / max(n, 1))
    else:
        row_bytes = max(1, X.itemsize * X.shape[1])
    per_chunk = max(1, int(chunk_bytes // (row_bytes * max(n, 1))))
    respond, averages, calls = _response(model), [], 0
    for start in range(0, len(axis), per_chunk):
        values = axis[start : start + per_chunk]
        pred = predict_rows(model, respond, _stack(X, j, values))
        calls += 1
        for b in range(len(values)):
            averages.append(np.average(pred[b * n : (b + 1) * n], axis=0))
    average = np.array(averages).T
    if detect_task(model) == "classification" and average.ndim == 2 and average.shape[0] == 2:
        average = average[1]  # binary predict_proba: the positive class, as sklearn
    return {
        "grid_values": [axis],
        "average": average.reshape(-1, len(axis)),
        "predict_calls": calls,
    }
